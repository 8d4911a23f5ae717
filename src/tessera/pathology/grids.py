"""Grids for encoders that read another tile geometry, made from the slide stage's tissue mask.

The slide stage writes one grid (``patching.patch_size`` px at ``patching.target_mpp``) and the tissue
polygons (``tissue/{slide_id}.geojson``, level-0 pixels). An encoder reading, say, 512-px tiles (CONCH)
or 224-px tiles (Virchow, H-optimus) at 0.5 µm/px gets its own grid from those polygons: they are
rasterised (exteriors filled, holes cut, hole outlines kept as tissue, as the contours were traced) at
1/16 of the tile, and :func:`tessera.slides.grid.make_grids` places tiles with the same origin, overlap
and tissue-fraction threshold as the slide stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tessera.errors import SlideError
from tessera.slides.grid import GridParams, level0_size, make_grids

#: Mask pixels per tile side when rasterising the polygons.
MASK_PER_TILE = 16


def rasterise(geojson: dict, width: int, height: int, scale: float) -> np.ndarray:
    """Boolean mask (ceil(height/scale), ceil(width/scale)) of a tissue FeatureCollection (level-0 pixels)."""
    mask = np.zeros((int(np.ceil(height / scale)), int(np.ceil(width / scale))), np.uint8)

    def ring(points: list) -> np.ndarray:
        return np.round(np.asarray(points, np.float64)[:, :2] / scale - 0.5).astype(np.int32)

    polygons = []
    for feature in geojson.get("features", []):
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Polygon":
            polygons.append(geometry["coordinates"])
        elif geometry.get("type") == "MultiPolygon":
            polygons.extend(geometry["coordinates"])
    # Larger polygons first: an island inside another polygon's hole is drawn after that hole is cut.
    for exterior, *holes in sorted(polygons, key=lambda rings: -abs(cv2.contourArea(ring(rings[0])))):
        cv2.fillPoly(mask, [ring(exterior)], 1)
        for hole in holes:
            cv2.fillPoly(mask, [ring(hole)], 0)
            cv2.polylines(mask, [ring(hole)], True, 1)
    return mask.astype(bool)


def derived_grid(tissue_geojson: str | Path, attrs: dict, tile_px: int, mpp: float,
                 min_tissue_fraction: float) -> tuple[np.ndarray, int]:
    """Level-0 (x, y) of the ``tile_px`` tiles at ``mpp`` covering the tissue, and the tile's level-0 size.

    ``attrs``: the slide stage grid file's attributes (``level0_mpp``, ``level0_width``,
    ``level0_height``, ``overlap``).
    """
    try:
        geojson = json.loads(Path(tissue_geojson).read_text())
    except (OSError, ValueError) as e:
        raise SlideError(f"cannot read the tissue polygons {tissue_geojson}: {e}. Fix: rerun the slide stage") from e
    level0_mpp, width, height = float(attrs["level0_mpp"]), int(attrs["level0_width"]), int(attrs["level0_height"])
    p0 = level0_size(tile_px, mpp, level0_mpp)
    scale = max(1.0, p0 / MASK_PER_TILE)
    mask = rasterise(geojson, width, height, scale)
    params = GridParams(target_mpp=mpp, patch_size=tile_px, region_size=tile_px, overlap=int(attrs["overlap"]),
                        min_tissue_fraction=min_tissue_fraction)
    return make_grids(mask, (scale, scale), width, height, level0_mpp, params).coords, p0
