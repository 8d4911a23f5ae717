"""The slide stage through Snakemake on a tiny cohort: bad slides recorded, reruns limited to their shard."""

import re
import shutil

import pandas as pd
import pytest

from conftest import REPO, cohort_config, run_snakemake

pytestmark = pytest.mark.workflow


def planned_jobs(proc) -> dict[str, int]:
    """Rule → job count from the 'Job stats' table of a dry run."""
    table = proc.stdout.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def write_sheet(cohort, workdir, extra_rows=()):
    slides = pd.read_csv(cohort / "slides.tsv", sep="\t", keep_default_na=False)
    slides["path"] = [str(cohort / p) for p in slides["path"]]
    slides = pd.concat([slides, pd.DataFrame(list(extra_rows))], ignore_index=True).fillna("")
    slides.to_csv(workdir / "slides.tsv", sep="\t", index=False)
    return workdir / "slides.tsv"


def test_slide_stage_records_a_missing_slide_and_reruns_only_the_changed_shard(tmp_path, tiny_cohort):
    missing = {"slide_id": "P003-S9", "patient_id": "P003", "path": str(tmp_path / "lost.svs"), "mpp": ""}
    sheet = write_sheet(tiny_cohort, tmp_path, [missing])
    config = cohort_config(tiny_cohort, tmp_path, slides=str(sheet))
    run = run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2", "results/qc/slides.tsv")
    # the end of the run says what failed, not only "100% done"
    assert "slides: 1 of 8 slides failed (1 patient); index: results/qc/slides.tsv" in run.stdout + run.stderr

    qc = pd.read_csv(tmp_path / "results/qc/slides.tsv", sep="\t", keep_default_na=False).set_index("slide_id")
    assert len(qc) == 8 and (qc.drop(index="P003-S9")["status"] == "ok").all()
    assert qc.loc["P003-S9", "status"] == "failed" and "lost.svs" in qc.loc["P003-S9", "reason"]
    for col in ("patches_h5", "tissue_geojson", "thumbnail"):
        assert all((tmp_path / p).is_file() for p in qc.loc[qc["status"] == "ok", col])
    assert "1 of 8 slides failed" in (tmp_path / "logs/slides/qc.log").read_text()

    # Nothing to do on a rerun; adding a slide replans only its own shard and the index.
    noop = run_snakemake(tmp_path, "--configfile", str(config), "-n", "results/qc/slides.tsv")
    assert "Nothing to be done" in noop.stdout + noop.stderr
    shutil.copyfile(tiny_cohort / "slides" / "P004-S1.tiff", tmp_path / "extra.tiff")
    write_sheet(tiny_cohort, tmp_path, [missing, {"slide_id": "P004-S2", "patient_id": "P004",
                                                   "path": str(tmp_path / "extra.tiff"), "mpp": ""}])
    dry = run_snakemake(tmp_path, "--configfile", str(config), "-n", "results/qc/slides.tsv")
    assert planned_jobs(dry) == {"patch_slides": 1, "slides_qc": 1}


def test_bad_sheet_stops_before_any_job_with_the_fix(tmp_path, tiny_cohort):
    sheet = write_sheet(tiny_cohort, tmp_path, [{"slide_id": "P002-S1", "patient_id": "P002", "path": "x", "mpp": ""}])
    config = cohort_config(tiny_cohort, tmp_path, slides=str(sheet))
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "duplicate slide_id 'P002-S1'" in out and "Fix: give every row its own slide_id" in out


def test_invalid_config_is_rejected_by_the_schema(tmp_path, tiny_cohort):
    config = cohort_config(tiny_cohort, tmp_path, patching={"target_mpp": -1})
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    assert proc.returncode != 0 and "['patching']['target_mpp']" in proc.stdout + proc.stderr
    config = cohort_config(tiny_cohort, tmp_path, patching={"patch_size": 256, "region_size": 1000})
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    assert proc.returncode != 0
    assert "region_size 1000 is not a multiple of patch_size 256" in proc.stdout + proc.stderr


def test_lint_and_format_are_clean(tmp_path, tiny_cohort):
    """snakefmt and ``snakemake --lint`` are clean (linted against a generated cohort: a fresh clone has no demo/)."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    fmt = subprocess.run([str(bin_dir / "snakefmt"), "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    config = cohort_config(tiny_cohort, tmp_path)
    lint = run_snakemake(tmp_path, "--configfile", str(config), "--lint", check=False)
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
