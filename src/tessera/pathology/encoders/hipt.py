"""HIPT's two vision transformers (mahmoodlab/HIPT, ``HIPT_4K/``; Chen et al., CVPR 2022).

* :class:`PatchViT` — HIPT's ViT-256 is ViT-S/16 (:func:`hipt_vit256`): a configuration of tessera's one
  :class:`~tessera.pathology.encoders.vit.VisionTransformer` — 16-px patch embedding, 384-d, 12 blocks,
  6 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, no LayerScale or registers; the output is the CLS
  token after the final norm. Input: (B, 3, H, W) normalised with mean = std = 0.5.
* :class:`RegionViT` — HIPT's ViT-4K (:func:`hipt_vit4k`): its input is the grid of ViT-256 CLS tokens
  of a region, (B, 384, rows, cols) in image layout (row-major when flattened); ``phi`` = Linear
  384 → 192 + GELU, then 6 blocks of 192-d with 6 heads; the output is the 192-d CLS token.

Both store position embeddings for a 14 × 14 grid (+ CLS) and resample them to the input's grid with
:func:`interpolate_pos_embed`, exactly as the official code: bicubic, ``align_corners=False``, with a
scale factor of ``(rows + 0.1) / 14`` by ``(cols + 0.1) / 14`` (DINO's guard against flooring errors;
torch uses that factor, not the size ratio, to place the samples). A 256-px patch is a 16 × 16 grid;
a region clipped at the slide border is a smaller grid of whole patches and is interpolated the same way.

Parameter names equal the official ones, so official state dicts load without renaming. The attention
uses ``scaled_dot_product_attention`` (the official code's softmax(q·kᵀ·d^-½)·v, fused).
"""

from __future__ import annotations

import torch
from torch import nn

from tessera.pathology.encoders.vit import Block, ViTConfig, VisionTransformer, init_like_dino, resample_pos_embed

#: Position embeddings are stored for a 14 × 14 grid (224-px training crops of 16-px patches).
POS_GRID = 14


def interpolate_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(1, 1 + n², D) position embeddings for an n × n grid → (1, 1 + rows·cols, D) for rows × cols."""
    return resample_pos_embed(pos_embed, rows, cols, num_prefix=1, method="dino")


class PatchViT(VisionTransformer):
    """HIPT's ViT image encoder: (B, 3, H, W) normalised pixels → (B, embed_dim) CLS features."""

    def __init__(self, embed_dim: int = 384, depth: int = 12, num_heads: int = 6, patch_size: int = 16,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6, pos_grid: int = POS_GRID) -> None:
        super().__init__(ViTConfig(embed_dim, depth, num_heads, patch_size, img_size=pos_grid * patch_size,
                                   mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, eps=eps, pos_resample="dino"))


class RegionViT(nn.Module):
    """HIPT ViT-4K: a grid of patch features (B, in_dim, rows, cols) → (B, embed_dim) region features."""

    def __init__(self, in_dim: int = 384, embed_dim: int = 192, depth: int = 6, num_heads: int = 6,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6, pos_grid: int = POS_GRID) -> None:
        super().__init__()
        self.in_dim, self.embed_dim = in_dim, embed_dim
        self.phi = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.GELU())
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        init_like_dino(self)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        b, _, rows, cols = grid.shape
        tokens = self.phi(grid.flatten(2).transpose(1, 2))  # row-major tokens
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), tokens), dim=1)
        tokens = tokens + interpolate_pos_embed(self.pos_embed, rows, cols)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


def hipt_vit256() -> PatchViT:
    """HIPT ViT-256 (ViT-S/16, 384-d); weights file ``vit256_small_dino.pth``."""
    return PatchViT(embed_dim=384, depth=12, num_heads=6, patch_size=16)


def hipt_vit4k() -> RegionViT:
    """HIPT ViT-4K (ViT-XS, 384 → 192-d); weights file ``vit4k_xs_dino.pth``."""
    return RegionViT(in_dim=384, embed_dim=192, depth=6, num_heads=6)
