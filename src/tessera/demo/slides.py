"""Demo slides: synthetic tissue on white glass, written as Aperio-style pyramidal tiled-JPEG TIFFs.

OpenSlide opens the files as ``aperio`` (the level-0 ImageDescription starts with ``Aperio Image
Library`` and carries ``AppMag`` and ``MPP``); every level is a top-level tiled IFD, as OpenSlide's
Aperio reader expects. Resolution tags are set too (pixels per centimetre).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

from tessera.demo.textures import BACKGROUND_RGB, PLANTED_TEXTURE, TEXTURES, render, smooth_noise


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


def synth_slide(rng: np.random.Generator, shape: tuple[int, int], planted_fraction: float) -> tuple[np.ndarray, dict]:
    """An RGB uint8 slide image (h, w, 3) and its truth: tissue and planted-texture pixel counts."""
    tissue, zones = tissue_and_zones(rng, shape, n_zones=10)
    textures = assign_textures(rng, tissue, zones, planted_fraction)
    names = sorted(set(textures))
    label = np.asarray([names.index(t) for t in textures], np.int8)[zones]
    label[~tissue] = -1
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
    truth = {"tissue_px": int(tissue.sum()), "planted_px": int((label == names.index(PLANTED_TEXTURE)).sum())
             if PLANTED_TEXTURE in names else 0}
    img += noise
    return np.minimum(np.maximum(img, 0), 255).astype(np.uint8), truth


def write_aperio_tiff(
    path: str | Path, rgb: np.ndarray, mpp: float = 0.25, objective_power: int = 40,
    downsamples: tuple[int, ...] = (1, 4, 16), tile: int = 256, quality: int = 85,
) -> None:
    """Write ``rgb`` (h, w, 3) uint8 as a pyramidal, tiled-JPEG, Aperio-flavoured TIFF."""
    h, w = rgb.shape[:2]
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        for i, ds in enumerate(downsamples):
            level = rgb if ds == 1 else cv2.resize(rgb, (max(1, w // ds), max(1, h // ds)), interpolation=cv2.INTER_AREA)
            lh, lw = level.shape[:2]
            if i == 0:
                desc = (f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q={quality}"
                        f"|AppMag = {objective_power}|MPP = {mpp}")
            else:
                desc = f"Aperio Image Library v12.0.15 \r\n{w}x{h} -> {lw}x{lh} - |AppMag = {objective_power}|MPP = {mpp * ds}"
            tw.write(
                level, tile=(tile, tile), compression="jpeg", compressionargs={"level": quality},
                photometric="rgb", description=desc, subfiletype=0 if i == 0 else 1, metadata=None,
                resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)), resolutionunit="CENTIMETER",
            )
