"""Optuna studies resume from their SQLite file, survive failing trials, and never see the reporting fold."""

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from tessera.errors import InputError
from tessera.survival import experiment
from tessera.survival import hpo as H
from tessera.survival.cv import outer_folds
from tessera.survival.data import SurvivalData, make_y
from tessera.survival.evaluation import time_frame
from tessera.survival.settings import CVSettings, EvalSettings, HPOSettings, ModelSpec, check_space

SPACE = {"alpha": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
         "depth": {"type": "int", "low": 1, "high": 4},
         "kind": {"type": "categorical", "choices": ["a", "b"]}}


def test_interrupted_study_resumes(tmp_path, monkeypatch):
    calls, startups = [], []
    real_sampler = H.optuna.samplers.TPESampler

    def sampler(**kwargs):
        if "seed" in kwargs:  # ours (create_study builds a default one too)
            startups.append(kwargs["n_startup_trials"])
        return real_sampler(**kwargs)

    monkeypatch.setattr(H.optuna.samplers, "TPESampler", sampler)

    def objective(params):
        calls.append(params)
        return -abs(np.log10(params["alpha"]) + 1) + (params["kind"] == "a")

    first = H.tune(objective, SPACE, n_trials=4, storage_dir=tmp_path, study_name="s", seed=0)
    assert len(calls) == 4 and not first["resumed"] and first["n_trials"] == 4
    assert (tmp_path / "s.sqlite3").is_file()
    # the job is restarted with the same settings: only the missing trials run
    second = H.tune(objective, SPACE, n_trials=7, storage_dir=tmp_path, study_name="s", seed=0)
    assert len(calls) == 7 and second["resumed"] and second["n_trials"] == 7
    assert second["best_value"] >= first["best_value"]
    assert len({tuple(sorted(c.items())) for c in calls}) == 7  # the resumed sampler does not replay trials
    third = H.tune(objective, SPACE, n_trials=7, storage_dir=tmp_path, study_name="s", seed=0)
    assert len(calls) == 7 and third["best_params"] == second["best_params"]
    # random start-up trials scale with the budget (Optuna's fixed 10 made every study <= 10 trials random)
    assert startups == [1, 2, 2]
    assert [H.startup_trials(n) for n in (1, 3, 9, 15, 30, 100)] == [1, 1, 3, 5, 10, 10]


def test_study_killed_mid_trial_resumes(tmp_path):
    """SIGKILL during the 4th trial: a restart keeps the 3 finished trials and runs only what is missing."""
    code = textwrap.dedent(f"""
        import os, signal
        from tessera.survival import hpo
        calls = []
        def objective(params):
            calls.append(1)
            if len(calls) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return params["alpha"]
        hpo.tune(objective, {SPACE!r}, n_trials=6, storage_dir={str(tmp_path)!r}, study_name="k", seed=0)
    """)
    killed = subprocess.run([sys.executable, "-c", code])
    assert killed.returncode == -9
    calls = []
    out = H.tune(lambda p: calls.append(p) or p["alpha"], SPACE, n_trials=6, storage_dir=tmp_path, study_name="k",
                 seed=0)
    assert out["resumed"] and len(calls) == 3 and out["n_trials"] == 6


def test_failed_trials_are_recorded_and_all_failing_is_an_error(tmp_path):
    def flaky(params):
        if params["alpha"] < 0.05:
            raise ArithmeticError("did not converge")
        return params["alpha"]

    out = H.tune(flaky, SPACE, n_trials=8, storage_dir=tmp_path, study_name="flaky", seed=1)
    assert out["n_failed"] >= 1 and out["best_params"]["alpha"] >= 0.05

    def always(params):
        raise ArithmeticError("never converges")

    with pytest.raises(InputError, match="every trial of study never failed"):
        H.tune(always, SPACE, n_trials=2, storage_dir=tmp_path, study_name="never", seed=0)


def test_degenerate_trials_rank_last_and_a_degenerate_choice_is_logged(tmp_path, caplog):
    """A trial whose model gives every patient one risk scores 0.5 by ties, which can beat real models
    with C < 0.5 on a small inner fold: it must never be chosen silently."""
    def objective(params):
        degenerate = params["alpha"] > 0.1  # e.g. a penalty that zeroes every coefficient
        return (0.5 if degenerate else 0.45 + 0.01 * params["depth"]), degenerate

    out = H.tune(objective, SPACE, n_trials=6, storage_dir=tmp_path, study_name="d", seed=0)
    assert 0 < out["n_degenerate"] < 6 and not out["best_degenerate"]
    assert out["best_params"]["alpha"] <= 0.1 and out["best_value"] < 0.5
    assert out["ranked_degenerate"] == sorted(out["ranked_degenerate"])  # degenerate ones after all others
    with caplog.at_level("WARNING", logger="tessera.survival.hpo"):
        allbad = H.tune(lambda p: (0.5, True), SPACE, n_trials=1, storage_dir=tmp_path, study_name="a", seed=0)
    assert allbad["best_degenerate"] and "degenerate" in caplog.text


@pytest.mark.parametrize("spec", [{"type": "float", "low": 1, "high": 0}, {"type": "float", "low": 0, "high": 1, "log": True},
                                  {"type": "categorical", "choices": []}, {"type": "normal"}])
def test_bad_search_space_is_rejected(spec):
    with pytest.raises(InputError, match="search space of 'x' is invalid"):
        check_space({"x": spec}, "survival.models[m]")


def test_tuning_sees_only_the_training_fold_and_each_fold_searches_its_own_candidates(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n = 40
    X = pd.DataFrame({"clinical__x": rng.normal(size=n), "clinical__z": rng.normal(size=n)})
    data = SurvivalData(np.array([f"P{i:02d}" for i in range(n)]), X, make_y(rng.uniform(10, 900, n), rng.random(n) < 0.6))
    seen, candidates = [], []
    real = experiment.inner_cv_score

    def spy(spec, params, train, *args, **kwargs):
        seen.append(set(train.patient_id))
        candidates.append(params["alpha"])
        return real(spec, params, train, *args, **kwargs)

    monkeypatch.setattr(experiment, "inner_cv_score", spy)
    spec = ModelSpec("m", "coxnet", search={"alpha": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}, n_trials=2)
    cv = CVSettings(n_splits=4, n_repeats=1)
    folds = outer_folds(data.y, 4, 1, 0)
    frame = time_frame(data.y, folds, EvalSettings())
    for fold in folds:
        seen.clear()
        experiment.run_fold(spec, data, fold, frame, cv, HPOSettings(str(tmp_path)), "k", 2)
        assert len(seen) == 2
        assert all(s == set(data.patient_id[fold.train]) for s in seen)
        assert all(not s & set(data.patient_id[fold.test]) for s in seen)
    # 2 trials, all random start-up draws: seeded per fold, the folds' studies draw different candidates
    per_fold = [tuple(candidates[i:i + 2]) for i in range(0, len(candidates), 2)]
    assert len(set(per_fold)) == len(folds) == 4


def test_refit_falls_back_to_the_next_best_trial_when_the_solver_fails(tmp_path, monkeypatch):
    """Coxnet can fail on a whole training fold with a penalty that worked on its inner folds."""
    from tessera.survival.tabular import TabularModel

    rng = np.random.default_rng(1)
    n = 40
    X = pd.DataFrame({"clinical__x": rng.normal(size=n)})
    data = SurvivalData(np.array([f"P{i:02d}" for i in range(n)]), X, make_y(rng.uniform(10, 900, n), rng.random(n) < 0.6))
    real_fit = TabularModel.fit

    def fragile_fit(self, X, y):
        if len(y) == n and self.params["alpha"] < 0.1:  # fails on the whole set only
            raise ArithmeticError("Numerical error, because weights are too large")
        return real_fit(self, X, y)

    monkeypatch.setattr(TabularModel, "fit", fragile_fit)
    spec = ModelSpec("m", "coxnet", search={"alpha": {"type": "float", "low": 0.001, "high": 1.0, "log": True}},
                     n_trials=6)
    monkeypatch.setattr(experiment.H, "tune", lambda *a, **k: {
        "best_params": {"alpha": 0.01}, "ranked_params": [{"alpha": 0.01}, {"alpha": 0.05}, {"alpha": 0.5}],
        "ranked_degenerate": [False] * 3,
        "best_value": 0.7, "n_trials": 6, "n_failed": 0, "resumed": False})
    learner, params, summary = experiment.tune_and_fit(spec, data, "s", CVSettings(), HPOSettings(str(tmp_path)),
                                                       horizon=300.0, sampler_seed=0)
    assert params["alpha"] == 0.5 and summary["refit_rank"] == 2
    with pytest.raises(InputError, match="cannot be fitted on 40 training patients") as err:
        experiment.tune_and_fit(ModelSpec("m", "coxnet", params={"alpha": 0.01}), data, "s", CVSettings(),
                                HPOSettings(str(tmp_path)), horizon=300.0, sampler_seed=0)
    assert "larger penalty" in str(err.value)
