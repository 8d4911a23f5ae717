"""Per-patient bags of instance embeddings (patches or regions) for attention-MIL.

Read from the pathology stage's outputs: ``results/features/{encoder}/index.tsv`` (``slide_id``,
``patient_id``, ``path`` relative to the working directory, ``n``, ``dim``) pointing at per-slide HDF5
files in the GUIDE §3 layout (``features`` (N, D) float32, ``coords`` (N, 2) int64 level-0 x, y). A
patient's bag is the concatenation of all their slides that passed QC (``results/qc/slides.tsv``
status ``ok``), in slide-ID order.

Bags are kept in memory up to ``cache_bytes`` (those beyond are read from disk when needed), so a
cohort larger than memory still trains, only slower. ``dataset="tokens"`` reads a region encoder's token
grids instead (``tokens`` (N, G, G, D) float16, kept as float16, and ``token_grid`` (N, 2); written with
``pathology.region_tokens``): the input of the ``hipt_lgp`` model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from tessera.errors import InputError


@dataclass
class Bag:
    """One patient's instances: ``features`` (N, D) float32 (or token grids (N, G, G, D) float16),
    ``slide_id`` (N,), ``row`` (N,) index of the instance in its slide's file, ``coords`` (N, 2) level-0
    x, y, ``size_level0`` (N,) instance side in level-0 pixels (0 when the file does not say), ``grid``
    (N, 2) rows and columns of each token grid (None for feature rows)."""

    features: np.ndarray
    slide_id: np.ndarray
    row: np.ndarray
    coords: np.ndarray
    size_level0: np.ndarray
    grid: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.features)


class BagStore:
    """Patient → :class:`Bag`, from a feature index (and optionally the QC table)."""

    def __init__(self, index_tsv: str | os.PathLike, qc_tsv: str | os.PathLike | None = None,
                 workdir: str | os.PathLike = ".", cache_bytes: int = 4 << 30, dataset: str = "features") -> None:
        if dataset not in ("features", "tokens"):
            raise ValueError(f"unknown bag dataset {dataset!r}")
        self.dataset = dataset
        index = pd.read_csv(index_tsv, sep="\t", dtype={"slide_id": str, "patient_id": str, "path": str})
        missing = [c for c in ("slide_id", "patient_id", "path", "n", "dim") if c not in index.columns]
        if missing:
            raise InputError(f"feature index lacks column(s) {', '.join(missing)}", file=str(index_tsv),
                             fix="use the index.tsv written by the pathology stage")
        if qc_tsv is not None:
            qc = pd.read_csv(qc_tsv, sep="\t", dtype={"slide_id": str, "status": str})
            ok = set(qc.loc[qc["status"] == "ok", "slide_id"])
            index = index[index["slide_id"].isin(ok)]
        index = index[index["n"] > 0].sort_values(["patient_id", "slide_id"])
        dims = index["dim"].unique()
        if len(dims) > 1:
            raise InputError(f"feature index mixes dimensions {sorted(dims)}", file=str(index_tsv),
                             fix="use one encoder's index per model")
        self.dim = int(dims[0]) if len(dims) else 0
        self.workdir = Path(workdir)
        if dataset == "tokens" and len(index):  # the index gives the region features' dimension
            first = self.workdir / index["path"].iloc[0]
            with h5py.File(first, "r") as f:
                self.dim = int(self._dataset(f, index["slide_id"].iloc[0], first).shape[-1])
        self._slides = {p: list(zip(g["slide_id"], g["path"])) for p, g in index.groupby("patient_id", sort=True)}
        self._cache: dict[str, Bag] = {}
        self._cache_left = cache_bytes

    def fingerprint(self) -> str:
        """Hash of the slides in the bags and their files' size and modification time (re-extracted features
        change it): part of the name of a deep model's Optuna studies."""
        import hashlib

        h = hashlib.sha256()
        for patient, slides in sorted(self._slides.items()):
            for slide_id, rel in slides:
                st = (self.workdir / rel).stat()
                h.update(f"{patient}\t{slide_id}\t{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:12]

    def _dataset(self, f: h5py.File, slide_id: str, path: Path) -> h5py.Dataset:
        if self.dataset not in f:
            raise InputError(f"the feature file of slide {slide_id} has no {self.dataset} dataset", file=str(path),
                             fix="set pathology.region_tokens: true and rerun the pathology stage (hipt_lgp reads "
                                 "each region's grid of patch features)")
        return f[self.dataset]

    @property
    def patients(self) -> list[str]:
        return sorted(self._slides)

    def n_instances(self, patient_id: str) -> int:
        return len(self.get(patient_id))

    def get(self, patient_id: str) -> Bag:
        """The patient's bag (an empty bag, N = 0, for a patient without usable slides)."""
        if patient_id in self._cache:
            return self._cache[patient_id]
        parts = []
        tokens = self.dataset == "tokens"
        for slide_id, rel in self._slides.get(patient_id, []):
            with h5py.File(self.workdir / rel, "r") as f:
                feats = self._dataset(f, slide_id, self.workdir / rel)[()]
                feats = feats.astype(np.float16 if tokens else np.float32, copy=False)
                coords = f["coords"][()].astype(np.int64, copy=False)
                size = int(f["coords"].attrs.get("patch_size_level0", f.attrs.get("patch_size_level0", 0)) or 0)
                grid = f["token_grid"][()].astype(np.int64) if tokens else None
            shape = (feats.shape[1], feats.shape[2], self.dim) if tokens else (self.dim,)
            if feats.shape[1:] != shape or feats.ndim != 1 + len(shape) or len(coords) != len(feats):
                raise InputError(f"{self.dataset} of slide {slide_id} have shape {feats.shape} and coords "
                                 f"{coords.shape}", file=str(self.workdir / rel),
                                 fix=f"expected (N, {', '.join(map(str, shape))}) and (N, 2)")
            n = len(feats)
            parts.append(Bag(feats, np.full(n, slide_id, dtype=object), np.arange(n), coords, np.full(n, size), grid))
        keys = ("features", "slide_id", "row", "coords", "size_level0") + (("grid",) if tokens else ())
        if parts:
            bag = Bag(*(np.concatenate([getattr(p, k) for p in parts]) for k in keys))
        elif tokens:
            bag = Bag(np.zeros((0, 1, 1, self.dim), np.float16), np.zeros(0, object), np.zeros(0, int),
                      np.zeros((0, 2), np.int64), np.zeros(0, int), np.zeros((0, 2), np.int64))
        else:
            bag = Bag(np.zeros((0, self.dim), np.float32), np.zeros(0, object), np.zeros(0, int),
                      np.zeros((0, 2), np.int64), np.zeros(0, int))
        if bag.features.nbytes <= self._cache_left:
            self._cache[patient_id] = bag
            self._cache_left -= bag.features.nbytes
        return bag
