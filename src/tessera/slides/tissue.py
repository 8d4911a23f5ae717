"""Tissue masks at low resolution, and their contours as QuPath-readable GeoJSON.

The mask is computed at about ``mask_mpp`` µm/px (default 8 µm/px, ~32x below 40x). Tissue is
where the HSV saturation (after a median blur) exceeds a threshold: Otsu's threshold by default
(TRIDENT's CPU method), floored at ``min_saturation`` so a blank slide is not split into noise, or a
fixed value (CLAM's method). Morphological closing joins nearby tissue; objects smaller than
``min_tissue_area_um2`` are dropped and holes smaller than ``min_hole_area_um2`` are filled, so
larger holes (lumens, fat) are kept. Sizes are physical (µm), so the result does not depend on the
slide's magnification.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TissueParams:
    """Tissue detection settings (config key ``patching.tissue``)."""

    mask_mpp: float = 8.0  # µm per mask pixel
    method: str = "otsu"  # "otsu" | "fixed"
    saturation_threshold: int = 20  # used by "fixed", 0-255
    min_saturation: int = 15  # floor for Otsu's threshold, 0-255
    median_blur_um: float = 56.0  # median filter width (CLAM: 7 px at ~8 µm/px)
    close_um: float = 32.0  # closing radius
    min_tissue_area_um2: float = 20_000.0  # smaller tissue pieces are dropped
    min_hole_area_um2: float = 20_000.0  # smaller holes are filled


def _odd(n: float) -> int:
    n = max(1, int(round(n)))
    return n if n % 2 else n + 1


def tissue_mask(rgb: np.ndarray, mpp: float, params: TissueParams) -> np.ndarray:
    """Boolean tissue mask (h, w) of an RGB image (h, w, 3) uint8 whose pixels are ``mpp`` µm wide."""
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    saturation = cv2.medianBlur(saturation, min(_odd(params.median_blur_um / mpp), 255))
    if params.method == "otsu":
        otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = max(otsu, params.min_saturation)
    else:
        threshold = params.saturation_threshold
    mask = (saturation > threshold).astype(np.uint8)
    radius = max(1, int(round(params.close_um / mpp)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Pad with background first: OpenCV's erosion treats the image border as foreground, which
    # would stretch tissue near the border out to it.
    padded = cv2.copyMakeBorder(mask, radius, radius, radius, radius, cv2.BORDER_CONSTANT, value=0)
    mask = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[radius:-radius, radius:-radius]
    px_area = mpp * mpp
    mask = _remove_small(mask, params.min_tissue_area_um2 / px_area)
    holes = _remove_small(1 - mask, params.min_hole_area_um2 / px_area, keep_touching_border=True)
    return (1 - holes).astype(bool)


def _remove_small(mask: np.ndarray, min_pixels: float, keep_touching_border: bool = False) -> np.ndarray:
    """Drop 8-connected components of ``mask`` (uint8 0/1) smaller than ``min_pixels``."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    if keep_touching_border:  # the background around the tissue is not a hole
        h, w = mask.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        keep |= (x == 0) | (y == 0) | (x + stats[:, cv2.CC_STAT_WIDTH] == w) | (y + stats[:, cv2.CC_STAT_HEIGHT] == h)
    keep[0] = False
    return keep[labels].astype(np.uint8)


Ring = list[list[float]]


def mask_polygons(mask: np.ndarray, scale: tuple[float, float]) -> list[tuple[Ring, list[Ring]]]:
    """Polygons of a mask as (exterior, holes), in level-0 pixels.

    ``scale`` = level-0 pixels per mask pixel (x, y). Rings are closed (first point repeated).
    Tissue islands inside a hole become polygons of their own.
    """
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    sx, sy = scale

    def ring(contour: np.ndarray) -> Ring | None:
        pts = contour[:, 0, :].astype(np.float64)
        if len(pts) < 3:
            return None
        pts = np.column_stack(((pts[:, 0] + 0.5) * sx, (pts[:, 1] + 0.5) * sy)).round(1)
        return [*pts.tolist(), pts[0].tolist()]

    polygons = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:  # a hole; attached to its parent below
            continue
        exterior = ring(contour)
        if exterior is None:
            continue
        holes, child = [], hierarchy[i][2]
        while child != -1:
            if (r := ring(contours[child])) is not None:
                holes.append(r)
            child = hierarchy[child][0]
        polygons.append((exterior, holes))
    return polygons


def polygons_geojson(polygons: list[tuple[Ring, list[Ring]]], slide_id: str) -> dict:
    """A GeoJSON FeatureCollection QuPath imports as 'Tissue' annotations (level-0 pixel coordinates)."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": f"{slide_id}-tissue-{i}",
                "geometry": {"type": "Polygon", "coordinates": [exterior, *holes]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tissue", "color": [0, 160, 0]},
                    "slide_id": slide_id,
                },
            }
            for i, (exterior, holes) in enumerate(polygons)
        ],
    }
