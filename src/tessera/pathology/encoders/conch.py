"""CONCH image towers (mahmoodlab): a ViT trunk, an attentional pooler with one query, a LayerNorm.

* :class:`ConchV15` — CONCH v1.5 as TRIDENT builds it (``conchv1_5.py``): an iBOT-style ViT-L/16 trunk
  (1024-d, 24 blocks, 16 heads, LayerScale initialised at 1, LayerNorm eps 1e-6, position embeddings
  stored for 14 × 14 + CLS and resampled DINO-style to the 448-px input's 28 × 28 grid), then
  ``attn_pool_contrast`` (one 768-d query over the 1024-d tokens, 8 heads: LayerNorms ``ln_q``/``ln_k``,
  bias-free ``to_q``, ``to_kv``, ``to_out``) and ``ln_contrast``. Weights: ``pytorch_model_vision.bin``,
  keys ``trunk.*``, ``attn_pool_contrast.*``, ``ln_contrast.*``.
* :class:`ConchV1` — CONCH v1's ``encode_image(proj_contrast=False, normalize=False)`` (CoCa visual tower,
  ``conch_ViT-B-16``): a timm ViT-B/16 trunk at 448 px (768-d, 12 blocks, no LayerScale), then
  ``attn_pool_contrast`` (one 512-d query, ``nn.MultiheadAttention`` with 768-d keys/values, 8 heads,
  ``ln_q``/``ln_k``) and ``ln_contrast`` → 512-d. The published ``pytorch_model.bin`` holds the whole
  CoCa model; its spec selects ``visual.*`` and states the image-side tensors ``encode_image`` leaves unused
  (``attn_pool_caption``, ``ln_caption``, ``proj_contrast``).

Both reference loaders resize a checkpoint's ``trunk.pos_embed`` to the model's grid with timm's
``resample_abs_pos_embed(interpolation='bilinear', antialias=False)`` when the shapes differ;
:func:`resize_trunk_pos_embed` does the same (the spec's stated ``adapt`` step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tessera.pathology.encoders.vit import ViTConfig, VisionTransformer, init_like_dino

#: CONCH v1.5's trunk: TRIDENT's ``vit_large(init_values=1.0)`` built at its default 224 px.
CONCH_V15_TRUNK = ViTConfig(1024, 24, 16, patch_size=16, img_size=224, init_values=1.0, pos_resample="dino",
                            output="tokens")
#: CONCH v1's trunk: timm ``VisionTransformer(768, 12 blocks, 12 heads, img_size=448, dynamic_img_size=True)``.
CONCH_V1_TRUNK = ViTConfig(768, 12, 12, patch_size=16, img_size=448, output="tokens")


class AttentionalPoolerV15(nn.Module):
    """CONCH v1.5's pooler: ``n_queries`` learned queries attend (``n_head`` heads) over the tokens.

    q = to_q(ln_q(query)), k, v = to_kv(ln_k(tokens)); out = to_out(softmax(q·kᵀ·d^-½)·v), no biases.
    """

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1) -> None:
        super().__init__()
        self.heads = n_head
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, context_dim) → (B, n_queries, d_model)."""
        b, h = x.shape[0], self.heads
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, -1, h * out.shape[-1]))


class AttentionalPoolerV1(nn.Module):
    """CONCH v1's (open_clip's) pooler: ``nn.MultiheadAttention`` of ln_q(query) over ln_k(tokens)."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim, batch_first=True)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, context_dim) → (B, n_queries, d_model)."""
        x = self.ln_k(x)
        q = self.ln_q(self.query).expand(x.shape[0], -1, -1)
        return self.attn(q, x, x, need_weights=False)[0]


class ConchV15(nn.Module):
    """CONCH v1.5: (B, 3, 448, 448) ImageNet-normalised pixels → (B, dim = 768)."""

    def __init__(self, trunk: ViTConfig = CONCH_V15_TRUNK, dim: int = 768) -> None:
        super().__init__()
        self.trunk = VisionTransformer(trunk)
        self.attn_pool_contrast = AttentionalPoolerV15(dim, trunk.embed_dim, n_head=8, n_queries=1)
        self.ln_contrast = nn.LayerNorm(dim)
        init_like_dino(self.attn_pool_contrast, ())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk(x))[:, 0])


class ConchV1(nn.Module):
    """CONCH v1 ``encode_image(proj_contrast=False, normalize=False)``: (B, 3, 448, 448) → (B, dim = 512)."""

    def __init__(self, trunk: ViTConfig = CONCH_V1_TRUNK, dim: int = 512) -> None:
        super().__init__()
        self.trunk = VisionTransformer(trunk)
        self.attn_pool_contrast = AttentionalPoolerV1(dim, trunk.embed_dim, n_head=8, n_queries=1)
        self.ln_contrast = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk(x))[:, 0])


def resize_trunk_pos_embed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The reference loaders' step: a ``trunk.pos_embed`` of another grid is resized to the model's
    (bilinear, no antialiasing, CLS slot kept), as timm's ``resample_abs_pos_embed`` does for them."""
    pos = state.get("trunk.pos_embed")
    own = model.trunk.pos_embed
    if pos is None or pos.shape == own.shape or pos.shape[-1] != own.shape[-1]:
        return state  # absent or wrong width: strict loading reports it
    g_old, g_new = round((pos.shape[1] - 1) ** 0.5), model.trunk.cfg.grid
    grid = pos[:, 1:].reshape(1, g_old, g_old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(g_new, g_new), mode="bilinear", antialias=False).to(pos.dtype)
    return {**state, "trunk.pos_embed": torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g_new**2, -1)), 1)}
