"""Survival data as the trainers see it: features, a structured outcome and the patients' IDs.

The outcome ``y`` is scikit-survival's structured array with fields ``event`` (bool) and ``time``
(float64, days). Every entry point validates its input here so a bad table fails with an
:class:`~tessera.errors.InputError` naming the patients and the fix, not deep inside a solver.

Feature columns of the cohort table are named ``{modality}__{feature}`` (e.g. ``clinical__age``,
``pathology__f0007``, ``genomics__GENEA_e0012``); :func:`modality_of` reads the modality back, so
per-modality preprocessing (PCA) and model-level modality choices need no side table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sksurv.util import Surv

from tessera.errors import InputError
from tessera.survival.settings import SEP



def modality_of(column: str) -> str:
    """``'pathology__f0001'`` → ``'pathology'``."""
    return column.split(SEP, 1)[0]


def _name_some(ids: pd.Series | np.ndarray, limit: int = 10) -> str:
    ids = [str(i) for i in ids]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def make_y(time, event, patient_id=None, *, source: str | None = None) -> np.ndarray:
    """Validated structured outcome from times (days, > 0, finite) and events (0/1 or bool).

    Raises :class:`InputError` naming the offending patients for non-positive, missing or infinite
    times and for events other than 0/1.
    """
    time = pd.Series(np.asarray(time)).reset_index(drop=True)
    event = pd.Series(np.asarray(event)).reset_index(drop=True)
    ids = pd.Series(patient_id if patient_id is not None else np.arange(len(time))).reset_index(drop=True)
    t = pd.to_numeric(time, errors="coerce")
    bad_t = ~(np.isfinite(t) & (t > 0))
    if bad_t.any():
        raise InputError(
            f"{int(bad_t.sum())} patient(s) have a time that is not a positive finite number of days: "
            f"{_name_some(ids[bad_t])}",
            file=source, field="time", fix="give the follow-up time in days, greater than 0, for every patient",
        )
    if event.dtype == bool:
        e = event.astype(int)
    else:
        e = pd.to_numeric(event, errors="coerce")
    bad_e = ~e.isin([0, 1])
    if bad_e.any():
        raise InputError(
            f"{int(bad_e.sum())} patient(s) have an event that is not 0 or 1: {_name_some(ids[bad_e])}",
            file=source, field="event", fix="use 1 for an observed event and 0 for censored",
        )
    return Surv.from_arrays(event=e.to_numpy().astype(bool), time=t.to_numpy(dtype=float),
                            name_event="event", name_time="time")


def check_features(X: pd.DataFrame, patient_id, *, source: str | None = None) -> None:
    """Every patient needs at least one observed feature value; infinities are errors."""
    values = X.to_numpy(dtype=float)
    if not np.isfinite(values[~np.isnan(values)]).all():
        raise InputError("the feature table holds infinite values", file=source,
                         fix="replace infinities by missing values (empty cells) or finite numbers")
    empty = np.isnan(values).all(axis=1) if values.shape[1] else np.ones(len(X), bool)
    if empty.any():
        raise InputError(
            f"{int(empty.sum())} patient(s) have no feature value at all: {_name_some(np.asarray(patient_id)[empty])}",
            file=source,
            fix="remove these patients, or add a modality they have data for (a patient with nothing "
                "to predict from would be imputed entirely)",
        )


def check_has_events(y: np.ndarray, where: str, fix: str) -> None:
    """Raise :class:`InputError` when ``y`` has no event (all censored): no risk model can be fitted."""
    if not y["event"].any():
        raise InputError(f"{where} has no events: every patient is censored", fix=fix)


@dataclass
class SurvivalData:
    """One row per patient.

    ``X``: features (n, p) float, NaN = missing, columns ``{modality}__{name}``;
    ``y``: structured outcome (n,); ``patient_id``: (n,) str.
    """

    patient_id: np.ndarray
    X: pd.DataFrame
    y: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.patient_id) == len(self.X) == len(self.y)):
            raise ValueError("patient_id, X and y must have the same length")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def modalities(self) -> list[str]:
        """Modalities present among the feature columns, in first-seen order."""
        return list(dict.fromkeys(modality_of(c) for c in self.X.columns))

    def select(self, modalities: list[str] | None) -> "SurvivalData":
        """The same patients with only the columns of ``modalities`` (None = all)."""
        if modalities is None:
            return self
        unknown = [m for m in modalities if m not in self.modalities]
        if unknown:
            raise InputError(
                f"modality {', '.join(unknown)} is not in the cohort table (it has {', '.join(self.modalities)})",
                field="survival.models[].modalities",
                fix="list only modalities named in survival.cohort.modalities",
            )
        cols = [c for c in self.X.columns if modality_of(c) in modalities]
        return SurvivalData(self.patient_id, self.X[cols], self.y)

    def subset(self, idx: np.ndarray) -> "SurvivalData":
        return SurvivalData(self.patient_id[idx], self.X.iloc[idx], self.y[idx])

    def validate(self, source: str | None = None) -> "SurvivalData":
        check_features(self.X, self.patient_id, source=source)
        check_has_events(self.y, source or "the cohort",
                         fix="survival models need observed events; check the event column (1 = event)")
        return self


def load_cohort_table(path: str | os.PathLike) -> SurvivalData:
    """Read ``results/cohort/table.parquet`` (``patient_id``, ``time``, ``event``, feature columns)."""
    df = pd.read_parquet(path)
    missing = [c for c in ("patient_id", "time", "event") if c not in df.columns]
    if missing:
        raise InputError(f"cohort table lacks column(s) {', '.join(missing)}", file=str(path),
                         fix="build it with the survival_cohort rule")
    y = make_y(df["time"], df["event"], df["patient_id"], source=str(path))
    X = df.drop(columns=["patient_id", "time", "event"]).astype(float)
    data = SurvivalData(df["patient_id"].astype(str).to_numpy(), X, y)
    return data.validate(source=str(path))
