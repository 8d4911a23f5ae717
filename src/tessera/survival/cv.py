"""Repeated, event-stratified K-fold splits, and the inner splits that stay inside a training fold.

Outer folds (:func:`outer_folds`) give every patient one out-of-fold prediction per repeat. Anything
tuned or stopped early uses :func:`inner_folds` / :func:`inner_holdout` of the *training* part only,
so the reporting fold is never seen before it is predicted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold, train_test_split

from tessera.errors import InputError


@dataclass(frozen=True)
class Fold:
    """One outer split: indices into the cohort (sorted)."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray


def check_folds_possible(y: np.ndarray, n_splits: int, what: str = "the cohort",
                         field: str = "survival.cv.n_splits") -> None:
    """Each of ``n_splits`` stratified folds needs at least one event and one censored patient to train on.

    ``field`` is the config key that sets ``n_splits`` (``survival.cv.inner_splits`` for inner folds).
    """
    n_events = int(y["event"].sum())
    if n_events == 0:
        raise InputError(f"{what} has no events: every patient is censored",
                         fix="survival models need observed events; check the event column (1 = event)")
    if n_splits < 2:
        raise InputError(f"{field.rsplit('.', 1)[-1]} is {n_splits}", field=field, fix="use at least 2 folds")
    if n_events < n_splits:
        raise InputError(
            f"{what} has {n_events} event(s), fewer than the {n_splits} folds: some test folds would have none",
            field=field, fix=_fewer_folds(n_events, "2 events"),
        )
    if len(y) - n_events and len(y) - n_events < n_splits:
        raise InputError(
            f"{what} has {len(y) - n_events} censored patient(s), fewer than the {n_splits} folds",
            field=field, fix=_fewer_folds(len(y) - n_events, "2 censored patients (or none)"),
        )


def _fewer_folds(n: int, need: str) -> str:
    """The fix when only ``n`` patients of a class can be spread over the folds (2 folds need 2)."""
    if n >= 2:
        return f"use at most {n} folds, or a larger cohort"
    return f"a larger cohort: cross-validation needs at least {need}"


def outer_folds(y: np.ndarray, n_splits: int, n_repeats: int, seed: int) -> list[Fold]:
    """Repeated stratified K-fold on the event indicator (scikit-learn's ``RepeatedStratifiedKFold``)."""
    check_folds_possible(y, n_splits)
    event = y["event"].astype(int)
    if event.min() == event.max():  # no censoring: plain stratification is meaningless but harmless
        event = np.zeros_like(event)
    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    folds = []
    for i, (train, test) in enumerate(splitter.split(np.zeros(len(y)), event)):
        folds.append(Fold(i // n_splits, i % n_splits, np.sort(train), np.sort(test)))
    return folds


def inner_folds(y: np.ndarray, n_splits: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold inside a training fold (indices relative to ``y``)."""
    check_folds_possible(y, n_splits, what="a training fold", field="survival.cv.inner_splits")
    event = y["event"].astype(int)
    yield from StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), event)


def inner_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One stratified train/validation split of a training fold (e.g. for early stopping)."""
    event = y["event"].astype(int)
    stratify = event if min(event.sum(), len(event) - event.sum()) >= 2 else None
    train, val = train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=stratify)
    if not y["event"][train].any():
        raise InputError("the inner training split has no events", field="early_stopping.validation_fraction",
                         fix="use a smaller validation_fraction or fixed epochs")
    return np.sort(train), np.sort(val)
