"""A cohort without one modality (README "Your own cohort"): `slides: null`, `genomics: null`, `clinical: null`
switch their stages off and the rest runs. Dry runs of the three configs on the tiny cohort; the genomes +
clinical config also runs for real in tests/genomics/test_genomics_workflow.py (that test's genomic run)."""

import re

import pytest
import yaml

from conftest import cohort_config, run_snakemake

pytestmark = pytest.mark.workflow

SLIDE_RULES = {"patch_slides", "slides_qc", "extract_features", "collect_features"}
EXPLAIN_RULES = {"explain_sample", "explain_fit", "explain_assign", "explain_report"}
GENOMIC_RULES = {"annotation_genes", "gene_region", "gene_sequences", "nt_random_weights", "embed_gene",
                 "genomics_cohort"}
SURVIVAL_RULES = {"survival_cohort", "survival_tabular", "survival_ranking", "survival_deep", "survival_heatmaps",
                  "survival_summary"}


def planned_jobs(proc) -> dict[str, int]:
    """Rule → job count from the 'Job stats' table of a dry run."""
    table = proc.stdout.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def user_config(cohort, workdir, **sheets):
    """The tiny cohort's config with ``sheets`` overridden, folds the 6 patients can fill, and the untuned
    models (a tuned one's inner folds cannot be filled: planning blocks the survival stage)."""
    path = cohort_config(cohort, workdir, **sheets)
    config = yaml.safe_load(path.read_text())
    config["survival"]["cv"].update(n_splits=2, n_repeats=1, inner_splits=2)
    config["survival"]["models"] = [m for m in config["survival"]["models"] if not m.get("search")]
    config["explain"]["model"] = "cox_ridge"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("sheets, stages, notes", [
    ({"genomics": None}, SLIDE_RULES | EXPLAIN_RULES | SURVIVAL_RULES,
     ["genomics: null switches off the genomic stage"]),
    ({"slides": None}, GENOMIC_RULES | SURVIVAL_RULES - {"survival_deep", "survival_heatmaps"},
     ["slides: null switches off the slide, feature and explain stages",
      "survival.models[porpoise] left out: it needs the slides"]),
    ({"genomics": None, "clinical": None}, SLIDE_RULES | EXPLAIN_RULES,
     ["clinical: null switches off the survival stage",
      "explain.model 'cox_ridge' does not run: the report shows the clusters without a risk"]),
], ids=["slides+clinical", "genomes+clinical", "slides-alone"])
def test_each_modality_subset_plans_its_stages_only(tmp_path, tiny_cohort, sheets, stages, notes):
    config = user_config(tiny_cohort, tmp_path, **sheets)
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n")
    assert set(planned_jobs(proc)) == stages | {"manifest", "all"}, planned_jobs(proc)
    out = proc.stdout + proc.stderr
    assert all(f"tessera: {note}" in out for note in notes), out

