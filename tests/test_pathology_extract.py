"""Feature extraction over a shard, with small random-weight models in the real HIPT architectures
(registered as extra encoders, as a plugged-in encoder would be): the HDF5 contract, features equal to an
independent OpenSlide-based computation, each patch encoded once, bitwise-identical reruns, failures
recorded per slide, resume after an interruption, and slides on S3."""

import shutil
from dataclasses import replace

import boto3
import cv2
import h5py
import numpy as np
import openslide
import pandas as pd
import pytest
import torch
from moto import mock_aws

from tessera.pathology import extract as extract_module
from tessera.pathology import patches as patches_module
from tessera.pathology.encoders.catalog import IMAGENET
from tessera.pathology.encoders.conch import CONCH_V15_TRUNK, ConchV15
from tessera.pathology.encoders.transforms import TileTransform
from tessera.pathology.encoders.vit import ViTConfig, VisionTransformer
from tessera.pathology.encoders.checkpoints import build_encoder
from tessera.pathology.extract import Encoders, extract_shard
from tessera.pathology.encoders.hipt import PatchViT, RegionViT
from tessera.pathology.params import ExtractParams
from tessera.pathology.patches import forget_local, local_copy, plan_slide
from tessera.pathology.encoders.registry import EncoderSpec, register
from tessera.slides.patching import PatchingParams, patch_shard
from tessera.slides.slide import composite_on_white

TINY = register(EncoderSpec("tiny256", "patch", 24, lambda: PatchViT(embed_dim=24, depth=2, num_heads=2), patch_px=256))
TINY4K = register(EncoderSpec("tiny4k", "region", 16, lambda: RegionViT(in_dim=24, embed_dim=16, depth=2, num_heads=2),
                              patch_encoder="tiny256"))
GUIDE_ATTRS = ("patch_size", "patch_size_level0", "target_magnification", "level0_magnification", "level0_width",
               "level0_height", "overlap", "encoder")


def params(**overrides) -> ExtractParams:
    base = dict(encoders=("tiny256", "tiny4k"), weights={"tiny256": "random", "tiny4k": "random"}, random_seed=11,
                num_workers=0, batch_size=16, resume_dir="")
    return ExtractParams(**{**base, **overrides})


def corrupt_tile(src, dst, tile_index=20):
    import tifffile

    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        offset, count = tif.pages[0].dataoffsets[tile_index], tif.pages[0].databytecounts[tile_index]
    data[offset + 2:offset + count] = bytes(count - 2)  # keep the SOI marker, zero the rest
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def shard(tmp_path_factory, tiny_cohort, cmu_slide):
    """The slide stage over five slides (two demo slides, the CMU slide, a third demo slide and a missing
    file); the third is then damaged (a level-0 tile zeroed) before features are extracted."""
    root = tmp_path_factory.mktemp("pathology-shard")
    slides = [
        {"slide_id": "DEMO-A", "patient_id": "P1", "path": str(tiny_cohort / "slides" / "P002-S1.tiff")},
        {"slide_id": "CMU", "patient_id": "P2", "path": str(cmu_slide)},
        {"slide_id": "BROKEN", "patient_id": "P3", "path": str(root / "broken.tiff")},
        {"slide_id": "GONE", "patient_id": "P3", "path": str(root / "gone.svs")},
        {"slide_id": "DEMO-B", "patient_id": "P4", "path": str(tiny_cohort / "slides" / "P004-S1.tiff")},
    ]
    shutil.copyfile(tiny_cohort / "slides" / "P003-S1.tiff", root / "broken.tiff")
    index = patch_shard([{**s, "mpp": None} for s in slides], PatchingParams(), root / "slides")
    assert index.set_index("slide_id")["status"].to_dict() == {
        "DEMO-A": "ok", "CMU": "ok", "BROKEN": "ok", "GONE": "failed", "DEMO-B": "ok"}
    corrupt_tile(tiny_cohort / "slides" / "P003-S1.tiff", root / "broken.tiff")
    return root, slides


def out_dirs(root, name):
    return {"tiny256": root / name / "tiny256", "tiny4k": root / name / "tiny4k"}


@pytest.fixture(scope="module")
def first_run(shard):
    root, slides = shard
    dirs = out_dirs(root, "run0")
    indexes = extract_shard(slides, root / "slides", dirs, params())
    return dirs, indexes


def read(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, dict(f.attrs), dict(f["coords"].attrs)


def test_index_records_each_slide_and_failures_do_not_stop_the_shard(first_run):
    dirs, indexes = first_run
    for name, dim in (("tiny256", 24), ("tiny4k", 16)):
        index = pd.read_csv(dirs[name] / "index.tsv", sep="\t", keep_default_na=False).set_index("slide_id")
        assert list(index.columns) == ["patient_id", "status", "reason", "path", "n", "dim"]
        assert index["status"].to_dict() == {"DEMO-A": "ok", "CMU": "ok", "BROKEN": "failed", "GONE": "failed",
                                             "DEMO-B": "ok"}
        assert "corrupt JPEG in tile 20" in index.loc["BROKEN", "reason"] and "broken.tiff" in index.loc["BROKEN", "reason"]
        assert index.loc["GONE", "reason"].startswith("slide stage failed: slide file not found")
        ok = index[index["status"] == "ok"]
        assert (ok["dim"] == dim).all() and all((dirs[name] / p).is_file() for p in ok["path"])
        assert not (dirs[name] / "BROKEN.h5").exists() and not list(dirs[name].glob("*.tmp"))
        table = pd.read_parquet(dirs[name] / "slide_embeddings.parquet")
        assert table["slide_id"].tolist() == ["CMU", "DEMO-A", "DEMO-B"]
        assert list(table.columns) == ["slide_id", "patient_id", *[f"f{i:04d}" for i in range(dim)]]
        data, _, _ = read(dirs[name] / "CMU.h5")
        np.testing.assert_allclose(table.iloc[0, 2:].to_numpy(np.float32), data["features"].mean(0), rtol=1e-5)


def test_hdf5_contract(shard, first_run):
    root, _ = shard
    dirs, _ = first_run
    grid, grid_attrs, _ = read(root / "slides" / "patches" / "CMU.h5")
    patches, attrs, coord_attrs = read(dirs["tiny256"] / "CMU.h5")
    assert patches["coords"].dtype == np.int64 and np.array_equal(patches["coords"], grid["coords"])
    assert patches["features"].dtype == np.float32 and patches["features"].shape == (len(grid["coords"]), 24)
    for key in GUIDE_ATTRS:
        assert key in attrs and key in coord_attrs
    assert attrs["encoder"] == "tiny256" and attrs["patch_size"] == 256
    assert attrs["patch_size_level0"] == grid_attrs["patch_size_level0"] == 257  # 0.499 µm/px slide
    assert attrs["weights"] == "random" and attrs["weights_random"] and attrs["weights_sha256"] == ""
    assert attrs["weights_seed"] == 11 and attrs["reader"] == "tiles" and attrs["precision"] == "fp32"
    regions, rattrs, _ = read(dirs["tiny4k"] / "CMU.h5")
    assert np.array_equal(regions["coords"], grid["region_coords"])
    assert np.array_equal(regions["region_sizes"], grid["region_sizes"])
    assert regions["features"].dtype == np.float32 and regions["features"].shape == (len(grid["region_coords"]), 16)
    assert rattrs["patch_size"] == 4096 and rattrs["grid_patch_size"] == 256 and rattrs["patch_encoder"] == "tiny256"
    assert rattrs["patch_weights"] == "random" and rattrs["weights_random"]


def reference_features(slide_path, coords, p0, models):
    """Patch features computed without the tile reader or the DataLoader: OpenSlide read_region, area
    resampling to 256 px, mean = std = 0.5, the model."""
    with openslide.OpenSlide(str(slide_path)) as osr:
        boxes = [composite_on_white(np.asarray(osr.read_region((int(x), int(y)), 0, (p0, p0)))) for x, y in coords]
    pixels = np.stack([cv2.resize(b, (256, 256), interpolation=cv2.INTER_AREA) if p0 != 256 else b for b in boxes])
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        return models["tiny256"](x)


@pytest.mark.parametrize("slide_id", ["CMU", "DEMO-A"])
def test_features_equal_an_independent_computation(shard, first_run, slide_id):
    root, slides = shard
    dirs, _ = first_run
    path = next(s["path"] for s in slides if s["slide_id"] == slide_id)
    models = {name: build_encoder(spec, "random", seed=11)[0] for name, spec in (("tiny256", TINY), ("tiny4k", TINY4K))}
    grid, grid_attrs, _ = read(root / "slides" / "patches" / f"{slide_id}.h5")
    p0 = int(grid_attrs["patch_size_level0"])
    stored = read(dirs["tiny256"] / f"{slide_id}.h5")[0]["features"]
    np.testing.assert_allclose(stored, reference_features(path, grid["coords"], p0, models).numpy(), atol=2e-5)
    (rx, ry), (rw, rh) = grid["region_coords"][0], grid["region_sizes"][0]
    rows, cols = rh // p0, rw // p0
    region_coords = [(rx + p0 * c, ry + p0 * r) for r in range(rows) for c in range(cols)]  # row-major
    tokens = reference_features(path, region_coords, p0, models)
    with torch.inference_mode():
        expected = models["tiny4k"](tokens.reshape(1, rows, cols, -1).permute(0, 3, 1, 2))
    stored = read(dirs["tiny4k"] / f"{slide_id}.h5")[0]["features"][0]
    np.testing.assert_allclose(stored, expected[0].numpy(), atol=2e-5)


def count_encoded(monkeypatch) -> list[int]:
    counts: list[int] = []
    original = Encoders.encode_patches

    def counting(self, pixels):
        counts.append(len(pixels))
        return original(self, pixels)

    monkeypatch.setattr(Encoders, "encode_patches", counting)
    return counts


def test_each_patch_is_encoded_once_and_workers_give_bitwise_identical_features(shard, first_run, monkeypatch):
    """(The run also stores the optional region token grids, checked by check_region_tokens.)"""
    root, slides = shard
    dirs0, _ = first_run
    counts = count_encoded(monkeypatch)
    dirs = out_dirs(root, "workers")
    extract_shard(slides, root / "slides", dirs, params(num_workers=2, region_tokens=True))
    expected = 0
    for sid in ("DEMO-A", "CMU", "DEMO-B"):
        grid, attrs, _ = read(root / "slides" / "patches" / f"{sid}.h5")
        p0 = attrs["patch_size_level0"]
        cells = {(int(x), int(y)) for x, y in grid["coords"]}
        for (rx, ry), (rw, rh) in zip(grid["region_coords"], grid["region_sizes"]):
            cells |= {(int(rx + p0 * c), int(ry + p0 * r)) for r in range(rh // p0) for c in range(rw // p0)}
        expected += len(cells)
    broken_read = sum(counts) - expected  # BROKEN's batches before its corrupt tile was reached
    assert 0 <= broken_read < 16
    for name in dirs:
        for sid in ("DEMO-A", "CMU", "DEMO-B"):
            a, b = read(dirs0[name] / f"{sid}.h5")[0], read(dirs[name] / f"{sid}.h5")[0]
            assert a["features"].tobytes() == b["features"].tobytes()
    check_region_tokens(root, dirs)


def check_region_tokens(root, dirs):
    """The optional token grids (this run stored them): each region's grid of patch features in float16,
    row-major, zero beyond a border region's grid; the region encoder on them gives the region features."""
    model = build_encoder(TINY4K, "random", seed=11)[0]
    for sid in ("DEMO-A", "CMU"):
        grid, attrs, _ = read(root / "slides" / "patches" / f"{sid}.h5")
        p0 = int(attrs["patch_size_level0"])
        patches = read(dirs["tiny256"] / f"{sid}.h5")[0]
        regions = read(dirs["tiny4k"] / f"{sid}.h5")[0]
        tokens, shape = regions["tokens"], regions["token_grid"]
        assert tokens.dtype == np.float16 and tokens.shape == (len(regions["coords"]), 16, 16, 24)
        assert np.array_equal(shape, regions["region_sizes"][:, ::-1] // p0)  # (rows, cols) = (h, w) / patch
        row_of = {(int(x), int(y)): i for i, (x, y) in enumerate(patches["coords"])}
        for r, ((rx, ry), (rows, cols)) in enumerate(zip(regions["coords"], shape)):
            assert not tokens[r, rows:].any() and not tokens[r, :, cols:].any()
            for i in range(rows):
                for j in range(cols):
                    k = row_of.get((int(rx + p0 * j), int(ry + p0 * i)))
                    if k is not None:  # a tissue patch of the patch encoder's own file
                        assert np.array_equal(tokens[r, i, j], patches["features"][k].astype(np.float16))
            with torch.inference_mode():
                x = torch.from_numpy(tokens[r:r + 1, :rows, :cols].astype(np.float32)).permute(0, 3, 1, 2)
                np.testing.assert_allclose(model(x)[0].numpy(), regions["features"][r], atol=2e-2)


def test_resume_after_an_interruption_computes_only_the_rest(shard, first_run, monkeypatch, tmp_path):
    root, slides = shard
    dirs0, _ = first_run
    resume = tmp_path / "resume"
    finish = extract_module._finish

    def killed_after_first_slide(plan, *args):
        if plan.slide_id != "DEMO-A":
            raise KeyboardInterrupt  # the job is killed while the second slide is being written
        finish(plan, *args)

    monkeypatch.setattr(extract_module, "_finish", killed_after_first_slide)
    with pytest.raises(KeyboardInterrupt):
        extract_shard(slides, root / "slides", out_dirs(tmp_path, "killed"), params(resume_dir=str(resume)))
    assert not [p for p in (tmp_path / "killed").rglob("*") if p.name.endswith(".tmp")]
    assert sorted(p.name for p in resume.iterdir()) == ["DEMO-A"]

    monkeypatch.setattr(extract_module, "_finish", finish)
    counts = count_encoded(monkeypatch)
    dirs = out_dirs(tmp_path, "rerun")  # Snakemake gives the rerun an empty output directory
    extract_shard(slides, root / "slides", dirs, params(resume_dir=str(resume)))
    rest = sum(len(plan_slide(s, "", "", root / "slides" / "patches" / f"{s}.h5").unique) for s in ("CMU", "DEMO-B"))
    assert rest <= sum(counts) < rest + 16  # CMU and DEMO-B (+ BROKEN's batches before its bad tile), not DEMO-A
    assert (dirs["tiny256"] / "DEMO-A.h5").stat().st_ino == next((resume / "DEMO-A").glob("*.tiny256.h5")).stat().st_ino
    for name in dirs:
        for sid in ("DEMO-A", "CMU", "DEMO-B"):
            assert read(dirs0[name] / f"{sid}.h5")[0]["features"].tobytes() == \
                read(dirs[name] / f"{sid}.h5")[0]["features"].tobytes()
    counts.clear()
    extract_shard(slides, root / "slides", out_dirs(tmp_path, "again"), params(resume_dir=str(resume)))
    assert sum(counts) < 16  # everything resumed; only BROKEN is tried again (its failure is not cached)
    changed = params(resume_dir=str(resume), random_seed=12)  # other weights: nothing may be reused
    extract_shard(slides, root / "slides", out_dirs(tmp_path, "other-weights"), changed)
    assert sum(counts) > 100 and len(list((resume / "CMU").iterdir())) == 2  # one key (two encoders) per slide


def test_slides_on_s3(shard, first_run, tmp_path, monkeypatch):
    root, slides = shard
    dirs0, _ = first_run
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    forgotten = []

    def forget_and_check(path, scratch):
        copy = local_copy(path, scratch)
        assert copy.is_file()  # the job's copy exists until the slide is done...
        forget_local(path, scratch)
        forgotten.append(not copy.exists())  # ...and is deleted then, not at the end of the shard

    monkeypatch.setattr(extract_module, "forget_local", forget_and_check)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="slides")
        s3.upload_file(slides[0]["path"], "slides", "cohort/P002-S1.tiff")
        remote = [{**slides[0], "path": "s3://slides/cohort/P002-S1.tiff"}]
        dirs = out_dirs(tmp_path, "s3")
        index = extract_shard(remote, root / "slides", dirs, params(resume_dir=str(tmp_path / "resume")))
    assert index["tiny256"]["status"].tolist() == ["ok"] and forgotten == [True]
    assert read(dirs["tiny256"] / "DEMO-A.h5")[0]["features"].tobytes() == \
        read(dirs0["tiny256"] / "DEMO-A.h5")[0]["features"].tobytes()


def test_configuration_mismatch_is_an_input_error(shard, tmp_path):
    root, slides = shard
    from tessera.errors import InputError

    with pytest.raises(InputError, match="no weights given for encoder 'tiny4k'"):
        extract_shard(slides, root / "slides", out_dirs(tmp_path, "x"), params(weights={"tiny256": "random"}))
    with pytest.raises(InputError, match="output directories"):
        extract_shard(slides, root / "slides", {"tiny256": tmp_path / "y"}, params())
    shutil.rmtree(tmp_path / "y", ignore_errors=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_agrees_with_cpu_fp32(shard, first_run, tmp_path):
    root, slides = shard
    dirs0, _ = first_run
    dirs = out_dirs(tmp_path, "cuda")
    index = extract_shard(slides, root / "slides", dirs, params(device="cuda", num_workers=2))
    assert index["tiny256"].set_index("slide_id")["status"].to_dict() == {
        "DEMO-A": "ok", "CMU": "ok", "BROKEN": "failed", "GONE": "failed", "DEMO-B": "ok"}
    for name in dirs:
        for sid in ("DEMO-A", "CMU", "DEMO-B"):
            cpu, cuda = read(dirs0[name] / f"{sid}.h5"), read(dirs[name] / f"{sid}.h5")
            assert cuda[1]["precision"] == "bf16" and cuda[1]["device"] == "cuda"
            a, b = cpu[0]["features"], cuda[0]["features"]
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            assert cosine.min() > 0.99, (name, sid, cosine.min())


# Several encoders per run: two on the slide stage's 256-px grid (one with UNI's resize to 224), one on a
# 224-px grid and one (CONCH v1.5's tower) on a 512-px grid derived from the same tissue polygons.
TINY_UNI = register(EncoderSpec("tinyuni", "patch", 16, lambda: VisionTransformer(ViTConfig(16, 1, 2, init_values=1e-5)),
                                patch_px=256, transform=TileTransform(resize=224, crop=224), mean=IMAGENET[0],
                                std=IMAGENET[1]))
TINY224 = register(EncoderSpec("tiny224", "patch", 32, lambda: VisionTransformer(
    ViTConfig(16, 1, 2, patch_size=14, reg_tokens=4, output="cls_mean")), patch_px=224,
    transform=TileTransform(resize=224, interpolation="bicubic")))
TINY512 = register(EncoderSpec("tiny512", "patch", 16, lambda: ConchV15(
    replace(CONCH_V15_TRUNK, embed_dim=16, num_heads=2, depth=1), dim=16), patch_px=512,
    transform=TileTransform(resize=448, crop=448), mean=IMAGENET[0], std=IMAGENET[1]))
MIXED = ("tiny256", "tinyuni", "tiny224", "tiny512")


@pytest.fixture(scope="module")
def mixed_run(shard, tmp_path_factory):
    root, slides = shard
    out = tmp_path_factory.mktemp("mixed")
    reads = []
    original = patches_module.read_patch

    def counting(reader, x, y, geometry, **kw):
        reads.append(geometry.size)
        return original(reader, x, y, geometry, **kw)

    patches_module.read_patch = counting
    try:
        indexes = extract_shard(slides, root / "slides", {n: out / n for n in MIXED},
                                params(encoders=MIXED, weights=dict.fromkeys(MIXED, "random")))
    finally:
        patches_module.read_patch = original
    return out, indexes, reads


def test_encoders_of_one_geometry_share_one_read_and_others_get_their_own_grid(shard, mixed_run):
    root, _ = shard
    out, indexes, reads = mixed_run
    for name in MIXED:  # BROKEN's zeroed tile lies under no tissue tile of the 256-px grid: a failure per grid
        broken = "ok" if name in ("tiny256", "tinyuni") else "failed"
        assert indexes[name].set_index("slide_id")["status"].to_dict() == {
            "DEMO-A": "ok", "CMU": "ok", "BROKEN": broken, "GONE": "failed", "DEMO-B": "ok"}, name
    rows = {n: {s: len(read(out / n / f"{s}.h5")[0]["features"]) for s in ("DEMO-A", "CMU", "DEMO-B", "BROKEN")
                if (out / n / f"{s}.h5").exists()} for n in MIXED}
    assert rows["tiny256"] == rows["tinyuni"] and "BROKEN" not in rows["tiny512"]
    for size, name in ((256, "tiny256"), (224, "tiny224"), (512, "tiny512")):  # one read per tile and grid
        expected = sum(rows[name].values())
        assert expected <= reads.count(size) < expected + 16, (size, reads.count(size))  # + BROKEN's first batch
    grid, _, _ = read(root / "slides" / "patches" / "CMU.h5")
    uni, uni_attrs, _ = read(out / "tinyuni" / "CMU.h5")
    assert np.array_equal(uni["coords"], grid["coords"]) and uni["features"].shape[1] == 16
    assert uni_attrs["transform"] == "resize 256 -> 224 (PIL bilinear, antialiased)"  # the crop is a no-op
    assert uni_attrs["input_size"] == 224 and uni_attrs["input_mpp"] == pytest.approx(0.5 * 256 / 224)
    for name, size in (("tiny224", 224), ("tiny512", 512)):
        data, attrs, coord_attrs = read(out / name / "CMU.h5")
        assert attrs["patch_size"] == size == coord_attrs["patch_size"] and attrs["target_mpp"] == 0.5
        assert attrs["patch_size_level0"] == round(size * 0.5 / attrs["level0_mpp"])
        assert len(data["coords"]) > 0 and not np.array_equal(data["coords"][:5], grid["coords"][:5])
        x, y = data["coords"].T
        assert (x + attrs["patch_size_level0"] <= attrs["level0_width"]).all()
        assert (y + attrs["patch_size_level0"] <= attrs["level0_height"]).all()
    assert read(out / "tiny224" / "CMU.h5")[0]["features"].shape[1] == 32  # CLS ⊕ mean


def test_derived_grid_features_equal_an_independent_computation(shard, mixed_run):
    """CONCH-style encoder on its own 512-px grid: OpenSlide read, area resample, PIL resize 448, ImageNet norm."""
    _, slides = shard
    out, _, _ = mixed_run
    from PIL import Image

    data, attrs, _ = read(out / "tiny512" / "CMU.h5")
    p0 = int(attrs["patch_size_level0"])
    path = next(s["path"] for s in slides if s["slide_id"] == "CMU")
    with openslide.OpenSlide(str(path)) as osr:
        boxes = [composite_on_white(np.asarray(osr.read_region((int(x), int(y)), 0, (p0, p0))))
                 for x, y in data["coords"][:6]]
    tiles = [cv2.resize(b, (512, 512), interpolation=cv2.INTER_AREA) if p0 != 512 else b for b in boxes]
    pixels = np.stack([np.asarray(Image.fromarray(t).resize((448, 448), Image.Resampling.BILINEAR)) for t in tiles])
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET[0]).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)
    model = build_encoder(TINY512, "random", seed=11)[0]
    with torch.inference_mode():
        expected = model(x)
    np.testing.assert_allclose(data["features"][:6], expected.numpy(), atol=2e-5)


def test_rasterised_tissue_polygons_give_back_the_mask():
    from tessera.pathology.grids import rasterise
    from tessera.slides.tissue import mask_polygons, polygons_geojson

    mask = np.zeros((120, 160), bool)
    mask[10:90, 20:140] = True
    mask[40:60, 60:100] = False  # a hole
    mask[45:55, 75:85] = True  # an island in the hole
    geojson = polygons_geojson(mask_polygons(mask, (8.0, 8.0)), "S")
    raster = rasterise(geojson, 160 * 8, 120 * 8, 8.0)
    assert np.array_equal(raster, mask)


def test_manifest_reads_the_provenance_of_any_encoder(mixed_run, tmp_path):
    """Feature files carry array attributes (mean, std); the manifest's reader takes them (it once failed)."""
    from tessera.manifest import pathology_weights

    out, _, _ = mixed_run
    index = tmp_path / "index.tsv"
    pd.DataFrame({"slide_id": ["CMU"], "path": [str(out / "tinyuni" / "CMU.h5")]}).to_csv(index, sep="\t", index=False)
    entry = pathology_weights(index)
    assert entry["weights"] == {"source": "random", "random": True, "seed": 11} and entry["precision"] == "fp32"
