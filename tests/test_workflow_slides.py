"""The slide stage through Snakemake on a tiny cohort: bad slides recorded, reruns limited to their shard."""

import re
import shutil

import pandas as pd
import pytest

from conftest import REPO, cohort_config, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow



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
    clinical = (tiny_cohort / "clinical.tsv").read_text().splitlines()
    clinical[1] = "\t".join([clinical[1].split("\t")[0], "-5", *clinical[1].split("\t")[2:]])
    (tmp_path / "clinical.tsv").write_text("\n".join(clinical) + "\n")
    config = cohort_config(tiny_cohort, tmp_path, slides=str(sheet), clinical=str(tmp_path / "clinical.tsv"))
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "duplicate slide_id 'P002-S1'" in out and "Fix: give every row its own slide_id" in out
    # every sheet's problems in one go, not only the first sheet's
    assert f"{tmp_path / 'clinical.tsv'}, line 2, field 'time': '-5' is not a positive number" in out, out


def test_invalid_config_is_rejected_by_the_schema(tmp_path, tiny_cohort):
    """Schema problems of the merged config: one short line each, naming the file, before Snakemake's dump."""
    config = cohort_config(tiny_cohort, tmp_path, patching={"target_mpp": -1}, slide="typo.tsv",
                           survival={"cv": {"n_split": 3}})
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "3 problem(s) in the config (config.yaml):" in out, out
    assert "config.yaml, field 'slide': unknown key 'slide' (value 'typo.tsv'). Fix: did you mean 'slides'?" in out
    assert "config.yaml, field 'survival.cv.n_split': unknown key 'n_split' (value 3). Fix: did you mean 'n_splits'?" in out
    assert "config.yaml, field 'patching.target_mpp': -1 is not allowed. Fix: use a number > 0" in out
    assert len(out.splitlines()) < 25 and "Failed validating" not in out, out
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


def test_readme_unlock_commands_work_for_a_users_cohort(tmp_path, tiny_cohort):
    """README's resume steps: `--unlock` parses the workflow, so it needs the run's --configfile (without it
    Snakemake reads the demo config, whose sheets a user's working directory lacks)."""
    import shlex

    commands = re.findall(r"([^\s`]*snakemake\b[^`\n]*--unlock[^`\n]*)", (REPO / "README.md").read_text())
    assert commands and all("--configfile my-cohort.yaml" in c for c in commands), commands
    config = cohort_config(tiny_cohort, tmp_path)
    args = [str(config) if a == "my-cohort.yaml" else a for a in shlex.split(commands[-1])[1:]]
    proc = run_snakemake(tmp_path, *args)
    assert "Unlocked working directory" in proc.stdout + proc.stderr
