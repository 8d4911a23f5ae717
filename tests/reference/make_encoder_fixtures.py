"""Write the golden fixtures of tests/test_pathology_encoders.py with the REFERENCE implementations.

Not part of tessera and never imported by it: it runs in a throwaway virtual environment that has the
reference libraries tessera must not depend on, and writes small files under tests/data/encoders/:

* ``{name}.safetensors`` — for each encoder family, a tiny random-weight model (width 48, 4 heads, 2
  blocks; every other option as published: patch size, MLP kind and ratio, LayerScale, registers,
  position-embedding layout and stored grid, output rule) built by the reference code, its state dict
  in the published key layout (``state.<key>``) and its output (``output``) on ``inputs/{size}``;
* ``phikon/``, ``phikon_v2/`` — transformers directories (``config.json`` + ``model.safetensors``) of
  tiny ViTModel / Dinov2Model, and their ``last_hidden_state[:, 0]`` in ``{name}.safetensors``;
* ``inputs.safetensors`` — the uint8 RGB images (one per size) the models and transforms read; a model's
  input is ``image / 255 * 2 - 1`` (NCHW float32), computed the same way by the tests;
* ``transforms.safetensors`` — torchvision's published transforms (PIL Resize / CenterCrop) of those
  images as uint8, before ToTensor;
* ``PROVENANCE.json`` — versions, the reference calls and the architecture options of every fixture.

References: timm ``VisionTransformer`` (the timm kwargs TRIDENT and the model cards use), TRIDENT's
``conchv1_5.py`` (CONCH v1.5 tower), CONCH's ``open_clip_custom`` (CoCa, ``encode_image``), transformers'
``ViTModel`` / ``Dinov2Model``, torchvision transforms. How to run (CPU torch and a scratch venv; timm's
import needs torchvision, whose compiled ops do not load beside CPU torch and are not used here, so its
two op-registration imports are skipped in the scratch venv):

    python3 -m venv /tmp/encref
    /tmp/encref/bin/pip install torch==2.13.0 numpy pillow safetensors einops einops-exts transformers==5.24.0
    /tmp/encref/bin/pip install --no-deps timm==1.0.29 torchvision==0.28.0
    sed -i 's/^    _autograd_registrations,$//; s/^    _meta_registrations,$//' \\
        /tmp/encref/lib/python3.11/site-packages/torchvision/__init__.py
    # checkouts of github.com/mahmoodlab/CONCH (conch/) and github.com/mahmoodlab/TRIDENT (trident/) under SRC
    /tmp/encref/bin/python tests/reference/make_encoder_fixtures.py --src SRC --out tests/data/encoders
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

WIDTH, HEADS, DEPTH = 48, 4, 2

#: timm kwargs of each family: the published ones (TRIDENT's loaders, hub configs), size reduced.
TIMM = {
    "uni_v1": ("vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5, num_classes=0,
                                             dynamic_img_size=True), 224),
    "uni_v2": ("vit_giant_patch14_224", dict(img_size=224, patch_size=14, init_values=1e-5, mlp_ratio=2.66667 * 2,
                                             num_classes=0, no_embed_class=True, mlp_layer="SwiGLUPacked",
                                             act_layer="SiLU", reg_tokens=8, dynamic_img_size=True), 224),
    "virchow": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0, mlp_ratio=5.3375,
                                             global_pool="", dynamic_img_size=True, mlp_layer="SwiGLUPacked",
                                             act_layer="SiLU"), 224),
    "virchow2": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0, reg_tokens=4,
                                              mlp_ratio=5.3375, global_pool="", dynamic_img_size=True,
                                              mlp_layer="SwiGLUPacked", act_layer="SiLU"), 224),
    "hoptimus0": ("vit_giant_patch14_reg4_dinov2", dict(num_classes=0, img_size=224, global_pool="token",
                                                        init_values=1e-5, dynamic_img_size=True), 224),
    "gigapath": ("vit_giant_patch14_dinov2", dict(img_size=224, in_chans=3, patch_size=16, mlp_ratio=5.33334,
                                                  num_classes=0, dynamic_img_size=True), 224),
    "kaiko-vitl14": ("vit_large_patch14_reg4_dinov2", dict(num_classes=0, img_size=518, dynamic_img_size=True), 224),
    "kaiko-vits16": ("vit_small_patch16_224", dict(num_classes=0, img_size=224, dynamic_img_size=True), 224),
    "lunit-vits8": ("vit_small_patch8_224", dict(img_size=224, dynamic_img_size=True, num_classes=0), 224),
}

#: The published transforms: (tile px, torchvision Resize size, interpolation, CenterCrop size or None).
TRANSFORMS = {
    "resize224_bilinear_crop224": (256, 224, "BILINEAR", 224),  # UNI, UNI2-h, Kaiko
    "resize256_bicubic_crop224": (256, 256, "BICUBIC", 224),  # GigaPath
    "resize224_bicubic": (224, 224, "BICUBIC", None),  # Virchow, Virchow2
    "resize448_bilinear_crop448": (512, 448, "BILINEAR", 448),  # CONCH v1.5
    "resize448_bicubic_crop448": (512, 448, "BICUBIC", 448),  # CONCH v1
}


def images(size: int, seed: int) -> np.ndarray:
    """One smooth-ish RGB uint8 image (texture plus noise), as a batch of one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + 3 * yy), np.cos(5 * yy - 2 * xx), np.sin(9 * xx * yy)], -1)
    out = []
    for k in range(1):
        img = 128 + 90 * np.roll(base, k * 7, axis=0) + rng.normal(0, 25, base.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def model_input(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255 * 2 - 1


def timm_fixture(name: str, inputs: dict) -> tuple[dict, torch.Tensor, dict]:
    import timm
    from timm.layers import SwiGLUPacked

    arch, kwargs, size = TIMM[name]
    kw = {**kwargs, "embed_dim": WIDTH, "num_heads": HEADS, "depth": DEPTH}
    built = {**kw, **({"mlp_layer": SwiGLUPacked} if kw.get("mlp_layer") == "SwiGLUPacked" else {}),
             **({"act_layer": torch.nn.SiLU} if kw.get("act_layer") == "SiLU" else {})}
    model = timm.create_model(arch, pretrained=False, **built).eval()
    with torch.no_grad():
        for p in model.parameters():  # LayerScale gammas and tokens away from their init values
            p.add_(torch.randn_like(p) * 0.02)
        out = model(model_input(inputs[size]))
    if name.startswith("virchow"):  # the model card's embedding: CLS ⊕ mean of the patch tokens
        out = torch.cat([out[:, 0], out[:, model.num_prefix_tokens:].mean(1)], dim=-1)
    return model.state_dict(), out, {"timm_model": arch, "timm_kwargs": kw, "input_size": size}


def conch_v15_fixture(src: Path, inputs: dict) -> tuple[dict, torch.Tensor, dict]:
    spec = importlib.util.spec_from_file_location(
        "conchv1_5", src / "trident/patch_encoder_models/model_zoo/conchv1_5/conchv1_5.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)

    class TinyTower(torch.nn.Module):  # CONCHVisionTower with the trunk and pooler made small
        def __init__(self):
            super().__init__()
            self.trunk = ref.VisionTransformer(patch_size=16, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                                               mlp_ratio=4, qkv_bias=True, init_values=1.0)
            self.attn_pool_contrast = ref.AttentionalPooler(d_model=32, context_dim=WIDTH, n_head=8, n_queries=1)
            self.ln_contrast = torch.nn.LayerNorm(32)

        forward = ref.CONCHVisionTower.forward

    model = TinyTower().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        out = model(model_input(inputs[448]))
    return model.state_dict(), out, {"reference": "TRIDENT conchv1_5.py CONCHVisionTower", "trunk_width": WIDTH,
                                     "pool_dim": 32, "input_size": 448}


def conch_v1_fixture(src: Path, inputs: dict) -> tuple[dict, torch.Tensor, dict]:
    sys.path.insert(0, str(src))
    from conch.open_clip_custom.coca_model import CoCa

    text = dict(context_length=16, vocab_size=64, width=WIDTH, heads=HEADS, layers=1, embed_cls=True,
                output_tokens=True)
    vision = dict(image_size=448, patch_size=16, layers=DEPTH, width=WIDTH, num_heads=HEADS,
                  attentional_pool_caption=True, attentional_pool_contrast=True, attn_pooler_heads=8,
                  n_queries_contrast=1, n_queries_caption=8, output_tokens=True)
    model = CoCa(embed_dim=32, embed_dim_caption=WIDTH, multimodal_cfg=dict(text, layers=1), text_cfg=text,
                 vision_cfg=vision).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        out = model.encode_image(model_input(inputs[448]), proj_contrast=False, normalize=False)
    return model.state_dict(), out, {"reference": "CONCH CoCa.encode_image(proj_contrast=False, normalize=False)",
                                     "vision_cfg": vision, "embed_dim": 32, "input_size": 448}


def hf_fixture(kind: str, out_dir: Path, inputs: dict) -> tuple[torch.Tensor, dict]:
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

    if kind == "phikon":
        cfg = ViTConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                        intermediate_size=4 * WIDTH, image_size=224, patch_size=16, qkv_bias=True)
        model = ViTModel(cfg)  # with its pooler, as the published directory holds it
    else:
        cfg = Dinov2Config(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, mlp_ratio=4,
                           image_size=224, patch_size=16, layerscale_value=1e-5, use_swiglu_ffn=False)
        model = Dinov2Model(cfg)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        out = model(pixel_values=model_input(inputs[224])).last_hidden_state[:, 0]
    model.save_pretrained(out_dir / kind, safe_serialization=True)
    return out, {"reference": f"transformers {type(model).__name__} last_hidden_state[:, 0]", "input_size": 224}


def transform_fixtures(inputs: dict) -> dict[str, torch.Tensor]:
    from PIL import Image
    from torchvision import transforms as T

    out = {}
    for key, (tile, size, interp, crop) in TRANSFORMS.items():
        steps = [T.Resize(size, interpolation=getattr(T.InterpolationMode, interp))]
        if crop:
            steps.append(T.CenterCrop(crop))
        pipeline = T.Compose(steps)
        out[key] = torch.from_numpy(np.stack([np.asarray(pipeline(Image.fromarray(im))) for im in inputs[tile]]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="directory holding conch/ and trident/ checkouts")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from safetensors.torch import save_file
    import timm
    import torchvision
    import transformers

    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = {size: images(size, size) for size in (224, 256, 448, 512)}
    save_file({f"inputs/{k}": torch.from_numpy(v) for k, v in inputs.items()}, str(args.out / "inputs.safetensors"))
    save_file({f"transforms/{k}": v.contiguous() for k, v in transform_fixtures(inputs).items()},
              str(args.out / "transforms.safetensors"))
    provenance = {"torch": torch.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__,
                  "transformers": transformers.__version__, "width": WIDTH, "heads": HEADS, "depth": DEPTH,
                  "transforms": {k: dict(zip(("tile", "resize", "interpolation", "crop"), v))
                                 for k, v in TRANSFORMS.items()}, "fixtures": {}}
    fixtures = {name: (lambda n=name: timm_fixture(n, inputs)) for name in TIMM}
    fixtures["conch_v15"] = lambda: conch_v15_fixture(args.src, inputs)
    fixtures["conch_v1"] = lambda: conch_v1_fixture(args.src, inputs)
    for name, make in fixtures.items():
        state, out, info = make()
        save_file({**{f"state.{k}": v.contiguous() for k, v in state.items()}, "output": out.contiguous()},
                  str(args.out / f"{name}.safetensors"))
        provenance["fixtures"][name] = info
        print(name, tuple(out.shape), len(state), "tensors")
    for kind in ("phikon", "phikon_v2"):
        out, info = hf_fixture(kind, args.out, inputs)
        save_file({"output": out.contiguous()}, str(args.out / f"{kind}.safetensors"))
        provenance["fixtures"][kind] = info
        print(kind, tuple(out.shape))
    (args.out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
