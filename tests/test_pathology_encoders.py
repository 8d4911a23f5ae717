"""The foundation-model encoders against their reference implementations.

Golden fixtures (tests/data/encoders, written by tests/reference/make_encoder_fixtures.py with timm,
TRIDENT's CONCH v1.5 code, CONCH's CoCa, transformers and torchvision; provenance in PROVENANCE.json) hold
tiny random-weight models in each published key layout and their outputs. Here: full-size parameter
counts on the meta device against issue 12's table; each tiny model loaded strictly through the real
loading path (published file → spec mapping → strict load) gives the reference's features to 1e-4;
the published transforms byte for byte; strict-loading errors; the output rules; grid grouping.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tessera.errors import InputError
from tessera.pathology.encoders import catalog, registry
from tessera.pathology.encoders.checkpoints import build_encoder
from tessera.pathology.encoders.conch import CONCH_V1_TRUNK, CONCH_V15_TRUNK, ConchV1, ConchV15
from tessera.pathology.encoders.transforms import TileTransform
from tessera.pathology.encoders.vit import VisionTransformer, count_parameters

DATA = Path(__file__).parent / "data" / "encoders"
PROVENANCE = json.loads((DATA / "PROVENANCE.json").read_text())
WIDTH, HEADS, DEPTH = PROVENANCE["width"], PROVENANCE["heads"], PROVENANCE["depth"]
INPUTS = load_file(str(DATA / "inputs.safetensors"))

#: Issue 12's table (backbone without head); conch_v1 and hipt4k: as built here (not in the table).
TABLE = {"uni_v1": 303_350_784, "uni_v2": 681_394_176, "virchow": 631_229_184, "virchow2": 631_239_424,
         "hoptimus0": 1_134_774_272, "hoptimus1": 1_134_774_272, "gigapath": 1_134_953_984, "phikon": 85_798_656,
         "phikon_v2": 303_351_808, "conch_v15": 306_109_184, "kaiko-vits16": 21_665_664, "kaiko-vits8": 21_670_272,
         "kaiko-vitb16": 85_798_656, "kaiko-vitb8": 85_807_872, "kaiko-vitl14": 304_370_688,
         "lunit-vits8": 21_670_272, "hipt256": 21_665_664}
DIMS = {"uni_v1": 1024, "uni_v2": 1536, "virchow": 2560, "virchow2": 2560, "hoptimus0": 1536, "hoptimus1": 1536,
        "gigapath": 1536, "phikon": 768, "phikon_v2": 1024, "conch_v15": 768, "conch_v1": 512, "kaiko-vits16": 384,
        "kaiko-vits8": 384, "kaiko-vitb16": 768, "kaiko-vitb8": 768, "kaiko-vitl14": 1024, "lunit-vits8": 384}


def model_input(size: int) -> torch.Tensor:
    return INPUTS[f"inputs/{size}"].permute(0, 3, 1, 2).float() / 255 * 2 - 1


@pytest.mark.parametrize("name", sorted(TABLE))
def test_full_size_parameter_count_and_output_dim(name):
    spec = registry.get(name)
    with torch.device("meta"):
        model = spec.build()
    assert count_parameters(model) == TABLE[name] == spec.n_params
    if name in DIMS:
        assert spec.dim == DIMS[name]
        with torch.device("meta"), torch.inference_mode():
            assert model(torch.empty(1, 3, spec.input_px, spec.input_px)).shape == (1, spec.dim)


def tiny_spec(name: str, build) -> registry.EncoderSpec:
    """The registered spec of ``name`` (its checkpoint mapping) with a tiny architecture."""
    return replace(registry.get(name), build=build)


def published_file(tmp_path, fixture: dict, name: str = "pytorch_model.bin") -> str:
    """The fixture's state dict saved as the model's publisher does (torch.save of a flat dict)."""
    state = {k.removeprefix("state."): v for k, v in fixture.items() if k.startswith("state.")}
    torch.save(state, tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize("name", sorted(PROVENANCE["fixtures"]))
def test_features_equal_the_reference_implementation(name, tmp_path):
    fixture = load_file(str(DATA / f"{name}.safetensors"))
    info = PROVENANCE["fixtures"][name]
    if name in ("phikon", "phikon_v2"):  # transformers directory, built from its config.json
        model, weights = build_encoder(registry.get(name), str(DATA / name))
        assert weights.sha256 and weights.source == str(DATA / name)
    else:
        if name == "conch_v15":
            build = lambda: ConchV15(replace(CONCH_V15_TRUNK, embed_dim=WIDTH, num_heads=HEADS, depth=DEPTH),  # noqa: E731
                                     dim=info["pool_dim"])
        elif name == "conch_v1":
            build = lambda: ConchV1(replace(CONCH_V1_TRUNK, embed_dim=WIDTH, num_heads=HEADS, depth=DEPTH),  # noqa: E731
                                    dim=info["embed_dim"])
        else:
            cfg = replace(catalog.VIT_CONFIGS[name], embed_dim=WIDTH, num_heads=HEADS, depth=DEPTH)
            build = lambda: VisionTransformer(cfg)  # noqa: E731
        model, weights = build_encoder(tiny_spec(name, build), published_file(tmp_path, fixture))
        assert len(weights.sha256) == 64 and not weights.random
    with torch.inference_mode():
        out = model(model_input(info["input_size"]))
    assert out.shape == fixture["output"].shape
    torch.testing.assert_close(out, fixture["output"], atol=1e-4, rtol=0)


#: Each published transform (tests/reference: TRANSFORMS) as the specs declare it.
SPEC_TRANSFORMS = {
    "resize224_bilinear_crop224": ("uni_v1", "uni_v2", "kaiko-vits16", "kaiko-vitl14"),
    "resize256_bicubic_crop224": ("gigapath",),
    "resize224_bicubic": ("virchow", "virchow2"),
    "resize448_bilinear_crop448": ("conch_v15",),
    "resize448_bicubic_crop448": ("conch_v1",),
}


@pytest.mark.parametrize("key", sorted(SPEC_TRANSFORMS))
def test_transforms_are_byte_identical_to_the_published_ones(key):
    expected = load_file(str(DATA / "transforms.safetensors"))[f"transforms/{key}"].numpy()
    tile = PROVENANCE["transforms"][key]["tile"]
    for name in SPEC_TRANSFORMS[key]:
        spec = registry.get(name)
        assert spec.patch_px == tile and spec.input_px == expected.shape[1]
        got = spec.transform.apply(INPUTS[f"inputs/{tile}"].numpy())
        assert got.dtype == np.uint8 and np.array_equal(got, expected), name


def test_tensor_resize_is_not_pils():
    """Why transforms run in PIL: torch's antialiased bicubic on tensors differs from PIL's (a = -0.75 vs -0.5,
    no uint8 rounding) by several grey levels; the published pipelines use PIL."""
    tile = INPUTS["inputs/512"].permute(0, 3, 1, 2).float()
    torch_resized = torch.nn.functional.interpolate(tile, size=(448, 448), mode="bicubic", antialias=True)
    pil = TileTransform(resize=448, interpolation="bicubic").apply(INPUTS["inputs/512"].numpy())
    diff = (torch_resized.round().clamp(0, 255).permute(0, 2, 3, 1).numpy() - pil).__abs__()
    assert diff.max() >= 2


def test_strict_loading_names_missing_unexpected_and_misshapen_keys(tmp_path):
    fixture = load_file(str(DATA / "uni_v2.safetensors"))
    state = {k.removeprefix("state."): v for k, v in fixture.items() if k.startswith("state.")}
    cfg = replace(catalog.VIT_CONFIGS["uni_v2"], embed_dim=WIDTH, num_heads=HEADS, depth=DEPTH)
    spec = tiny_spec("uni_v2", lambda: VisionTransformer(cfg))
    del state["blocks.1.ls2.gamma"]
    state["head.weight"] = torch.zeros(10, WIDTH)  # a classifier head the backbone has not got
    state["reg_token"] = torch.zeros(1, 4, WIDTH)  # 4 registers (Virchow2's) where UNI2-h has 8
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError) as err:
        build_encoder(spec, str(tmp_path / "pytorch_model.bin"))
    message = str(err.value)
    assert "1 missing: blocks.1.ls2.gamma" in message and "1 unexpected: head.weight" in message
    assert "reg_token (1, 4, 48) vs model (1, 8, 48)" in message and "MahmoodLab/UNI2-h" in message


def test_pickles_outside_the_allow_list_are_refused(tmp_path):
    import collections

    marker = tmp_path / "ran"
    state = collections.OrderedDict(weight=torch.zeros(2))
    state.hook = type("Hook", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})()
    torch.save({"state_dict": state, "extra": state.hook}, tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match="outside the allow-list"):
        build_encoder(registry.get("uni_v1"), str(tmp_path / "pytorch_model.bin"))
    assert not marker.exists()


def test_conch_v1_uses_only_the_stated_part_of_the_coca_checkpoint(tmp_path):
    fixture = load_file(str(DATA / "conch_v1.safetensors"))
    state = {k.removeprefix("state."): v for k, v in fixture.items() if k.startswith("state.")}
    assert any(k.startswith("text.") for k in state) and "visual.proj_contrast" in state  # the whole CoCa model
    build = lambda: ConchV1(replace(CONCH_V1_TRUNK, embed_dim=WIDTH, num_heads=HEADS, depth=DEPTH), dim=32)  # noqa: E731
    state["visual.unknown.weight"] = torch.zeros(3)  # an image-side key nobody stated: strict loading says so
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match="1 unexpected: unknown.weight"):
        build_encoder(tiny_spec("conch_v1", build), str(tmp_path / "pytorch_model.bin"))


def test_virchow2_mean_excludes_registers_and_virchow_has_none():
    fixture = load_file(str(DATA / "virchow2.safetensors"))
    cfg = replace(catalog.VIT_CONFIGS["virchow2"], embed_dim=WIDTH, num_heads=HEADS, depth=DEPTH)
    model = VisionTransformer(cfg).eval()
    model.load_state_dict({k.removeprefix("state."): v for k, v in fixture.items() if k.startswith("state.")})
    with torch.inference_mode():
        x = model_input(224)
        tokens, out = model.tokens(x), model(x)
    assert tokens.shape[1] == 1 + 4 + 16 * 16 and out.shape == (1, 2 * WIDTH)
    torch.testing.assert_close(out[:, :WIDTH], tokens[:, 0])
    torch.testing.assert_close(out[:, WIDTH:], tokens[:, 5:].mean(1))
    assert (out[:, WIDTH:] - tokens[:, 1:].mean(1)).abs().max() > 1e-3  # registers would change it
    assert catalog.VIT_CONFIGS["virchow"].num_prefix_tokens == 1


def test_encoders_sharing_a_tile_geometry_share_one_grid():
    enc = registry.resolve(["uni_v1", "virchow2", "hipt4k", "conch_v15", "kaiko-vits16", "gigapath", "phikon"])
    groups = {(g.patch_px, g.mpp): g for g in enc.groups}
    assert list(groups) == [(256, 0.5), (224, 0.5), (512, 0.5)]
    g256 = groups[(256, 0.5)]
    assert [s.name for s in g256.patches] == ["uni_v1", "hipt256", "kaiko-vits16", "gigapath"]
    assert [s.name for s in g256.regions] == ["hipt4k"]
    assert len(g256.transforms) == 3  # identity (HIPT), resize 224 (UNI, Kaiko), crop 224 (GigaPath)
    assert [s.name for s in groups[(224, 0.5)].patches] == ["virchow2", "phikon"]
    assert "hipt256" not in enc.outputs and registry.get("conch_v15").input_mpp == pytest.approx(0.5 * 512 / 448)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["uni_v2", "virchow2", "gigapath", "kaiko-vitl14"])
def test_cuda_fp32_equals_the_reference_and_bf16_stays_close(name, tmp_path):
    fixture = load_file(str(DATA / f"{name}.safetensors"))
    cfg = replace(catalog.VIT_CONFIGS[name], embed_dim=WIDTH, num_heads=HEADS, depth=DEPTH)
    model, _ = build_encoder(tiny_spec(name, lambda: VisionTransformer(cfg)), published_file(tmp_path, fixture))
    model = model.cuda()
    x = model_input(PROVENANCE["fixtures"][name]["input_size"]).cuda()
    with torch.inference_mode():
        fp32 = model(x).cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(x).float().cpu()
    torch.testing.assert_close(fp32, fixture["output"], atol=1e-3, rtol=0)  # TF32 off by default for matmul
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() > 0.99


def test_transformers_directories_load_strictly(tmp_path):
    """The stock from_pretrained is made strict: a tensor missing from model.safetensors is an error (it would
    otherwise be left randomly initialised), and a config.json asking for remote code is refused."""
    import shutil

    from safetensors.torch import save_file

    for name in ("config.json", "model.safetensors"):
        shutil.copy(DATA / "phikon_v2" / name, tmp_path / name)
    state = load_file(str(tmp_path / "model.safetensors"))
    removed = sorted(state)[3]
    del state[removed]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match="1 missing"):
        build_encoder(registry.get("phikon_v2"), str(tmp_path))
    config = json.loads((DATA / "phikon_v2" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Model"}}))
    with pytest.raises(InputError, match="remote code"):
        build_encoder(registry.get("phikon_v2"), str(tmp_path))
    with pytest.raises(InputError, match="weights directory not found"):
        build_encoder(registry.get("phikon"), str(tmp_path / "nowhere"))
