"""The cohort table from the upstream file formats: encoding, aggregation, missing-modality policy, records."""

import numpy as np
import pandas as pd
import pytest

from tessera.errors import InputError
from tessera.sheets import read_clinical, read_genomics_sheet, read_slide_sheet
from tessera.survival.cohort_table import build_cohort_table, check_cohort_columns, encode_clinical, write_cohort_table
from tessera.survival.data import load_cohort_table

from survival_fabricate import cohort_files  # noqa: F401 - pytest fixture

ALL = ["clinical", "pathology", "genomics"]


def _build(files, missing="drop", modalities=ALL, **kw):
    return build_cohort_table(
        files["clinical"], modalities=modalities, missing=missing, ordinal={"stage": ["I", "II", "III", "IV"]},
        slides=read_slide_sheet(files["slides"]), qc_tsv=files["qc"], slide_embeddings=files["slide_embeddings"],
        genomics=read_genomics_sheet(files["genomics"]), genomic_embeddings=files["genomic_embeddings"], **kw)


def test_drop_policy_records_who_was_dropped_and_why(cohort_files, tmp_path):
    cohort = _build(cohort_files)
    ex = cohort.excluded.set_index("patient_id")
    # P003's only slide failed QC; P060 has no genomic data
    assert ex.loc["P003", "modality"] == "pathology"
    assert ex.loc["P003", "reason"] == "all 1 slide(s) failed QC: P003-S1: no tissue found"
    assert ex.loc["P060", "modality"] == "genomics"
    assert ex.loc["P060", "reason"] == "no VCF or BAM in the genomics sheet"
    assert set(cohort.table["patient_id"]) == {f"P{i:03d}" for i in range(1, 61)} - {"P003", "P060"}
    assert cohort.summary["n_patients"] == 58 and cohort.summary["n_excluded"] == 2
    # column naming: {modality}__{feature}
    cols = cohort.table.columns
    assert {"clinical__age", "clinical__sex=M", "clinical__stage"} <= set(cols)
    assert sum(c.startswith("pathology__f") for c in cols) == 16
    assert sum(c.startswith("genomics__GENEA_e") for c in cols) == 8
    write_cohort_table(cohort, tmp_path / "t.parquet", tmp_path / "x.tsv", tmp_path / "s.json")
    data = load_cohort_table(tmp_path / "t.parquet")
    assert len(data) == 58 and data.modalities == ALL


def test_patient_pathology_is_the_mean_of_slides_that_passed_qc(cohort_files):
    emb = pd.read_parquet(cohort_files["slide_embeddings"]).set_index("slide_id")
    table = _build(cohort_files).table.set_index("patient_id")
    f = [c for c in emb.columns if c.startswith("f")]
    # P002 has two slides; the second failed QC (and has no embedding row)
    np.testing.assert_allclose(table.loc["P002", [f"pathology__{c}" for c in f]], emb.loc["P002-S1", f], rtol=1e-6)
    two = emb[emb["patient_id"] == "P008"]
    assert len(two) == 2
    np.testing.assert_allclose(table.loc["P008", [f"pathology__{c}" for c in f]], two[f].mean(), rtol=1e-6)


def test_impute_policy_keeps_patients_with_a_missing_indicator(cohort_files):
    cohort = _build(cohort_files, missing="impute")
    t = cohort.table.set_index("patient_id")
    assert len(t) == 60 and cohort.excluded.empty
    assert t.loc["P003", "pathology__missing"] == 1 and t.loc["P004", "pathology__missing"] == 0
    assert t.loc["P060", "genomics__missing"] == 1 and np.isnan(t.loc["P060", "genomics__GENEA_e0000"])
    assert cohort.summary["imputed_modality"] == {"clinical": 0, "pathology": 1, "genomics": 1}


def test_clinical_encoding(tmp_path):
    (tmp_path / "c.tsv").write_text(
        "patient_id\ttime\tevent\tage\tstage\tsite\tgrade\n"
        "A\t10\t1\t61\tII\tlung\tG1\n"
        "B\t20\t0\tNA\tIV\tcolon\t\n"
        "C\t30\t1\t70\t\tlung\tG3\n")
    enc = encode_clinical(read_clinical(tmp_path / "c.tsv"), ordinal={"stage": ["I", "II", "III", "IV"]})
    assert list(enc.columns) == ["clinical__age", "clinical__stage", "clinical__site=lung", "clinical__grade=G3"]
    assert enc.loc["A"].tolist() == [61.0, 1.0, 1.0, 0.0]
    assert np.isnan(enc.loc["B", "clinical__age"]) and enc.loc["B", "clinical__stage"] == 3.0
    assert np.isnan(enc.loc["B", "clinical__grade=G3"]) and np.isnan(enc.loc["C", "clinical__stage"])
    with pytest.raises(InputError, match="outside its ordinal levels"):
        encode_clinical(read_clinical(tmp_path / "c.tsv"), ordinal={"stage": ["I", "II"]})
    with pytest.raises(InputError, match="covariate\\(s\\) weight not in the clinical table"):
        encode_clinical(read_clinical(tmp_path / "c.tsv"), covariates=["age", "weight"])


def test_an_ordinal_column_the_clinical_table_lacks_is_an_error(tmp_path):
    """It was ignored silently (the column, if spelt differently, was one-hot encoded instead). The planning
    check (rules/survival.smk) and the cohort job raise the same error naming the file, key and fix."""
    path = tmp_path / "c.tsv"
    path.write_text("patient_id\ttime\tevent\tage\tStage\nA\t10\t1\t61\tII\nB\t20\t0\t70\tIV\n")
    clinical = read_clinical(path)
    cohort = {"modalities": ["clinical"], "ordinal": {"stage": ["I", "II", "III", "IV"]}}
    for check in (lambda: check_cohort_columns(cohort, clinical, str(path)),
                  lambda: encode_clinical(clinical, ordinal=cohort["ordinal"], source=str(path))):
        with pytest.raises(InputError) as err:
            check()
        message = str(err.value)
        assert str(path) in message and "survival.cohort.ordinal.stage" in message
        assert "ordinal column(s) stage not in the clinical table (its covariates: age, Stage)" in message
        assert "Fix: correct the column name, or switch it off with 'survival.cohort.ordinal: {stage: null}'" in message
    check_cohort_columns({**cohort, "modalities": ["genomics"]}, clinical, str(path))  # clinical unused: fine
    enc = encode_clinical(clinical, ordinal={"stage": None, "Stage": ["I", "II", "III", "IV"]})
    assert enc["clinical__Stage"].tolist() == [1.0, 3.0]


def test_bad_cohort_inputs(cohort_files, tmp_path):
    with pytest.raises(InputError, match="needs slide embeddings"):
        build_cohort_table(cohort_files["clinical"], modalities=["clinical", "pathology"])
    with pytest.raises(InputError, match="non-empty subset"):
        build_cohort_table(cohort_files["clinical"], modalities=["radiology"])
    (tmp_path / "bare.tsv").write_text("patient_id\ttime\tevent\nA\t10\t1\nB\t5\t0\n")
    with pytest.raises(InputError, match="clinical modality has no covariates"):
        build_cohort_table(tmp_path / "bare.tsv", modalities=["clinical"])
    (tmp_path / "neg.tsv").write_text("patient_id\ttime\tevent\tage\nA\t-3\t1\t50\nB\t5\t2\t60\n")
    with pytest.raises(InputError, match="not a positive number") as err:
        build_cohort_table(tmp_path / "neg.tsv", modalities=["clinical"])
    assert "not 0 or 1" in str(err.value)  # every problem of the table reported at once
    pd.DataFrame({"slide_id": ["x"], "patient_id": ["P001"], "emb": [1.0]}).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(InputError, match="no f0000"):
        build_cohort_table(cohort_files["clinical"], modalities=["pathology"], slide_embeddings=tmp_path / "e.parquet")
