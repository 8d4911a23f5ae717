"""Tissue masks and their GeoJSON: the real CMU slide checked by hand, artefacts, holes, borders, pyramid levels."""

import cv2
import numpy as np
import pytest
from shapely.geometry import Point, shape

from tessera.demo.slides import synth_slide, write_cell_pyramid
from tessera.slides.patching import PatchingParams, patch_slide, read_overview
from tessera.slides.slide import Slide
from tessera.slides.tissue import TissueParams, estimate_glass, mask_polygons, polygons_geojson, tissue_mask

PINK, PALE, GLASS = (230, 150, 190), (236, 222, 230), (243, 241, 244)
#: tessera's masks before the ``background`` method (config/README.md says how to reproduce them).
OLD = TissueParams(method="otsu", min_tissue_area_um2=20_000, min_hole_area_um2=20_000)

#: Hand estimates of the tissue fraction of each 148-px cell of the CMU slide (15 columns x 20 rows;
#: {row: {column: fraction}}, cells not listed are glass), read off 1:1 renderings of the slide with
#: the grid drawn on it. Tissue is stained material, with gaps under ~30 µm inside loose tissue (the
#: keratin flakes filling the cleft in the middle, loose collagen) counted as tissue and wider white
#: spaces (the open lumen at the top) as glass; the thin stromal strand on the left is row 7.
CMU_HAND = {
    0: {7: .25},
    1: {5: .25, 6: .85, 7: .85, 8: .6, 9: .05},
    2: {6: .8, 7: .6, 8: .55, 9: .35},
    3: {5: .2, 6: .55, 7: .9, 8: .1, 9: .2, 10: .4},
    4: {6: .45, 7: 1, 8: .95, 9: .45, 10: .75},
    5: {6: .6, 7: 1, 8: 1, 9: .7, 10: .9},
    6: {6: .75, 7: 1, 8: 1, 9: 1, 10: .8, 11: .2},
    7: {0: .1, 1: .2, 2: .25, 3: .3, 4: .3, 5: .15, 6: .75, 7: 1, 8: 1, 9: 1, 10: .8, 11: .6, 12: .35},
    8: {6: 1, 7: 1, 8: 1, 9: .85, 10: .6, 11: .5, 12: .55, 13: .1},
    9: {6: 1, 7: 1, 8: 1, 9: .8, 10: .7, 11: .45, 12: .4, 13: .1},
    10: {5: .35, 6: 1, 7: 1, 8: .8, 9: .75, 10: .7, 11: .4},
    11: {5: .35, 6: 1, 7: 1, 8: .9, 9: .8, 10: .75, 11: .05},
    12: {5: .6, 6: 1, 7: 1, 8: 1, 9: .9, 10: .85, 11: .5, 12: .3},
    13: {5: .85, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: .4},
    14: {4: .1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: .4},
    15: {4: .1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: .5},
    16: {4: .5, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: .45},
    17: {3: .15, 4: .9, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: .95},
    18: {3: .45, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: .75},
    19: {3: .6, 4: 1, 5: 1, 6: 1, 7: .8, 8: .85, 9: 1, 10: .9, 11: .6},
}
CELL = 148
#: Level-0 points on the thin strand of nucleated stroma and loose collagen that leaves the dermis to
#: the left (x 60-850, y 1000-1150), picked on a 1:1 rendering of the slide.
CMU_STRAND = [(120, 1125), (200, 1113), (300, 1090), (400, 1065), (500, 1045), (550, 1030), (650, 1060), (750, 1090)]


def cmu_mask(cmu_slide, params=TissueParams()):
    with Slide(cmu_slide) as s:
        (image, scale), _ = read_overview(s, params.mask_mpp, 1024)
        return tissue_mask(image, s.mpp * scale[0], params), scale


def at(mask, scale, x, y):
    return bool(mask[int(y / scale[1]), int(x / scale[0])])


def test_cmu_mask_matches_hand_estimates(cmu_slide):
    mask, scale = cmu_mask(cmu_slide)
    level0 = cv2.resize(mask.astype(np.float32), (2220, 2967), interpolation=cv2.INTER_NEAREST)
    cells = level0[:20 * CELL, :15 * CELL].reshape(20, CELL, 15, CELL).mean(axis=(1, 3))
    hand = np.zeros((20, 15))
    for row, cols in CMU_HAND.items():
        hand[row, list(cols)] = list(cols.values())
    assert hand.mean() == pytest.approx(0.36, abs=0.005)
    # The mask is a little generous (16-µm pixels, closing): within 0.05 of the hand count overall,
    # 0.07 per cell on average; every clearly tissue cell is covered, glass away from tissue is not.
    assert hand.mean() <= mask.mean() <= hand.mean() + 0.05
    assert np.abs(cells - hand).mean() <= 0.07
    assert (cells[hand >= 0.9] >= 0.9).all()
    near_tissue = cv2.dilate((hand > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert (cells[~near_tissue] <= 0.02).all()


def test_cmu_thin_stromal_strand_is_in_the_mask(cmu_slide):
    """The strand the saturation-Otsu method (the default before) dropped: every hand-picked point on it
    is inside the mask now, and none was before."""
    mask, scale = cmu_mask(cmu_slide)
    assert all(at(mask, scale, x, y) for x, y in CMU_STRAND)
    old, scale = cmu_mask(cmu_slide, OLD)
    assert not any(at(old, scale, x, y) for x, y in CMU_STRAND)


def test_cmu_geojson_keeps_the_open_lumen_as_a_hole_and_covers_the_dermis(cmu_slide):
    mask, scale = cmu_mask(cmu_slide)
    geo = polygons_geojson(mask_polygons(mask, scale), "cmu")
    shapes = [shape(f["geometry"]) for f in geo["features"]]
    assert all(s.is_valid for s in shapes)
    assert any(s.interiors for s in shapes)
    assert not any(s.contains(Point(1300, 480)) for s in shapes)  # the empty lumen at the top
    assert any(s.contains(Point(7.5 * CELL, 15.5 * CELL)) for s in shapes)  # dermis
    assert any(s.contains(Point(1376, 1510)) for s in shapes)  # the cleft filled with keratin flakes
    total = sum(s.area for s in shapes) * 0.499**2 / 1e6
    assert total == pytest.approx(mask.sum() * (0.499 * scale[0]) ** 2 / 1e6, rel=0.08)  # mm², polygons ≈ mask


def noisy(img, rng, sd=1.0):
    return np.clip(img + rng.normal(0, sd, img.shape), 0, 255).astype(np.uint8)


def test_glass_estimate_is_the_bright_unsaturated_mode():
    rng = np.random.default_rng(0)
    img = np.full((200, 200, 3), GLASS, np.float64)
    img[:80] = PINK  # 40 % tissue
    img[80:100, :50] = (252, 252, 252)  # a little brighter white (fat) does not move the mode
    img = noisy(img, rng, 2.0)
    luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    glass = estimate_glass(luma, (img.max(2) - img.min(2)).astype(np.uint8))
    assert glass.luma == pytest.approx(0.299 * 243 + 0.587 * 241 + 0.114 * 244, abs=1)
    assert 1 <= glass.luma_sd <= 3 and glass.chroma <= 8
    full = np.full((50, 50), 150, np.uint8)
    assert estimate_glass(full, np.full((50, 50), 60, np.uint8)) is None  # no glass in view


def test_white_outside_the_scanned_area_is_not_the_glass():
    """Scanners that scan only around the tissue leave the rest transparent, which OpenSlide gives as pure
    white: the glass is the scanned, slightly darker background, which is not tissue."""
    rng = np.random.default_rng(3)
    img = np.full((200, 200, 3), 255.0)
    img[50:150, 50:150] = noisy(np.full((100, 100, 3), (238, 236, 240), np.float64), rng, 1.5)
    cv2.circle(img, (100, 100), 30, PINK, -1)
    mask = tissue_mask(img.astype(np.uint8), 8.0, TissueParams())
    yy, xx = np.mgrid[:200, :200]
    assert (mask == ((xx - 100) ** 2 + (yy - 100) ** 2 <= 30**2)).mean() >= 0.995


def artefacts_slide(rng):
    """Tissue (stained and pale) at the left; pen strokes, black ink, dust and an air bubble on the glass."""
    img = np.full((200, 240, 3), GLASS, np.float64)
    cv2.circle(img, (60, 100), 45, PINK, -1)
    cv2.circle(img, (60, 100), 20, PALE, -1)  # pale tissue inside stained tissue
    pens = {"blue": ((40, 70, 170), (140, 20), (230, 70)), "green": ((60, 150, 90), (140, 180), (230, 130))}
    for colour, p0, p1 in pens.values():
        cv2.line(img, p0, p1, colour, 6)
    cv2.circle(img, (200, 100), 7, (25, 25, 35), -1)  # black ink
    for x, y in ((130, 100), (150, 60), (170, 150)):
        cv2.circle(img, (x, y), 4, (120, 120, 120), -1)  # grey dust
    cv2.circle(img, (165, 105), 14, (105, 105, 110), 2)  # an air bubble's dark rim
    return noisy(img, rng)


def test_pen_ink_dust_and_air_bubbles_are_not_tissue():
    rng = np.random.default_rng(1)
    img = artefacts_slide(rng)
    yy, xx = np.mgrid[:200, :240]
    tissue = (xx - 60) ** 2 + (yy - 100) ** 2 <= 45**2
    mask = tissue_mask(img, 8.0, TissueParams())
    assert mask[tissue].mean() >= 0.99
    assert not mask[:, 110:].any()  # no pen, ink, dust or bubble kept
    kept = tissue_mask(img, 8.0, TissueParams(remove_pen=False))
    assert kept[20:70, 150:220].any() and kept[130:180, 150:220].any()  # the pens are coloured: kept when asked


def test_pale_tissue_between_stained_tissue_reaching_the_border_is_kept():
    """A pale seam (loose stroma, necrosis) between stained tissue, running out to the image border:
    kept to the border. The saturation-Otsu method splits it from the stained tissue and cuts it out."""
    rng = np.random.default_rng(2)
    img = np.full((160, 160, 3), GLASS, np.float64)
    img[:, :100] = PINK
    img[:, 45:55] = PALE  # 80 µm wide at 8 µm/px
    img = noisy(img, rng)
    mask = tissue_mask(img, 8.0, TissueParams())
    assert mask[:, :100].all() and not mask[:, 105:].any()
    assert not tissue_mask(img, 8.0, OLD)[:, 45:55].all()


def donut(size=400, hole_radius=80, small_hole=6):
    img = np.full((size, size, 3), GLASS, np.uint8)
    cv2.circle(img, (200, 200), 150, PINK, -1)
    cv2.circle(img, (200, 200), hole_radius, GLASS, -1)
    cv2.circle(img, (90, 200), small_hole, GLASS, -1)  # a small gap inside the tissue: filled
    return img


@pytest.mark.parametrize("method", ["background", "otsu"])
def test_large_holes_kept_small_holes_filled_and_geojson_valid(method):
    mpp = 4.0  # µm per mask pixel
    mask = tissue_mask(donut(), mpp, TissueParams(method=method, median_blur_um=12, close_um=8))
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


@pytest.mark.parametrize("method", ["background", "otsu"])
def test_blank_glass_has_no_tissue(method):
    rng = np.random.default_rng(0)
    glass = np.clip(np.asarray(GLASS) + rng.normal(0, 3, (300, 300, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass, 8.0, TissueParams(method=method)).any()


def test_tissue_touching_the_border_is_not_stretched_to_it():
    img = np.full((200, 200, 3), GLASS, np.uint8)
    img[3:120, 3:120] = PINK  # 3 px of glass between tissue and the image border
    mask = tissue_mask(img, 8.0, TissueParams(close_um=40))
    assert not mask[0, :].any() and not mask[:, 0].any()
    assert mask[60, 60] and not mask[150, 150]


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="background, otsu, fixed"):
        TissueParams(method="magic")


@pytest.fixture(scope="module")
def cell_pyramid(tmp_path_factory):
    """A 20,480 x 16,384 px 40x pyramid (levels 1, 4, 16, 64x) whose levels all show the same tissue."""
    drawn, _ = synth_slide(np.random.default_rng(5), (256, 320), 0.3)
    cells = cv2.resize(drawn, (80, 64), interpolation=cv2.INTER_AREA) // 4 * 4
    path = tmp_path_factory.mktemp("pyramid") / "cells.tiff"
    write_cell_pyramid(path, cells, 80 * 256, 64 * 256)
    return path, cells


def test_a_mask_computed_from_any_level_agrees(cell_pyramid):
    path, cells = cell_pyramid
    with Slide(path) as s:
        assert s.pyramid.downsamples == pytest.approx((1, 4, 16, 64))
        (_, scale), _ = read_overview(s, 8.0, 1024)
        size = (s.pyramid.width // 64, s.pyramid.height // 64)
        assert scale == pytest.approx((64, 64))  # the 64x level's grid (16 µm/px)
        masks = [tissue_mask(cv2.resize(s.read_level(level), size, interpolation=cv2.INTER_AREA), 16.0, TissueParams())
                 for level in (1, 2, 3)]
        for x, y in ((0, 0), (37, 21), (79, 63)):  # level 0 shows the cells too (one per 256-px tile)
            tile = s.read_region(x * 256, y * 256, 0, 256, 256).reshape(-1, 3).mean(axis=0)
            assert tile == pytest.approx(cells[y, x], abs=3)
    assert 0.2 < masks[2].mean() < 0.8
    for other in masks[:2]:
        assert (other == masks[2]).mean() >= 0.995


def test_slide_stage_reads_one_level_once(tmp_path, cell_pyramid, monkeypatch, tiny_cohort):
    """The QC thumbnail and the mask come from one read of the finer of the levels they need."""
    reads = []
    real = Slide.read_level
    monkeypatch.setattr(Slide, "read_level", lambda self, level: reads.append(level) or real(self, level))
    for thumbnail_px, level in ((256, 3), (1024, 2)):  # the mask's 64x level; the thumbnail's 16x (1280 px)
        reads.clear()
        row = patch_slide("big", str(cell_pyramid[0]), None, PatchingParams(thumbnail_px=thumbnail_px), tmp_path / "big")
        assert reads == [level] and row["n_patches"] > 0
    reads.clear()
    row = patch_slide("demo", str(tiny_cohort / "slides" / "P002-S1.tiff"), None, PatchingParams(), tmp_path / "demo")
    assert reads == [1] and row["n_patches"] > 0
    thumb = cv2.imread(str(tmp_path / "demo" / row["thumbnail"]))
    assert thumb.shape[:2] == (512, 512)  # the 4x level of a 2048-px slide, as read
