"""End to end in the library: a planted signal in fabricated upstream files is recovered out of fold, and a
model directory holds what downstream stages and users read."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tessera.survival.bags import BagStore
from tessera.survival.cohort_table import build_cohort_table
from tessera.survival.data import SurvivalData, make_y
from tessera.survival.run import run_model, summarise
from tessera.survival.settings import CVSettings, EvalSettings, HPOSettings, ModelSpec

from survival_fabricate import cohort_files, one_thread  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.usefixtures("one_thread")

OOF_COLUMNS = ["patient_id", "fold", "repeat", "risk", "time", "event"]


@pytest.fixture(scope="module")
def planted(cohort_files):
    cohort = build_cohort_table(cohort_files["clinical"], modalities=["clinical", "pathology", "genomics"],
                                ordinal={"stage": ["I", "II", "III", "IV"]}, qc_tsv=cohort_files["qc"],
                                slide_embeddings=cohort_files["slide_embeddings"],
                                genomic_embeddings=cohort_files["genomic_embeddings"])
    t = cohort.table
    data = SurvivalData(t["patient_id"].to_numpy(), t.drop(columns=["patient_id", "time", "event"]),
                        make_y(t["time"], t["event"]))
    bags = BagStore(cohort_files["feature_index"], cohort_files["qc"], workdir=cohort_files["root"])
    return data, bags


def test_coxnet_recovers_the_planted_signal(planted, tmp_path):
    data, _ = planted
    spec = ModelSpec.from_config({"name": "coxnet", "kind": "coxnet", "params": {"l1_ratio": 0.5}, "n_trials": 6,
                                  "search": {"alpha": {"type": "float", "low": 0.005, "high": 1.0, "log": True}}})
    out = tmp_path / "coxnet"
    m = run_model(spec, data, out, CVSettings(n_splits=5, n_repeats=2), EvalSettings(n_bootstrap=50),
                  HPOSettings(str(tmp_path / "hpo")))
    assert m["pooled"]["c_harrell"]["mean"] >= 0.7
    assert m["pooled"]["c_uno"]["mean"] >= 0.65 and m["pooled"]["c_harrell"]["ci95"][0] > 0.5
    assert m["logrank"]["p_median"] < 0.05
    assert m["pooled"]["ibs"]["mean"] < 0.25 and m["calibration"]

    oof = pd.read_csv(out / "oof_predictions.tsv", sep="\t")
    assert list(oof.columns[:6]) == OOF_COLUMNS
    assert (oof.groupby("repeat")["patient_id"].nunique() == len(data)).all() and len(oof) == 2 * len(data)
    assert {p.name for p in out.iterdir()} >= {
        "metrics.json", "oof_predictions.tsv", "oof_survival.tsv", "km_risk_groups.png", "td_auc.png", "brier.png",
        "calibration.png", "model.joblib", "MODEL.md", "timings.json"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final_model"]["file"] == "model.joblib" and len(saved["per_fold"]) == 10
    assert all(f["hpo"]["n_trials"] == 6 for f in saved["per_fold"])


def test_multimodal_model_recovers_the_planted_signal(planted, tmp_path):
    data, bags = planted
    spec = ModelSpec.from_config({"name": "porpoise", "kind": "porpoise", "modalities": ["genomics"],
                                  "encoder": "hipt256",
                                  "params": {"epochs": 15, "lr": 1e-3, "micro_batch": 8, "batch_size": 16}})
    out = tmp_path / "porpoise"
    m = run_model(spec, data, out, CVSettings(n_splits=3, n_repeats=1), EvalSettings(n_bootstrap=50),
                  HPOSettings(str(tmp_path / "hpo")), bags=bags, device=torch.device("cpu"), final_model=False)
    assert m["pooled"]["c_harrell"]["mean"] >= 0.6 and m["pooled"]["c_harrell"]["ci95"][0] > 0.5
    att = pd.read_parquet(out / "attention.parquet")
    assert att["patient_id"].nunique() == len(data)  # every patient explained once, by its own fold model
    attr = pd.read_csv(out / "attributions.tsv", sep="\t")
    assert set(attr["patient_id"]) == set(data.patient_id) and m["ig_max_completeness_error"] < 0.05
    assert (out / "training.png").is_file() and (out / "attribution_summary.tsv").is_file()


def test_event_by_horizon_classifier_reports_auroc(planted, tmp_path):
    data, _ = planted
    spec = ModelSpec.from_config({"name": "logit", "kind": "logistic", "params": {"C": 0.1}})
    m = run_model(spec, data, tmp_path / "logit", CVSettings(n_splits=4, n_repeats=1), EvalSettings(n_bootstrap=30),
                  HPOSettings(str(tmp_path / "hpo")), final_model=False)
    assert m["pooled"]["auroc"]["mean"] > 0.6 and m["pooled"]["ibs"] is None
    table = summarise([tmp_path / "logit" / "metrics.json"], tmp_path / "summary.tsv", tmp_path / "summary.png")
    assert table.loc[0, "auroc"] == pytest.approx(m["pooled"]["auroc"]["mean"])
    assert (tmp_path / "summary.png").stat().st_size > 1000


def test_outputs_are_deterministic(planted, tmp_path):
    data, _ = planted
    spec = ModelSpec.from_config({"name": "gbsa", "kind": "gbsa", "params": {"n_estimators": 20}})
    for run in ("a", "b"):
        run_model(spec, data, tmp_path / run, CVSettings(n_splits=3, n_repeats=1), EvalSettings(n_bootstrap=20),
                  HPOSettings(str(tmp_path / "hpo")), final_model=False)
    for name in ("metrics.json", "oof_predictions.tsv", "oof_survival.tsv", "km_risk_groups.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert np.isfinite(pd.read_csv(tmp_path / "a" / "oof_predictions.tsv", sep="\t")["risk"]).all()
