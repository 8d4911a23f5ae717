"""Slide stage time on a 100,000 x 80,000 px 40x slide, beside LazySlide-style and CLAM-style tissue detection.

Goal: <= 1 s per slide for tissue + grids. Anchors, measured in the same run on the same file:

- LazySlide-style: ``lazyslide.pp.find_tissues`` defaults (0.13): the level nearest 4 µm/px, median
  blur 17 on RGB, its artefact filter (Otsu over (R-G)+ x (B-G)+), closing 7 x 7 three times,
  contours to shapely polygons keeping pieces over 1e-3 and holes over 1e-5 of the image;
- CLAM-style: ``create_patches_fp.py`` defaults: the level nearest 64x, HSV saturation median
  blur 7 > 8, closing 4 x 4, contours filtered at a_t = 100 and a_h = 16 reference patches (512 px),
  at most 8 holes, scaled to level 0.

Both are reimplemented here from their published code (the packages pull torchvision and other
GPU-stack wheels this project never installs); reading is OpenSlide's, as theirs is.

The slide is an Aperio-style tiled-JPEG pyramid (levels 1, 4, 16, 64x) whose levels all show the
same synthetic tissue, one flat colour per level-0 tile (``tessera.demo.slides.write_cell_pyramid``),
so every method sees the same image whichever level it reads.

Usage: python benchmarks/bench_tissue.py [--width 100000 --height 80000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import openslide
from shapely.geometry import Polygon

from tessera.demo.slides import synth_slide, write_cell_pyramid
from tessera.slides.grid import make_grids
from tessera.slides.patching import PatchingParams, patch_slide, read_overview
from tessera.slides.slide import Slide
from tessera.slides.tissue import mask_polygons, tissue_mask

TILE = 256


def write_bench_slide(path: Path, width: int, height: int, seed: int = 0) -> None:
    """Synthetic tissue drawn at 64x, averaged to one colour per level-0 tile, as a consistent pyramid."""
    rng = np.random.default_rng(seed)
    drawn, _ = synth_slide(rng, (height // 64, width // 64), planted_fraction=0.3)
    cells = cv2.resize(drawn, (-(-width // TILE), -(-height // TILE)), interpolation=cv2.INTER_AREA)
    write_cell_pyramid(path, cells // 4 * 4, width, height)


def tessera_tissue_and_grid(path: Path, params: PatchingParams) -> int:
    """The stage's compute without file output (open, one overview read, mask, contours, grids): patches."""
    with Slide(path) as slide:
        (image, scale), _ = read_overview(slide, params.tissue.mask_mpp, params.thumbnail_px)
        mask = tissue_mask(image, slide.mpp * scale[0], params.tissue)
        mask_polygons(mask, scale)
        grids = make_grids(mask, scale, slide.pyramid.width, slide.pyramid.height, slide.mpp, params.grid)
        return len(grids.coords)


def _read_level(osr: openslide.OpenSlide, level: int) -> np.ndarray:
    return np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))[..., :3]


def lazyslide_style(path: Path) -> int:
    """LazySlide 0.13 ``find_tissues`` defaults (see the module docstring): number of tissue polygons."""
    with openslide.OpenSlide(str(path)) as osr:
        mpp = float(osr.properties[openslide.PROPERTY_NAME_MPP_X])
        level = int(np.argmin(np.abs(np.asarray(osr.level_downsamples) * mpp - 4)))
        image = cv2.medianBlur(np.ascontiguousarray(_read_level(osr, level)), 17)
        rgb = image.astype(float)
        heat = np.maximum(rgb[..., 0] - rgb[..., 1], 0) * np.maximum(rgb[..., 2] - rgb[..., 1], 0)
        _, mask = cv2.threshold(heat.astype(np.uint8), 7, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8), iterations=3)
        mask = (mask > 0).astype(np.uint8)
        min_area, min_hole = int(1e-3 * mask.size), int(1e-5 * mask.size)
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        polygons = []
        for cnt, (_, _, child, parent) in zip(contours, hierarchy[0] if hierarchy is not None else []):
            if parent != -1 or cv2.contourArea(cnt) <= min_area or len(cnt) < 4:
                continue
            holes = []
            while child != -1:
                if cv2.contourArea(contours[child]) > min_hole and len(contours[child]) >= 4:
                    holes.append(contours[child][:, 0])
                child = hierarchy[0][child][0]
            polygons.append(Polygon(cnt[:, 0], holes=holes))
        return len(polygons)


def clam_style(path: Path) -> int:
    """CLAM ``segmentTissue`` with ``create_patches_fp.py`` defaults: number of tissue contours kept."""
    with openslide.OpenSlide(str(path)) as osr:
        level = osr.get_best_level_for_downsample(64)
        image = _read_level(osr, level)
        saturation = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1], 7)
        _, mask = cv2.threshold(saturation, 8, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((4, 4), np.uint8))
        ds = osr.level_downsamples[level]
        ref_area = 512 * 512 / (ds * ds)
        a_t, a_h = 100 * ref_area, 16 * ref_area
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        if hierarchy is None:
            return 0
        hierarchy = hierarchy[0]
        kept = []
        for i in np.flatnonzero(hierarchy[:, 3] == -1):
            holes = [contours[j] for j in np.flatnonzero(hierarchy[:, 3] == i)]
            area = cv2.contourArea(contours[i]) - sum(cv2.contourArea(h) for h in holes)
            if area > a_t:
                holes = sorted(holes, key=cv2.contourArea, reverse=True)[:8]
                kept.append((contours[i] * ds, [h * ds for h in holes if cv2.contourArea(h) > a_h]))
        return len(kept)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time (s) of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=100_000)
    ap.add_argument("--height", type=int, default=80_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    params = PatchingParams()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.tiff"
        start = time.perf_counter()
        write_bench_slide(path, args.width, args.height)
        print(f"wrote {args.width} x {args.height} px pyramid ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - start:.1f} s")
        runs = iter(range(10**6))
        compute, n = timed(lambda: tessera_tissue_and_grid(path, params), args.repeats)
        full, row = timed(lambda: patch_slide("big", str(path), None, params, Path(tmp) / f"out{next(runs)}"),
                          args.repeats)
        lazy, n_lazy = timed(lambda: lazyslide_style(path), args.repeats)
        clam, n_clam = timed(lambda: clam_style(path), args.repeats)
        print(f"patches: {n}, regions: {row['n_regions']}, tissue: {row['tissue_mm2']:.1f} mm2 "
              f"(LazySlide-style: {n_lazy} polygons, CLAM-style: {n_clam} contours)")
        print(f"tessera tissue + grid (open, one read, mask, contours, grids): {compute:.3f} s per slide "
              f"(median of {args.repeats})")
        print(f"tessera whole slide stage (+ HDF5, GeoJSON, QC PNG):          {full:.3f} s per slide")
        print(f"LazySlide-style tissue (read ~4 um/px level, mask, polygons):  {lazy:.3f} s per slide "
              f"-> tessera's whole stage {lazy / full:.1f}x faster")
        print(f"CLAM-style tissue (read 64x level, mask, contours):           {clam:.3f} s per slide "
              f"-> tessera's whole stage {clam / full:.1f}x faster")
        print(f"goal <= 1 s: {'met' if full <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
