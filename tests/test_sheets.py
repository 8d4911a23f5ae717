"""Sheet validation: every bad input names the file, line and field, and says how to fix it."""

import pandas as pd
import pytest

from tessera.errors import InputError
from tessera.plan import plan_cohort
from tessera.sheets import check_patients_known, read_clinical, read_genomics_sheet, read_slide_sheet


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_slide_sheet_parses_and_resolves_relative_paths(tmp_path):
    sheet = write(tmp_path, "slides.tsv", "slide_id\tpatient_id\tpath\tmpp\nS1\tP1\tslides/a.svs\t\nS2\tP1\ts3://b/k.svs\t0.25\n")
    df = read_slide_sheet(sheet)
    assert df["path"].tolist() == [str(tmp_path / "slides" / "a.svs"), "s3://b/k.svs"]
    assert pd.isna(df.loc[0, "mpp"]) and df.loc[1, "mpp"] == 0.25
    assert df["line"].tolist() == [2, 3]


def test_mpp_column_is_optional(tmp_path):
    df = read_slide_sheet(write(tmp_path, "s.tsv", "slide_id\tpatient_id\tpath\nS1\tP1\t/x.svs\n"))
    assert df["mpp"].isna().all()


def test_duplicate_slide_id_names_both_lines(tmp_path):
    sheet = write(tmp_path, "s.tsv", "slide_id\tpatient_id\tpath\nS1\tP1\ta\nS2\tP1\tb\nS1\tP2\tc\n")
    with pytest.raises(InputError) as err:
        read_slide_sheet(sheet)
    msg = str(err.value)
    assert "line 4" in msg and "field 'slide_id'" in msg and "duplicate slide_id 'S1' (first on line 2)" in msg
    assert str(sheet) in msg and "Fix:" in msg


def test_malformed_sheet_ragged_line(tmp_path):
    sheet = write(tmp_path, "s.tsv", "slide_id\tpatient_id\tpath\nS1\tP1\ta\nS2\tP1\tb\textra\tmore\n")
    with pytest.raises(InputError, match=r"malformed slide sheet.*Fix: every line must have the same number"):
        read_slide_sheet(sheet)


def test_missing_columns_listed(tmp_path):
    sheet = write(tmp_path, "s.tsv", "slide\tpatient_id\nS1\tP1\n")
    with pytest.raises(InputError, match=r"line 1: slide sheet lacks column\(s\) slide_id, path"):
        read_slide_sheet(sheet)


def test_missing_and_empty_sheets(tmp_path):
    with pytest.raises(InputError, match="slide sheet not found"):
        read_slide_sheet(tmp_path / "nope.tsv")
    with pytest.raises(InputError, match="has no rows"):
        read_slide_sheet(write(tmp_path, "s.tsv", "slide_id\tpatient_id\tpath\n"))


def test_bad_ids_and_mpp_reported_together(tmp_path):
    sheet = write(tmp_path, "s.tsv", "slide_id\tpatient_id\tpath\tmpp\nS 1\tP1\ta\t\nS2\tP1\t\t-1\nS3\tP/1\tc\tx\n")
    with pytest.raises(InputError) as err:
        read_slide_sheet(sheet)
    msg = str(err.value)
    assert "5 problem(s)" in msg
    assert "line 4, field 'mpp': 'x' is not a positive number" in msg
    assert "line 2, field 'slide_id': 'S 1' is not a valid ID" in msg
    assert "line 3, field 'path': no slide path given" in msg
    assert "line 3, field 'mpp': '-1' is not a positive number" in msg
    assert "line 4, field 'patient_id': 'P/1' is not a valid ID" in msg


def test_clinical_checks_time_and_event(tmp_path):
    table = write(tmp_path, "c.tsv", "patient_id\ttime\tevent\tage\nP1\t10\t1\t50\nP2\t0\t0\t60\nP3\t5\tyes\t70\n")
    with pytest.raises(InputError) as err:
        read_clinical(table)
    msg = str(err.value)
    assert "line 3, field 'time': '0' is not a positive number" in msg
    assert "line 4, field 'event': 'yes' is not 0 or 1" in msg


def test_clinical_ok(tmp_path):
    df = read_clinical(write(tmp_path, "c.tsv", "patient_id\ttime\tevent\tstage\nP1\t10.5\t1\tII\nP2\t3\t0\tI\n"))
    assert df["time"].tolist() == [10.5, 3.0] and df["event"].tolist() == [1, 0] and df["stage"].tolist() == ["II", "I"]


def test_genomics_sheet_needs_a_file_and_sample(tmp_path):
    sheet = write(tmp_path, "g.tsv", "patient_id\tvcf\tvcf_sample\tbam\nP1\tv.vcf.gz\t\t\nP2\t\t\t\nP3\t\t\tp3.bam\n")
    with pytest.raises(InputError) as err:
        read_genomics_sheet(sheet)
    msg = str(err.value)
    assert "line 2, field 'vcf_sample': a VCF is given without its sample name" in msg
    assert "line 3, field 'vcf': neither a VCF nor a BAM is given" in msg


def test_slide_of_unknown_patient(tmp_path):
    slides = read_slide_sheet(write(tmp_path, "s.tsv", "slide_id\tpatient_id\tpath\nS1\tP1\ta\nS2\tP9\tb\n"))
    clinical = read_clinical(write(tmp_path, "c.tsv", "patient_id\ttime\tevent\nP1\t10\t1\n"))
    with pytest.raises(InputError, match=r"line 3, field 'patient_id': patient 'P9' is not in the clinical table"):
        check_patients_known(slides, tmp_path / "s.tsv", clinical, tmp_path / "c.tsv")


def test_plan_groups_slides_of_a_patient_in_one_shard(tiny_cohort):
    config = {k: str(tiny_cohort / f) for k, f in
              [("slides", "slides.tsv"), ("clinical", "clinical.tsv"), ("genomics", "genomics.tsv")]}
    plan = plan_cohort({**config, "n_shards": 4})
    shard_of_patient = {}
    for shard, slides in plan.slides_by_shard.items():
        for rec in slides:
            assert shard_of_patient.setdefault(rec["patient_id"], shard) == shard
            assert rec["mpp"] is None
    assert sum(len(v) for v in plan.slides_by_shard.values()) == len(plan.slides)
    assert sorted(p for ps in plan.patients_by_shard.values() for p in ps) == sorted(plan.genomics["patient_id"])
