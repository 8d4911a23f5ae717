"""Tabular learners: scikit-survival survival models and event-by-horizon classifiers, each with its
preprocessing, fitted as one scikit-learn ``Pipeline`` on the training data only.

Pipeline: median imputation → standardisation → optional PCA per modality (whitened, so penalised
models see unit-variance components) → estimator. Fitting the pipeline inside each training fold is
what keeps imputation medians, scaling and principal axes free of test-fold information.

Kinds (``survival.models[].kind``):

==============  ==============================================  ===================================
kind            estimator                                        risk score
==============  ==============================================  ===================================
cox_ridge       ``sksurv.linear_model.CoxPHSurvivalAnalysis``    linear predictor (ridge ``alpha``)
coxnet          :class:`CoxnetAtAlpha` (sksurv Coxnet)           linear predictor at ``alpha`` (warm-started path)
rsf             ``sksurv.ensemble.RandomSurvivalForest``         expected number of events
gbsa            :class:`~tessera.survival.boosting.GradientBoostingSurvival` (Cox loss)
svm             ``sksurv.svm.FastSurvivalSVM``                   ranking score (sign made risk-like)
logistic        ``sklearn.linear_model.LogisticRegression``      P(event by horizon)
rf_classifier   ``sklearn.ensemble.RandomForestClassifier``      P(event by horizon)
==============  ==============================================  ===================================

Event-by-horizon classifiers learn "event at or before the horizon" (1) against "followed beyond the
horizon" (0); patients censored before the horizon have no label and are left out of their fit (and of
their AUROC), but still get a prediction.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.svm import FastSurvivalSVM

from tessera.errors import InputError
from tessera.survival.boosting import GradientBoostingSurvival
from tessera.survival.data import modality_of
from tessera.survival.settings import CLASSIFIER_KINDS, TABULAR_KINDS


#: Defaults per kind; a model's ``params`` override them. Seeds and threads are set by the caller.
DEFAULTS: dict[str, dict] = {
    "cox_ridge": {"alpha": 1.0, "ties": "breslow", "n_iter": 100},
    "coxnet": {"alpha": 0.05, "l1_ratio": 0.5, "max_iter": 100000},
    "rsf": {"n_estimators": 500, "min_samples_split": 10, "min_samples_leaf": 15, "max_features": "sqrt"},
    "gbsa": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0},
    "svm": {"alpha": 1.0, "rank_ratio": 1.0, "max_iter": 1000},
    "logistic": {"C": 1.0, "max_iter": 2000},
    "rf_classifier": {"n_estimators": 500, "min_samples_leaf": 5, "max_features": "sqrt"},
}
_SEEDED = ("rsf", "gbsa", "svm", "logistic", "rf_classifier")
COXNET_PATH = 10  # penalties on Coxnet's warm-start path (at least)
COXNET_STEP = 50 ** (1 / 9)  # largest ratio of neighbouring penalties on it (more penalties on longer paths)
COXNET_UNCUT = 6  # scikit-survival's deviance-ratio rule stops a path only after its 6th penalty
_THREADED = ("rsf", "rf_classifier")


class CoxnetAtAlpha(CoxnetSurvivalAnalysis):
    """``CoxnetSurvivalAnalysis`` fitted at one penalty ``alpha``, reached along a warm-started path.

    A cold start at a small penalty often fails to converge on wide tables ("weights are too large"),
    so the fit follows geometric steps down to ``alpha``, as glmnet does: ``path_length`` of them, or more
    where needed to keep neighbouring penalties within a factor ``COXNET_STEP`` (1.54). The path starts
    at ``alpha_max`` (the smallest penalty at which every coefficient is zero; from a two-point
    scikit-survival path): started higher, the deviance does not change over the first steps and
    scikit-survival's deviance-ratio rule ends the path there, leaving a model with no coefficients
    at a larger penalty than asked. Should the rule still end the path early, the fit is repeated over
    ``COXNET_UNCUT`` steps, which it cannot cut. Afterwards ``alphas_[-1] == alpha``: ``predict`` and the
    survival functions are the model at ``alpha``. With ``alpha >= alpha_max`` every coefficient is zero
    (a constant risk), which is the right answer there.
    """

    def __init__(self, alpha: float = 0.05, *, path_length: int = COXNET_PATH, l1_ratio: float = 0.5,
                 penalty_factor=None, normalize: bool = False, tol: float = 1e-7, max_iter: int = 100000,
                 verbose: bool = False, fit_baseline_model: bool = False) -> None:
        super().__init__(l1_ratio=l1_ratio, penalty_factor=penalty_factor, normalize=normalize, tol=tol,
                         max_iter=max_iter, verbose=verbose, fit_baseline_model=fit_baseline_model)
        self.alpha, self.path_length = alpha, path_length

    def _path_fit(self, X, y, start: float, n: int) -> bool:
        path = np.geomspace(start, self.alpha, n) if start > self.alpha else [self.alpha]
        self.alphas = np.asarray(path, dtype=float)
        super().fit(X, y)
        return bool(np.isclose(self.alphas_[-1], self.alpha, rtol=1e-12, atol=0))

    def fit(self, X, y) -> "CoxnetAtAlpha":
        """Fit ``X`` (n, p) on the structured ``y``; the fitted path ends at ``alpha``."""
        probe = CoxnetSurvivalAnalysis(n_alphas=2, alpha_min_ratio=0.999, l1_ratio=self.l1_ratio,
                                       penalty_factor=self.penalty_factor, normalize=self.normalize,
                                       tol=self.tol, max_iter=self.max_iter).fit(X, y)
        self.alpha_max_ = float(probe.alphas_[0])
        steps = 1 + math.ceil(math.log(max(self.alpha_max_ / self.alpha, 1.0), COXNET_STEP))
        if self._path_fit(X, y, self.alpha_max_, max(self.path_length, steps)):
            return self
        cut_at = float(self.alphas_[-1])
        if self._path_fit(X, y, self.alpha_max_, COXNET_UNCUT):
            return self
        raise ArithmeticError(f"Coxnet's penalty path ended at {self.alphas_[-1]:g} (first try: {cut_at:g}), "
                              f"not at alpha = {self.alpha:g}")


def check_kind(kind: str, where: str = "survival.models[].kind") -> None:
    if kind not in TABULAR_KINDS:
        raise InputError(f"unknown tabular model kind '{kind}'", field=where,
                         fix=f"use one of {', '.join(TABULAR_KINDS)} (or porpoise for the multimodal model)")


def make_estimator(kind: str, params: dict, seed: int = 0, n_jobs: int = 1):
    """The bare estimator of ``kind`` with ``DEFAULTS[kind]`` updated by ``params``."""
    check_kind(kind)
    p = {**DEFAULTS[kind], **params}
    if kind in _SEEDED:
        p.setdefault("random_state", seed)
    if kind in _THREADED:
        p.setdefault("n_jobs", n_jobs)
    if kind == "cox_ridge":
        return CoxPHSurvivalAnalysis(**p)
    if kind == "coxnet":
        return CoxnetAtAlpha(fit_baseline_model=True, **p)
    if kind == "rsf":
        return RandomSurvivalForest(**p)
    if kind == "gbsa":
        return GradientBoostingSurvival(**p)
    if kind == "svm":
        p.setdefault("fit_intercept", p["rank_ratio"] < 1)
        return FastSurvivalSVM(**p)
    if kind == "logistic":
        return LogisticRegression(**p)
    return RandomForestClassifier(**p)


def make_preprocessor(columns: list[str], n_train: int, pca: dict[str, int] | None = None,
                      seed: int = 0) -> Pipeline:
    """Impute (median) → scale → PCA per modality in ``pca`` (components clipped to what the fold allows).

    Columns of modalities without PCA pass through after scaling; output order: PCA blocks, then the rest.
    """
    steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
    blocks = []
    for modality, n_components in (pca or {}).items():
        idx = [i for i, c in enumerate(columns) if modality_of(c) == modality]
        if not idx:
            continue
        k = int(min(n_components, len(idx), n_train))
        blocks.append((f"pca_{modality}", PCA(n_components=k, whiten=True, svd_solver="full", random_state=seed), idx))
    if blocks:
        steps.append(("pca", ColumnTransformer(blocks, remainder="passthrough")))
    return Pipeline(steps)


def preprocessed_columns(pre: Pipeline, columns: list[str]) -> list[str]:
    """Names of a fitted preprocessor's outputs: ``{modality}__pc000``… per PCA block, then the passed-through
    columns in their original order."""
    if "pca" not in pre.named_steps:
        return list(columns)
    names = []
    for name, transformer, idx in pre.named_steps["pca"].transformers_:
        if name == "remainder":
            names += [columns[i] for i in idx]
        elif hasattr(transformer, "n_components_"):
            modality = name.removeprefix("pca_")
            names += [f"{modality}__pc{k:03d}" for k in range(transformer.n_components_)]
    return names


def horizon_labels(y: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Event-by-horizon labels: (known mask, label) — 1 = event at or before ``horizon``, 0 = followed past it."""
    event_by = y["event"] & (y["time"] <= horizon)
    known = event_by | (y["time"] > horizon)
    return known, event_by.astype(int)


class TabularModel:
    """A preprocessing + estimator pipeline with a common interface for the experiment runner.

    ``fit(X, y)`` with ``X`` a DataFrame of ``{modality}__{feature}`` columns (NaN = missing) and ``y``
    the structured outcome; ``predict_risk(X)`` → (n,) higher = riskier; ``predict_survival(X, times)``
    → (n, len(times)) for kinds with survival functions (``has_survival``).
    """

    def __init__(self, kind: str, params: dict | None = None, *, pca: dict[str, int] | None = None,
                 horizon: float | None = None, seed: int = 0, n_jobs: int = 1) -> None:
        check_kind(kind)
        if kind in CLASSIFIER_KINDS and horizon is None:
            raise InputError(f"model kind {kind} needs a horizon", field="survival.evaluation.horizon_days",
                             fix="set horizon_days (or leave it null to use the median follow-up)")
        self.kind, self.params, self.pca, self.horizon = kind, dict(params or {}), pca, horizon
        self.seed, self.n_jobs = seed, n_jobs

    @property
    def has_survival(self) -> bool:
        return self.kind in ("cox_ridge", "coxnet", "rsf", "gbsa")

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> "TabularModel":
        self.columns_ = list(X.columns)
        target = y
        if self.kind in CLASSIFIER_KINDS:
            known, label = horizon_labels(y, self.horizon)
            if len(np.unique(label[known])) < 2:
                raise InputError(
                    f"no contrast at the horizon {self.horizon:g} days: the training patients with a known "
                    "status all have the same label", field="survival.evaluation.horizon_days",
                    fix="choose a horizon with events before it and follow-up beyond it",
                )
            X, target = X.loc[known], label[known]
        estimator = make_estimator(self.kind, self.params, self.seed, self.n_jobs)
        pre = make_preprocessor(self.columns_, len(X), self.pca, self.seed)
        self.pipeline_ = Pipeline(pre.steps + [("model", estimator)]).fit(X, target)
        if self.kind in _THREADED:
            # Forests predict by adding each tree's prediction into one array; threads add in the order
            # they finish, and floating-point sums depend on that order. One thread: the same bytes
            # every run (trees were built in parallel; each has its own seed, so that part is exact).
            estimator.set_params(n_jobs=1)
        if self.has_survival:
            self.survival_domain_ = float(self.pipeline_.predict_survival_function(X.iloc[:1])[0].domain[1])
        return self

    def predict_risk(self, X: pd.DataFrame) -> np.ndarray:
        X = X[self.columns_]
        if self.kind in CLASSIFIER_KINDS:
            return self.pipeline_.predict_proba(X)[:, 1]
        risk = self.pipeline_.predict(X)
        # FastSurvivalSVM with rank_ratio < 1 predicts survival times (higher = longer survival)
        return risk if getattr(self.pipeline_.steps[-1][1], "_predict_risk_score", True) else -risk

    def predict_survival(self, X: pd.DataFrame, times: np.ndarray) -> np.ndarray:
        """Survival probabilities (n, len(times)); ``times`` must be ≤ ``survival_domain_``."""
        fns = self.pipeline_.predict_survival_function(X[self.columns_])
        return np.vstack([fn(times) for fn in fns]) if len(times) else np.empty((len(X), 0))

    def save(self, path: str | os.PathLike) -> None:
        """joblib file of the fitted pipeline (a pickle: load only files this workflow wrote)."""
        from tessera.atomic import atomic_path

        with atomic_path(path) as tmp:
            joblib.dump({"kind": self.kind, "params": self.params, "pca": self.pca, "horizon": self.horizon,
                         "columns": self.columns_, "pipeline": self.pipeline_}, tmp, compress=3)


def load_tabular(path: str | os.PathLike) -> dict:
    """Read a file written by :meth:`TabularModel.save` (trusted files only: joblib unpickles)."""
    return joblib.load(Path(path))
