"""HIPT's slide-level survival models (Chen et al., CVPR 2022; our implementation, plain torch).

HIPT describes a slide at three levels: ViT-256 over 16-px cells, ViT-4K over 256-px tissue patches
(the pathology stage's ``hipt256`` and ``hipt4k`` encoders), and a slide-level transformer over the
4096-px regions, trained weakly supervised for each task. These are that third level, as published in
mahmoodlab/HIPT (``2-Weakly-Supervised-Subtyping/models/model_hierarchical_mil.py``):

* ``hipt_gp`` (HIPT_GP_FC) over a patient's region features (M, 192): ``global_phi`` (Linear 192→192,
  ReLU, Dropout); ``global_transformer``, a 2-layer ``nn.TransformerEncoder`` (d_model 192, 3 heads,
  feed-forward 192, dropout, ReLU, post-norm, fed sequence-first: the regions attend to each other);
  ``global_attn_pool``, gated attention (tanh ⊙ sigmoid, 192 → 192 → 1) softmax-pooled over the
  regions; ``global_rho`` (Linear 192→192, ReLU, Dropout); ``classifier`` (Linear → n_bins logits).
* ``hipt_lgp`` (HIPT_LGP_FC): the same global level fed by ``local_vit``, HIPT's ViT-4K itself
  (:class:`tessera.pathology.encoders.hipt.RegionViT`, 384 → 192, 6 blocks), run on each region's grid
  of ViT-256 tokens (M, 16, 16, 384) — stored by the pathology stage with ``pathology.region_tokens`` —
  and fine-tuned with the rest (``freeze_4k``: kept as loaded, as the official ``freeze_4k``). It starts
  from the ViT-4K weights that made the pathology stage's ``hipt4k`` features (``vit4k_weights``,
  ``vit4k_seed``: the workflow fills in ``pathology.weights.hipt4k`` and ``pathology.random_seed``). A
  region clipped at the slide border is a smaller grid, read with interpolated position embeddings
  exactly as the pathology stage reads it (the official code knows only full 16 × 16 grids).

Parameter names are the official modules' (a state dict moves between them without renaming) and, in
eval mode with the same weights, the outputs equal the official forward. What we add: padded batches
of several patients (a key-padding mask keeps padding out of the transformer and the pooling, so a
patient's output does not depend on who shares their batch), an empty bag (a patient without regions
under the ``impute`` missing-modality policy) pooled to zeros, and the same optional fusion with the
genomic/clinical SNN as the ``porpoise`` kind (the classifier then reads the 256-d fused embedding).
A patient's regions from all their slides form one bag. Training, time bins, early stopping,
explanations and saving are the porpoise kind's (:class:`tessera.survival.porpoise.PorpoiseModel`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tessera.errors import InputError
from tessera.pathology.encoders.hipt import RegionViT
from tessera.survival.bags import Bag
from tessera.survival.porpoise import FusedSurvivalNet, PorpoiseModel, attention_pool
from tessera.survival.settings import HIPTLGPParams


class GatedAttention(nn.Module):
    """Gated attention scores (HIPT's ``Attn_Net_Gated`` names): (B, N, dim) → logits (B, N)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.25) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention_c(self.attention_a(h) * self.attention_b(h)).squeeze(-1)


class HIPTGlobalNet(FusedSurvivalNet):
    """HIPT_GP_FC: region features (B, N, in_dim) with mask (B, N) → logits (B, n_bins), attention (B, N).

    ``dim``, ``heads`` and ``layers`` default to the published 192, 3, 2 (smaller only in tests).
    """

    head_name = "classifier"
    has_path = True

    def __init__(self, in_dim: int = 192, tab_dim: int = 0, fusion: str = "bilinear", n_bins: int = 4,
                 dropout: float = 0.25, dim: int = 192, heads: int = 3, layers: int = 2) -> None:
        super().__init__()
        self.global_phi = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=dim, dropout=dropout,
                                           activation="relu")
        # sequence-first and no nested tensors, as the official module: the same (deterministic) kernels
        # in training and evaluation
        self.global_transformer = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.global_attn_pool = GatedAttention(dim, dim, dropout)
        self.global_rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self._add_head(dim, tab_dim, fusion, n_bins, dropout)

    def regions(self, bags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Region features (B, N, in_dim) as the global level reads them (the identity here)."""
        return bags

    def embed_path(self, bags: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.global_phi(self.regions(bags, mask))
        # an empty bag would leave its queries nothing to attend to (NaN): let it attend to its first
        # (padding) slot; the pooling below gives that slot zero weight
        padding = ~mask
        padding[:, 0] &= mask.any(dim=1)
        h = self.global_transformer(h.transpose(0, 1), src_key_padding_mask=padding).transpose(0, 1)
        pooled, weights = attention_pool(self.global_attn_pool(h), mask, h)
        return self.global_rho(pooled), weights


class HIPTGPModel(PorpoiseModel):
    """``hipt_gp``: the porpoise kind's learner with :class:`HIPTGlobalNet` as its network."""

    kind = "hipt_gp"

    def _make_net(self, tab_dim: int) -> HIPTGlobalNet:
        p = self.params
        return HIPTGlobalNet(self.bags.dim, tab_dim, p.fusion, p.n_bins, p.dropout)


class HIPTLocalGlobalNet(HIPTGlobalNet):
    """HIPT_LGP_FC: token grids → ``local_vit`` (ViT-4K) → :class:`HIPTGlobalNet`'s global level.

    ``bags`` = (tokens (B, N, G, G, D) float32, grid (B, N, 2) int64 rows, cols of each region's grid);
    padding instances (mask False) are never run through the ViT-4K.
    """

    def __init__(self, local_vit: RegionViT, tab_dim: int = 0, fusion: str = "bilinear", n_bins: int = 4,
                 dropout: float = 0.25, freeze: bool = False, **global_dims) -> None:
        super().__init__(local_vit.embed_dim, tab_dim, fusion, n_bins, dropout, **global_dims)
        self.local_vit = local_vit
        self.freeze = freeze
        local_vit.requires_grad_(not freeze)

    def regions(self, bags: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        tokens, grid = bags
        b, n = mask.shape
        out = tokens.new_zeros(b, n, self.local_vit.embed_dim)
        valid = mask.nonzero(as_tuple=False)  # (K, 2) batch, instance of each real region
        shapes = grid[valid[:, 0], valid[:, 1]]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            for rows, cols in torch.unique(shapes, dim=0).tolist():  # one forward per grid shape
                sel = valid[(shapes[:, 0] == rows) & (shapes[:, 1] == cols)]
                x = tokens[sel[:, 0], sel[:, 1], :rows, :cols].permute(0, 3, 1, 2)  # (k, D, rows, cols)
                out = out.index_put((sel[:, 0], sel[:, 1]), self.local_vit(x))
        return out


class HIPTLGPModel(PorpoiseModel):
    """``hipt_lgp``: the porpoise kind's learner with :class:`HIPTLocalGlobalNet` over token-grid bags."""

    kind = "hipt_lgp"
    params_class = HIPTLGPParams
    _vit4k_cache: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    def _local_vit(self) -> RegionViT:
        """The ViT-4K with ``vit4k_weights`` (loaded once per process; ``random``: seeded by ``vit4k_seed``)."""
        from tessera.pathology.encoders import registry
        from tessera.pathology.encoders.checkpoints import build_encoder

        spec = registry.get("hipt4k")
        key = (self.params.vit4k_weights, self.params.vit4k_seed)
        if key not in self._vit4k_cache:
            model, _ = build_encoder(spec, *key)
            self._vit4k_cache[key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        vit = spec.build()
        vit.load_state_dict(self._vit4k_cache[key], strict=True)
        if vit.in_dim != self.bags.dim:
            raise InputError(f"the token grids are {self.bags.dim}-d but HIPT's ViT-4K reads {vit.in_dim}-d patch tokens",
                             field="survival.models[].encoder", fix="use the hipt4k encoder (over hipt256 patches)")
        return vit

    def _make_net(self, tab_dim: int) -> HIPTLocalGlobalNet:
        p = self.params
        return HIPTLocalGlobalNet(self._local_vit(), tab_dim, p.fusion, p.n_bins, p.dropout, freeze=p.freeze_4k)

    def _pad(self, chosen: list[tuple[Bag, np.ndarray]], n_max: int):
        side = max((bag.features.shape[1] for bag, _ in chosen), default=1)
        tokens = np.zeros((len(chosen), n_max, side, side, self.bags.dim), np.float32)
        grid = np.ones((len(chosen), n_max, 2), np.int64)
        for i, (bag, keep) in enumerate(chosen):
            g = bag.features.shape[1]
            tokens[i, : len(keep), :g, :g] = bag.features[keep]
            grid[i, : len(keep)] = bag.grid[keep]
        return torch.from_numpy(tokens).to(self.device), torch.from_numpy(grid).to(self.device)
