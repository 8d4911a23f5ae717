"""The pathology stage's feature contract, as this stage reads it.

A feature shard directory ``results/features/{encoder}/shard-{shard}/`` holds ``index.tsv`` (columns
``slide_id``, ``patient_id``, ``path`` relative to the shard directory, optionally ``status``/``reason``:
rows whose status is not ``ok`` are skipped) and one HDF5 file per slide in the GUIDE §3 layout:
``coords`` (N, 2) int64 level-0 x, y; ``features`` (N, D) float32; attributes including ``encoder``,
``patch_size``, ``patch_size_level0`` and the weights' provenance.

Weight provenance: every attribute whose name contains ``weights`` (e.g. ``weights``,
``weights_sha256``) is carried into the report. The embeddings count as coming from random weights
when one of them is the string ``random`` (any case) or ``random_weights`` is true.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from tessera.errors import InputError, SlideError

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("slide_id", "patient_id", "path")


@dataclass(frozen=True)
class SlideFeatures:
    """One slide's feature file: where it is and whose it is."""

    slide_id: str
    patient_id: str
    path: Path


def read_shard_index(shard_dir: str | os.PathLike) -> list[SlideFeatures]:
    """The slides with features in a feature shard directory (rows not ``ok`` are skipped, with a log line)."""
    shard_dir = Path(shard_dir)
    index_path = shard_dir / "index.tsv"
    if not index_path.is_file():
        raise InputError(
            "feature shard has no index.tsv", file=str(index_path),
            fix="rerun the pathology stage for this shard (its output directory is incomplete)",
        )
    index = pd.read_csv(index_path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise InputError(
            f"feature index lacks column(s) {', '.join(missing)}", file=str(index_path), line=1,
            fix="the pathology stage writes slide_id, patient_id, path (relative to the shard directory)",
        )
    if "status" in index.columns:
        skipped = index[index["status"] != "ok"]
        for row in skipped.itertuples():
            log.warning("%s: no features (status %s: %s); skipped", row.slide_id, row.status,
                        getattr(row, "reason", ""))
        index = index[index["status"] == "ok"]
    return [SlideFeatures(r.slide_id, r.patient_id, shard_dir / r.path) for r in index.itertuples()]


@contextlib.contextmanager
def open_features(path: str | os.PathLike) -> Iterator[tuple[h5py.Dataset, h5py.Dataset, dict]]:
    """Yield ``(features, coords, attrs)`` of a per-slide feature file, checked against the contract.

    ``features`` (N, D) and ``coords`` (N, 2) are h5py datasets (read lazily, so a slide with a million
    patches is streamed, not loaded). Raises :class:`SlideError` for a missing or malformed file.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as e:
        raise SlideError(f"cannot open feature file {path}: {e}. Fix: rerun the pathology stage for this slide") from e
    with f:
        if "features" not in f or "coords" not in f:
            raise SlideError(f"{path} lacks the 'features' or 'coords' dataset. Fix: rerun the pathology stage")
        features, coords = f["features"], f["coords"]
        if features.ndim != 2 or coords.shape != (features.shape[0], 2):
            raise SlideError(
                f"{path}: features {features.shape} and coords {coords.shape} do not match the (N, D) / (N, 2) "
                "contract. Fix: rerun the pathology stage for this slide"
            )
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        yield features, coords, attrs


def provenance(attrs: dict) -> dict[str, str]:
    """The encoder name and every weights-related attribute, as strings (sorted by key)."""
    keep = {k: v for k, v in attrs.items() if k == "encoder" or "weights" in k.lower()}
    return {k: str(v.item() if isinstance(v, np.generic) else v) for k, v in sorted(keep.items())}


def is_random(prov: dict[str, str]) -> bool:
    """True when the provenance says the encoder's weights were random (see the module docstring)."""
    for key, value in prov.items():
        if key.lower() == "random_weights" and value.strip().lower() in ("true", "1", "yes"):
            return True
        if "weights" in key.lower() and value.strip().lower() == "random":
            return True
    return False


def provenance_json(prov: dict[str, str]) -> str:
    """Canonical JSON of a provenance dict (stored as an HDF5 attribute and compared across shards)."""
    return json.dumps(prov, sort_keys=True)


def check_same_provenance(seen: dict[str, str], where: str, prov: dict[str, str], this: str) -> None:
    """Raise when two feature files came from different encoders or weights (they cannot share clusters)."""
    if seen and seen != prov:
        raise InputError(
            f"features of {this} ({provenance_json(prov)}) and of {where} ({provenance_json(seen)}) come from "
            "different encoders or weights, so they cannot be clustered together",
            fix="rerun the pathology stage for the whole cohort with one set of weights",
        )
