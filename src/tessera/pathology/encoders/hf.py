"""Phikon and Phikon-v2 (Owkin): transformers' own ``ViTModel`` / ``Dinov2Model``, from a local directory.

The architecture is built from the directory's ``config.json`` with the stock classes (never remote
code); the features are ``last_hidden_state[:, 0]``, the CLS token after the final LayerNorm, as the
model cards and TRIDENT read them. Phikon is built without the pooler (``add_pooling_layer=False``, as
TRIDENT loads it): a published ``pooler.*`` is a stated, unused part of the file.
"""

from __future__ import annotations

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

    def state_dict(self, *args, **kwargs):  # the published keys, without this wrapper's prefix
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state, strict=strict, assign=assign)


def vit_model(cfg: dict, file: str = "config.json") -> ClsOfHiddenState:
    """``ViTModel`` without pooler for a ``config.json`` of ``model_type`` vit."""
    from transformers import ViTConfig, ViTModel

    _check_type(cfg, "vit", file)
    return ClsOfHiddenState(ViTModel(ViTConfig(**_known(cfg)), add_pooling_layer=False))


def dinov2_model(cfg: dict, file: str = "config.json") -> ClsOfHiddenState:
    """``Dinov2Model`` for a ``config.json`` of ``model_type`` dinov2."""
    from transformers import Dinov2Config, Dinov2Model

    _check_type(cfg, "dinov2", file)
    return ClsOfHiddenState(Dinov2Model(Dinov2Config(**_known(cfg))))


def _known(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "model_type", "transformers_version")}


def _check_type(cfg: dict, expected: str, file: str) -> None:
    if cfg.get("model_type") != expected or "auto_map" in cfg:
        raise InputError(
            f"config.json describes model_type {cfg.get('model_type')!r}"
            + (" with remote code (auto_map)" if "auto_map" in cfg else "") + f", not a stock {expected!r} model",
            file=file, fix=f"point the weights at the encoder's own directory (a transformers '{expected}' model)",
        )
