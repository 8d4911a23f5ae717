"""Survival metrics, computed with scikit-survival and scikit-learn, on guarded time grids.

Every number comes from a library function (``sksurv.metrics``, ``sksurv.nonparametric``,
``sksurv.compare``, ``sklearn.metrics``); this module chooses their arguments so they are valid:

* IPCW metrics (Uno's C, time-dependent AUC, Brier) weight test events by the training data's
  censoring survival G. scikit-survival raises when a test time lies beyond the last training time
  or where G = 0 (its issues #86, #478, #511, #557). :func:`ipcw_limit` is the largest training time
  with G > 0; test outcomes are administratively censored there (:func:`truncate`), which leaves
  every metric at earlier times unchanged, and evaluation times are kept strictly below it and inside
  the test follow-up (:func:`time_grid`).
* Harrell's C overestimates under heavy censoring; Uno's C is reported beside it.

Risk scores: higher = higher risk (shorter survival), as ``estimator.predict`` of scikit-survival.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sksurv.compare import compare_survival
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator, SurvivalFunctionEstimator, kaplan_meier_estimator
from sksurv.util import Surv


def constant_risk(risk: np.ndarray) -> bool:
    """Whether ``risk`` (n,) gives every patient the same score (up to rounding): a model without
    contrast, e.g. a penalised Cox model with every coefficient zero, whose C-index is 0.5 by ties."""
    risk = np.asarray(risk, dtype=float)
    return len(risk) > 1 and bool(np.ptp(risk) <= 1e-12 * max(1.0, float(np.abs(risk).max())))


def harrell_c(y: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index (``sksurv.metrics.concordance_index_censored``)."""
    return float(concordance_index_censored(y["event"], y["time"], risk)[0])


def ipcw_limit(y_train: np.ndarray) -> float:
    """Largest training time at which the censoring survival G of ``y_train`` is still positive.

    IPCW weights exist up to and including this time (sksurv's ``CensoringDistributionEstimator``).
    """
    cens = CensoringDistributionEstimator().fit(y_train)
    times, prob = cens.unique_time_, cens.prob_
    return float(times[(prob > 0) & np.isfinite(times)].max())


def truncate(y: np.ndarray, tau: float) -> np.ndarray:
    """Administrative censoring at ``tau``: later times become ``tau``, censored.

    Cases (event at t ≤ s) and controls (alive at s) are unchanged for every s < tau, so the
    time-dependent AUC and Brier score at such times are unchanged.
    """
    later = y["time"] > tau
    return Surv.from_arrays(event=y["event"] & ~later, time=np.where(later, tau, y["time"]),
                            name_event="event", name_time="time")


def time_grid(y_events: np.ndarray, n_points: int, quantiles: tuple[float, float] = (0.1, 0.9),
              lower: float = 0.0, upper: float = np.inf) -> np.ndarray:
    """Evaluation times: ``n_points`` quantiles of the event times in ``y_events``, kept in ``[lower, upper)``.

    ``lower``/``upper`` come from the guards (test follow-up, :func:`ipcw_limit`, the models' survival
    function domains). Returns unique, sorted times (possibly empty).
    """
    event_times = y_events["time"][y_events["event"]]
    if event_times.size == 0:
        return np.empty(0)
    grid = np.unique(np.quantile(event_times, np.linspace(quantiles[0], quantiles[1], n_points)))
    return grid[(grid >= lower) & (grid < upper)]


def fold_grid(grid: np.ndarray, y_test: np.ndarray, tau: float) -> np.ndarray:
    """The part of ``grid`` valid for one test set: inside ``[min test time, max truncated test time)`` and < tau."""
    t_test = truncate(y_test, tau)["time"]
    return grid[(grid >= t_test.min()) & (grid < min(t_test.max(), tau))]


def uno_c(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray, tau: float) -> float:
    """Uno's IPCW concordance index up to ``tau`` (``sksurv.metrics.concordance_index_ipcw``)."""
    return float(concordance_index_ipcw(y_train, y_test, risk, tau=tau)[0])


def td_auc(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray, times: np.ndarray,
           tau: float) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at ``times`` and its mean (``sksurv.metrics.cumulative_dynamic_auc``)."""
    auc, mean_auc = cumulative_dynamic_auc(y_train, truncate(y_test, tau), risk, times)
    return np.asarray(auc, dtype=float), float(mean_auc)


def brier(y_train: np.ndarray, y_test: np.ndarray, surv: np.ndarray, times: np.ndarray,
          tau: float) -> tuple[np.ndarray, float | None]:
    """Brier score at ``times`` and the integrated Brier score (None with fewer than 2 times).

    ``surv``: (n_test, n_times) predicted survival probabilities at ``times``.
    """
    y_t = truncate(y_test, tau)
    _, scores = brier_score(y_train, y_t, surv, times)
    ibs = float(integrated_brier_score(y_train, y_t, surv, times)) if len(times) >= 2 else None
    return np.asarray(scores, dtype=float), ibs


def logrank(y: np.ndarray, groups: np.ndarray) -> tuple[float, float] | tuple[None, None]:
    """Log-rank chi² and p-value across ``groups`` (``sksurv.compare.compare_survival``); None if < 2 groups."""
    if len(np.unique(groups)) < 2:
        return None, None
    chisq, p = compare_survival(y, groups)
    return float(chisq), float(p)


def kaplan_meier(y: np.ndarray) -> dict[str, np.ndarray]:
    """Kaplan–Meier curve with a 95 % log-log pointwise interval (``kaplan_meier_estimator``)."""
    t, s, ci = kaplan_meier_estimator(y["event"], y["time"], conf_type="log-log")
    return {"time": t, "survival": s, "lower": ci[0], "upper": ci[1]}


def observed_survival(y: np.ndarray, horizon: float) -> tuple[float, float, float]:
    """Kaplan–Meier survival at ``horizon`` with its 95 % log-log interval; NaNs past the last time."""
    if horizon > y["time"].max():
        return np.nan, np.nan, np.nan
    est = SurvivalFunctionEstimator(conf_type="log-log").fit(y)
    s, ci = est.predict_proba(np.array([horizon]), return_conf_int=True)
    return float(s[0]), float(ci[0, 0]), float(ci[1, 0])


def calibration_table(y: np.ndarray, surv_at_h: np.ndarray, horizon: float, n_groups: int) -> list[dict]:
    """Predicted vs observed survival at ``horizon`` in ``n_groups`` quantile groups of the prediction.

    Each row: group, n, predicted (mean predicted survival), observed (Kaplan–Meier) with its 95 % CI.
    """
    order = np.argsort(surv_at_h, kind="stable")
    rows = []
    for g, idx in enumerate(np.array_split(order, n_groups)):
        if len(idx) == 0:
            continue
        obs, lo, hi = observed_survival(y[idx], horizon)
        rows.append({"group": g + 1, "n": int(len(idx)), "predicted": float(surv_at_h[idx].mean()),
                     "observed": obs, "observed_lower": lo, "observed_upper": hi})
    return rows


def bootstrap_ci(statistic: Callable[[np.ndarray], dict[str, float | None]], n: int, n_resamples: int,
                 seed: int, level: float = 0.95) -> dict[str, dict]:
    """Percentile bootstrap intervals of the values ``statistic(indices)`` returns, patients resampled
    with replacement.

    ``statistic`` maps resampled indices to ``{name: value}``; a resample where it raises
    ``ValueError`` (e.g. no events), or a value that is None/NaN, is skipped for that name and not
    counted. Returns ``{name: {lower, upper, n_resamples}}`` (bounds None when no resample was valid).
    """
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        try:
            stats = statistic(idx)
        except ValueError:
            continue
        for name, v in stats.items():
            if v is not None and np.isfinite(v):
                values.setdefault(name, []).append(float(v))
    a = (1 - level) / 2
    out = {}
    for name, vals in values.items():
        lo, hi = np.quantile(vals, [a, 1 - a])
        out[name] = {"lower": float(lo), "upper": float(hi), "n_resamples": len(vals)}
    return out
