"""A cohort without one modality (README "Your own cohort"): `slides: null`, `genomics: null`, `clinical: null`
switch their stages off and the rest runs, on the tiny cohort: slides + clinical, then slides alone, for
real below (slides alone also as a dry run from scratch); genomes + clinical as a dry run and for real in
tests/genomics/test_genomics_workflow.py (that test's genomic run)."""

import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PATCH_ENCODER_ONLY, cohort_config, demo_slides_sheet, job_stats, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow

SLIDE_RULES = {"patch_slides", "slides_qc", "extract_features", "collect_features"}
EXPLAIN_RULES = {"explain_sample", "explain_fit", "explain_assign", "explain_report"}
GENOMIC_RULES = {"annotation_genes", "gene_region", "gene_sequences", "nt_random_weights", "embed_gene",
                 "genomics_cohort"}
SURVIVAL_RULES = {"survival_cohort", "survival_tabular", "survival_ranking", "survival_deep", "survival_heatmaps",
                  "survival_summary"}


def user_config(cohort, workdir, encoders=None, **sheets):
    """The tiny cohort's config with ``sheets`` overridden, folds the 6 patients can fill, and the untuned
    models (a tuned one's inner folds cannot be filled: planning blocks the survival stage)."""
    path = cohort_config(cohort, workdir, **({"encoders": encoders} if encoders else {}), **sheets)
    config = yaml.safe_load(path.read_text())
    config["survival"]["cv"].update(n_splits=2, n_repeats=1, inner_splits=2)
    config["survival"]["models"] = [m for m in config["survival"]["models"] if not m.get("search")]
    config["explain"]["model"] = "cox_ridge"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("sheets, stages, notes", [
    ({"slides": None}, GENOMIC_RULES | SURVIVAL_RULES - {"survival_deep", "survival_heatmaps"},
     ["slides: null switches off the slide, feature and explain stages",
      "survival.models[porpoise] left out: it needs the slides"]),
    ({"genomics": None, "clinical": None}, SLIDE_RULES | EXPLAIN_RULES,
     ["clinical: null switches off the survival stage",
      "explain.model 'cox_ridge' does not run: the report shows the clusters without a risk"]),
], ids=["genomes+clinical", "slides-alone"])  # slides + clinical: its real run below checks the jobs it runs
def test_each_modality_subset_plans_its_stages_only(tmp_path, tiny_cohort, sheets, stages, notes):
    config = user_config(tiny_cohort, tmp_path, **sheets)
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n")
    assert set(planned_jobs(proc)) == stages | {"manifest", "all"}, planned_jobs(proc)
    out = proc.stdout + proc.stderr
    assert all(f"tessera: {note}" in out for note in notes), out


def jobs_run(proc) -> set[str]:
    """Rules of the jobs a finished run executed."""
    return set(job_stats(proc.stderr)) - {"all"}


def test_slides_and_clinical_then_slides_alone_run(tmp_path, tiny_cohort):
    """README's "slides + clinical" config (`genomics: null`) runs its default target for real: slide stage,
    patch features, survival on clinical + slide features, explain with that model's risk, the manifest, no
    genomic stage. Then "slides alone" (`clinical: null` too) in the same working directory: only the
    explain report (now without a risk: clusters by prevalence) and the manifest run again; the slide and
    feature outputs it shares with the first run are kept, as for a user who drops a modality. The run
    extracts HIPT's patch encoder and a foundation model (kaiko-vits16) from one read of one grid."""
    # the demo slides only (the CMU slide is 40 % of the tiles: reading, tested elsewhere) and one Cox model
    slides = pd.read_csv(demo_slides_sheet(tiny_cohort, tmp_path / "slides.tsv"), sep="\t")
    # HIPT's patch encoder and a foundation model on the same 256-px grid: one read per tile feeds both
    config = user_config(tiny_cohort, tmp_path, [*PATCH_ENCODER_ONLY, "kaiko-vits16"], genomics=None, n_shards=2,
                         slides=str(tmp_path / "slides.tsv"))
    settings = yaml.safe_load(config.read_text())
    settings["survival"]["models"] = [m for m in settings["survival"]["models"] if m["name"] == "cox_ridge"]
    settings["survival"]["cohort"]["missing"] = "impute"  # P001's only slide was the CMU one: keep P001
    config.write_text(yaml.safe_dump(settings, sort_keys=False))

    first = run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    assert "tessera: genomics: null switches off the genomic stage" in first.stdout + first.stderr
    one_cox_model = SURVIVAL_RULES - {"survival_deep", "survival_heatmaps", "survival_ranking"}
    assert jobs_run(first) == SLIDE_RULES | EXPLAIN_RULES | one_cox_model | {"manifest"}, jobs_run(first)
    table = pd.read_parquet(tmp_path / "results/cohort/table.parquet")
    assert len(table) == 6
    assert {c.split("__")[0] for c in table.columns if "__" in c} == {"clinical", "pathology"}
    metrics = json.loads((tmp_path / "results/models/cox_ridge/metrics.json").read_text())
    assert metrics["modalities"] == ["clinical", "pathology"], metrics["modalities"]
    assert not (tmp_path / "results/genomics").exists()
    logs = "".join(p.read_text() for p in (tmp_path / "logs/features").glob("shard-*.log"))
    assert len(re.findall(r"tiles of 256 px encoded \(hipt256, kaiko-vits16\)", logs)) == len(slides), logs
    for slide in slides["slide_id"]:
        shard = next((tmp_path / "results/features/hipt256").glob(f"shard-*/{slide}.h5")).parent.name
        with h5py.File(tmp_path / f"results/features/hipt256/{shard}/{slide}.h5") as hipt, \
                h5py.File(tmp_path / f"results/features/kaiko-vits16/{shard}/{slide}.h5") as kaiko:
            assert np.array_equal(hipt["coords"][:], kaiko["coords"][:])  # one grid
            assert hipt["features"].shape[1] == 384 and kaiko["features"].shape[1] == 384
            assert kaiko.attrs["input_size"] == 224 and abs(kaiko.attrs["input_mpp"] - 0.5 * 256 / 224) < 1e-6
    report = (tmp_path / "results/explain/hipt256/report.html").read_text()
    assert 'id="no-risk"' not in report and 'id="variance-explained"' in report
    manifest = json.loads((tmp_path / "results/manifest.json").read_text())
    assert "genomics" not in manifest["inputs"] and {"slides", "clinical"} <= set(manifest["inputs"])

    settings["clinical"] = None
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    alone = run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    assert jobs_run(alone) == {"explain_report", "manifest"}, jobs_run(alone)
    out = alone.stdout + alone.stderr
    assert "tessera: clinical: null switches off the survival stage" in out
    report = (tmp_path / "results/explain/hipt256/report.html").read_text()
    assert 'id="no-risk"' in report and "Clusters ranked by prevalence" in report
    manifest = json.loads((tmp_path / "results/manifest.json").read_text())
    assert not {"genomics", "clinical"} & set(manifest["inputs"]) and "slides" in manifest["inputs"]
