"""HIPT architectures: shapes and parameter layout of the official models, the official position-embedding
interpolation (checked against an independent bicubic computation), attention equal to the textbook
formula, and bitwise-repeatable CPU outputs."""

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tessera.pathology.encoders.hipt import PatchViT, RegionViT, hipt_vit4k, hipt_vit256, interpolate_pos_embed


@pytest.fixture(scope="module")
def vit256():
    torch.manual_seed(0)
    return hipt_vit256().eval()


@pytest.fixture(scope="module")
def vit4k():
    torch.manual_seed(0)
    return hipt_vit4k().eval()


def test_official_parameter_layout(vit256, vit4k):
    s256, s4k = vit256.state_dict(), vit4k.state_dict()
    assert s256["pos_embed"].shape == (1, 197, 384) and s256["cls_token"].shape == (1, 1, 384)
    assert s256["patch_embed.proj.weight"].shape == (384, 3, 16, 16)
    assert s256["blocks.11.attn.qkv.bias"].shape == (1152,) and s256["blocks.11.mlp.fc1.weight"].shape == (1536, 384)
    assert "blocks.12.norm1.weight" not in s256 and s256["norm.weight"].shape == (384,)
    assert s4k["phi.0.weight"].shape == (192, 384) and s4k["pos_embed"].shape == (1, 197, 192)
    assert s4k["blocks.5.mlp.fc2.weight"].shape == (192, 768) and "blocks.6.norm1.weight" not in s4k
    assert vit256.blocks[0].norm1.eps == 1e-6 and vit256.blocks[0].attn.num_heads == 6
    assert vit4k.blocks[0].attn.num_heads == 6
    # ViT-S/16: 21.67 M parameters (DINO ViT-S/16 without head)
    assert sum(p.numel() for p in vit256.parameters()) == 21_665_664


def test_shapes_for_patches_full_regions_and_clipped_regions(vit256, vit4k):
    with torch.inference_mode():
        assert vit256(torch.randn(2, 3, 256, 256)).shape == (2, 384)
        assert vit4k(torch.randn(3, 384, 16, 16)).shape == (3, 192)
        assert vit4k(torch.randn(1, 384, 4, 6)).shape == (1, 192)  # a region clipped at the slide border
        with pytest.raises(ValueError, match="not a multiple"):
            vit256(torch.randn(1, 3, 250, 256))


def bicubic_1d(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) matrix of torch's bicubic (A = -0.75, align_corners=False, border clamp) for a
    given scale factor: output i samples input coordinate (i + 0.5) / scale - 0.5."""
    a = -0.75

    def kernel(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = (i + 0.5) / scale - 0.5
        x0 = math.floor(x)
        for k in range(x0 - 1, x0 + 3):
            m[i, min(max(k, 0), n_in - 1)] += kernel(x - k)
    return m


@pytest.mark.parametrize("rows, cols", [(16, 16), (4, 6), (9, 16)])
def test_position_embedding_interpolation_is_the_official_one(rows, cols):
    torch.manual_seed(1)
    pos = torch.randn(1, 197, 8, dtype=torch.float64)
    out = interpolate_pos_embed(pos, rows, cols)
    assert out.shape == (1, 1 + rows * cols, 8) and torch.equal(out[:, 0], pos[:, 0])
    # Separable bicubic with DINO's scale factors (g + 0.1) / 14, computed independently.
    grid = pos[0, 1:].reshape(14, 14, 8).numpy()
    expected = np.einsum("ri,ijd,cj->rcd", bicubic_1d(14, rows, (rows + 0.1) / 14), grid,
                         bicubic_1d(14, cols, (cols + 0.1) / 14))
    np.testing.assert_allclose(out[0, 1:].reshape(rows, cols, 8).numpy(), expected, atol=1e-10)
    # ...which is measurably not the plain resize to the target size (the test can tell them apart).
    plain = F.interpolate(torch.from_numpy(grid).permute(2, 0, 1)[None], size=(rows, cols), mode="bicubic")
    assert (plain[0].permute(1, 2, 0).numpy() - expected).__abs__().max() > 1e-3
    assert interpolate_pos_embed(pos, 14, 14) is pos  # the stored grid is used as is


def naive_attention(self, x):
    """softmax(q kᵀ / √d) v per head, written out as in the ViT paper."""
    b, n, c = x.shape
    h = self.num_heads
    q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // h) ** -0.5).softmax(-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def test_fused_attention_equals_the_textbook_formula():
    torch.manual_seed(2)
    patch, region = PatchViT(embed_dim=64, depth=2, num_heads=4), RegionViT(in_dim=64, embed_dim=32, depth=2, num_heads=2)
    x, g = torch.randn(2, 3, 64, 64), torch.randn(2, 64, 3, 5)
    with torch.inference_mode():
        fused = patch(x), region(g)
        for model in (patch, region):
            for block in model.blocks:
                block.attn.forward = types.MethodType(naive_attention, block.attn)
        naive = patch(x), region(g)
    for a, b in zip(fused, naive):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cpu_outputs_are_bitwise_repeatable_and_independent_of_batch_neighbours(vit256):
    x = torch.randn(6, 3, 256, 256)
    with torch.inference_mode():
        a, b = vit256(x[:3]), vit256(x[:3])
        assert torch.equal(a, b)
        assert torch.equal(vit256(x)[:3], a)
