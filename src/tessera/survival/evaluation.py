"""From out-of-fold predictions to the numbers in ``metrics.json``.

Two views, both reported:

* **per fold** — each metric on each test fold, with the fold's own training outcomes as the IPCW
  reference; summarised as mean and SD over folds × repeats.
* **pooled** — each repeat's out-of-fold predictions of all patients evaluated together (the whole
  cohort as IPCW reference), averaged over repeats, with a patient-level percentile-bootstrap 95 %
  interval. Risk scales of different fold models are pooled as they are (no re-scaling), which can
  only lower a pooled C-index.

Risk groups: each test patient is assigned by the thresholds its fold model learnt on its training
patients (quantiles of their predicted risk), never by the test fold's own distribution; Kaplan–Meier
curves and the log-rank test then use the pooled groups of each repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from tessera.survival import metrics as M
from tessera.survival.cv import Fold
from tessera.survival.settings import EvalSettings
from tessera.survival.tabular import horizon_labels


@dataclass
class FoldResult:
    """What one outer fold produced. ``risk``: (n_test,); ``surv``: (n_test, n_times) or None."""

    fold: Fold
    risk: np.ndarray
    surv: np.ndarray | None
    thresholds: np.ndarray
    params: dict
    hpo: dict | None = None
    seconds: float = 0.0
    history: list[dict] | None = None
    extras: dict | None = None  # explanations of the fold model (deep model, first repeat)
    horizon: float | None = None  # days: the horizon the fold's classifier learnt (from its training part)


@dataclass
class TimeFrame:
    """Where IPCW metrics and survival predictions are valid for a CV experiment.

    ``grid``: evaluation times for td-AUC and Brier; ``surv_times``: ``grid`` plus the horizon when it
    is valid (predicted survival is stored at these); ``tau``: pooled IPCW limit (whole cohort).
    ``horizon`` (days) is where calibration and AUROC are evaluated; ``horizon_days`` is the configured
    value (None = median time), from which each fold model takes its own (:meth:`fit_horizon`).
    """

    grid: np.ndarray
    surv_times: np.ndarray
    horizon: float
    horizon_valid: bool
    tau: float
    notes: list[str] = field(default_factory=list)
    horizon_days: float | None = None

    def fit_horizon(self, y_train: np.ndarray) -> float:
        """The horizon a fold model learns (days): the configured one, or the median time of the fold's
        *training* patients, so that no test-fold outcome shapes the model's labels."""
        return resolve_horizon(y_train, self.horizon_days)


def resolve_horizon(y: np.ndarray, horizon_days: float | None) -> float:
    """The configured horizon, or the median observed time of ``y`` (days). Models take it from their
    training patients only (:meth:`TimeFrame.fit_horizon`); evaluation from the whole cohort."""
    return float(horizon_days) if horizon_days is not None else float(np.median(y["time"]))


def time_frame(y: np.ndarray, folds: list[Fold], settings: EvalSettings) -> TimeFrame:
    """Guarded grid for every fold and the pooled evaluation (see :mod:`tessera.survival.metrics`).

    Upper bound: below the pooled IPCW limit, each training fold's IPCW limit, and each training fold's
    last event time (survival functions of scikit-survival models end there at the earliest).
    """
    tau = M.ipcw_limit(y)
    upper = min(tau, y["time"].max())
    for f in folds:
        y_tr = y[f.train]
        upper = min(upper, M.ipcw_limit(y_tr), y_tr["time"][y_tr["event"]].max())
    grid = M.time_grid(y, settings.grid_points, settings.grid_quantiles, lower=y["time"].min(), upper=upper)
    horizon = resolve_horizon(y, settings.horizon_days)
    notes = []
    valid = horizon < upper
    if not valid:
        notes.append(f"horizon {horizon:g} d is beyond the guarded follow-up ({upper:g} d): no calibration")
    if len(grid) < 2:
        notes.append("fewer than 2 valid evaluation times: no integrated Brier score")
    surv_times = np.unique(np.r_[grid, [horizon] if valid else []])
    return TimeFrame(grid, surv_times, horizon, valid, tau, notes, settings.horizon_days)


def _summary(values: list) -> dict:
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def _at(surv: np.ndarray | None, surv_times: np.ndarray, times: np.ndarray) -> np.ndarray | None:
    if surv is None:
        return None
    return surv[:, np.searchsorted(surv_times, times)]


def _auroc(y: np.ndarray, risk: np.ndarray, horizon: float) -> float | None:
    known, label = horizon_labels(y, horizon)
    if len(np.unique(label[known])) < 2:
        return None
    return float(roc_auc_score(label[known], risk[known]))


def _undefined_as_none(fn, *args):
    """A metric that is undefined for this prediction set (scikit-survival raises ``ValueError``, e.g. no
    event before tau) is None rather than an error: one small fold must not stop the evaluation."""
    try:
        return fn(*args)
    except ValueError:
        return None


def _metric_set(y_ref: np.ndarray, y: np.ndarray, risk: np.ndarray, surv: np.ndarray | None, frame: TimeFrame,
                tau: float, classifier: bool) -> dict:
    """Harrell C, Uno C, td-AUC, IBS (and AUROC for classifiers) of one prediction set (None = undefined)."""
    out: dict = {"c_harrell": None, "c_uno": None, "td_auc_mean": None, "ibs": None, "auroc": None}
    if not y["event"].any():
        return out
    out["c_harrell"] = M.harrell_c(y, risk)
    out["c_uno"] = _undefined_as_none(M.uno_c, y_ref, y, risk, tau)
    times = M.fold_grid(frame.grid, y, tau)
    if len(times):
        out["td_auc_mean"] = _undefined_as_none(lambda: M.td_auc(y_ref, y, risk, times, tau)[1])
    if surv is not None and len(times) >= 2:
        out["ibs"] = _undefined_as_none(lambda: M.brier(y_ref, y, _at(surv, frame.surv_times, times), times, tau)[1])
    if classifier:
        out["auroc"] = _auroc(y, risk, frame.horizon)
    return out


def oof_table(patient_id: np.ndarray, y: np.ndarray, results: list[FoldResult]) -> pd.DataFrame:
    """``patient_id, fold, repeat, risk, time, event, risk_group`` (groups 1 = lowest risk), sorted."""
    rows = []
    for r in results:
        idx = r.fold.test
        rows.append(pd.DataFrame({
            "patient_id": patient_id[idx], "fold": r.fold.fold, "repeat": r.fold.repeat, "risk": r.risk,
            "time": y["time"][idx], "event": y["event"][idx].astype(int),
            "risk_group": np.searchsorted(r.thresholds, r.risk, side="right") + 1,
        }))
    return pd.concat(rows).sort_values(["repeat", "patient_id"], kind="stable").reset_index(drop=True)


def _pooled_arrays(y_len: int, results: list[FoldResult], repeat: int, n_times: int):
    risk = np.full(y_len, np.nan)
    surv = np.full((y_len, n_times), np.nan) if results[0].surv is not None else None
    for r in results:
        if r.fold.repeat == repeat:
            risk[r.fold.test] = r.risk
            if surv is not None:
                surv[r.fold.test] = r.surv
    return risk, surv


def evaluate(y: np.ndarray, results: list[FoldResult], frame: TimeFrame, settings: EvalSettings,
             classifier: bool) -> tuple[dict, dict]:
    """Metrics (for ``metrics.json``) and curves/tables (for plots and TSVs) of a CV experiment."""
    per_fold = []
    for r in results:
        f = r.fold
        m = _metric_set(y[f.train], y[f.test], r.risk, r.surv, frame, M.ipcw_limit(y[f.train]), classifier)
        per_fold.append({"repeat": f.repeat, "fold": f.fold, "n_test": int(len(f.test)),
                         "n_events_test": int(y["event"][f.test].sum()), **m,
                         "constant_risk": M.constant_risk(r.risk), "params": r.params,
                         "hpo": r.hpo, **({"fit_horizon_days": r.horizon} if classifier else {})})
    names = ("c_harrell", "c_uno", "td_auc_mean", "ibs", "auroc")
    fold_summary = {k: _summary([p[k] for p in per_fold]) for k in names}

    repeats = sorted({r.fold.repeat for r in results})
    pooled = {r: _pooled_arrays(len(y), results, r, len(frame.surv_times)) for r in repeats}
    per_repeat = {r: _metric_set(y, y, risk, surv, frame, frame.tau, classifier) for r, (risk, surv) in pooled.items()}

    def boot_stat(idx: np.ndarray) -> dict:
        sets = [_metric_set(y, y[idx], risk[idx], None if surv is None else surv[idx], frame, frame.tau, classifier)
                for risk, surv in pooled.values()]
        return {k: None if any(s[k] is None for s in sets) else float(np.mean([s[k] for s in sets])) for k in names}

    cis = M.bootstrap_ci(boot_stat, len(y), settings.n_bootstrap, settings.seed)
    pooled_summary = {}
    for k in names:
        vals = [per_repeat[r][k] for r in repeats]
        if any(v is None for v in vals):
            pooled_summary[k] = None
            continue
        ci = cis.get(k, {"lower": None, "upper": None, "n_resamples": 0})
        pooled_summary[k] = {"mean": float(np.mean(vals)), "per_repeat": [float(v) for v in vals],
                             "ci95": [ci["lower"], ci["upper"]], "n_bootstrap": ci["n_resamples"]}

    logrank = []
    km_curves = {}
    for r in repeats:
        groups = np.zeros(len(y), int)
        for res in results:
            if res.fold.repeat == r:
                groups[res.fold.test] = np.searchsorted(res.thresholds, res.risk, side="right") + 1
        chi2, p = M.logrank(y, groups)
        logrank.append({"repeat": r, "chi2": chi2, "p": p,
                        "n_per_group": {int(g): int((groups == g).sum()) for g in np.unique(groups)}})
        if r == repeats[0]:
            km_curves = {int(g): M.kaplan_meier(y[groups == g]) for g in np.unique(groups)}

    curves: dict = {"km": km_curves, "td_auc": None, "brier": None, "calibration": None}
    times = M.fold_grid(frame.grid, y, frame.tau)
    if len(times):
        aucs = [M.td_auc(y, y, pooled[r][0], times, frame.tau)[0] for r in repeats]
        curves["td_auc"] = {"time": times, "auc": np.mean(aucs, axis=0)}
    if pooled[repeats[0]][1] is not None and len(times) >= 2:
        bs = [M.brier(y, y, _at(pooled[r][1], frame.surv_times, times), times, frame.tau)[0] for r in repeats]
        curves["brier"] = {"time": times, "brier": np.mean(bs, axis=0)}
    if pooled[repeats[0]][1] is not None and frame.horizon_valid:
        s_h = np.mean([_at(pooled[r][1], frame.surv_times, np.array([frame.horizon]))[:, 0] for r in repeats], axis=0)
        curves["calibration"] = M.calibration_table(y, s_h, frame.horizon, settings.calibration_groups)

    metrics = {
        "n_patients": int(len(y)), "n_events": int(y["event"].sum()),
        "horizon_days": frame.horizon, "time_grid_days": [float(t) for t in frame.grid],
        "ipcw_limit_days": frame.tau,
        "pooled": pooled_summary, "folds": fold_summary,
        "logrank": {"per_repeat": logrank, "p_median": _median_p(logrank), "n_groups": settings.n_risk_groups},
        "calibration": curves["calibration"], "per_fold": per_fold,
        "constant_risk_folds": [{"repeat": p["repeat"], "fold": p["fold"]}
                                for p in per_fold if p["constant_risk"]],
        "notes": list(frame.notes),
    }
    n_constant = len(metrics["constant_risk_folds"])
    if n_constant:
        metrics["notes"].append(f"{n_constant} of {len(per_fold)} fold model(s) gave every test patient the "
                                "same risk (no contrast; C-index 0.5 by ties): see constant_risk_folds")
    return _clean(metrics), curves


def _median_p(logrank: list[dict]) -> float | None:
    ps = [x["p"] for x in logrank if x["p"] is not None]
    return float(np.median(ps)) if ps else None


def _clean(obj):
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    return obj
