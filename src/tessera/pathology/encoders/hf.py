"""Phikon and Phikon-v2 (Owkin): transformers' own ``ViTModel`` / ``Dinov2Model``, from a local directory.

The model is loaded by the stock class's ``from_pretrained`` from a local directory (``local_files_only``,
never remote code), which also maps the published key names onto transformers 5's modules; tessera makes
the load strict by failing on any missing, unexpected or mis-shaped tensor it reports (:func:`load_dir`).
The features are ``last_hidden_state[:, 0]``, the CLS token after the final LayerNorm, as the model cards
and TRIDENT read them. Phikon is built without the pooler (``add_pooling_layer=False``, as TRIDENT loads
it): a published ``pooler.*`` is a stated, unused part of the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tessera.errors import InputError

#: Phikon (owkin/phikon): iBOT ViT-B/16 at 224 px.
PHIKON_CONFIG = {"model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072, "image_size": 224, "patch_size": 16, "qkv_bias": True,
                 "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
#: Phikon-v2 (owkin/phikon-v2): DINOv2 ViT-L/16 at 224 px, LayerScale, GELU MLP, no registers.
PHIKON_V2_CONFIG = {"model_type": "dinov2", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                    "mlp_ratio": 4, "image_size": 224, "patch_size": 16, "layerscale_value": 1e-5,
                    "use_swiglu_ffn": False, "layer_norm_eps": 1e-6, "qkv_bias": True, "hidden_act": "gelu"}


class ClsOfHiddenState(nn.Module):
    """A transformers vision model → (B, D): ``last_hidden_state[:, 0]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).last_hidden_state[:, 0]


def _classes(model_type: str):
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

    return {"vit": (ViTConfig, ViTModel, {"add_pooling_layer": False}), "dinov2": (Dinov2Config, Dinov2Model, {})}[model_type]


def vit_model(cfg: dict) -> ClsOfHiddenState:
    """``ViTModel`` without pooler, randomly initialised, for a ``config.json`` dict of model_type vit."""
    config_class, model_class, kwargs = _classes("vit")
    return ClsOfHiddenState(model_class(config_class(**_known(cfg)), **kwargs))


def dinov2_model(cfg: dict) -> ClsOfHiddenState:
    """``Dinov2Model``, randomly initialised, for a ``config.json`` dict of model_type dinov2."""
    config_class, model_class, _ = _classes("dinov2")
    return ClsOfHiddenState(model_class(config_class(**_known(cfg))))


def load_dir(directory: str | Path, model_type: str, ignore: tuple[str, ...], label: str) -> ClsOfHiddenState:
    """The stock ``model_type`` model of a local directory, loaded strictly (``ignore``: stated unused keys)."""
    cfg = json.loads((Path(directory) / "config.json").read_text())
    if cfg.get("model_type") != model_type or "auto_map" in cfg:
        raise InputError(
            f"config.json describes model_type {cfg.get('model_type')!r}"
            + (" with remote code (auto_map)" if "auto_map" in cfg else "") + f", not a stock {model_type!r} model",
            file=label, fix=f"point the weights at the encoder's own directory (a transformers '{model_type}' model)")
    _, model_class, kwargs = _classes(model_type)
    try:
        model, info = model_class.from_pretrained(str(directory), local_files_only=True, output_loading_info=True,
                                                  trust_remote_code=False, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        raise InputError(f"cannot load the {model_type} model: {e}", file=label,
                         fix="give the directory with the encoder's config.json and its weights") from e
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(ignore)]
    problems = [f"{len(v)} {what}: {', '.join(map(str, v[:12]))}" for what, v in (
        ("missing", list(info.get("missing_keys", []))), ("unexpected", unexpected),
        ("with another shape", list(info.get("mismatched_keys", [])))) if v]
    if problems:
        raise InputError(f"does not fit the {model_type} architecture of its config.json: " + "; ".join(problems),
                         file=label, fix="give the weights that belong to this config.json")
    return ClsOfHiddenState(model)


def _known(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "model_type", "transformers_version")}
