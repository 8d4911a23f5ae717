"""What failed, per stage, printed at the end of a run (the Snakefile's ``onsuccess``/``onerror``).

A slide or patient that fails is recorded in its stage's index with the reason and skipped by later
stages while the run goes on, so Snakemake reports "100% done" for a run where most slides failed.
:func:`failure_summary` reads the stages' indexes and says, per stage, how many slides or patients
failed, grouped by reason, and where the index is.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

MAX_REASON_CHARS = 160


@dataclass(frozen=True)
class StageIndex:
    """One stage's index files (``status``, ``reason`` and an ID column per row) and how to name them.

    ``unit``: ``"slides"`` (rows counted by ``slide_id``) or ``"patients"`` (by ``patient_id``);
    ``shown``: where a person finds the index (a path, or a pattern for per-shard indexes).
    """

    stage: str
    unit: str
    paths: tuple[str, ...]
    shown: str


def _reason(row: dict) -> str:
    """The reason with the row's own IDs replaced, so one cause over many slides is one group."""
    reason = " ".join(str(row.get("reason", "")).split()) or "(no reason given)"
    if reason.startswith("slide stage failed"):
        return "the slide stage failed (see slides)"
    for column, placeholder in (("slide_id", "<slide>"), ("patient_id", "<patient>")):
        if row.get(column):
            reason = reason.replace(str(row[column]), placeholder)
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS - 1] + "…"


def _read(paths: Sequence[str]) -> pd.DataFrame | None:
    frames = [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False) for p in paths if os.path.isfile(p)]
    return pd.concat(frames, ignore_index=True) if frames else None


def failure_summary(stages: Sequence[StageIndex], max_reasons: int = 5) -> tuple[list[str], bool]:
    """``(lines, any failed)``: per stage with failures, ``N of M slides failed (K patients)``, the index,
    and the ``max_reasons`` commonest reasons with their counts; then one line naming the stages without
    failures. Stages whose index files do not exist (not run) are left out."""
    lines, clean = [], []
    for stage in stages:
        index = _read(stage.paths)
        if index is None or "status" not in index:
            continue
        key = "slide_id" if stage.unit == "slides" else "patient_id"
        failed = index[index["status"] != "ok"]
        if failed.empty:
            clean.append(stage.stage)
            continue
        n_patients = failed["patient_id"].nunique()
        patients = f" ({n_patients} patient{'s' * (n_patients != 1)})" if stage.unit == "slides" else ""
        lines.append(f"{stage.stage}: {failed[key].nunique()} of {index[key].nunique()} {stage.unit} failed"
                     f"{patients}; index: {stage.shown}")
        reasons = Counter(_reason(row) for row in failed.to_dict("records"))
        for reason, n in reasons.most_common(max_reasons):
            lines.append(f"    {n} × {reason}")
        if len(reasons) > max_reasons:
            lines.append(f"    … and {len(reasons) - max_reasons} other reasons (see the index)")
    if clean:
        lines.append(f"no failures: {', '.join(clean)}")
    return lines, any(not line.startswith(("no failures", " ")) for line in lines)
