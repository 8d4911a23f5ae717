"""A cohort without one modality (README "Your own cohort"): `slides: null`, `genomics: null`, `clinical: null`
switch their stages off and the rest runs. Dry runs of the three configs on the tiny cohort, and one real run."""

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import cohort_config, run_snakemake

pytestmark = pytest.mark.workflow

SLIDE_RULES = {"patch_slides", "slides_qc", "extract_features", "collect_features"}
EXPLAIN_RULES = {"explain_sample", "explain_fit", "explain_assign", "explain_report"}
GENOMIC_RULES = {"annotation_genes", "gene_region", "gene_sequences", "nt_random_weights", "embed_gene",
                 "genomics_cohort"}
SURVIVAL_RULES = {"survival_cohort", "survival_tabular", "survival_ranking", "survival_deep", "survival_summary"}


def planned_jobs(proc) -> dict[str, int]:
    """Rule → job count from the 'Job stats' table of a dry run."""
    table = proc.stdout.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def user_config(cohort, workdir, models=None, **sheets):
    """The tiny cohort's config with ``sheets`` overridden, and folds the 6 patients can fill."""
    path = cohort_config(cohort, workdir, **sheets)
    config = yaml.safe_load(path.read_text())
    config["survival"]["cv"].update(n_splits=2, n_repeats=1, inner_splits=2)
    if models is not None:
        config["survival"]["models"] = [m for m in config["survival"]["models"] if m["name"] in models]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("sheets, stages, notes", [
    ({"genomics": None}, SLIDE_RULES | EXPLAIN_RULES | SURVIVAL_RULES,
     ["genomics: null switches off the genomic stage"]),
    ({"slides": None}, GENOMIC_RULES | SURVIVAL_RULES - {"survival_deep"},
     ["slides: null switches off the slide, feature and explain stages",
      "survival.models[porpoise] left out: it needs the slides"]),
    ({"genomics": None, "clinical": None}, SLIDE_RULES | EXPLAIN_RULES,
     ["clinical: null switches off the survival stage",
      "explain.model 'coxnet' does not run: the report shows the clusters without a risk"]),
], ids=["slides+clinical", "genomes+clinical", "slides-alone"])
def test_each_modality_subset_plans_its_stages_only(tmp_path, tiny_cohort, sheets, stages, notes):
    config = user_config(tiny_cohort, tmp_path, **sheets)
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n")
    assert set(planned_jobs(proc)) == stages | {"manifest", "all"}, planned_jobs(proc)
    out = proc.stdout + proc.stderr
    assert all(f"tessera: {note}" in out for note in notes), out


def test_genomes_and_clinical_run_without_slides(tmp_path, tiny_cohort):
    config = user_config(tiny_cohort, tmp_path, models=["cox_ridge"], slides=None)
    run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    summary = json.loads((tmp_path / "results/cohort/summary.json").read_text())
    table = pd.read_parquet(tmp_path / "results/cohort/table.parquet")
    assert {c.split("__")[0] for c in table.columns if "__" in c} == {"clinical", "genomics"}, summary
    assert (tmp_path / "results/models/cox_ridge/metrics.json").is_file()
    assert not (tmp_path / "results/slides").exists() and not (tmp_path / "results/features").exists()
    manifest = json.loads((tmp_path / "results/manifest.json").read_text())
    assert "slides" not in manifest["inputs"] and {"clinical", "genomics", "reference"} <= set(manifest["inputs"])
