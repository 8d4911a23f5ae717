"""How each cluster's prevalence relates to the model's out-of-fold risk and to survival.

Per cluster (over patients with an out-of-fold risk):

- Spearman ρ between prevalence and risk (``scipy.stats.spearmanr``), the ranking criterion (|ρ|);
- univariate Cox hazard ratio per standard deviation of prevalence (scikit-survival's
  ``CoxPHSurvivalAnalysis``, Breslow ties), 95 % Wald confidence interval and Wald p from the observed
  information (the Hessian of scikit-survival's own partial likelihood at the estimate);
- Benjamini–Hochberg FDR of both p-value families (``scipy.stats.false_discovery_control``);
- Kaplan–Meier of patients above vs at-or-below the median prevalence, log-rank p
  (``sksurv.compare.compare_survival``). When more than half the patients lack the cluster, the median
  is 0 and the split is present vs absent.

A cluster present in fewer than ``min_patients`` patients (including none) is not tested: its
statistics are empty, its status says why, and it ranks after every tested cluster.

Overall: cross-validated R² of the risk regressed (ridge, penalty chosen inside each training fold) on
the cluster fractions, on the clinical covariates, and on both — the Wulczyn et al. comparison, made
honest by scoring only out-of-fold predictions.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sksurv.compare import compare_survival
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.linear_model.coxph import CoxPHOptimizer
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from tessera.errors import InputError

log = logging.getLogger(__name__)

OOF_COLUMNS = ("patient_id", "fold", "repeat", "risk", "time", "event")
Z95 = stats.norm.ppf(0.975)


def read_oof(path: str | os.PathLike) -> pd.DataFrame:
    """Out-of-fold predictions → one row per patient: ``risk`` (mean over repeats), ``time``, ``event``,
    ``n_predictions``. Index: patient_id. Higher risk = shorter expected survival.
    """
    df = pd.read_csv(path, sep="\t", dtype={"patient_id": str}, keep_default_na=False)
    missing = [c for c in OOF_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"out-of-fold predictions lack column(s) {', '.join(missing)}", file=str(path), line=1,
                         fix=f"the survival stage writes {', '.join(OOF_COLUMNS)}")
    for col in ("risk", "time", "event"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"'{df[col].iloc[first]}' is not a number", file=str(path), line=first + 2, field=col,
                             fix="the survival stage writes finite numbers; rerun it")
        df[col] = values
    per = df.groupby("patient_id").agg(risk=("risk", "mean"), time=("time", "first"), event=("event", "first"),
                                       n_predictions=("risk", "size"))
    if not per["event"].isin([0, 1]).all() or not (per["time"] > 0).all():
        raise InputError("event must be 0/1 and time > 0", file=str(path),
                         fix="the survival stage copies time and event from the clinical table; rerun it")
    per["event"] = per["event"].astype(int)
    return per


@dataclass(frozen=True)
class CoxResult:
    """Univariate Cox fit of one standardised covariate."""

    hr: float  # hazard ratio per SD
    ci_low: float
    ci_high: float
    p: float  # Wald
    converged: bool


NO_COX = CoxResult(math.nan, math.nan, math.nan, math.nan, False)


def score_and_information(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: float) -> tuple[float, float]:
    """Score U(β) and observed information I(β) of a one-covariate Cox partial likelihood (Breslow ties).

    From scikit-survival's own gradient and Hessian of the mean negative log partial likelihood, times n.
    U(0)² / I(0) is the score test, which equals the log-rank test for a binary ``x`` without tied times.
    """
    opt = CoxPHOptimizer(np.asarray(x, float)[:, None], event.astype(bool), time.astype(float), np.zeros(1), "breslow")
    opt.update(np.array([beta], float))
    return -float(opt.gradient[0]) * len(x), float(opt.hessian[0, 0]) * len(x)


def cox_per_sd(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> CoxResult:
    """Hazard ratio per standard deviation of ``x`` (n,), with 95 % Wald CI and p.

    The standard error is 1 / sqrt(observed information at the estimate), see :func:`score_and_information`.
    """
    sd = np.std(x, ddof=1)
    if not np.isfinite(sd) or sd == 0 or event.sum() == 0:
        return NO_COX
    z = ((x - x.mean()) / sd)[:, None]
    y = Surv.from_arrays(event.astype(bool), time.astype(float))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            beta = float(CoxPHSurvivalAnalysis(ties="breslow").fit(z, y).coef_[0])
        except (ValueError, np.linalg.LinAlgError) as e:
            log.warning("Cox fit failed: %s", e)
            return NO_COX
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    _, information = score_and_information(z[:, 0], time, event, beta)
    if not converged or information <= 0:
        return CoxResult(math.exp(beta) if abs(beta) < 700 else math.inf, math.nan, math.nan, math.nan, False)
    se = 1.0 / math.sqrt(information)
    p = float(2 * stats.norm.sf(abs(beta) / se))
    return CoxResult(math.exp(beta), math.exp(beta - Z95 * se), math.exp(beta + Z95 * se), p, True)


@dataclass(frozen=True)
class KMSplit:
    """Kaplan–Meier of high vs low prevalence."""

    threshold: float  # high = prevalence > threshold
    n_high: int
    n_low: int
    p: float  # log-rank; NaN when one group is empty
    curves: dict  # "high"/"low" → (times, survival)


def km_high_low(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> KMSplit:
    """Split patients at the median of ``x`` (above = high) and compare survival with the log-rank test."""
    threshold = float(np.median(x))
    high = x > threshold
    curves = {}
    for name, mask in (("high", high), ("low", ~high)):
        if mask.any():
            curves[name] = kaplan_meier_estimator(event[mask].astype(bool), time[mask].astype(float))
    p = math.nan
    if high.any() and (~high).any():
        y = Surv.from_arrays(event.astype(bool), time.astype(float))
        p = float(compare_survival(y, np.where(high, "high", "low"))[1])
    return KMSplit(threshold, int(high.sum()), int((~high).sum()), p, curves)


def associate(fractions: pd.DataFrame, outcomes: pd.DataFrame, min_patients: int = 3) -> tuple[pd.DataFrame, dict]:
    """Per-cluster statistics, ranked by |Spearman ρ| with risk (tested clusters first).

    ``fractions``: patients × clusters; ``outcomes``: risk, time, event indexed by patient_id (same
    patients). Returns the table (index cluster; columns ``rank``, ``status``, ``n_patients_tested``,
    ``spearman_rho``, ``spearman_p``, ``spearman_q``, ``cox_hr_per_sd``, ``cox_ci_low``, ``cox_ci_high``,
    ``cox_p``, ``cox_q``, ``km_threshold``, ``km_n_high``, ``km_n_low``, ``logrank_p``) and the KM curves
    per cluster.
    """
    risk = outcomes["risk"].to_numpy(float)
    time, event = outcomes["time"].to_numpy(float), outcomes["event"].to_numpy(int)
    rows, curves = [], {}
    for c in fractions.columns:
        x = fractions[c].to_numpy(float)
        present = int((x > 0).sum())
        row = {"cluster": c, "n_patients_tested": len(x)}
        if present == 0:
            rows.append({**row, "status": "no patients: no patch of a patient with a risk is in this cluster"})
            continue
        if present < min_patients or np.ptp(x) == 0:
            rows.append({**row, "status": f"not tested: present in {present} patient(s) (min_patients {min_patients})"})
            continue
        rho, p_rho = stats.spearmanr(x, risk)
        cox = cox_per_sd(x, time, event)
        km = km_high_low(x, time, event)
        curves[c] = km
        rows.append({**row, "status": "tested" if cox.converged else "tested (Cox did not converge)",
                     "spearman_rho": float(rho), "spearman_p": float(p_rho), "cox_hr_per_sd": cox.hr,
                     "cox_ci_low": cox.ci_low, "cox_ci_high": cox.ci_high, "cox_p": cox.p,
                     "km_threshold": km.threshold, "km_n_high": km.n_high, "km_n_low": km.n_low, "logrank_p": km.p})
    table = pd.DataFrame(rows).set_index("cluster")
    for col in ("spearman_rho", "spearman_p", "cox_hr_per_sd", "cox_ci_low", "cox_ci_high", "cox_p", "km_threshold",
                "km_n_high", "km_n_low", "logrank_p"):
        if col not in table:
            table[col] = np.nan
    for p_col, q_col in (("spearman_p", "spearman_q"), ("cox_p", "cox_q")):
        table[q_col] = np.nan
        ok = table[p_col].notna()
        if ok.any():
            table.loc[ok, q_col] = stats.false_discovery_control(table.loc[ok, p_col].to_numpy(), method="bh")
    order = table.assign(_abs=table["spearman_rho"].abs().fillna(-1), _p=table["cox_p"].fillna(2))
    order = order.sort_values(["_abs", "_p"], ascending=[False, True], kind="stable").index
    table.loc[order, "rank"] = np.arange(1, len(order) + 1)
    table["rank"] = table["rank"].astype(int)
    columns = ["rank", "status", "n_patients_tested", "spearman_rho", "spearman_p", "spearman_q", "cox_hr_per_sd",
               "cox_ci_low", "cox_ci_high", "cox_p", "cox_q", "km_threshold", "km_n_high", "km_n_low", "logrank_p"]
    return table[columns].sort_values("rank"), curves


def clinical_covariates(clinical: pd.DataFrame, names: list[str] | None) -> pd.DataFrame:
    """Clinical covariates by patient: numeric where every given value is a number, else categorical.

    ``names``: the columns to use (None or empty = every column besides patient_id, time, event, line).
    Empty cells become NaN (imputed inside the cross-validation folds).
    """
    skip = {"patient_id", "time", "event", "line"}
    names = list(names) if names else [c for c in clinical.columns if c not in skip]
    unknown = [n for n in names if n not in clinical.columns or n in skip]
    if unknown:
        raise InputError(f"clinical covariate(s) {', '.join(unknown)} not in the clinical table",
                         field="explain.covariates", fix="name columns of the clinical table besides time and event")
    out = pd.DataFrame(index=clinical["patient_id"].astype(str))
    for name in names:
        raw = clinical[name].astype(str).replace("", np.nan).to_numpy()
        numeric = pd.to_numeric(pd.Series(raw), errors="coerce")
        given = pd.Series(raw).notna()
        out[name] = numeric.to_numpy() if (numeric.notna() == given).all() else raw
    return out


def cv_r2(features: pd.DataFrame, risk: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold R² of ``risk`` regressed on ``features`` (ridge with internal penalty choice).

    Numeric columns are median-imputed and standardised, text columns one-hot encoded, all inside each
    training fold. NaN when there are no features or fewer than 2 × folds patients.
    """
    if features.shape[1] == 0 or len(features) < 2 * folds:
        return math.nan
    x = features.set_axis([str(c) for c in features.columns], axis=1)
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
    text = [c for c in x.columns if c not in numeric]
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), text),
    ])
    model = make_pipeline(prep, RidgeCV(alphas=np.logspace(-3, 4, 15)))
    pred = cross_val_predict(model, x, risk, cv=KFold(folds, shuffle=True, random_state=seed))
    return float(r2_score(risk, pred))


def variance_explained(fractions: pd.DataFrame, clinical: pd.DataFrame, risk: np.ndarray, folds: int,
                       seed: int) -> pd.DataFrame:
    """Cross-validated R² of risk by cluster fractions, by clinical covariates, and by both."""
    both = pd.concat([fractions.add_prefix("cluster_"), clinical.add_prefix("clinical_")], axis=1)
    rows = [
        ("cluster fractions", fractions.shape[1], cv_r2(fractions, risk, folds, seed)),
        ("clinical covariates", clinical.shape[1], cv_r2(clinical, risk, folds, seed)),
        ("clusters + clinical", both.shape[1], cv_r2(both, risk, folds, seed)),
    ]
    return pd.DataFrame(rows, columns=["features", "n_features", "cv_r2"])
