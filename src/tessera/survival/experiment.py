"""One configured model, cross-validated honestly: outer folds → (nested HPO) → fit → out-of-fold predictions.

For every outer fold the learner — its preprocessing included — is fitted on the training part only.
With a search space, Optuna tunes the parameters on inner folds of that training part
(:func:`inner_cv_score`); the reporting fold is predicted once, by the model fitted with the chosen
parameters. A final model for later use is fitted the same way on all patients.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed

from tessera.errors import InputError
from tessera.survival import hpo as H
from tessera.survival.cv import Fold, inner_folds, outer_folds
from tessera.survival.data import SurvivalData, check_has_events
from tessera.survival.evaluation import FoldResult, TimeFrame, resolve_horizon, time_frame
from tessera.survival.metrics import constant_risk, harrell_c
from tessera.survival.settings import DEEP_KINDS, TABULAR_KINDS, CVSettings, EvalSettings, HPOSettings, ModelSpec
from tessera.survival.tabular import TabularModel

log = logging.getLogger(__name__)

#: Errors of a solver that failed on its data (not of the code): the caller may try other parameters.
SOLVER_ERRORS = (ArithmeticError, np.linalg.LinAlgError)


@dataclass
class CVRun:
    """Everything :func:`run_cv` produced."""

    spec: ModelSpec
    data: SurvivalData
    folds: list[Fold]
    results: list[FoldResult]
    frame: TimeFrame


def make_learner(spec: ModelSpec, params: dict, *, horizon: float, n_jobs: int = 1, bags=None, device=None):
    """A fresh, unfitted learner of ``spec.kind`` with ``params`` (tuned values already merged in)."""
    if spec.kind in DEEP_KINDS:
        from tessera.survival.hipt import HIPTGPModel, HIPTLGPModel
        from tessera.survival.porpoise import PorpoiseModel

        learner = {"porpoise": PorpoiseModel, "hipt_gp": HIPTGPModel, "hipt_lgp": HIPTLGPModel}[spec.kind]
        return learner({"pca": spec.pca, **params}, bags=bags, seed=spec.seed, device=device)
    return TabularModel(spec.kind, params, pca=spec.pca, horizon=horizon, seed=spec.seed, n_jobs=n_jobs)


def _fit(learner, data: SurvivalData):
    if isinstance(learner, TabularModel):
        return learner.fit(data.X, data.y)
    return learner.fit(data.X, data.y, data.patient_id)


def predict_risk(learner, data: SurvivalData) -> np.ndarray:
    if isinstance(learner, TabularModel):
        return learner.predict_risk(data.X)
    return learner.predict_risk(data.X, data.patient_id)


def predict_survival(learner, data: SurvivalData, times: np.ndarray) -> np.ndarray | None:
    if not learner.has_survival:
        return None
    if isinstance(learner, TabularModel):
        return learner.predict_survival(data.X, times)
    return learner.predict_survival(data.X, times, data.patient_id)


def data_fingerprint(data: SurvivalData) -> str:
    """SHA-256 (first 12 hex digits) of the patients, outcomes and features: part of every study's name."""
    h = hashlib.sha256()
    h.update("\n".join(data.patient_id).encode())
    h.update(np.ascontiguousarray(data.y["time"]).tobytes())
    h.update(np.ascontiguousarray(data.y["event"]).tobytes())
    h.update("\n".join(data.X.columns).encode())
    h.update(np.ascontiguousarray(data.X.to_numpy(dtype=float)).tobytes())
    return h.hexdigest()[:12]


def _study_key(spec: ModelSpec, cv: CVSettings, data: SurvivalData, bags=None) -> str:
    """Everything that defines a fold's study: the model entry, the splits and the data (bags included)."""
    return H.study_key(spec.kind, spec.params, spec.search, spec.n_trials, spec.pca, spec.seed, spec.encoder,
                       cv.n_splits, cv.n_repeats, cv.seed, cv.inner_splits, data_fingerprint(data),
                       bags.fingerprint() if bags is not None else None)


def inner_cv_score(spec: ModelSpec, params: dict, train: SurvivalData, n_splits: int, seed: int, *,
                   horizon: float, n_jobs: int = 1, bags=None, device=None) -> tuple[float, bool]:
    """The HPO objective: mean Harrell's C of ``params`` over stratified inner folds of ``train``, and
    whether the trial is degenerate (an inner model gave all its validation patients one risk)."""
    scores, degenerate = [], False
    for tr, va in inner_folds(train.y, n_splits, seed):
        learner = _fit(make_learner(spec, params, horizon=horizon, n_jobs=n_jobs, bags=bags, device=device),
                       train.subset(tr))
        risk = predict_risk(learner, train.subset(va))
        degenerate |= constant_risk(risk)
        scores.append(harrell_c(train.y[va], risk))
    return float(np.mean(scores)), degenerate


def tune_and_fit(spec: ModelSpec, train: SurvivalData, study: str, cv: CVSettings, hpo: HPOSettings, *,
                 horizon: float, sampler_seed: int, n_jobs: int = 1, bags=None, device=None):
    """Tune on inner folds of ``train`` (if the spec has a search space), then fit on all of ``train``.

    ``sampler_seed``: the study's own seed (see :func:`tessera.survival.hpo.sampler_seed`).
    Returns (fitted learner, parameters used, HPO summary or None).
    """
    summary, candidates = None, [{}]
    if spec.search:
        def objective(trial_params):
            return inner_cv_score(spec, {**spec.params, **trial_params}, train, cv.inner_splits, spec.seed,
                                  horizon=horizon, n_jobs=n_jobs, bags=bags, device=device)

        summary = H.tune(objective, spec.search, n_trials=spec.n_trials, storage_dir=hpo.storage_dir,
                         study_name=study, seed=sampler_seed, timeout_s=hpo.timeout_s)
        candidates = summary.pop("ranked_params")
        degenerate = summary.pop("ranked_degenerate")
    # A solver can fail on the whole training part with values that worked on its inner folds (e.g. a
    # Coxnet penalty too small for these features): the next-best trial is used then, and recorded.
    for rank, tuned in enumerate(candidates):
        params = {**spec.params, **tuned}
        try:
            learner = _fit(make_learner(spec, params, horizon=horizon, n_jobs=n_jobs, bags=bags, device=device),
                           train)
        except SOLVER_ERRORS as e:
            log.warning("%s (%s): fitting %s failed: %s", spec.name, study, params, e)
            continue
        if summary is not None:
            summary["refit_rank"] = rank
            summary["refit_degenerate"] = degenerate[rank]
            if degenerate[rank]:
                log.warning("%s (%s): the chosen parameters %s gave one risk for every validation patient of "
                            "an inner fold (no better trial could be fitted)", spec.name, study, params)
        return learner, params, summary
    raise InputError(f"model {spec.name} cannot be fitted on {len(train)} training patients with "
                     f"{'any tuned parameter set' if spec.search else f'parameters {spec.params}'} (see the job log)",
                     field=f"survival.models[{spec.name}].params",
                     fix="use a larger penalty (alpha), fewer features (pca) or a search space")


def run_fold(spec: ModelSpec, data: SurvivalData, fold: Fold, frame: TimeFrame, cv: CVSettings, hpo: HPOSettings,
             key: str, n_risk_groups: int, *, n_jobs: int = 1, bags=None, device=None, explain=None) -> FoldResult:
    """Fit on ``fold.train`` (tuning inside it), predict ``fold.test``; risk-group thresholds from training risk."""
    start = time.perf_counter()
    train, test = data.subset(fold.train), data.subset(fold.test)
    check_has_events(train.y, f"the training part of fold {fold.fold} (repeat {fold.repeat})",
                     fix="use fewer folds or check the event column")
    study = f"{spec.name}-{key}-r{fold.repeat}-f{fold.fold}"
    horizon = frame.fit_horizon(train.y)
    seed = H.sampler_seed(spec.seed, 1 + fold.repeat, 1 + fold.fold)
    learner, params, summary = tune_and_fit(spec, train, study, cv, hpo, horizon=horizon, sampler_seed=seed,
                                            n_jobs=n_jobs, bags=bags, device=device)
    risk = predict_risk(learner, test)
    if constant_risk(risk):
        log.warning("%s repeat %d fold %d: every test patient has the same predicted risk (%g): the fold "
                    "model has no contrast (C-index 0.5 by ties); flagged in metrics.json (constant_risk)",
                    spec.name, fold.repeat, fold.fold, risk[0])
    thresholds = np.quantile(predict_risk(learner, train), np.arange(1, n_risk_groups) / n_risk_groups)
    result = FoldResult(fold, risk, predict_survival(learner, test, frame.surv_times), thresholds, params, summary,
                        history=getattr(learner, "history_", None),
                        horizon=horizon if spec.is_classifier else None)
    if explain is not None:
        result.extras = explain(learner, test, fold)
    result.seconds = time.perf_counter() - start
    log.info("%s repeat %d fold %d: %d train / %d test, %.1f s", spec.name, fold.repeat, fold.fold, len(fold.train),
             len(fold.test), result.seconds)
    return result


def run_cv(spec: ModelSpec, data: SurvivalData, cv: CVSettings, ev: EvalSettings, hpo: HPOSettings, *,
           threads: int = 1, bags=None, device=None, explain=None) -> CVRun:
    """All outer folds of ``spec`` on ``data`` (already restricted to the model's modalities).

    Tabular folds run ``cv.n_jobs`` at a time (processes), each estimator with the remaining threads;
    the deep model runs its folds one after another.
    """
    folds = outer_folds(data.y, cv.n_splits, cv.n_repeats, cv.seed)
    frame = time_frame(data.y, folds, ev)
    key = _study_key(spec, cv, data, bags)
    parallel = spec.kind in TABULAR_KINDS and cv.n_jobs > 1
    fold_jobs = min(cv.n_jobs, len(folds)) if parallel else 1
    inner_jobs = max(1, threads // fold_jobs)
    args = dict(n_jobs=inner_jobs, bags=bags, device=device, explain=explain)
    if parallel:
        results = Parallel(n_jobs=fold_jobs)(
            delayed(run_fold)(spec, data, f, frame, cv, hpo, key, ev.n_risk_groups, **args) for f in folds)
    else:
        results = [run_fold(spec, data, f, frame, cv, hpo, key, ev.n_risk_groups, **args) for f in folds]
    return CVRun(spec, data, folds, list(results), frame)


def fit_final(spec: ModelSpec, data: SurvivalData, cv: CVSettings, ev: EvalSettings, hpo: HPOSettings, *,
              threads: int = 1, bags=None, device=None):
    """The model for later use: tuned on inner folds of all patients, fitted on all of them."""
    key = _study_key(spec, cv, data, bags)
    return tune_and_fit(spec, data, f"{spec.name}-{key}-final", cv, hpo, horizon=resolve_horizon(data.y, ev.horizon_days),
                        sampler_seed=H.sampler_seed(spec.seed, 0, 0), n_jobs=threads, bags=bags, device=device)
