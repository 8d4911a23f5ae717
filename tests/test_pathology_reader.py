"""The fast tile reader: pixels equal OpenSlide's read_region on the demo slides (256-px YCbCr tiles, three
levels) and the real CMU SVS (240-px raw-RGB tiles with JPEGTables under 256-px patches); fallback to
OpenSlide where the fast path does not apply; corrupt and truncated tiles fail with a clear error."""

import numpy as np
import openslide
import pytest
import tifffile

from tessera.errors import SlideError
from tessera.pathology.reader import PatchGeometry, TileCache, TileReader, read_patch, resample
from tessera.slides.slide import composite_on_white


def openslide_rgb(path, x, y, level, w, h):
    with openslide.OpenSlide(str(path)) as osr:
        return composite_on_white(np.asarray(osr.read_region((x, y), level, (w, h))))


@pytest.fixture(scope="module")
def demo_slide(tiny_cohort):
    return tiny_cohort / "slides" / "P002-S1.tiff"


def test_every_demo_tile_and_random_boxes_equal_openslide(demo_slide):
    rng = np.random.default_rng(0)
    with TileReader(demo_slide) as reader, openslide.OpenSlide(str(demo_slide)) as osr:
        assert sorted(reader.fast_levels) == [0, 1, 2] and not reader.fallback
        for level, (w, h) in enumerate(reader.dimensions):
            ds = int(reader.downsamples[level])
            for ty in range(0, h, 256):  # every native tile, edge tiles cropped by the level border
                for tx in range(0, w, 256):
                    tw, th = min(256, w - tx), min(256, h - ty)
                    expected = composite_on_white(np.asarray(osr.read_region((tx * ds, ty * ds), level, (tw, th))))
                    assert np.array_equal(reader.read(tx * ds, ty * ds, level, tw, th), expected)
            for _ in range(25):  # unaligned boxes, some crossing the level border (OpenSlide fallback)
                bw, bh = (int(v) for v in rng.integers(1, min(w, 700), 2))
                lx, ly = int(rng.integers(-40, w - bw + 40)), int(rng.integers(-40, h - bh + 40))
                expected = composite_on_white(np.asarray(osr.read_region((lx * ds, ly * ds), level, (bw, bh))))
                assert np.array_equal(reader.read(lx * ds, ly * ds, level, bw, bh), expected)


def test_cmu_patch_grid_across_240px_tiles_equals_openslide(cmu_slide):
    with TileReader(cmu_slide, cache=TileCache(1 << 20)) as reader:  # 6 slots: tiles are evicted and re-decoded
        assert list(reader.fast_levels) == [0] and reader.fast_levels[0].tile_w == 240
        assert reader.fast_levels[0].tables is not None  # JPEGTables shared by the tiles
        w, h = reader.dimensions[0]
        for y in range(0, h - 256 + 1, 256):  # the patch grid: boxes straddle up to four tiles
            for x in range(0, w - 256 + 1, 256):
                assert np.array_equal(reader.read(x, y, 0, 256, 256), openslide_rgb(cmu_slide, x, y, 0, 256, 256))
        assert np.array_equal(reader.read(1000, 77, 0, 913, 500), openslide_rgb(cmu_slide, 1000, 77, 0, 913, 500))


def test_one_cache_shared_by_readers_of_different_slides(demo_slide, cmu_slide):
    cache = TileCache(2 << 20)  # a worker's cache: the demo's 256-px and the CMU's 240-px tiles take turns
    with TileReader(demo_slide, cache=cache) as demo, TileReader(cmu_slide, cache=cache) as cmu:
        out = np.empty((300, 300, 3), np.uint8)
        for x, y in ((0, 0), (300, 300), (0, 0), (600, 900), (300, 300)):
            for reader, path in ((demo, demo_slide), (cmu, cmu_slide)):
                assert reader.read(x, y, 0, 300, 300, out=out) is out
                assert np.array_equal(out, openslide_rgb(path, x, y, 0, 300, 300))


def test_levels_outside_the_fast_path_are_read_by_openslide(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    path = tmp_path / "deflate.tif"
    tifffile.imwrite(path, rgb, tile=(256, 256), compression="zlib", photometric="rgb", metadata=None)
    with TileReader(path) as reader:
        assert reader.fast_levels == {} and "not JPEG" in reader.fallback[0]
        assert np.array_equal(reader.read(13, 17, 0, 300, 400), rgb[17:417, 13:313])


def corrupt_copy(src, dst, tile_index, how):
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[tile_index], page.databytecounts[tile_index]
    if how == "garbage":
        data[offset:offset + count] = bytes(range(256)) * (count // 256) + bytes(count % 256)
        dst.write_bytes(bytes(data))
    else:  # truncate the file inside this tile
        dst.write_bytes(bytes(data[:offset + count // 2]))
    return dst


def test_corrupt_tile_fails_with_the_tile_and_file_named(tmp_path, demo_slide):
    bad = corrupt_copy(demo_slide, tmp_path / "bad.tiff", tile_index=9, how="garbage")  # column 1, row 1
    with TileReader(bad) as reader:
        assert np.array_equal(reader.read(0, 0, 0, 256, 256), openslide_rgb(demo_slide, 0, 0, 0, 256, 256))
        with pytest.raises(SlideError, match=r"corrupt JPEG in tile 9 \(column 1, row 1\) of level 0 .*bad.tiff"):
            reader.read(200, 200, 0, 256, 256)


def test_truncated_slide_and_tile_past_the_end_fail_clearly(tmp_path, demo_slide):
    with tifffile.TiffFile(demo_slide) as tif:
        last = int(np.argmax(tif.pages[0].dataoffsets))
    cut = corrupt_copy(demo_slide, tmp_path / "cut.tiff", tile_index=last, how="truncate")
    with pytest.raises(SlideError, match="cannot open slide .*cut.tiff.*Fix"):
        TileReader(cut)  # OpenSlide hashes the smallest level on open: a truncated pyramid fails here
    # A tile whose bytes lie past the end of the file (only the tile offset table is damaged).
    damaged = tmp_path / "offset.tiff"
    damaged.write_bytes(demo_slide.read_bytes())
    with tifffile.TiffFile(damaged, mode="r+b") as tif:
        offsets = list(tif.pages[0].dataoffsets)
        offsets[10] = damaged.stat().st_size - 100
        tif.pages[0].tags["TileOffsets"].overwrite(offsets)
    with TileReader(damaged) as reader:
        assert np.array_equal(reader.read(0, 0, 0, 256, 256), openslide_rgb(demo_slide, 0, 0, 0, 256, 256))
        with pytest.raises(SlideError, match=r"tile 10 \(column 2, row 1\) of level 0 .* past the end of the file"):
            reader.read(512, 256, 0, 256, 256)


def test_patch_geometry_and_area_resampling(demo_slide, cmu_slide):
    with TileReader(demo_slide) as reader:  # 0.25 µm/px slide, 0.5 µm/px patches: 512-px boxes at level 0
        geometry = PatchGeometry.choose(reader, patch_size_level0=512, patch_size=256)
        assert geometry == PatchGeometry(level=0, box=512, size=256)
        patch = read_patch(reader, 512, 1024, geometry)
        box = openslide_rgb(demo_slide, 512, 1024, 0, 512, 512).astype(np.float64)
        block_means = box.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
        assert patch.shape == (256, 256, 3) and np.abs(patch - block_means).max() <= 0.5 + 1e-9
    with TileReader(cmu_slide) as reader:  # native resolution: no resampling at all
        assert PatchGeometry.choose(reader, 256, 256) == PatchGeometry(0, 256, 256)
    flat = np.full((8, 8, 3), 7, np.uint8)
    assert resample(flat, 8) is flat
