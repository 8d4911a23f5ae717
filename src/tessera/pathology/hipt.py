"""HIPT's two vision transformers in plain torch (mahmoodlab/HIPT, ``HIPT_4K/``; Chen et al., CVPR 2022).

* :class:`PatchViT` — a ViT image encoder. HIPT's ViT-256 is ViT-S/16 (:func:`hipt_vit256`): 16-px patch
  embedding, 384-d, 12 blocks, 6 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6; the output is the
  CLS token after the final norm. Input: (B, 3, H, W) normalised with mean = std = 0.5.
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

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Position embeddings are stored for a 14 × 14 grid (224-px training crops of 16-px patches).
POS_GRID = 14


def interpolate_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(1, 1 + n², D) position embeddings for an n × n grid → (1, 1 + rows·cols, D) for rows × cols."""
    n = math.isqrt(pos_embed.shape[1] - 1)
    if (rows, cols) == (n, n):
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, n, n, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / n, (cols + 0.1) / n), mode="bicubic", align_corners=False)
    if grid.shape[-2:] != (rows, cols):  # cannot happen with the +0.1 guard; checked as the official code does
        raise RuntimeError(f"position embedding interpolated to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    return torch.cat((pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)), dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # scale d^-1/2, no mask, no dropout
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches → ``embed_dim`` tokens (a strided convolution)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def _init_like_dino(module: nn.Module) -> None:
    """DINO's initialisation: truncated normal (std 0.02) linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name in ("pos_embed", "cls_token"):
        nn.init.trunc_normal_(getattr(module, name), std=0.02)


class PatchViT(nn.Module):
    """ViT image encoder: (B, 3, H, W) normalised pixels → (B, embed_dim) CLS features.

    H and W must be multiples of ``patch_size``; position embeddings follow the input grid.
    """

    def __init__(self, embed_dim: int = 384, depth: int = 12, num_heads: int = 6, patch_size: int = 16,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6, pos_grid: int = POS_GRID) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        _init_like_dino(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_embed.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the {p}-px patch size")
        rows, cols = x.shape[-2] // p, x.shape[-1] // p
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + interpolate_pos_embed(self.pos_embed, rows, cols)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


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
        _init_like_dino(self)

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
