"""One configurable Vision Transformer in plain torch, named like timm's ``VisionTransformer``.

Every ViT-family pathology encoder (UNI, UNI2-h, Virchow/Virchow2, H-optimus, Prov-GigaPath, Kaiko, Lunit,
HIPT's ViT-256, the CONCH trunks) is one :class:`ViTConfig`. Parameter names are timm's, so the published
state dicts load strictly without renaming:

``cls_token`` (1, 1, D), ``reg_token`` (1, R, D), ``pos_embed`` (1, [1 + R +] g·g, D),
``patch_embed.proj.{weight,bias}``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
mlp.fc2, ls2.gamma}``, ``norm``.

Forward (timm ``forward_features`` + the output rule): the image (B, 3, H, W), normalised, is cut into
``patch_size`` patches; tokens are ordered [CLS, registers, patches (row-major)]; position embeddings are
added to the patches only (``no_embed_class``, the DINOv2/DeiT-3 layout) or to CLS, registers and patches
(the original layout); pre-norm blocks ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``; a final
LayerNorm. The MLP is GELU (``fc1`` → GELU → ``fc2``) or timm's packed SwiGLU (``fc1`` to 2·h, SiLU of the
first half times the second half, ``fc2`` from h), hidden width ``int(dim · mlp_ratio)``.

Position embeddings are stored for the training grid (``img_size // patch_size``) and resampled to the
input's grid the way each reference does (:func:`resample_pos_embed`):

* ``timm`` — ``resample_abs_pos_embed`` of timm's ``dynamic_img_size`` models: bicubic to the target
  size with antialiasing (it matters when shrinking, e.g. Kaiko ViT-L/14's 37 × 37 grid to 16 × 16);
* ``dino`` — DINO/iBOT/HIPT: bicubic with ``scale_factor = (g' + 0.1) / g`` and no antialiasing (the
  factor, not the size ratio, places the samples), used by HIPT's ViT-256 and CONCH v1.5's trunk.

Output rules: ``cls`` (CLS after the final norm), ``cls_mean`` (CLS ⊕ mean of the patch tokens, registers
excluded: Virchow's embedding), ``tokens`` (every normalised token, for a pooling head on top).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

POS_RESAMPLING = ("timm", "dino")
OUTPUTS = ("cls", "cls_mean", "tokens")
MLPS = ("gelu", "swiglu_packed")


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of one ViT; field names follow timm's ``VisionTransformer`` arguments."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    img_size: int = 224  # training size: the stored position grid is img_size // patch_size
    mlp_ratio: float = 4.0
    mlp: str = "gelu"  # gelu | swiglu_packed
    init_values: float | None = None  # LayerScale (ls1/ls2.gamma) when set
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False  # position embeddings for patches only
    qkv_bias: bool = True
    eps: float = 1e-6  # LayerNorm epsilon
    pos_resample: str = "timm"  # timm | dino
    output: str = "cls"  # cls | cls_mean | tokens

    def __post_init__(self) -> None:
        if self.mlp not in MLPS or self.pos_resample not in POS_RESAMPLING or self.output not in OUTPUTS:
            raise ValueError(f"unknown mlp/pos_resample/output in {self}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def out_dim(self) -> int:
        return 2 * self.embed_dim if self.output == "cls_mean" else self.embed_dim


def resample_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int, num_prefix: int, method: str) -> torch.Tensor:
    """(1, num_prefix + g·g, D) position embeddings of a g × g grid → (1, num_prefix + rows·cols, D).

    ``method`` ``timm``: bicubic to (rows, cols), antialiased, computed in float32 (timm's
    ``resample_abs_pos_embed``); ``dino``: bicubic with scale factors ``(rows + 0.1) / g`` by
    ``(cols + 0.1) / g``, not antialiased (DINO's ``interpolate_pos_encoding``). Unchanged when the grid
    already is rows × cols.
    """
    g = math.isqrt(pos_embed.shape[1] - num_prefix)
    if (rows, cols) == (g, g):
        return pos_embed
    dim = pos_embed.shape[-1]
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    grid = grid.reshape(1, g, g, dim).permute(0, 3, 1, 2)
    if method == "timm":
        grid = F.interpolate(grid.float(), size=(rows, cols), mode="bicubic", antialias=True).to(pos_embed.dtype)
    else:
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / g, (cols + 0.1) / g), mode="bicubic",
                             align_corners=False)
        if grid.shape[-2:] != (rows, cols):  # cannot happen with the +0.1 guard; checked as DINO does
            raise RuntimeError(f"position embedding interpolated to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    return torch.cat((prefix, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)), dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: softmax(q·kᵀ·d^-½)·v (torch's fused kernel)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 → GELU (exact) → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUPacked(nn.Module):
    """timm's ``SwiGLUPacked``: fc1 (dim → hidden) split in halves a, b; fc2(SiLU(a) · b), fc2: hidden/2 → dim."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"packed SwiGLU needs an even hidden width, not {hidden}")
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` (timm's name), initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6,
                 mlp: str = "gelu", init_values: float | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLUPacked(dim, hidden) if mlp == "swiglu_packed" else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches → ``embed_dim`` channels (a strided convolution), NCHW."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def init_like_dino(module: nn.Module, tokens: tuple[str, ...] = ("pos_embed", "cls_token")) -> None:
    """DINO's initialisation (random-weight runs): truncated normal (std 0.02) linear weights, zero biases,
    unit LayerNorms, then the ``tokens`` parameters truncated normal."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name in tokens:
        param = getattr(module, name, None)
        if param is not None:
            nn.init.trunc_normal_(param, std=0.02)


class VisionTransformer(nn.Module):
    """(B, 3, H, W) normalised pixels → features by ``cfg.output`` ((B, D), (B, 2D) or (B, N, D) tokens).

    H and W must be multiples of the patch size; position embeddings follow the input's grid.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.embed_dim = d
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        n_pos = cfg.grid**2 + (0 if cfg.no_embed_class else cfg.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.eps, cfg.mlp, cfg.init_values)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=cfg.eps)
        init_like_dino(self, ("pos_embed", "cls_token", "reg_token"))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Every token after the final norm, (B, prefix + rows·cols, D), order [CLS, registers, patches]."""
        cfg = self.cfg
        p = cfg.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the {p}-px patch size")
        x = self.patch_embed(x)
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        pos = resample_pos_embed(self.pos_embed, rows, cols, 0 if cfg.no_embed_class else cfg.num_prefix_tokens,
                                 cfg.pos_resample)
        if cfg.no_embed_class:
            x = torch.cat([*prefix, x + pos], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(x)
        if self.cfg.output == "tokens":
            return tokens
        if self.cfg.output == "cls_mean":
            return torch.cat((tokens[:, 0], tokens[:, self.cfg.num_prefix_tokens:].mean(1)), dim=-1)
        return tokens[:, 0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
