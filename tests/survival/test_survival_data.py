"""Bad survival inputs get clear errors; outer and inner folds are what they claim to be."""

import numpy as np
import pandas as pd
import pytest

from tessera.errors import InputError
from tessera.survival.cv import Fold, inner_folds, inner_holdout, outer_folds
from tessera.survival.data import SurvivalData, check_features, make_y
from tessera.survival.evaluation import TimeFrame
from tessera.survival.experiment import run_fold
from tessera.survival.settings import CVSettings, HPOSettings, ModelSpec


def _y(n=40, seed=0, events=None):
    rng = np.random.default_rng(seed)
    event = rng.random(n) < 0.5 if events is None else events
    return make_y(rng.uniform(10, 1000, n), event)


@pytest.mark.parametrize("bad", [0.0, -5.0, np.nan, np.inf])
def test_non_positive_or_missing_time_is_named(bad):
    with pytest.raises(InputError, match=r"P2.*") as err:
        make_y([10.0, 20.0, bad], [1, 0, 1], ["P0", "P1", "P2"])
    assert "field 'time'" in str(err.value) and "Fix:" in str(err.value)


@pytest.mark.parametrize("bad", [2, -1, "yes"])
def test_event_outside_0_1_is_named(bad):
    with pytest.raises(InputError, match="not 0 or 1: P1"):
        make_y([10.0, 20.0], [1, bad], ["P0", "P1"])


def test_patient_without_any_feature_is_an_error():
    X = pd.DataFrame({"clinical__age": [60.0, np.nan, 70.0], "clinical__stage": [1.0, np.nan, 2.0]})
    with pytest.raises(InputError, match="no feature value at all: P1"):
        check_features(X, np.array(["P0", "P1", "P2"]))


def test_all_censored_cohort_cannot_be_split():
    with pytest.raises(InputError, match="no events"):
        outer_folds(_y(events=np.zeros(40, bool)), 5, 1, 0)


def test_fewer_events_than_folds_is_an_error():
    events = np.zeros(40, bool)
    events[:3] = True
    with pytest.raises(InputError, match="3 event\\(s\\), fewer than the 5 folds"):
        outer_folds(_y(events=events), 5, 1, 0)


def test_a_class_too_small_for_any_folds_asks_for_a_larger_cohort():
    """One censored patient (or one event) cannot be spread over 2 folds: the fix is a larger cohort, not
    "at most 2 folds" (what a drop of patients without slides left a user's 2-fold run with)."""
    events = np.ones(6, bool)
    events[0] = False
    with pytest.raises(InputError, match="1 censored patient\\(s\\), fewer than the 2 folds") as err:
        outer_folds(_y(6, events=events), 2, 1, 0)
    assert "at least 2 censored patients (or none)" in str(err.value) and "at most" not in str(err.value)
    with pytest.raises(InputError, match="use at most 3 folds"):
        outer_folds(_y(6, events=np.array([1, 1, 1, 0, 0, 0], bool)), 4, 1, 0)


def test_all_censored_training_fold_is_an_error():
    """A fold whose training part has no event (possible only with hand-made folds) stops with the fold named."""
    events = np.zeros(20, bool)
    events[:4] = True
    y = _y(20, events=events)
    data = SurvivalData(np.array([f"P{i}" for i in range(20)]), pd.DataFrame({"clinical__x": np.arange(20.0)}), y)
    fold = Fold(0, 3, train=np.arange(4, 20), test=np.arange(0, 4))
    frame = TimeFrame(np.array([100.0]), np.array([100.0]), 100.0, True, 900.0)
    with pytest.raises(InputError, match="training part of fold 3 \\(repeat 0\\) has no events"):
        run_fold(ModelSpec("m", "coxnet"), data, fold, frame, CVSettings(), HPOSettings(), "k", 2)


def test_outer_folds_cover_each_patient_once_per_repeat_with_events_balanced():
    y = _y(100)
    folds = outer_folds(y, 5, 3, 0)
    assert len(folds) == 15
    for r in range(3):
        tests = np.concatenate([f.test for f in folds if f.repeat == r])
        assert np.array_equal(np.sort(tests), np.arange(100))
        for f in (f for f in folds if f.repeat == r):
            assert not set(f.train) & set(f.test)
            assert abs(y["event"][f.test].sum() - y["event"].sum() / 5) <= 1  # stratified on events
    assert not np.array_equal(folds[0].test, folds[5].test)  # repeats shuffle differently


def test_inner_splits_index_the_training_fold_only():
    y = _y(50)
    for tr, va in inner_folds(y, 3, 0):
        assert set(tr) | set(va) == set(range(50)) and not set(tr) & set(va)
    tr, va = inner_holdout(y, 0.2, 0)
    assert len(va) == 10 and not set(tr) & set(va)
