"""Patch and region grids at a target resolution, in level-0 pixels, filtered by tissue fraction.

A patch is ``patch_size`` pixels at ``target_mpp`` µm/px, i.e. ``patch_size_level0`` =
round(patch_size · target_mpp / mpp) level-0 pixels. A region is ``region_size / patch_size`` patches
wide, so ``region_size_level0`` is an exact multiple of ``patch_size_level0`` and, with zero overlap,
the patch grid and each region's inner patch grid coincide (HIPT's ViT-4K reads the 16 × 16 patches
of a region; the same patch features serve both).

Patches lie wholly inside the slide. Regions are clipped at the right and bottom borders (a small
biopsy still gets a region) and their clipped size is recorded; a clipped region keeps only whole
patches, so it is kept when it is at least one patch wide and high.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GridParams:
    """Grid settings (config key ``patching``)."""

    target_mpp: float = 0.5  # µm/px of patches and regions (0.5 = 20x)
    patch_size: int = 256  # pixels at target_mpp
    region_size: int = 4096  # pixels at target_mpp, a multiple of patch_size
    overlap: int = 0  # pixels at target_mpp shared by neighbouring patches
    min_tissue_fraction: float = 0.25  # a patch is kept at or above this tissue fraction
    min_region_tissue_fraction: float = 0.01  # same for regions (of their clipped area)


@dataclass(frozen=True)
class Grids:
    """Patch and region grids of one slide. All coordinates and sizes in level-0 pixels."""

    coords: np.ndarray  # (N, 2) int64 top-left (x, y) of each patch
    tissue_fraction: np.ndarray  # (N,) float32
    region_coords: np.ndarray  # (M, 2) int64 top-left (x, y) of each region
    region_sizes: np.ndarray  # (M, 2) int64 (width, height) of each region, clipped at the border
    region_tissue_fraction: np.ndarray  # (M,) float32
    patch_size_level0: int
    region_size_level0: int
    step_level0: int


def level0_size(size: int, target_mpp: float, mpp: float) -> int:
    """Level-0 pixels spanned by ``size`` pixels at ``target_mpp`` on a slide of ``mpp``."""
    return max(1, int(round(size * target_mpp / mpp)))


def box_tissue_fraction(
    integral: np.ndarray, boxes: np.ndarray, scale: tuple[float, float]
) -> np.ndarray:
    """Mean of a mask over level-0 boxes, exact for partially covered mask pixels.

    ``integral``: (h+1, w+1) summed-area table of the mask (``cv2.integral`` layout);
    ``boxes``: (K, 4) level-0 x0, y0, x1, y1; ``scale``: level-0 pixels per mask pixel (x, y).
    The summed-area table is bilinear between its grid points, so interpolating it at fractional
    box edges integrates the piecewise-constant mask exactly.
    """
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    x0, x1 = np.clip(boxes[:, 0] / scale[0], 0, w), np.clip(boxes[:, 2] / scale[0], 0, w)
    y0, y1 = np.clip(boxes[:, 1] / scale[1], 0, h), np.clip(boxes[:, 3] / scale[1], 0, h)

    def at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xi, yi = np.minimum(np.floor(x).astype(int), w - 1), np.minimum(np.floor(y).astype(int), h - 1)
        fx, fy = x - xi, y - yi
        return (
            integral[yi, xi] * (1 - fx) * (1 - fy)
            + integral[yi, xi + 1] * fx * (1 - fy)
            + integral[yi + 1, xi] * (1 - fx) * fy
            + integral[yi + 1, xi + 1] * fx * fy
        )

    area = (x1 - x0) * (y1 - y0)
    total = at(x1, y1) - at(x0, y1) - at(x1, y0) + at(x0, y0)
    return np.where(area > 0, total / np.maximum(area, 1e-12), 0.0).astype(np.float32)


def make_grids(
    mask: np.ndarray, scale: tuple[float, float], width: int, height: int, mpp: float, params: GridParams
) -> Grids:
    """Patch and region grids of a ``width`` × ``height`` level-0 slide of ``mpp`` µm/px.

    ``mask``: boolean tissue mask; ``scale``: level-0 pixels per mask pixel (x, y).
    """
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.float64)
    integral[1:, 1:] = mask.astype(np.float64).cumsum(0).cumsum(1)

    patch0 = level0_size(params.patch_size, params.target_mpp, mpp)
    step0 = level0_size(params.patch_size - params.overlap, params.target_mpp, mpp)
    region0 = patch0 * (params.region_size // params.patch_size)

    xs, ys = np.arange(0, width - patch0 + 1, step0), np.arange(0, height - patch0 + 1, step0)
    coords = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.int64)
    boxes = np.column_stack((coords, coords + patch0))
    fraction = box_tissue_fraction(integral, boxes, scale)
    keep = fraction >= params.min_tissue_fraction

    rxs, rys = np.arange(0, width, region0), np.arange(0, height, region0)
    rcoords = np.stack(np.meshgrid(rxs, rys), -1).reshape(-1, 2).astype(np.int64)
    # A clipped region keeps only whole patches: round its size down to a multiple of the patch size.
    rsizes = np.minimum(region0, (np.array([width, height]) - rcoords) // patch0 * patch0).astype(np.int64)
    rfraction = box_tissue_fraction(integral, np.column_stack((rcoords, rcoords + rsizes)), scale)
    rkeep = (rsizes.min(axis=1) >= patch0) & (rfraction >= params.min_region_tissue_fraction)

    return Grids(
        coords=coords[keep],
        tissue_fraction=fraction[keep],
        region_coords=rcoords[rkeep],
        region_sizes=rsizes[rkeep],
        region_tissue_fraction=rfraction[rkeep],
        patch_size_level0=patch0,
        region_size_level0=region0,
        step_level0=step0,
    )
