"""Tissue masks and their GeoJSON: a real slide checked by hand, holes, blank glass, borders."""

import cv2
import numpy as np
import pytest
from shapely.geometry import Point, shape

from tessera.slides.patching import _read_downsampled
from tessera.slides.slide import Slide
from tessera.slides.tissue import TissueParams, mask_polygons, polygons_geojson, tissue_mask

PINK, GLASS = (230, 150, 190), (243, 241, 244)


def cmu_mask(cmu_slide):
    with Slide(cmu_slide) as s:
        image, scale = _read_downsampled(s, 8.0 / s.mpp, prefer_coarser=True)
        return tissue_mask(image, s.mpp * scale[0], TissueParams()), scale


def test_cmu_tissue_fraction_matches_hand_count(cmu_slide):
    """Hand count on a 15 x 20 grid of 148-px cells over the CMU slide: ~89.6 of 300 cells are
    tissue (the white lumen in the middle and the loose fibres around it counted as background or
    half), i.e. a fraction of 0.30 ± 0.04."""
    mask, scale = cmu_mask(cmu_slide)
    assert 0.26 <= mask.mean() <= 0.34
    cell = 148  # level-0 px per hand-count cell

    def at(col, row):
        return bool(mask[int(row * cell / scale[1]), int(col * cell / scale[0])])

    # Points read off the grid by eye: epidermis and dermis, then glass and the lumen.
    assert all(at(c, r) for c, r in [(7.5, 15.5), (9, 17.5), (6.5, 8.5), (11, 16.5), (7, 5.5), (5.5, 18.5), (8.5, 13.5)])
    assert not any(at(c, r) for c, r in [(2, 3), (13, 5), (1, 15), (13.5, 18), (1, 1), (13, 11), (3, 12), (9.3, 10.2)])


def test_cmu_geojson_excludes_the_lumen_and_covers_the_dermis(cmu_slide):
    mask, scale = cmu_mask(cmu_slide)
    geo = polygons_geojson(mask_polygons(mask, scale), "cmu")
    shapes = [shape(f["geometry"]) for f in geo["features"]]
    assert all(s.is_valid for s in shapes)
    assert not any(s.contains(Point(9.3 * 148, 10.2 * 148)) for s in shapes)  # the lumen (open to the glass)
    assert any(s.contains(Point(7.5 * 148, 15.5 * 148)) for s in shapes)
    total = sum(s.area for s in shapes) * 0.499**2 / 1e6
    assert total == pytest.approx(mask.sum() * (0.499 * scale[0]) ** 2 / 1e6, rel=0.08)  # mm², polygons ≈ mask


def donut(size=400, hole_radius=80, small_hole=6):
    img = np.full((size, size, 3), GLASS, np.uint8)
    cv2.circle(img, (200, 200), 150, PINK, -1)
    cv2.circle(img, (200, 200), hole_radius, GLASS, -1)
    cv2.circle(img, (90, 200), small_hole, GLASS, -1)  # a small gap inside the tissue: filled
    return img


def test_large_holes_kept_small_holes_filled_and_geojson_valid():
    mpp = 4.0  # µm per mask pixel
    mask = tissue_mask(donut(), mpp, TissueParams(median_blur_um=12, close_um=8))
    assert mask[200, 200] == 0 and mask[200, 90] == 1 and mask[200, 300] == 1 and mask[10, 10] == 0
    polygons = mask_polygons(mask, (8.0, 8.0))  # mask px → level-0 px (0.5 µm/px slide)
    assert len(polygons) == 1 and len(polygons[0][1]) == 1
    feature = polygons_geojson(polygons, "S1")["features"][0]
    assert feature["properties"]["objectType"] == "annotation"
    assert feature["properties"]["classification"]["name"] == "Tissue"
    rings = feature["geometry"]["coordinates"]
    assert all(r[0] == r[-1] and len(r) >= 4 for r in rings)
    geom = shape(feature["geometry"])
    assert geom.is_valid
    assert geom.area == pytest.approx(mask.sum() * 64.0, rel=0.05)  # polygon area ≈ mask area in level-0 px²


def test_blank_glass_has_no_tissue():
    rng = np.random.default_rng(0)
    glass = np.clip(np.asarray(GLASS) + rng.normal(0, 3, (300, 300, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass, 8.0, TissueParams()).any()


def test_tissue_touching_the_border_is_not_stretched_to_it():
    img = np.full((200, 200, 3), GLASS, np.uint8)
    img[3:120, 3:120] = PINK  # 3 px of glass between tissue and the image border
    mask = tissue_mask(img, 8.0, TissueParams(median_blur_um=8, close_um=40))
    assert not mask[0, :].any() and not mask[:, 0].any()
    assert mask[60, 60] and not mask[150, 150]
