"""Gradient-boosted Cox model whose loss costs O(n log n) per stage instead of O(n²).

scikit-survival 0.28's ``GradientBoostingSurvivalAnalysis`` (loss ``coxph``) evaluates the partial
likelihood and its gradient with two nested loops over all patients, twice per boosting stage
(measured here: 2 s per stage at 13,600 patients, 4x per doubling). The same quantities follow from
one sort and cumulative sums over the risk sets (Breslow ties, as scikit-survival):

    R_i = Σ_{j: t_j ≥ t_i} exp(f_j)              loss = −Σ_i δ_i (f_i − log R_i)
    H_i = Σ_{j: δ_j, t_j ≤ t_i} 1 / R_j           −∂loss/∂f_i = δ_i − exp(f_i) · H_i

:class:`GradientBoostingSurvival` is scikit-survival's estimator with only this loss swapped in through
its ``_get_loss`` hook; everything else (trees, shrinkage, subsampling, baseline model) is theirs.
Tests check loss and gradient against scikit-survival's own kernels and the documented
breast_cancer result (C = 0.765).
"""

from __future__ import annotations

import numpy as np
from sksurv.ensemble import GradientBoostingSurvivalAnalysis
from sksurv.ensemble.survival_loss import CoxPH


def _sorted_risk_sets(event: np.ndarray, time: np.ndarray, f: np.ndarray):
    """Per patient (in input order): log R_i and H_i as defined in the module docstring."""
    order = np.argsort(time, kind="stable")
    t, e = time[order], event[order].astype(float)
    shift = f.max()  # exp(f − shift) cannot overflow; ratios and log R are corrected below
    ef = np.exp(f[order] - shift)
    suffix = np.cumsum(ef[::-1])[::-1]
    r_scaled = suffix[np.searchsorted(t, t, side="left")]  # first index of each tie group
    h_scaled = np.cumsum(e / r_scaled)[np.searchsorted(t, t, side="right") - 1]  # last index of the group
    log_r = np.empty_like(f)
    h_ef = np.empty_like(f)
    log_r[order] = np.log(r_scaled) + shift
    h_ef[order] = ef * h_scaled  # exp(f_i − shift) / (R_j e^−shift) = exp(f_i) / R_j
    return log_r, h_ef


class CoxPHLoss(CoxPH):
    """Cox partial likelihood loss (same values as scikit-survival's ``CoxPH``), O(n log n)."""

    def __call__(self, y_true, raw_prediction, sample_weight=None):
        f = np.asarray(raw_prediction, dtype=float).ravel()
        event = y_true["event"].astype(bool)
        log_r, _ = _sorted_risk_sets(event, np.asarray(y_true["time"], dtype=float), f)
        return float(-(f[event] - log_r[event]).sum())

    def gradient(self, y_true, raw_prediction, sample_weight=None, **kwargs):
        f = np.asarray(raw_prediction, dtype=float).ravel()
        event = y_true["event"].astype(bool)
        _, h_ef = _sorted_risk_sets(event, np.asarray(y_true["time"], dtype=float), f)
        grad = event.astype(float) - h_ef
        if sample_weight is not None:
            grad *= sample_weight
        return grad


class GradientBoostingSurvival(GradientBoostingSurvivalAnalysis):
    """``GradientBoostingSurvivalAnalysis`` with :class:`CoxPHLoss` for ``loss='coxph'``."""

    def _get_loss(self, sample_weight):
        if self.loss == "coxph":
            return CoxPHLoss()
        return super()._get_loss(sample_weight)
