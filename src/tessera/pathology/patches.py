"""Which tiles of a slide are read for each grid, in what order, and the DataLoader side that reads them.

One :class:`SlidePlan` per slide and grid. On the slide stage's grid (:func:`plan_slide`) the patch
encoders run once per distinct tile: the union of the slide's tissue patches (the grid file's ``coords``;
their features form the patch-level outputs) and, when a region encoder runs, every patch of every region
grid (a region encoder needs all rows × cols patches of a region, background included, as HIPT's ViT-4K
sees the whole 4096-px image). With zero overlap the tissue patches are a subset of the region grids, so
nothing is encoded twice. Patches are ordered region by region, row-major inside a region, then any
tissue patch outside the regions: neighbouring patches share JPEG tiles, which the reader's tile cache
then decodes once. An encoder reading another tile size or resolution gets its own grid from the same
tissue mask (:func:`plan_derived`, via :mod:`tessera.pathology.grids`).

:class:`PatchBatches` is the map-style dataset the workers run: item ``i`` is one batch of one slide's
patches (batches never mix slides, so a slide's features do not depend on its neighbours in the shard)
as one (B, P, P, 3) uint8 tensor per transform of the grid's encoders (each tile decoded once, then
resized/cropped by each published transform). A read error is returned, not raised, so one corrupt slide
fails alone; workers skip the batches of plans already marked failed in a shared flag tensor.
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
from tessera.pathology.encoders.transforms import TileTransform
from tessera.pathology.grids import derived_grid
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


def read_grid_attrs(grid_h5: str | Path) -> dict:
    """The GUIDE §3 attributes of a slide stage grid file (``patches/{slide_id}.h5``)."""
    with h5py.File(grid_h5, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items() if k in GRID_ATTRS}
    missing = [k for k in GRID_ATTRS if k not in attrs]
    if missing:
        raise SlideError(f"grid file {grid_h5} lacks attributes {missing}. Fix: rerun the slide stage")
    return attrs


def _digest(*arrays: np.ndarray, attrs: dict) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(sorted((k, str(v)) for k, v in attrs.items())).encode())
    return digest.hexdigest()


def plan_slide(slide_id: str, patient_id: str, path: str, grid_h5: str | Path, with_regions: bool = True) -> SlidePlan:
    """Read a slide's grid file (the slide stage's ``patches/{slide_id}.h5``) and plan its patches.

    ``with_regions``: also read every patch of every region (a region encoder runs on this grid).
    """
    attrs = read_grid_attrs(grid_h5)
    with h5py.File(grid_h5, "r") as f:
        coords = f["coords"][()].astype(np.int64).reshape(-1, 2)
        region_coords = f["region_coords"][()].astype(np.int64).reshape(-1, 2)
        region_sizes = f["region_sizes"][()].astype(np.int64).reshape(-1, 2)
    if not with_regions:
        region_coords, region_sizes = np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64)
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
    return SlidePlan(
        slide_id, patient_id, path, attrs, coords, region_coords, region_sizes, unique, rows_of[start:],
        region_rows, np.asarray(grids, np.int64).reshape(-1, 2), _digest(coords, region_coords, region_sizes, attrs=attrs),
    )


def plan_derived(slide_id: str, patient_id: str, path: str, grid_h5: str | Path, tissue_geojson: str | Path,
                 tile_px: int, mpp: float, min_tissue_fraction: float) -> SlidePlan:
    """The plan of a grid of ``tile_px`` tiles at ``mpp`` µm/px, from the slide stage's tissue polygons.

    Same origin, overlap and tissue-fraction rule as the slide stage's grid; no regions. The plan's
    ``attrs`` describe this grid (``patch_size``, ``patch_size_level0``, ``target_mpp``, ...).
    """
    base = read_grid_attrs(grid_h5)
    coords, p0 = derived_grid(tissue_geojson, base, tile_px, mpp, min_tissue_fraction)
    attrs = {k: v for k, v in base.items() if not k.startswith("region_")}
    attrs.update(patch_size=tile_px, patch_size_level0=p0, target_mpp=mpp, target_magnification=10.0 / mpp)
    empty = np.zeros((0, 2), np.int64)
    return SlidePlan(slide_id, patient_id, path, attrs, coords, empty, empty, coords, np.arange(len(coords)), [],
                     empty, _digest(coords, attrs=attrs))


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
    """Batches of tiles of a list of slide plans, read in DataLoader workers.

    Item ``i`` → dict ``plan`` (index into ``plans``), ``start``, ``views`` (one (B, P, P, 3) uint8 tensor
    per transform in ``transforms[plan]``; empty on error), ``error`` ('' or the reason the plan failed)
    and ``read`` (level, box, reader). ``failed``: a shared uint8 flag per plan; its batches are skipped.
    """

    def __init__(self, plans: list[SlidePlan], batch_size: int, transforms: list[tuple[TileTransform, ...]],
                 scratch: Path, failed: torch.Tensor, cache_bytes: int = 64 << 20) -> None:
        self.plans = [(p.path, p.unique, int(p.attrs["patch_size_level0"]), int(p.attrs["patch_size"])) for p in plans]
        self.items = [(s, start, min(start + batch_size, len(p.unique)))
                      for s, p in enumerate(plans) for start in range(0, len(p.unique), batch_size)]
        self.transforms, self.scratch, self.failed, self.cache_bytes = transforms, scratch, failed, cache_bytes
        self._open: tuple[str, TileReader] | None = None
        self._cache: TileCache | None = None  # made in the worker that uses it, shared by its slides
        self._box = np.empty(0, np.uint8)  # level pixels of one patch before resampling

    def __len__(self) -> int:
        return len(self.items)

    def _reader(self, s: int) -> tuple[TileReader, PatchGeometry]:
        path, _, p0, size = self.plans[s]
        if self._open is None or self._open[0] != path:
            self.close()
            if self._cache is None:
                self._cache = TileCache(self.cache_bytes)
            self._open = (path, TileReader(localise(path, self.scratch), cache=self._cache))
        reader = self._open[1]
        return reader, PatchGeometry.choose(reader, p0, size)

    def __getitem__(self, i: int) -> dict:
        s, start, stop = self.items[i]
        out = {"plan": s, "start": start, "views": [], "error": "", "read": {}}
        if self.failed[s]:
            out["error"] = "skipped"
            return out
        try:
            reader, geometry = self._reader(s)
            coords = self.plans[s][1][start:stop]
            size = self.plans[s][3]
            tiles = np.empty((len(coords), size, size, 3), np.uint8)
            if self._box.shape != (geometry.box, geometry.box, 3):
                self._box = np.empty((geometry.box, geometry.box, 3), np.uint8)
            for j, (x, y) in enumerate(coords):
                read_patch(reader, int(x), int(y), geometry, out=tiles[j], scratch=self._box)
            out["views"] = [torch.from_numpy(t.apply(tiles)) for t in self.transforms[s]]
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
