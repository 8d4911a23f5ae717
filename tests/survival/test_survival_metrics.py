"""Our evaluation returns exactly scikit-survival's numbers, and its guarded grids avoid sksurv's range errors."""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from sksurv.compare import compare_survival
from sksurv.datasets import load_gbsg2
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.preprocessing import OneHotEncoder

from tessera.survival import metrics as M
from tessera.survival.cv import Fold
from tessera.survival.data import make_y
from tessera.survival.evaluation import FoldResult, _metric_set, evaluate, time_frame
from tessera.survival.settings import EvalSettings
from tessera.survival.tabular import TabularModel


@pytest.fixture(scope="module")
def gbsg2_split():
    X, y = load_gbsg2()
    X = OneHotEncoder().fit_transform(X)
    X.columns = [f"clinical__{c}" for c in X.columns]
    y = make_y(y["time"], y["cens"])
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=1)
    model = TabularModel("cox_ridge", {"alpha": 0.1}).fit(Xtr, ytr)
    return ytr, yte, model.predict_risk(Xte), model, Xte


def test_metrics_equal_scikit_survival(gbsg2_split):
    ytr, yte, risk, model, Xte = gbsg2_split
    fold = Fold(0, 0, np.arange(len(ytr)), np.arange(len(ytr), len(ytr) + len(yte)))
    y_all = np.concatenate([ytr, yte])
    frame = time_frame(y_all, [fold], EvalSettings(grid_points=10))
    tau = M.ipcw_limit(ytr)
    surv = model.predict_survival(Xte, frame.surv_times)
    ours = _metric_set(ytr, yte, risk, surv, frame, tau, classifier=False)

    times = M.fold_grid(frame.grid, yte, tau)
    assert len(times) >= 5
    y_t = M.truncate(yte, tau)
    assert ours["c_harrell"] == concordance_index_censored(yte["event"], yte["time"], risk)[0]
    assert ours["c_uno"] == concordance_index_ipcw(ytr, yte, risk, tau=tau)[0]
    assert ours["td_auc_mean"] == cumulative_dynamic_auc(ytr, y_t, risk, times)[1]
    fns = model.pipeline_.predict_survival_function(Xte)
    direct = np.vstack([fn(times) for fn in fns])
    assert ours["ibs"] == pytest.approx(integrated_brier_score(ytr, y_t, direct, times), abs=1e-12)

    groups = (risk > np.median(risk)).astype(int)
    assert M.logrank(yte, groups) == pytest.approx(compare_survival(yte, groups)[:2])
    km = M.kaplan_meier(yte)
    t, s, ci = kaplan_meier_estimator(yte["event"], yte["time"], conf_type="log-log")
    assert np.array_equal(km["survival"], s) and np.array_equal(km["lower"], ci[0])


def test_guarded_evaluation_works_where_direct_calls_fail():
    """Test follow-up beyond the training follow-up, and a training set whose last time is censored
    (censoring survival 0 there): scikit-survival raises on the naive call, our guarded one does not."""
    rng = np.random.default_rng(0)
    ytr = make_y(np.r_[rng.uniform(10, 500, 30), 520.0], np.r_[rng.random(30) < 0.6, False])
    yte = make_y(np.r_[rng.uniform(10, 500, 15), 700.0, 800.0], np.r_[rng.random(15) < 0.6, True, True])
    risk = -yte["time"] + rng.normal(0, 50, len(yte))
    naive_times = np.quantile(yte["time"][yte["event"]], [0.2, 0.5, 0.8, 0.95])
    with pytest.raises(ValueError):
        cumulative_dynamic_auc(ytr, yte, risk, naive_times)
    with pytest.raises(ValueError):
        concordance_index_ipcw(ytr, yte, risk)
    tau = M.ipcw_limit(ytr)
    assert tau < 520.0  # G drops to zero at the last (censored) training time
    grid = M.time_grid(np.concatenate([ytr, yte]), 10, (0.1, 0.95), upper=tau)
    times = M.fold_grid(grid, yte, tau)
    assert len(times) >= 3 and times.max() < tau
    auc, mean_auc = M.td_auc(ytr, yte, risk, times, tau)
    assert np.isfinite(auc).all() and 0.5 < mean_auc <= 1
    assert 0.5 < M.uno_c(ytr, yte, risk, tau) <= 1


def _fold_results(y, seed=0):
    rng = np.random.default_rng(seed)
    folds = [Fold(0, k, np.setdiff1d(np.arange(len(y)), idx), idx) for k, idx in
             enumerate(np.array_split(rng.permutation(len(y)), 4))]
    for f in folds:
        f.test.sort()
    risk = -np.log(y["time"]) + rng.normal(0, 0.7, len(y))
    return folds, [FoldResult(f, risk[f.test], None, np.array([np.median(risk[f.train])]), {}) for f in folds], risk


def test_pooled_metrics_and_bootstrap():
    rng = np.random.default_rng(1)
    y = make_y(rng.exponential(500, 80) + 1, rng.random(80) < 0.7)
    folds, results, risk = _fold_results(y)
    settings = EvalSettings(n_bootstrap=100, grid_points=8)
    frame = time_frame(y, folds, settings)
    metrics, curves = evaluate(y, results, frame, settings, classifier=False)
    pooled = metrics["pooled"]["c_harrell"]
    assert pooled["mean"] == concordance_index_censored(y["event"], y["time"], risk)[0]
    lo, hi = pooled["ci95"]
    assert lo < pooled["mean"] < hi and pooled["n_bootstrap"] == 100
    assert metrics["pooled"]["ibs"] is None  # no survival predictions given
    assert len(metrics["per_fold"]) == 4 and metrics["folds"]["c_harrell"]["n"] == 4
    # risk groups use each fold's training threshold
    groups = np.zeros(len(y), int)
    for r in results:
        groups[r.fold.test] = (r.risk > r.thresholds[0]) + 1
    assert metrics["logrank"]["per_repeat"][0]["p"] == pytest.approx(compare_survival(y, groups)[1])
    again, _ = evaluate(y, results, frame, settings, classifier=False)
    assert again == metrics  # the bootstrap is seeded


def test_a_fold_with_one_risk_for_every_patient_is_flagged():
    """A fold model without contrast (C = 0.5 by ties) is named in metrics.json, not averaged in silently."""
    rng = np.random.default_rng(3)
    y = make_y(rng.exponential(500, 80) + 1, rng.random(80) < 0.7)
    folds, results, _ = _fold_results(y)
    results[2].risk = np.full(len(results[2].risk), 0.25)
    settings = EvalSettings(n_bootstrap=10, grid_points=8)
    metrics, _ = evaluate(y, results, time_frame(y, folds, settings), settings, classifier=False)
    assert [p["constant_risk"] for p in metrics["per_fold"]] == [False, False, True, False]
    assert metrics["constant_risk_folds"] == [{"repeat": 0, "fold": 2}]
    assert any("same risk" in n for n in metrics["notes"])
    assert M.constant_risk(np.zeros(5)) and not M.constant_risk(np.array([0.0, 1e-6]))


def test_calibration_table_uses_kaplan_meier_per_group():
    rng = np.random.default_rng(2)
    y = make_y(rng.exponential(400, 60) + 1, rng.random(60) < 0.8)
    pred = rng.uniform(0, 1, 60)
    rows = M.calibration_table(y, pred, 300.0, 3)
    order = np.argsort(pred, kind="stable")
    for row, idx in zip(rows, np.array_split(order, 3), strict=True):
        t, s = kaplan_meier_estimator(y["event"][idx], y["time"][idx])
        assert row["observed"] == pytest.approx(s[t <= 300][-1])
        assert row["predicted"] == pytest.approx(pred[idx].mean())
