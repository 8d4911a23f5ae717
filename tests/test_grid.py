"""Grid math: level-0 sizes, bounds, clipped regions, alignment, and exact tissue fractions."""

import numpy as np
import pytest

from tessera.slides.grid import GridParams, box_tissue_fraction, level0_size, make_grids


def integral_of(mask):
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    out[1:, 1:] = mask.astype(float).cumsum(0).cumsum(1)
    return out


def test_level0_sizes():
    assert level0_size(256, 0.5, 0.25) == 512  # 20x patch on a 40x slide
    assert level0_size(256, 0.5, 0.5) == 256
    assert level0_size(256, 0.5, 0.499) == 257  # CMU slide
    assert level0_size(4096, 0.5, 0.25) == 8192


def test_box_fraction_is_exact_for_fractional_boxes():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 50)) > 0.5
    up = np.repeat(np.repeat(mask, 8, 0), 8, 1)  # the same mask at 8x: fractional boxes become whole pixels
    boxes = np.array([[3, 5, 45, 77], [0, 0, 400, 320], [17, 9, 18, 10], [100, 50, 260, 300]], float)
    got = box_tissue_fraction(integral_of(mask), boxes, (8.0, 8.0))
    want = [up[int(y0):int(y1), int(x0):int(x1)].mean() for x0, y0, x1, y1 in boxes]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_grids_stay_in_bounds_and_align_with_regions():
    width, height, mpp = 20_000, 9_000, 0.25
    mask = np.ones((height // 32, width // 32), bool)
    g = make_grids(mask, (32.0, 32.0), width, height, mpp, GridParams(min_tissue_fraction=0.0))
    assert g.patch_size_level0 == 512 and g.region_size_level0 == 8192
    assert (g.coords >= 0).all() and (g.coords[:, 0] + 512 <= width).all() and (g.coords[:, 1] + 512 <= height).all()
    assert len(g.coords) == (width // 512) * (height // 512)
    # Regions: 3 columns x 2 rows; the last column and row are clipped to whole patches.
    assert g.region_coords.tolist() == [[0, 0], [8192, 0], [16384, 0], [0, 8192], [8192, 8192], [16384, 8192]]
    assert g.region_sizes.tolist()[2] == [3584, 8192]  # (20000 - 16384) // 512 * 512
    assert g.region_sizes.tolist()[3] == [8192, 512]
    assert ((g.region_coords % 512) == 0).all() and ((g.region_sizes % 512) == 0).all()
    # Every patch lies inside exactly one region (the grids coincide).
    inside = ((g.coords[:, None, :] >= g.region_coords[None]) &
              (g.coords[:, None, :] + 512 <= g.region_coords[None] + g.region_sizes[None])).all(-1)
    assert (inside.sum(1) == 1).all()


def test_tissue_fraction_threshold_keeps_only_tissue_patches():
    mask = np.zeros((64, 64), bool)
    mask[:, :24] = True  # tissue in the left 24 of 64 mask px (level-0 x < 768)
    g = make_grids(mask, (32.0, 32.0), 2048, 2048, 0.25, GridParams(min_tissue_fraction=0.51))
    assert sorted(set(g.coords[:, 0].tolist())) == [0]
    # The column at x = 512..1024 is exactly half tissue (512..768): kept at a threshold of 0.5.
    g = make_grids(mask, (32.0, 32.0), 2048, 2048, 0.25, GridParams(min_tissue_fraction=0.5))
    assert sorted(set(g.coords[:, 0].tolist())) == [0, 512]
    np.testing.assert_allclose(sorted(set(g.tissue_fraction.round(4).tolist())), [0.5, 1.0])


def test_small_biopsy_still_gets_a_clipped_region():
    mask = np.ones((20, 30), bool)
    g = make_grids(mask, (32.0, 32.0), 960, 640, 0.25, GridParams())
    assert g.region_coords.tolist() == [[0, 0]] and g.region_sizes.tolist() == [[512, 512]]
    g = make_grids(mask, (32.0, 32.0), 500, 640, 0.25, GridParams())  # narrower than one patch
    assert len(g.region_coords) == 0 and len(g.coords) == 0


@pytest.mark.parametrize("overlap", [0, 64])
def test_overlap_shrinks_the_step(overlap):
    g = make_grids(np.ones((64, 64), bool), (32.0, 32.0), 2048, 2048, 0.25,
                   GridParams(overlap=overlap, min_tissue_fraction=0))
    assert g.step_level0 == (256 - overlap) * 2
    assert np.diff(np.unique(g.coords[:, 0])).tolist() == [g.step_level0] * (len(np.unique(g.coords[:, 0])) - 1)
