"""The slide stage for one shard: tissue mask → patch and region grids → HDF5, GeoJSON, QC thumbnail.

A shard directory holds, per slide, ``patches/{slide_id}.h5`` (GUIDE §3 grid contract),
``tissue/{slide_id}.geojson`` and ``thumbnails/{slide_id}.png``, plus ``index.tsv``: one row per
slide of the shard with its status (``ok`` | ``failed``), the failure reason and the files' paths
relative to the shard directory. A slide that fails is recorded and the shard goes on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tessera import __version__
from tessera.atomic import atomic_path, write_text
from tessera.errors import SlideError, TesseraError
from tessera.h5 import write_h5
from tessera.slides.grid import GridParams, Grids, make_grids
from tessera.slides.slide import Slide
from tessera.slides.tissue import TissueParams, mask_polygons, polygons_geojson, tissue_mask
from tessera.uri import local_file

log = logging.getLogger(__name__)

INDEX_COLUMNS = [
    "slide_id", "patient_id", "status", "reason", "mpp", "mpp_source", "tissue_mm2",
    "n_patches", "n_regions", "patches_h5", "tissue_geojson", "thumbnail",
]


@dataclass(frozen=True)
class PatchingParams:
    """Everything the slide stage needs (config key ``patching``)."""

    grid: GridParams = field(default_factory=GridParams)
    tissue: TissueParams = field(default_factory=TissueParams)
    thumbnail_px: int = 1024  # longest side of the QC thumbnail

    @classmethod
    def from_config(cls, cfg: dict) -> "PatchingParams":
        grid_keys = {f.name for f in fields(GridParams)}
        return cls(
            grid=GridParams(**{k: v for k, v in cfg.items() if k in grid_keys}),
            tissue=TissueParams(**cfg.get("tissue", {})),
            thumbnail_px=cfg.get("thumbnail_px", cls.thumbnail_px),
        )


def _read_downsampled(slide: Slide, downsample: float, prefer_coarser: bool) -> tuple[np.ndarray, tuple[float, float]]:
    """The slide at about ``downsample`` × level 0, read from one pyramid level.

    Returns RGB (h, w, 3) and the exact level-0 pixels per output pixel (x, y). With
    ``prefer_coarser`` the level nearest in log scale is used (ties go to the coarser, cheaper
    one); otherwise the coarsest level not coarser than asked. A level finer than asked is resized
    down with area averaging.
    """
    pyr = slide.pyramid
    level = pyr.nearest_level(downsample) if prefer_coarser else pyr.level_for_downsample(downsample)
    image = slide.read_level(level)
    lw, lh = pyr.dimensions[level]
    if pyr.downsamples[level] < downsample / 1.25:
        factor = pyr.downsamples[level] / downsample
        size = (max(1, round(lw * factor)), max(1, round(lh * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    return image, (pyr.width / w, pyr.height / h)


Overview = tuple[np.ndarray, tuple[float, float]]  # RGB (h, w, 3) uint8, level-0 pixels per pixel (x, y)


def read_overview(slide: Slide, mask_mpp: float, thumbnail_px: int) -> tuple[Overview, Overview]:
    """The tissue mask's input image and the QC thumbnail, both from one read of one pyramid level.

    The mask image has the grid of the pyramid level nearest to ``mask_mpp`` (ties go to the coarser
    level), or the slide at ``mask_mpp`` where that level is more than 2x finer (a slide with few
    levels). The thumbnail is the level nearest to ``thumbnail_px`` on its longest side, shrunk to it
    if larger. Only the finer of the two levels is read, and both images are area-averaged from it:
    reading a level is what costs, and averaging makes the mask's input the same whichever level it
    came from.
    """
    pyr = slide.pyramid
    mask_ds = mask_mpp / slide.mpp
    mask_level = pyr.nearest_level(mask_ds)
    if pyr.downsamples[mask_level] < mask_ds / 2:
        mask_size = (max(1, round(pyr.width / mask_ds)), max(1, round(pyr.height / mask_ds)))
    else:
        mask_size = pyr.dimensions[mask_level]
    thumb_level = pyr.nearest_level(max(pyr.width, pyr.height) / thumbnail_px)
    image = slide.read_level(min(mask_level, thumb_level, key=lambda level: pyr.downsamples[level]))
    shrink = min(1.0, thumbnail_px / max(image.shape[:2]))
    thumb_size = (max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink)))
    level0 = (pyr.width, pyr.height)
    return _area_resized(image, mask_size, level0), _area_resized(image, thumb_size, level0)


def _area_resized(image: np.ndarray, size: tuple[int, int], level0: tuple[int, int]) -> Overview:
    """``image`` averaged down to ``size`` (w, h) (as is when it has that size), and its scale."""
    if (image.shape[1], image.shape[0]) != tuple(size):
        image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    return image, (level0[0] / image.shape[1], level0[1] / image.shape[0])


def draw_qc(image: np.ndarray, scale: tuple[float, float], polygons: list, grids: Grids) -> np.ndarray:
    """QC overlay on an RGB thumbnail: patches (blue), regions (orange), tissue outline (green)."""
    sx, sy = scale
    overlay = image.copy()
    ps = grids.patch_size_level0
    for x, y in grids.coords:
        p0 = (int(x / sx), int(y / sy))
        p1 = (int((x + ps) / sx) - 1, int((y + ps) / sy) - 1)
        cv2.rectangle(overlay, p0, p1, (40, 90, 220), 1)
    out = cv2.addWeighted(overlay, 0.6, image, 0.4, 0)
    for (x, y), (w, h) in zip(grids.region_coords, grids.region_sizes):
        cv2.rectangle(out, (int(x / sx), int(y / sy)), (int((x + w) / sx) - 1, int((y + h) / sy) - 1), (255, 140, 0), 2)
    for exterior, holes in polygons:
        for ring in (exterior, *holes):
            pts = np.round(np.array(ring)[:, :2] / [sx, sy]).astype(np.int32)
            cv2.polylines(out, [pts], True, (0, 170, 0), 2)
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise TesseraError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def patch_slide(slide_id: str, path: str, mpp: float | None, params: PatchingParams, shard_dir: Path) -> dict:
    """Run the slide stage on one slide; write its files under ``shard_dir``; return its index row.

    Raises :class:`SlideError` for a slide that cannot be processed (the caller records it).
    """
    rel = {
        "patches_h5": f"patches/{slide_id}.h5",
        "tissue_geojson": f"tissue/{slide_id}.geojson",
        "thumbnail": f"thumbnails/{slide_id}.png",
    }
    with local_file(path) as local, Slide(local, mpp_override=mpp) as slide:
        pyr = slide.pyramid
        (mask_image, mask_scale), (thumb, thumb_scale) = read_overview(slide, params.tissue.mask_mpp, params.thumbnail_px)
        mask_mpp = slide.mpp * float(np.mean(mask_scale))
        mask = tissue_mask(mask_image, mask_mpp, params.tissue)
        if not mask.any():
            raise SlideError(
                f"no tissue found in {path}. Fix: check the slide is not blank; for faint tissue lower "
                "patching.tissue.min_darkness and min_colour (method 'background'), or min_saturation ('otsu')"
            )
        grids = make_grids(mask, mask_scale, pyr.width, pyr.height, slide.mpp, params.grid)
        if len(grids.coords) == 0:
            raise SlideError(
                f"tissue found in {path} but no patch reaches min_tissue_fraction "
                f"{params.grid.min_tissue_fraction}. Fix: lower patching.min_tissue_fraction if the tissue is real"
            )
        polygons = mask_polygons(mask, mask_scale)

        g = params.grid
        attrs = {
            "slide_id": slide_id,
            "patch_size": g.patch_size,
            "patch_size_level0": grids.patch_size_level0,
            "region_size": g.region_size,
            "region_size_level0": grids.region_size_level0,
            "overlap": g.overlap,
            "target_mpp": g.target_mpp,
            "target_magnification": 10.0 / g.target_mpp,
            "level0_mpp": slide.mpp,
            "mpp_source": slide.mpp_source,
            "level0_magnification": slide.objective_power,
            "level0_width": pyr.width,
            "level0_height": pyr.height,
            "encoder": "none",
            "tessera_version": __version__,
        }
        write_h5(
            shard_dir / rel["patches_h5"],
            {
                "coords": grids.coords,
                "tissue_fraction": grids.tissue_fraction,
                "region_coords": grids.region_coords,
                "region_sizes": grids.region_sizes,
                "region_tissue_fraction": grids.region_tissue_fraction,
            },
            attrs,
        )
        write_text(shard_dir / rel["tissue_geojson"], json.dumps(polygons_geojson(polygons, slide_id)))
        _write_png(shard_dir / rel["thumbnail"], draw_qc(thumb, thumb_scale, polygons, grids))

    tissue_mm2 = float(mask.sum()) * mask_mpp**2 / 1e6
    return {
        "status": "ok", "reason": "", "mpp": slide.mpp, "mpp_source": slide.mpp_source,
        "tissue_mm2": round(tissue_mm2, 4), "n_patches": len(grids.coords), "n_regions": len(grids.region_coords),
        **rel,
    }


def patch_shard(slides: list[dict], params: PatchingParams, shard_dir: str | Path) -> pd.DataFrame:
    """Run the slide stage on every slide of a shard; write ``index.tsv``; return the index.

    ``slides``: records with ``slide_id``, ``patient_id``, ``path`` and ``mpp`` (None or NaN = from the slide).
    """
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for rec in slides:
        base = {"slide_id": rec["slide_id"], "patient_id": rec["patient_id"]}
        try:
            row = patch_slide(rec["slide_id"], rec["path"], rec.get("mpp"), params, shard_dir)
            log.info("%s: %d patches, %d regions, %.2f mm2 tissue", rec["slide_id"], row["n_patches"],
                     row["n_regions"], row["tissue_mm2"])
        except SlideError as e:
            log.error("%s failed: %s", rec["slide_id"], e)
            row = {"status": "failed", "reason": str(e)}
        except Exception as e:  # one slide's unforeseen failure must not stop the cohort
            log.exception("%s failed unexpectedly", rec["slide_id"])
            row = {"status": "failed", "reason": f"unexpected {type(e).__name__}: {e} (see the shard log)"}
        rows.append({**dict.fromkeys(INDEX_COLUMNS, ""), **base, **row})
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    with atomic_path(shard_dir / "index.tsv") as tmp:
        index.to_csv(tmp, sep="\t", index=False)
    return index


def write_cohort_index(shard_dirs: list[str], local_dirs: list[str], out_tsv: str | Path) -> pd.DataFrame:
    """Concatenate shard indexes into the cohort index ``out_tsv`` (one row per slide, by slide_id).

    ``shard_dirs`` are the shards' paths relative to the working directory (as users see them);
    ``local_dirs`` are where this job reads them (the same unless a storage plugin staged them).
    File paths in the result are ``{shard_dir}/{path in shard}``.
    """
    frames = []
    for shard_dir, local in zip(shard_dirs, local_dirs):
        index = pd.read_csv(Path(local) / "index.tsv", sep="\t", dtype=str, keep_default_na=False)
        for col in ("patches_h5", "tissue_geojson", "thumbnail"):
            index[col] = [f"{shard_dir}/{p}" if p else "" for p in index[col]]
        frames.append(index)
    cohort = pd.concat(frames, ignore_index=True).sort_values("slide_id", kind="stable")
    failed = cohort[cohort["status"] != "ok"]
    if len(failed):
        log.warning("%d of %d slides failed (later stages skip them):", len(failed), len(cohort))
        for row in failed.itertuples():
            log.warning("  %s: %s", row.slide_id, row.reason)
    with atomic_path(out_tsv) as tmp:
        cohort.to_csv(tmp, sep="\t", index=False)
    return cohort
