"""Which patches of a slide are encoded, in what order, and the DataLoader side that reads them.

A slide's patch encoder runs once per distinct 256-px patch: the union of the slide's tissue patches
(the grid file's ``coords``; their features form the patch-level output) and every patch of every
region grid (a region encoder needs all rows × cols patches of a region, background included, as
HIPT's ViT-4K sees the whole 4096-px image). With zero overlap the tissue patches are a subset of the
region grids, so nothing is encoded twice. Patches are ordered region by region, row-major inside a
region, then any tissue patch outside the regions: neighbouring patches share JPEG tiles, which the
reader's tile cache then decodes once.

:class:`PatchBatches` is the map-style dataset the workers run: item ``i`` is one batch of one slide's
patches (batches never mix slides, so a slide's features do not depend on its neighbours in the shard)
as a (B, size, size, 3) uint8 tensor. A read error is returned, not raised, so one corrupt slide fails
alone; workers skip the batches of slides already marked failed in a shared flag tensor.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from tessera.errors import SlideError
from tessera.pathology.reader import PatchGeometry, TileCache, TileReader, read_patch
from tessera.uri import download, is_s3, split_s3

log = logging.getLogger(__name__)

#: Attributes of the slide stage's grid file carried into every feature file (GUIDE §3 and provenance).
GRID_ATTRS = ("patch_size", "patch_size_level0", "region_size", "region_size_level0", "overlap", "target_mpp",
              "target_magnification", "level0_mpp", "mpp_source", "level0_magnification", "level0_width",
              "level0_height")


@dataclass
class SlidePlan:
    """One slide's patches to encode and how the outputs are gathered from them.

    ``unique`` (U, 2) level-0 (x, y) of each patch to encode, in read order; ``patch_rows`` (N,) the row
    of ``unique`` for each tissue patch ``coords`` (N, 2); ``region_rows[r]`` (rows·cols,) the rows of
    ``unique`` for region ``r``'s grid, row-major, and ``region_grid[r]`` = (rows, cols).
    """

    slide_id: str
    patient_id: str
    path: str
    attrs: dict
    coords: np.ndarray
    region_coords: np.ndarray
    region_sizes: np.ndarray
    unique: np.ndarray
    patch_rows: np.ndarray
    region_rows: list[np.ndarray]
    region_grid: np.ndarray  # (M, 2) rows, cols
    grid_digest: str = ""
    read_info: dict = field(default_factory=dict)  # filled from the first batch: level, box, reader


def _dedupe_in_order(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an (K, 2) int array in first-seen order, and each row's index among them."""
    keys = points[:, 0].astype(np.int64) << 32 | points[:, 1].astype(np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return points[first[order]], rank[inverse]


def plan_slide(slide_id: str, patient_id: str, path: str, grid_h5: str | Path) -> SlidePlan:
    """Read a slide's grid file (the slide stage's ``patches/{slide_id}.h5``) and plan its patches."""
    with h5py.File(grid_h5, "r") as f:
        coords = f["coords"][()].astype(np.int64).reshape(-1, 2)
        region_coords = f["region_coords"][()].astype(np.int64).reshape(-1, 2)
        region_sizes = f["region_sizes"][()].astype(np.int64).reshape(-1, 2)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items() if k in GRID_ATTRS}
    missing = [k for k in GRID_ATTRS if k not in attrs]
    if missing:
        raise SlideError(f"grid file {grid_h5} lacks attributes {missing}. Fix: rerun the slide stage")
    p0 = int(attrs["patch_size_level0"])
    blocks, grids = [], []
    for (rx, ry), (rw, rh) in zip(region_coords, region_sizes):
        rows, cols = int(rh) // p0, int(rw) // p0
        xs, ys = rx + p0 * np.arange(cols), ry + p0 * np.arange(rows)
        blocks.append(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))
        grids.append((rows, cols))
    everything = np.concatenate([*blocks, coords]) if blocks else coords
    unique, rows_of = _dedupe_in_order(everything)
    region_rows, start = [], 0
    for block in blocks:
        region_rows.append(rows_of[start:start + len(block)])
        start += len(block)
    digest = hashlib.sha256()
    for array in (coords, region_coords, region_sizes):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(sorted((k, str(v)) for k, v in attrs.items())).encode())
    return SlidePlan(
        slide_id, patient_id, path, attrs, coords, region_coords, region_sizes, unique, rows_of[start:],
        region_rows, np.asarray(grids, np.int64).reshape(-1, 2), digest.hexdigest(),
    )


def local_copy(path: str, scratch: Path) -> Path:
    """Where :func:`localise` keeps a job's copy of an ``s3://`` slide."""
    _, key = split_s3(path)
    return scratch / f"{hashlib.sha256(path.encode()).hexdigest()[:16]}-{Path(key).name}"


def localise(path: str, scratch: Path) -> Path:
    """A local file for ``path``: itself, or (for ``s3://``) a copy in ``scratch`` made once per job.

    Several workers may ask at once: an exclusive lock makes the first download and the others wait.
    The job deletes the copy when the slide is done (:func:`forget_local`).
    """
    if not is_s3(path):
        return Path(path)
    target = local_copy(path, scratch)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            download(path, target)
    return target


def forget_local(path: str, scratch: Path) -> None:
    """Delete the job's copy of an ``s3://`` slide (workers that still hold it open keep reading it)."""
    if is_s3(path):
        local_copy(path, scratch).unlink(missing_ok=True)


class PatchBatches(torch.utils.data.Dataset):
    """Batches of patches of a list of slides, read in DataLoader workers.

    Item ``i`` → dict ``slide`` (index into ``plans``), ``start``, ``pixels`` ((B, size, size, 3) uint8,
    empty on error), ``error`` ('' or the reason the slide failed) and ``read`` (level, box, reader).
    ``failed``: a shared uint8 flag per slide; batches of flagged slides are skipped.
    """

    def __init__(self, plans: list[SlidePlan], batch_size: int, patch_size: int, scratch: Path,
                 failed: torch.Tensor, cache_bytes: int = 64 << 20) -> None:
        self.plans = [(p.path, p.unique, int(p.attrs["patch_size_level0"])) for p in plans]
        self.items = [(s, start, min(start + batch_size, len(p.unique)))
                      for s, p in enumerate(plans) for start in range(0, len(p.unique), batch_size)]
        self.patch_size, self.scratch, self.failed, self.cache_bytes = patch_size, scratch, failed, cache_bytes
        self._open: tuple[int, TileReader, PatchGeometry] | None = None
        self._cache: TileCache | None = None  # made in the worker that uses it, shared by its slides
        self._box = np.empty(0, np.uint8)  # level pixels of one patch before resampling

    def __len__(self) -> int:
        return len(self.items)

    def _reader(self, s: int) -> tuple[TileReader, PatchGeometry]:
        if self._open is None or self._open[0] != s:
            self.close()
            path, _, p0 = self.plans[s]
            if self._cache is None:
                self._cache = TileCache(self.cache_bytes)
            reader = TileReader(localise(path, self.scratch), cache=self._cache)
            self._open = (s, reader, PatchGeometry.choose(reader, p0, self.patch_size))
        return self._open[1], self._open[2]

    def __getitem__(self, i: int) -> dict:
        s, start, stop = self.items[i]
        out = {"slide": s, "start": start, "pixels": torch.empty(0, dtype=torch.uint8), "error": "", "read": {}}
        if self.failed[s]:
            out["error"] = "skipped"
            return out
        try:
            reader, geometry = self._reader(s)
            coords = self.plans[s][1][start:stop]
            pixels = np.empty((len(coords), self.patch_size, self.patch_size, 3), np.uint8)
            if self._box.shape != (geometry.box, geometry.box, 3):
                self._box = np.empty((geometry.box, geometry.box, 3), np.uint8)
            for j, (x, y) in enumerate(coords):
                read_patch(reader, int(x), int(y), geometry, out=pixels[j], scratch=self._box)
            out["pixels"] = torch.from_numpy(pixels)
            out["read"] = {"read_level": geometry.level, "read_box": geometry.box,
                           "reader": "tiles" if geometry.level in reader.fast_levels else "openslide"}
        except SlideError as e:
            out["error"] = str(e)
        except Exception as e:  # one slide's unforeseen failure must not stop the shard
            log.exception("reading %s failed", self.plans[s][0])
            out["error"] = f"unexpected {type(e).__name__} while reading pixels: {e}"
        return out

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None
