"""Tissue detection + patch/region grid time on a 100,000 x 80,000 px, 40x pyramidal slide.

Anchors (per slide, same task): CLAM 1-2 s, slideflow 2.5 s. Goal: <= 1 s.

The slide is an Aperio-style tiled-JPEG pyramid (levels 1, 4, 16, 64x). Its coarsest level carries
synthetic tissue; the finer levels repeat one pre-encoded tile (they are never decoded by this
stage, which reads only a coarse level), so the 122,000-tile file is written in seconds.

Usage: python benchmarks/bench_tissue.py [--width 100000 --height 80000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from tessera.demo.slides import synth_slide
from tessera.slides.grid import make_grids
from tessera.slides.patching import PatchingParams, _read_downsampled, patch_slide
from tessera.slides.slide import Slide
from tessera.slides.tissue import mask_polygons, tissue_mask

TILE = 256
DOWNSAMPLES = (1, 4, 16, 64)


def encoded_tile(rgb: np.ndarray) -> tuple[bytes, bytes | None]:
    """One JPEG tile exactly as tifffile writes it (and its JPEGTables, if any)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.tif"
        tifffile.imwrite(path, rgb, tile=(TILE, TILE), compression="jpeg", photometric="rgb", metadata=None)
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tif.filehandle.seek(page.dataoffsets[0])
            return tif.filehandle.read(page.databytecounts[0]), page.jpegtables


def write_big_slide(path: Path, width: int, height: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    coarse_shape = (height // DOWNSAMPLES[-1], width // DOWNSAMPLES[-1])
    coarse, _ = synth_slide(rng, coarse_shape, planted_fraction=0.3)
    tile_bytes, tables = encoded_tile(np.full((TILE, TILE, 3), (230, 170, 200), np.uint8))
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, ds in enumerate(DOWNSAMPLES):
            w, h = width // ds, height // ds
            desc = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) JPEG/RGB Q=85"
            desc += f"|AppMag = 40|MPP = {0.25 * ds}"
            kwargs = dict(tile=(TILE, TILE), compression="jpeg", photometric="rgb", description=desc, metadata=None,
                          subfiletype=0 if i == 0 else 1)
            if ds == DOWNSAMPLES[-1]:
                tw.write(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_AREA), **kwargs)
            else:
                n_tiles = -(-w // TILE) * -(-h // TILE)
                tw.write((tile_bytes for _ in range(n_tiles)), shape=(h, w, 3), dtype=np.uint8, jpegtables=tables, **kwargs)


def tissue_and_grid(path: Path, params: PatchingParams) -> int:
    """The stage's compute without file output: returns the number of patches."""
    with Slide(path) as slide:
        image, scale = _read_downsampled(slide, params.tissue.mask_mpp / slide.mpp, prefer_coarser=True)
        mask = tissue_mask(image, slide.mpp * scale[0], params.tissue)
        mask_polygons(mask, scale)
        grids = make_grids(mask, scale, slide.pyramid.width, slide.pyramid.height, slide.mpp, params.grid)
        return len(grids.coords)


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
        write_big_slide(path, args.width, args.height)
        print(f"wrote {args.width} x {args.height} px pyramid ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - start:.1f} s")
        compute, full = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            n = tissue_and_grid(path, params)
            compute.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            row = patch_slide("big", str(path), None, params, Path(tmp) / f"out{r}")
            full.append(time.perf_counter() - t0)
        med_c, med_f = statistics.median(compute), statistics.median(full)
        print(f"patches: {n}, regions: {row['n_regions']}, tissue: {row['tissue_mm2']:.1f} mm2")
        print(f"tissue + grid (open, mask, contours, grids):   {med_c:.3f} s per slide (median of {args.repeats})")
        print(f"whole slide stage (+ HDF5, GeoJSON, QC PNG):    {med_f:.3f} s per slide")
        for name, anchor in (("CLAM (1-2 s)", 1.5), ("slideflow (2.5 s)", 2.5)):
            print(f"  vs {name:18s}: {anchor / med_f:.1f}x faster (whole stage)")
        print(f"goal <= 1 s: {'met' if med_f <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
