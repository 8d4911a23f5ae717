"""The PORPOISE-style model (and the HIPT kinds trained by its loop): architecture, loss, per-fold bins, no
test-outcome leak, determinism, saving."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from tessera.survival.bags import BagStore
from tessera.survival.cohort_table import build_cohort_table
from tessera.survival.cv import outer_folds
from tessera.survival.data import SurvivalData, make_y
from tessera.survival.evaluation import time_frame
from tessera.survival.explain import attribution_summary
from tessera.survival.experiment import run_fold
from tessera.survival.hipt import HIPTGPModel
from tessera.survival.porpoise import (
    AttentionMIL,
    BilinearFusion,
    PorpoiseModel,
    PorpoiseNet,
    discretize,
    make_bins,
    nll_loss,
)
from tessera.survival.settings import CVSettings, EvalSettings, HPOSettings, ModelSpec

from survival_fabricate import cohort_files, one_thread  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
FAST = {"epochs": 4, "lr": 1e-3, "micro_batch": 8, "batch_size": 16}


@pytest.fixture(scope="module")
def fabricated(cohort_files):
    cohort = build_cohort_table(cohort_files["clinical"], modalities=["clinical", "pathology", "genomics"],
                                slide_embeddings=cohort_files["slide_embeddings"], qc_tsv=cohort_files["qc"],
                                genomic_embeddings=cohort_files["genomic_embeddings"])
    t = cohort.table
    data = SurvivalData(t["patient_id"].to_numpy(), t.drop(columns=["patient_id", "time", "event"]),
                        make_y(t["time"], t["event"]))
    bags = BagStore(cohort_files["feature_index"], cohort_files["qc"], workdir=cohort_files["root"])
    return data.select(["genomics"]), bags


def test_attention_mil_masks_padding_and_pools_empty_bags_to_zero():
    torch.manual_seed(0)
    mil = AttentionMIL(16).eval()
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    h, w = mil(x, mask)
    assert h.shape == (3, 256) and w.shape == (3, 5)
    assert torch.allclose(w.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    assert (w[0, 3:] == 0).all() and (w[2] == 0).all()
    # padding content cannot change the result
    x2 = x.clone()
    x2[0, 3:] = 100.0
    assert torch.equal(mil(x2, mask)[0][0], h[0])
    # a patient with no instance pools to zeros before rho
    assert torch.allclose(h[2], mil.rho(torch.zeros(1, 512))[0])


def test_bilinear_fusion_is_a_33_by_33_kronecker_product():
    fusion = BilinearFusion()
    assert fusion.encode[0].in_features == 33 * 33 == 1089
    assert fusion.h1[0].out_features == fusion.h2[0].out_features == 32
    assert fusion.z1.in_features == 512  # each side gated by both embeddings
    net = PorpoiseNet(384, 10, "bilinear", n_bins=4)
    logits, attn = net(torch.randn(2, 7, 384), torch.ones(2, 7, dtype=torch.bool), torch.randn(2, 10))
    assert logits.shape == (2, 4) and attn.shape == (2, 7)
    assert PorpoiseNet(0, 10).path is None and PorpoiseNet(384, 0).tab is None


def test_nll_loss_matches_its_definition():
    logits = torch.tensor([[0.3, -1.0, 0.5, 2.0], [-0.2, 0.1, 0.0, -1.5]])
    h = torch.sigmoid(logits)
    s = torch.cumprod(1 - h, dim=1)
    s_pad = torch.cat([torch.ones(2, 1), s], dim=1)
    bins, event = torch.tensor([2, 1]), torch.tensor([1, 0])
    uncens = -torch.log(s_pad[0, 2]) - torch.log(h[0, 2])  # event in bin 2
    cens = -torch.log(s_pad[1, 2])  # censored in bin 1: survived through bin 1
    expected = torch.stack([uncens, cens])
    torch.testing.assert_close(nll_loss(logits, bins, event, alpha=0.0), expected)
    torch.testing.assert_close(nll_loss(logits, bins, event, alpha=0.4),
                               0.6 * expected + 0.4 * torch.stack([uncens, torch.tensor(0.0)]))


def test_bins_come_from_the_training_patients_uncensored_times(fabricated):
    data, bags = fabricated
    folds = outer_folds(data.y, 3, 1, 0)
    cohort_cuts = make_bins(data.y["time"], data.y["event"], 4)
    for fold in folds:
        train = data.subset(fold.train)
        model = PorpoiseModel(FAST, bags=bags, device=CPU).fit(train.X, train.y, train.patient_id)
        expected = np.quantile(train.y["time"][train.y["event"]], [0.25, 0.5, 0.75])
        np.testing.assert_array_equal(model.cuts_, expected)
        assert not np.array_equal(model.cuts_, cohort_cuts)
    assert list(discretize(np.array([1.0, 5.0, 10.0]), np.array([5.0, 8.0]))) == [0, 1, 2]


@pytest.mark.parametrize("spec", [
    ModelSpec("deep", "porpoise", params={**FAST, "early_stopping": {"validation_fraction": 0.25, "patience": 2}}),
    ModelSpec("hipt", "hipt_gp", params={**FAST, "early_stopping": {"validation_fraction": 0.25, "patience": 2}},
              encoder="hipt4k"),
    ModelSpec("coxnet", "coxnet", search={"alpha": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
              n_trials=3),
    ModelSpec("logistic", "logistic"),
    ModelSpec("rf", "rf_classifier", params={"n_estimators": 50}),
], ids=["porpoise-early-stopping", "hipt_gp-early-stopping", "coxnet-hpo", "logistic-median-horizon",
        "rf-classifier-median-horizon"])
def test_test_fold_outcomes_never_reach_the_fitted_model(fabricated, spec, tmp_path):
    """Scrambling the reporting fold's times and events changes nothing the fold model predicts:
    bins, preprocessing, tuning, early stopping and the classifiers' horizon (``horizon_days: null``)
    used training patients only. The time frame is built from each data set, as run_cv does."""
    data, bags = fabricated
    fold = outer_folds(data.y, 4, 1, 0)[1]
    rng = np.random.default_rng(9)
    y2 = data.y.copy()
    y2["time"][fold.test] = rng.uniform(1, 5000, len(fold.test))
    y2["event"][fold.test] = ~y2["event"][fold.test]
    scrambled = SurvivalData(data.patient_id, data.X, y2)
    runs = []
    for i, d in enumerate((data, scrambled)):
        frame = time_frame(d.y, [fold], EvalSettings(horizon_days=None))
        runs.append(run_fold(spec, d, fold, frame, CVSettings(), HPOSettings(str(tmp_path / str(i))), "k", 2,
                             bags=bags, device=CPU))
    assert np.array_equal(runs[0].risk, runs[1].risk)
    assert runs[0].params == runs[1].params


@pytest.mark.parametrize("learner, params", [(PorpoiseModel, FAST), (HIPTGPModel, {**FAST, "epochs": 2})],
                         ids=["porpoise", "hipt_gp"])
def test_cpu_training_is_bit_identical_for_a_seed(fabricated, learner, params):
    data, bags = fabricated
    fits = [learner(params, bags=bags, seed=s, device=CPU).fit(data.X, data.y, data.patient_id) for s in (5, 5, 6)]
    a, b, c = (f.net_.state_dict() for f in fits)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert np.array_equal(fits[0].predict_risk(data.X, data.patient_id), fits[1].predict_risk(data.X, data.patient_id))


def test_survival_curve_risk_attention_ig_and_safetensors(fabricated, tmp_path):
    data, bags = fabricated
    model = PorpoiseModel(FAST, bags=bags, device=CPU).fit(data.X, data.y, data.patient_id)
    times = np.array([0.0, *model.cuts_, model.max_time_])
    surv = model.predict_survival(data.X, times, data.patient_id)
    s_bins = model.bin_survival(data.X, data.patient_id)
    np.testing.assert_allclose(surv[:, 0], 1.0)
    np.testing.assert_allclose(surv[:, 1:], s_bins, rtol=1e-6)
    assert (np.diff(surv, axis=1) <= 1e-12).all()  # survival never increases
    np.testing.assert_allclose(model.predict_risk(data.X, data.patient_id), -s_bins.sum(1), rtol=1e-5)

    att = model.attention(data.X.iloc[:5], data.patient_id[:5])
    assert set(att.columns) >= {"patient_id", "slide_id", "instance", "x", "y", "attention"}
    np.testing.assert_allclose(att.groupby("patient_id")["attention"].sum(), 1.0, rtol=1e-5)
    first = bags.get(data.patient_id[0])
    rows = att[att["patient_id"] == data.patient_id[0]]
    assert len(rows) == len(first) and np.array_equal(rows[["x", "y"]].to_numpy(), first.coords)

    attr, delta = model.integrated_gradients(data.X.iloc[:4], data.patient_id[:4], n_steps=64)
    assert len(attr) == 4 * data.X.shape[1] and delta < 0.05

    model.save(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["tessera"])
        assert meta["cuts"] == model.cuts_.tolist() and meta["path_dim"] == bags.dim
        weights = {k: f.get_tensor(k) for k in f.keys()}
    state = model.net_.state_dict()
    assert all(torch.equal(weights[f"net.{k}"], v) for k, v in state.items())
    assert "preprocess.scale.mean" in weights


def test_integrated_gradients_find_the_feature_that_drives_risk():
    """Only input 2 sets the hazard: its attributions dominate, with the sign of its effect."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 5)), columns=[f"genomics__g{i}" for i in range(5)])
    t = rng.exponential(1000 * np.exp(-1.5 * X["genomics__g2"].to_numpy()))
    y = make_y(np.maximum(t, 1), rng.random(120) < 0.9)
    ids = np.array([f"P{i}" for i in range(120)])
    model = PorpoiseModel({"epochs": 30, "lr": 1e-3, "batch_size": 16}, device=CPU).fit(X, y, ids)
    attr, delta = model.integrated_gradients(X, ids)
    summary = attribution_summary(attr.assign(repeat=0, fold=0))
    assert summary["feature"].iloc[0] == "genomics__g2" and delta < 0.05
    assert summary["mean_abs_attribution"].iloc[0] > 2 * summary["mean_abs_attribution"].iloc[1]
    assert summary["value_attribution_corr"].iloc[0] > 0.8  # higher value, higher risk


def test_tabular_only_model_without_bags(fabricated):
    data, _ = fabricated
    model = PorpoiseModel({**FAST, "fusion": "concat"}, bags=None, device=CPU).fit(data.X, data.y, data.patient_id)
    assert model.net_.path is None and model.attention(data.X, data.patient_id).empty
    assert np.isfinite(model.predict_risk(data.X, data.patient_id)).all()


def test_empty_bag_patient_gets_a_prediction(cohort_files):
    """A patient whose slides all failed QC has an empty bag (impute policy): pooled to zeros, still predicted."""
    bags = BagStore(cohort_files["feature_index"], cohort_files["qc"], workdir=cohort_files["root"])
    assert len(bags.get("P003")) == 0
    X = pd.DataFrame(index=range(4))
    y = make_y([100.0, 200.0, 300.0, 400.0], [1, 1, 1, 1])
    model = PorpoiseModel({**FAST, "n_bins": 2}, bags=bags, device=CPU).fit(X, y, np.array(["P001", "P002", "P004", "P005"]))
    assert np.isfinite(model.predict_risk(X.iloc[:1], np.array(["P003"]))).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_is_reproducible(fabricated):
    data, bags = fabricated
    fits = [PorpoiseModel(FAST, bags=bags, seed=1, device=torch.device("cuda")).fit(data.X, data.y, data.patient_id)
            for _ in range(2)]
    r = [f.predict_risk(data.X, data.patient_id) for f in fits]
    assert np.array_equal(r[0], r[1])
