"""Hyperparameter search with Optuna, resumable, for use inside one training fold.

The caller supplies the objective (a score on inner splits of the training fold, never on the
reporting fold). Each study lives in its own SQLite file, so an interrupted job that restarts picks
up the finished trials and runs only the rest; the study name carries a hash of everything that
defines it, so a changed search space or cohort starts a fresh study instead of mixing.

A search space is a mapping ``{param: spec}`` with spec one of::

    {type: float, low: 1e-3, high: 1.0, log: true}
    {type: int, low: 1, high: 8, step: 1}
    {type: categorical, choices: [sqrt, 0.5]}
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from tessera.errors import InputError

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """Draw one value per parameter of ``space`` from ``trial``."""
    params = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=bool(spec.get("log", False)),
                                               step=spec.get("step"))
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=bool(spec.get("log", False)),
                                             step=spec.get("step", 1))
        else:
            params[name] = trial.suggest_categorical(name, spec["choices"])
    return params


def startup_trials(n_trials: int) -> int:
    """Random trials before TPE models the results: a third of the budget, between 1 and Optuna's default
    10. With Optuna's fixed 10, a study of 10 trials or fewer is a random search only."""
    return max(1, min(10, n_trials // 3))


def sampler_seed(seed: int, *parts: int) -> int:
    """A sampler seed from the model's ``seed`` and the study's place (e.g. repeat and fold): every study
    draws its own candidates, reproducibly (``numpy.random.SeedSequence``; 32 bits)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def study_key(*parts: object) -> str:
    """Short stable hash of JSON-serialisable parts (model spec, CV settings, cohort checksum...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def tune(objective: Callable[[dict], float], space: dict, *, n_trials: int, storage_dir: str | Path,
         study_name: str, seed: int, timeout_s: float | None = None,
         catch: tuple[type[BaseException], ...] = (ArithmeticError, ValueError, np.linalg.LinAlgError)) -> dict:
    """Maximise ``objective(params)`` over ``space`` with a seeded TPE sampler; return a summary.

    ``seed`` seeds the sampler: give each study its own (:func:`sampler_seed`), or studies of the same
    space draw the same candidates. The first :func:`startup_trials` (``n_trials``) trials are random.

    ``objective`` returns a score, or ``(score, degenerate)`` where ``degenerate`` says the parameters
    gave a model without contrast (e.g. one risk for every patient, scored 0.5): such trials rank after
    every other, whatever their score, and a degenerate best trial is logged as a warning. The study is
    stored in ``{storage_dir}/{study_name}.sqlite3``; trials already finished there count towards
    ``n_trials``. A trial whose objective raises one of ``catch`` (e.g. a solver that does not converge)
    is recorded as failed and the search goes on. Returns ``{best_params, best_value, best_degenerate,
    ranked_params (completed trials, best first), ranked_degenerate, n_trials, n_failed, n_degenerate,
    resumed}``; raises :class:`InputError` when every trial failed.
    """
    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(storage_dir / f'{study_name}.sqlite3').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are expected; counted in the summary
    probe = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True)
    done = len(probe.get_trials(deepcopy=False, states=FINISHED))
    # A resumed study gets a sampler seeded past the trials it already has, so it does not replay them.
    sampler = optuna.samplers.TPESampler(seed=seed + 7919 * done, n_startup_trials=startup_trials(n_trials))
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    remaining = max(0, n_trials - done)
    if done:
        log.info("study %s: resuming with %d finished trial(s), %d to run", study_name, done, remaining)
    if remaining:
        def run_trial(trial: optuna.Trial) -> float:
            out = objective(suggest(trial, space))
            value, degenerate = out if isinstance(out, tuple) else (out, False)
            trial.set_user_attr("degenerate", bool(degenerate))
            return value

        study.optimize(run_trial, n_trials=remaining, timeout=timeout_s, catch=catch)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise InputError(f"every trial of study {study_name} failed",
                         fix="widen or move the search space (e.g. larger penalties), see the job log")
    ranked = sorted(complete, key=lambda t: (_degenerate(t), -t.value, t.number))
    best = ranked[0]
    n_degenerate = sum(map(_degenerate, complete))
    if _degenerate(best):
        log.warning("study %s: all %d completed trial(s) are degenerate (no contrast between patients); "
                    "the best of them is used: %s", study_name, len(complete), best.params)
    elif n_degenerate:
        log.info("study %s: %d degenerate trial(s) ranked last", study_name, n_degenerate)
    return {"best_params": best.params, "best_value": float(best.value), "best_degenerate": _degenerate(best),
            "ranked_params": [t.params for t in ranked],
            "ranked_degenerate": [_degenerate(t) for t in ranked],
            "n_trials": len(study.get_trials(deepcopy=False, states=FINISHED)),
            "n_failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
            "n_degenerate": n_degenerate, "resumed": done > 0}


def _degenerate(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get("degenerate", False))
