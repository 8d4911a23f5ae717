"""tessera.remote: a cohort that remote jobs cannot read is stopped before anything is submitted."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from tessera.errors import InputError
from tessera.remote import check_remote_inputs, tracked_files


@pytest.fixture
def cohort(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cohort").mkdir()
    for name in ("slides.tsv", "clinical.tsv", "genomics.tsv"):
        (tmp_path / "cohort" / name).write_text("x\n")
    subprocess.run(["git", "init", "-q"], check=True)
    return ["cohort/slides.tsv", "cohort/clinical.tsv", "cohort/genomics.tsv"]


def _slides(*paths: str) -> pd.DataFrame:
    return pd.DataFrame({"path": list(paths), "line": range(2, 2 + len(paths))})


def _check(cohort, slides: pd.DataFrame, genomics: pd.DataFrame | None = None) -> None:
    genomics = genomics if genomics is not None else pd.DataFrame({"vcf": [], "bam": [], "line": []})
    check_remote_inputs(cohort, tracked_files(), [(slides, "path", cohort[0]), (genomics, "vcf", cohort[2]),
                                                  (genomics, "bam", cohort[2])])


def test_tracked_sheets_and_s3_slides_pass(cohort):
    subprocess.run(["git", "add", *cohort], check=True)
    _check(cohort, _slides("s3://bucket/a.svs", "s3://bucket/b.tiff"),
           pd.DataFrame({"vcf": ["s3://b/v.vcf.gz", ""], "bam": ["", "s3://b/p.bam"], "line": [2, 3]}))


def test_untracked_sheets_and_local_slides_are_each_named(cohort):
    subprocess.run(["git", "add", cohort[0]], check=True)
    with pytest.raises(InputError) as err:
        _check(cohort, _slides("s3://bucket/a.svs", "cohort/slides/b.tiff"),
               pd.DataFrame({"vcf": ["cohort/variants.vcf.gz"], "bam": [""], "line": [4]}))
    message = str(err.value)
    assert "cohort/clinical.tsv: the sheet is not tracked by git" in message
    assert "git add cohort/genomics.tsv" in message
    assert "cohort/slides.tsv, line 3, field 'path': 'cohort/slides/b.tiff' is not an s3:// URI" in message
    assert "cohort/slides.tsv: the sheet" not in message
    assert "cohort/genomics.tsv, line 4, field 'vcf': 'cohort/variants.vcf.gz' is not an s3:// URI" in message
    assert "field 'bam'" not in message  # empty cells are fine


def test_outside_a_git_work_tree_nothing_is_shipped(cohort, tmp_path):
    subprocess.run(["rm", "-rf", str(tmp_path / ".git")], check=True)
    assert tracked_files() is None
    with pytest.raises(InputError, match="3 problem"):
        _check(cohort, _slides("s3://bucket/a.svs"))


def test_many_local_slides_are_summarised(cohort):
    subprocess.run(["git", "add", *cohort], check=True)
    with pytest.raises(InputError, match=r"\.\.\. and 7 more local paths"):
        _check(cohort, _slides(*[f"s{i}.svs" for i in range(12)]))
