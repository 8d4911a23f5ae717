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

import torch
from torch import nn

from tessera.survival.porpoise import FusedSurvivalNet, PorpoiseModel, attention_pool


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
