"""Opening slides, MPP resolution order, pyramid level math, and unreadable files."""

import numpy as np
import openslide
import pytest
import tifffile

from tessera.demo.slides import write_aperio_tiff
from tessera.errors import SlideError
from tessera.slides.slide import Pyramid, Slide, composite_on_white

IMG = np.full((512, 768, 3), 200, np.uint8)


def test_cmu_slide_geometry_and_mpp(cmu_slide):
    with Slide(cmu_slide) as s:
        assert (s.pyramid.width, s.pyramid.height) == (2220, 2967)
        assert s.mpp == pytest.approx(0.499) and s.mpp_source == "openslide" and s.objective_power == 20


def test_demo_pyramid_levels(tmp_path):
    path = tmp_path / "d.tiff"
    write_aperio_tiff(path, np.full((2048, 3072, 3), 230, np.uint8))
    with Slide(path) as s:
        assert s.pyramid.dimensions == ((3072, 2048), (768, 512), (192, 128))
        assert s.pyramid.downsamples == (1.0, 4.0, 16.0)
        assert (s.mpp, s.mpp_source, s.objective_power) == (0.25, "openslide", 40)
    assert openslide.OpenSlide(path).properties["openslide.vendor"] == "aperio"


def test_mpp_from_tiff_resolution_tags_when_vendor_metadata_lacks_it(tmp_path):
    path = tmp_path / "a.tif"
    with tifffile.TiffWriter(path) as tw:  # Aperio description without MPP; OpenSlide then reports none
        tw.write(IMG, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None,
                 description="Aperio Image Library v12.0.15 \r\n768x512 [0,0 768x512] (256x256) JPEG/RGB Q=85|AppMag = 20",
                 resolution=(20000, 20000), resolutionunit="CENTIMETER")
    assert openslide.PROPERTY_NAME_MPP_X not in openslide.OpenSlide(path).properties
    with Slide(path) as s:
        assert (s.mpp, s.mpp_source) == (0.5, "tiff")


def test_sheet_mpp_overrides_scanner_metadata(cmu_slide):
    with Slide(cmu_slide, mpp_override=0.5) as s:
        assert (s.mpp, s.mpp_source) == (0.5, "sheet")
    with Slide(cmu_slide, mpp_override=float("nan")) as s:  # empty sheet cell
        assert s.mpp_source == "openslide"


def test_no_mpp_anywhere_fails_with_the_fix(tmp_path):
    path = tmp_path / "nomPP.tif"
    tifffile.imwrite(path, IMG, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None)
    with pytest.raises(SlideError, match=r"no microns-per-pixel for .*nomPP.tif.*'mpp' column of the slide sheet"):
        Slide(path)
    with Slide(path, mpp_override=0.25) as s:
        assert s.mpp_source == "sheet"


def test_implausible_resolution_tags_are_ignored(tmp_path):
    path = tmp_path / "dpi72.tif"  # 72 dpi = 352.8 µm/px: a screen resolution, not a microscope's
    tifffile.imwrite(path, IMG, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None,
                     resolution=(72, 72), resolutionunit="INCH")
    with pytest.raises(SlideError, match="no microns-per-pixel"):
        Slide(path)


def test_missing_and_truncated_files(tmp_path, cmu_slide):
    with pytest.raises(SlideError, match=r"slide file not found: .*gone.svs. Fix: correct the path"):
        Slide(tmp_path / "gone.svs")
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(cmu_slide.read_bytes()[:200_000])
    with pytest.raises(SlideError, match=r"(cannot open slide|cannot read pixels).*truncated.svs"):
        with Slide(truncated) as s:
            s.read_level(0)
    garbage = tmp_path / "notaslide.svs"
    garbage.write_bytes(b"this is not a slide" * 100)
    with pytest.raises(SlideError, match="cannot open slide"):
        Slide(garbage)


def test_level_for_downsample_never_upsamples():
    p = Pyramid(((100_000, 80_000), (25_000, 20_000), (6_250, 5_000), (1_562, 1_250)), (1.0, 4.0, 16.0, 64.0))
    assert p.level_for_downsample(1.0) == 0
    assert p.level_for_downsample(2.0) == 0  # 20x from a 40x slide: read level 0 and resample
    assert p.level_for_downsample(4.02) == 1  # within 1 % counts as the level itself
    assert p.level_for_downsample(32.0) == 2
    assert p.level_for_downsample(1000.0) == 3
    assert p.level_for_downsample(0.5) == 0


def test_nearest_level_breaks_ties_towards_the_coarser_level():
    p = Pyramid(((100_000, 80_000), (25_000, 20_000), (6_250, 5_000), (1_562, 1_250)), (1.0, 4.0, 16.0, 64.01))
    assert p.nearest_level(32.0) == 3  # 16x and 64.01x are equally near: take the cheaper one
    assert p.nearest_level(20.0) == 2 and p.nearest_level(1.5) == 0 and p.nearest_level(500.0) == 3


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    out = composite_on_white(rgba)
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 1].tolist() == [255, 255, 255]
