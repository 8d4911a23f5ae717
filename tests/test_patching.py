"""The slide stage over a shard: outputs in the contract, failures recorded, the rest completes."""

import json

import cv2
import h5py
import numpy as np
import openslide
import pandas as pd
import pytest

from tessera.demo.slides import write_aperio_tiff
from tessera.slides.patching import INDEX_COLUMNS, PatchingParams, patch_shard, write_cohort_index


@pytest.fixture
def never_touch_associated_images(monkeypatch):
    """Fail the test if anything reads a slide's label, macro or thumbnail image."""
    def forbidden(self):
        raise AssertionError("associated images (label/macro) must never be read")
    monkeypatch.setattr(openslide.OpenSlide, "associated_images", property(forbidden))
    monkeypatch.setattr(openslide.OpenSlide, "get_thumbnail", lambda *a, **k: forbidden(None))


def bad_slides(tmp_path, cmu_slide):
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(cmu_slide.read_bytes()[:300_000])
    blank = tmp_path / "blank.tiff"
    write_aperio_tiff(blank, np.full((1024, 1024, 3), 243, np.uint8))
    import tifffile
    no_mpp = tmp_path / "nompp.tif"
    tifffile.imwrite(no_mpp, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), compression="jpeg",
                     photometric="rgb", metadata=None)
    return [
        {"slide_id": "MISSING", "patient_id": "P9", "path": str(tmp_path / "gone.svs"), "mpp": None},
        {"slide_id": "TRUNC", "patient_id": "P9", "path": str(truncated), "mpp": None},
        {"slide_id": "BLANK", "patient_id": "P9", "path": str(blank), "mpp": None},
        {"slide_id": "NOMPP", "patient_id": "P9", "path": str(no_mpp), "mpp": None},
    ]


def test_shard_records_failures_and_completes_the_rest(tmp_path, cmu_slide, tiny_cohort, never_touch_associated_images):
    good = [
        {"slide_id": "CMU", "patient_id": "P1", "path": str(cmu_slide), "mpp": None},
        {"slide_id": "DEMO", "patient_id": "P2", "path": str(tiny_cohort / "slides" / "P002-S1.tiff"), "mpp": None},
    ]
    shard = tmp_path / "shard-0"
    index = patch_shard(bad_slides(tmp_path, cmu_slide)[:2] + good + bad_slides(tmp_path, cmu_slide)[2:],
                        PatchingParams(), shard)
    assert list(index.columns) == INDEX_COLUMNS
    status = dict(zip(index["slide_id"], index["status"]))
    assert status == {"MISSING": "failed", "TRUNC": "failed", "CMU": "ok", "DEMO": "ok", "BLANK": "failed", "NOMPP": "failed"}
    reason = dict(zip(index["slide_id"], index["reason"]))
    assert "slide file not found" in reason["MISSING"] and "gone.svs" in reason["MISSING"]
    assert "truncated.svs" in reason["TRUNC"]
    assert "no tissue found" in reason["BLANK"]
    assert "no microns-per-pixel" in reason["NOMPP"] and "'mpp' column" in reason["NOMPP"]
    on_disk = pd.read_csv(shard / "index.tsv", sep="\t", keep_default_na=False)
    assert on_disk["slide_id"].tolist() == index["slide_id"].tolist()
    assert not list(shard.rglob("*.tmp")), "no temporary files may remain"

    row = index.set_index("slide_id").loc["CMU"]
    with h5py.File(shard / row["patches_h5"]) as f:
        coords, regions, sizes = f["coords"][()], f["region_coords"][()], f["region_sizes"][()]
        assert coords.dtype == np.int64 and coords.shape == (row["n_patches"], 2)
        attrs = dict(f["coords"].attrs)
        assert dict(f.attrs) == attrs  # on the file and on coords (where TRIDENT/CLAM read them)
        assert f["tissue_fraction"][()].min() >= 0.25
    assert attrs["patch_size"] == 256 and attrs["patch_size_level0"] == 257 and attrs["overlap"] == 0
    assert attrs["target_magnification"] == 20 and attrs["level0_magnification"] == 20
    assert (attrs["level0_width"], attrs["level0_height"]) == (2220, 2967) and attrs["mpp_source"] == "openslide"
    assert (coords[:, 0] + 257 <= 2220).all() and (coords[:, 1] + 257 <= 2967).all()
    assert regions.tolist() == [[0, 0]] and sizes.tolist() == [[8 * 257, 11 * 257]]  # clipped to whole patches
    assert row["tissue_mm2"] == pytest.approx(0.36 * 2220 * 2967 * 0.499**2 / 1e6, rel=0.15)  # hand count: test_tissue.py

    geo = json.loads((shard / row["tissue_geojson"]).read_text())
    assert geo["type"] == "FeatureCollection" and geo["features"]
    thumb = cv2.imread(str(shard / row["thumbnail"]))
    assert max(thumb.shape[:2]) <= 1024 and thumb.shape[0] > thumb.shape[1]


def test_cohort_index_joins_shards_with_their_logical_paths(tmp_path, tiny_cohort):
    slides = pd.read_csv(tiny_cohort / "slides.tsv", sep="\t")
    local = []
    for i, chunk in enumerate([slides.iloc[:2], slides.iloc[2:4]]):
        recs = [{"slide_id": r.slide_id, "patient_id": r.patient_id, "path": str(tiny_cohort / r.path), "mpp": None}
                for r in chunk.itertuples()]
        patch_shard(recs, PatchingParams(), tmp_path / f"staged-{i}")
        local.append(str(tmp_path / f"staged-{i}"))
    cohort = write_cohort_index(["results/slides/shard-0", "results/slides/shard-1"], local, tmp_path / "slides.tsv")
    assert cohort["slide_id"].tolist() == sorted(slides["slide_id"][:4])
    assert all(p.startswith("results/slides/shard-") and p.endswith(".h5") for p in cohort["patches_h5"])
    assert (cohort["status"] == "ok").all()
