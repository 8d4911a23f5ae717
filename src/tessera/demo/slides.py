"""Demo slides: synthetic tissue on white glass, written as Aperio-style pyramidal tiled-JPEG TIFFs.

OpenSlide opens the files as ``aperio`` (the level-0 ImageDescription starts with ``Aperio Image
Library`` and carries ``AppMag`` and ``MPP``); every level is a top-level tiled IFD, as OpenSlide's
Aperio reader expects. Resolution tags are set too (pixels per centimetre).
"""

from __future__ import annotations

from pathlib import Path

import tempfile
from collections.abc import Iterator

import cv2
import numpy as np
import tifffile

from tessera.demo.textures import BACKGROUND_RGB, PLANTED_TEXTURE, TEXTURES, render, smooth_noise

SLIDE_MPP = 0.25  # µm per level-0 pixel of the synthetic slides (40x)
#: The truth label map's codes: 0 = glass, then the textures in :data:`TEXTURES` order (1 = tumour ...).
TRUTH_CODES = ("glass", *TEXTURES)
#: The truth PNG samples the label map at every 4th level-0 pixel (1 µm/px for 0.25 µm/px slides): the
#: tissue outline and zones are drawn at that resolution, so the sampled map loses next to nothing.
TRUTH_DOWNSAMPLE = 4


def tissue_and_zones(rng: np.random.Generator, shape: tuple[int, int], n_zones: int) -> tuple[np.ndarray, np.ndarray]:
    """A tissue mask (h, w) bool covering about half the glass, and zone labels (h, w) int32.

    Both are drawn at 1/4 resolution (1 µm/px) and enlarged: the outline stays smooth.
    """
    h, w = shape
    sh, sw = max(8, h // 4), max(8, w // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    # A soft window keeps the tissue off the slide edges; noise gives it an irregular outline.
    window = np.minimum.reduce([xx, yy, sw - 1 - xx, sh - 1 - yy]) / (0.22 * min(sh, sw))
    field = smooth_noise(rng, (sh, sw), min(sh, sw) / 2.2) * np.clip(window, 0, 1) ** 0.5
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    tissue = field > np.quantile(field[::8, ::8], 0.5)
    seeds = np.column_stack((rng.uniform(0, sw, n_zones), rng.uniform(0, sh, n_zones)))
    d = (xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2
    zones = cv2.resize(d.argmin(-1).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return tissue, zones.astype(np.int32)


def assign_textures(
    rng: np.random.Generator, tissue: np.ndarray, zones: np.ndarray, planted_fraction: float
) -> list[str]:
    """Texture of each zone: planted zones chosen greedily to approach ``planted_fraction`` of the tissue."""
    area = np.bincount(zones[tissue], minlength=zones.max() + 1)
    total = max(1, int(area.sum()))
    others = [t for t in TEXTURES if t != PLANTED_TEXTURE]
    textures = [""] * len(area)
    planted = 0
    for z in rng.permutation(len(area)):
        if abs((planted + area[z]) / total - planted_fraction) < abs(planted / total - planted_fraction):
            textures[z] = PLANTED_TEXTURE
            planted += int(area[z])
        else:
            textures[z] = others[int(rng.integers(len(others)))]
    return textures


def synth_slide(rng: np.random.Generator, shape: tuple[int, int], planted_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 slide image (h, w, 3) and its truth: the label map (h, w) uint8 in :data:`TRUTH_CODES`."""
    tissue, zones = tissue_and_zones(rng, shape, n_zones=10)
    textures = assign_textures(rng, tissue, zones, planted_fraction)
    names = sorted(set(textures))
    label = np.asarray([names.index(t) for t in textures], np.int8)[zones]
    label[~tissue] = -1
    truth = np.asarray([TRUTH_CODES.index(t) for t in textures], np.uint8)[zones]
    truth[~tissue] = 0
    img = np.empty((*shape, 3), np.float32)
    img[:] = BACKGROUND_RGB
    for i, name in enumerate(names):
        region = label == i
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        if not len(rows):
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        np.copyto(img[y0:y1, x0:x1], render(name, (y1 - y0, x1 - x0), rng), where=region[y0:y1, x0:x1, None])
    alpha = cv2.GaussianBlur(tissue.astype(np.float32), (0, 0), 3.0)[..., None]
    img = alpha * img + (1 - alpha) * np.asarray(BACKGROUND_RGB, np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    noise = np.empty_like(img)
    cv2.setRNGSeed(int(rng.integers(2**31)))
    cv2.randn(noise, 0.0, 2.0)
    img += noise
    return np.minimum(np.maximum(img, 0), 255).astype(np.uint8), truth


def write_truth_png(path: str | Path, labels: np.ndarray) -> None:
    """Write a label map (h, w) uint8 as a grey PNG sampled at every :data:`TRUTH_DOWNSAMPLE`-th pixel.

    Truth pixel (i, j) is the label of level-0 pixel (j·4 + 2, i·4 + 2) (x, y): the centre of its 4 × 4 block.
    """
    half = TRUTH_DOWNSAMPLE // 2
    if not cv2.imwrite(str(path), labels[half::TRUTH_DOWNSAMPLE, half::TRUTH_DOWNSAMPLE]):
        raise OSError(f"could not write {path}")


def write_aperio_tiff(
    path: str | Path, rgb: np.ndarray, mpp: float = SLIDE_MPP, objective_power: int = 40,
    downsamples: tuple[int, ...] = (1, 4, 16), tile: int = 256, quality: int = 85,
) -> None:
    """Write ``rgb`` (h, w, 3) uint8 as a pyramidal, tiled-JPEG, Aperio-flavoured TIFF."""
    h, w = rgb.shape[:2]
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        for i, ds in enumerate(downsamples):
            level = rgb if ds == 1 else cv2.resize(rgb, (max(1, w // ds), max(1, h // ds)), interpolation=cv2.INTER_AREA)
            lh, lw = level.shape[:2]
            desc = _aperio_description(w, h, (lw, lh), ds, tile, quality, mpp, objective_power)
            tw.write(
                level, tile=(tile, tile), compression="jpeg", compressionargs={"level": quality},
                photometric="rgb", description=desc, subfiletype=0 if i == 0 else 1, metadata=None,
                resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)), resolutionunit="CENTIMETER",
            )


def _aperio_description(width: int, height: int, level: tuple[int, int], ds: int, tile: int, quality: int,
                        mpp: float, objective_power: int) -> str:
    lw, lh = level
    if ds == 1:
        return (f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
                f"JPEG/RGB Q={quality}|AppMag = {objective_power}|MPP = {mpp}")
    return f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> {lw}x{lh} - |AppMag = {objective_power}|MPP = {mpp * ds}"


def _encoded_flat_tiles(colours: np.ndarray, tile: int, quality: int) -> list[bytes]:
    """One JPEG tile per colour (n, 3) uint8, encoded exactly as tifffile writes tiles."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/tiles.tif"
        row = np.repeat(colours[None, :, None, :], tile, axis=0).repeat(tile, axis=2).reshape(tile, -1, 3)
        tifffile.imwrite(path, row, tile=(tile, tile), compression="jpeg", compressionargs={"level": quality},
                         photometric="rgb", metadata=None)
        with tifffile.TiffFile(path) as tif:
            page, fh = tif.pages[0], tif.filehandle
            out = []
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                fh.seek(offset)
                out.append(fh.read(count))
            return out


def write_cell_pyramid(
    path: str | Path, cells: np.ndarray, width: int, height: int, mpp: float = SLIDE_MPP,
    objective_power: int = 40, downsamples: tuple[int, ...] = (1, 4, 16, 64), tile: int = 256, quality: int = 85,
) -> None:
    """Write a large Aperio-style pyramid whose every level shows the same image: ``cells``.

    ``cells`` (h, w, 3) uint8 is the slide at one pixel per level-0 tile (``tile`` level-0 pixels,
    64 µm at 40x): at level 0 each cell is one flat tile, at downsample d a flat square of
    ``tile / d`` pixels, cropped to ``width`` × ``height`` level-0 pixels (at most the cells' extent).
    A mask computed from any level therefore agrees. Level 0 is written from one pre-encoded tile per
    distinct colour, so a 100,000 × 80,000 px slide is written in seconds rather than minutes.
    """
    if height > cells.shape[0] * tile or width > cells.shape[1] * tile or any(tile % d for d in downsamples):
        raise ValueError("cells must cover width x height, and every downsample must divide the tile size")
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, ds in enumerate(downsamples):
            w, h = width // ds, height // ds
            kwargs = dict(tile=(tile, tile), compression="jpeg", compressionargs={"level": quality}, photometric="rgb",
                          metadata=None, subfiletype=0 if i == 0 else 1,
                          description=_aperio_description(width, height, (w, h), ds, tile, quality, mpp, objective_power),
                          resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)), resolutionunit="CENTIMETER")
            n_rows, n_cols = -(-h // tile), -(-w // tile)
            if ds == 1:
                colours, index = np.unique(cells[:n_rows, :n_cols].reshape(-1, 3), axis=0, return_inverse=True)
                encoded = _encoded_flat_tiles(colours, tile, quality)
                kwargs.pop("compressionargs")
                tw.write((encoded[k] for k in index.ravel()), shape=(h, w, 3), dtype=np.uint8, **kwargs)
            else:
                tw.write(_cell_tiles(cells, n_rows, n_cols, tile, ds), shape=(h, w, 3), dtype=np.uint8, **kwargs)


def _cell_tiles(cells: np.ndarray, n_rows: int, n_cols: int, tile: int, ds: int) -> Iterator[np.ndarray]:
    """The tiles (row-major) of the level at downsample ``ds`` of a cell pyramid."""
    px = tile // ds  # pixels per cell at this level
    for r in range(n_rows):
        for c in range(n_cols):
            block = cells[r * ds:(r + 1) * ds, c * ds:(c + 1) * ds]
            out = np.zeros((tile, tile, 3), np.uint8)
            enlarged = block.repeat(px, axis=0).repeat(px, axis=1)
            out[:enlarged.shape[0], :enlarged.shape[1]] = enlarged
            yield out
