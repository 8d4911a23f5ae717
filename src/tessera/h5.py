"""The HDF5 contract shared with TRIDENT/CLAM-style tools (GUIDE §3).

A patch-grid file holds ``coords`` (N, 2) int64, level-0 (x, y) of each patch's top-left corner,
and, for regions, ``region_coords`` (M, 2) and ``region_sizes`` (M, 2) int64 in level-0 pixels.
A feature file holds ``coords`` and ``features`` (N, D) float32. Attributes (``patch_size`` at the
target resolution, ``patch_size_level0``, ``target_magnification``, ``level0_magnification``,
``level0_width``, ``level0_height``, ``overlap``, ``encoder``, ...) are written both on the file and on
the ``coords`` dataset, where TRIDENT and CLAM read them.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from tessera.atomic import atomic_path


def _attr(value: object) -> object:
    return "" if value is None else value


def write_h5(path: str | os.PathLike, datasets: dict[str, np.ndarray], attrs: dict[str, object]) -> None:
    """Write datasets and attributes to ``path`` atomically (a crash leaves no partial file)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, data in datasets.items():
                f.create_dataset(name, data=data)
            for target in (f, f["coords"]) if "coords" in f else (f,):
                for key, value in attrs.items():
                    target.attrs[key] = _attr(value)


def read_h5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """All datasets (as arrays) and the file attributes of ``path``."""
    with h5py.File(Path(path), "r") as f:
        datasets = {name: f[name][()] for name in f.keys()}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return datasets, attrs
