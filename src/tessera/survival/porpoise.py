"""A PORPOISE-style multimodal survival model (our implementation, plain torch).

Architecture (GUIDE §4; Chen et al., PORPOISE):

* pathology: gated attention-MIL over a patient's instance embeddings (all their slides) —
  Linear D→512, ReLU, Dropout; attention a = tanh(Linear 512→256) ⊙ sigmoid(Linear 512→256) → Linear
  256→1, softmax over the patient's instances; attention-pooled 512 → Linear 256, ReLU, Dropout;
* tabular (genomic and/or clinical features): self-normalising net, twice Linear → ELU → AlphaDropout,
  to 256;
* fusion ``bilinear``: each side gated by the other (sigmoid(Linear([p, g])) ⊙ ReLU(Linear(side)),
  reduced to 256/8 = 32), a constant 1 appended, outer product 33 × 33 = 1089 → 256 → 256; or
  ``concat``: Linear 512 → 256 → 256 with ReLUs. With one modality only, its 256-d embedding is used;
* head: Linear 256 → n_bins logits; hazards h = sigmoid(logits), survival S_k = Π_{j≤k} (1 − h_j),
  risk = −Σ_k S_k.

Training: discrete-time negative log-likelihood (censoring-aware, weight ``alpha`` on the uncensored
term as in PORPOISE), bins = quantiles of the *training* patients' uncensored times (never the whole
cohort), Adam, gradient accumulation over ``batch_size`` patients in padded micro-batches (one
patient at a time when ``micro_batch`` = 1, as PORPOISE). Fixed epochs, or early stopping on the
validation loss of an inner split of the training data. CPU runs are bit-identical for a seed
(``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
from torch import nn

from tessera.errors import InputError
from tessera.survival.bags import Bag, BagStore
from tessera.survival.cv import inner_holdout
from tessera.survival.settings import PorpoiseParams
from tessera.survival.tabular import make_preprocessor, preprocessed_columns

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- modules
def attention_pool(logits: torch.Tensor, mask: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over a bag's instances of attention ``logits`` (B, N), padding (``mask`` False) excluded;
    returns the weighted sum of ``h`` (B, N, D) → (B, D) and the weights (B, N). An empty bag pools to zeros."""
    empty = ~mask.any(dim=1, keepdim=True)
    logits = logits.masked_fill(~mask & ~empty, float("-inf")).masked_fill(empty, 0.0)
    weights = torch.softmax(logits, dim=1) * mask
    return torch.bmm(weights.unsqueeze(1), h).squeeze(1), weights


class AttentionMIL(nn.Module):
    """Gated attention-MIL. ``forward(x (B, N, D), mask (B, N) bool)`` → (B, out_dim), attention (B, N).

    Padding instances (mask False) get zero weight; a patient with no instance pools to zeros.
    """

    def __init__(self, in_dim: int, hidden: int = 512, attn_dim: int = 256, out_dim: int = 256,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn_tanh = nn.Sequential(nn.Linear(hidden, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attn_gate = nn.Sequential(nn.Linear(hidden, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.attn_out = nn.Linear(attn_dim, 1)
        self.rho = nn.Sequential(nn.Linear(hidden, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(x)
        pooled, weights = attention_pool(self.attn_out(self.attn_tanh(h) * self.attn_gate(h)).squeeze(-1), mask, h)
        return self.rho(pooled), weights


class SNN(nn.Module):
    """Self-normalising net: (Linear → ELU → AlphaDropout) × n_layers, LeCun-normal init."""

    def __init__(self, in_dim: int, hidden: int = 256, n_layers: int = 2, dropout: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.ELU(), nn.AlphaDropout(dropout)]
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.weight.shape[1]))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BilinearFusion(nn.Module):
    """Gated Kronecker fusion of two 256-d embeddings → ``out_dim`` (see module docstring)."""

    def __init__(self, dim1: int = 256, dim2: int = 256, scale: int = 8, out_dim: int = 256,
                 dropout: float = 0.25) -> None:
        super().__init__()
        d1, d2 = dim1 // scale, dim2 // scale
        self.h1 = nn.Sequential(nn.Linear(dim1, d1), nn.ReLU())
        self.h2 = nn.Sequential(nn.Linear(dim2, d2), nn.ReLU())
        self.z1 = nn.Linear(dim1 + dim2, d1)
        self.z2 = nn.Linear(dim1 + dim2, d2)
        self.o1 = nn.Sequential(nn.Linear(d1, d1), nn.ReLU(), nn.Dropout(dropout))
        self.o2 = nn.Sequential(nn.Linear(d2, d2), nn.ReLU(), nn.Dropout(dropout))
        self.post = nn.Dropout(dropout)
        self.encode = nn.Sequential(nn.Linear((d1 + 1) * (d2 + 1), 256), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(256, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        both = torch.cat([v1, v2], dim=1)
        o1 = self.o1(torch.sigmoid(self.z1(both)) * self.h1(v1))
        o2 = self.o2(torch.sigmoid(self.z2(both)) * self.h2(v2))
        ones = torch.ones(len(v1), 1, dtype=v1.dtype, device=v1.device)
        o1, o2 = torch.cat([o1, ones], dim=1), torch.cat([o2, ones], dim=1)
        kron = (o1.unsqueeze(2) * o2.unsqueeze(1)).flatten(start_dim=1)
        return self.encode(self.post(kron))


class ConcatFusion(nn.Module):
    def __init__(self, dim1: int = 256, dim2: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim1 + dim2, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim), nn.ReLU())

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([v1, v2], dim=1))


class FusedSurvivalNet(nn.Module):
    """What every deep survival kind shares: a tabular SNN branch (``tab_dim`` > 0), its fusion with the
    pathology embedding, and the hazard head. A subclass builds its pathology branch, sets ``has_path``,
    defines ``embed_path(bags, mask)`` → ((B, path_out), attention (B, N)) and calls :meth:`_add_head`."""

    head_name = "head"

    def _add_head(self, path_out: int, tab_dim: int, fusion: str, n_bins: int, dropout: float) -> None:
        if path_out <= 0 and tab_dim <= 0:
            raise InputError("the multimodal model has no input: no instance embeddings and no tabular features",
                             field="survival.models[].params", fix="give an encoder and/or tabular modalities")
        self.tab = SNN(tab_dim, dropout=dropout) if tab_dim > 0 else None
        self.fusion = None
        out = path_out if path_out > 0 else 256
        if path_out > 0 and self.tab is not None:
            if fusion == "bilinear":
                self.fusion = BilinearFusion(dim1=path_out, dropout=dropout)
            elif fusion == "concat":
                self.fusion = ConcatFusion(dim1=path_out)
            else:
                raise InputError(f"unknown fusion '{fusion}'", field="survival.models[].params.fusion",
                                 fix="use bilinear or concat")
            out = 256
        setattr(self, self.head_name, nn.Linear(out, n_bins))

    def head_from(self, h_path: torch.Tensor | None, tab: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, n_bins) from a pooled path embedding and the raw tabular input."""
        h_tab = self.tab(tab) if self.tab is not None else None
        if self.fusion is not None:
            h = self.fusion(h_path, h_tab)
        else:
            h = h_path if h_path is not None else h_tab
        return getattr(self, self.head_name)(h)

    def forward(self, bags, mask, tab) -> tuple[torch.Tensor, torch.Tensor | None]:
        h_path, attn = self.embed_path(bags, mask) if self.has_path else (None, None)
        return self.head_from(h_path, tab), attn


class PorpoiseNet(FusedSurvivalNet):
    """Path branch (``path_dim`` > 0), tabular branch (``tab_dim`` > 0), fusion, hazard head."""

    def __init__(self, path_dim: int, tab_dim: int, fusion: str = "bilinear", n_bins: int = 4,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.path = AttentionMIL(path_dim, dropout=dropout) if path_dim > 0 else None
        self.has_path = self.path is not None
        self._add_head(256 if self.has_path else 0, tab_dim, fusion, n_bins, dropout)

    def embed_path(self, bags: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.path(bags, mask)


# ------------------------------------------------------------------------------------ discrete time
def make_bins(time: np.ndarray, event: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges (n_bins − 1,): quantiles of the uncensored times given (the training patients')."""
    uncensored = time[event.astype(bool)]
    if len(uncensored) < n_bins:
        raise InputError(f"{len(uncensored)} uncensored training patient(s) cannot define {n_bins} time bins",
                         field="survival.models[].params.n_bins", fix="use fewer bins or more folds' data")
    return np.quantile(uncensored, np.arange(1, n_bins) / n_bins)


def discretize(time: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Bin index in ``[0, len(cuts)]`` of each time (bin k covers ``[cuts[k-1], cuts[k])``)."""
    return np.searchsorted(cuts, time, side="right")


def survival_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """S_k = Π_{j≤k} (1 − sigmoid(logit_j)), shape (B, n_bins)."""
    return torch.exp(torch.cumsum(nn.functional.logsigmoid(-logits), dim=1))


def risk_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """risk = −Σ_k S_k (PORPOISE)."""
    return -survival_from_logits(logits).sum(dim=1)


def nll_loss(logits: torch.Tensor, bins: torch.Tensor, event: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    """Discrete-time survival NLL per patient (B,), in log space.

    Event in bin k: −log S_{k−1} − log h_k. Censored in bin k: −log S_k. The total is
    (1 − alpha) · (censored + uncensored terms) + alpha · uncensored term, as in PORPOISE.
    """
    log_h = nn.functional.logsigmoid(logits)
    log_1mh = nn.functional.logsigmoid(-logits)
    log_s = torch.cumsum(log_1mh, dim=1)
    log_s_pad = torch.cat([torch.zeros_like(log_s[:, :1]), log_s], dim=1)  # log S_{-1} = 0
    # one-hot selection instead of gather: its backward needs no scatter (deterministic on every device)
    n_bins = logits.shape[1]
    at = nn.functional.one_hot(bins, n_bins + 1).to(logits.dtype)  # (B, n_bins + 1), 1 at bin k
    before = (log_s_pad * at).sum(1)
    hazard = (log_h * at[:, :n_bins]).sum(1)
    through = (log_s_pad * torch.roll(at, 1, dims=1)).sum(1)  # index k + 1 (k < n_bins always)
    e = event.to(logits.dtype)
    uncensored = -e * (before + hazard)
    censored = -(1 - e) * through
    return (1 - alpha) * (censored + uncensored) + alpha * uncensored


# -------------------------------------------------------------------------------------------- model
@contextlib.contextmanager
def deterministic(device: torch.device):
    """``torch.use_deterministic_algorithms(True)`` for the duration (restored afterwards).

    On CPU every op this model uses is deterministic, so runs are bit-identical for a seed. On CUDA an
    op without a deterministic kernel warns instead of stopping the job (``warn_only``).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


class PorpoiseModel:
    """Learner interface (``fit``/``predict_risk``/``predict_survival``) around :class:`PorpoiseNet`.

    ``X``: tabular features (DataFrame, ``{modality}__{name}`` columns; may have none); bags come from
    ``bags`` by ``patient_id``. ``device``: ``torch.device`` (default from ``params.device``).
    """

    has_survival = True
    kind = "porpoise"
    params_class = PorpoiseParams

    def __init__(self, params: dict | None = None, *, bags: BagStore | None = None, seed: int = 0,
                 device: torch.device | None = None) -> None:
        self.params = self.params_class.from_dict(dict(params or {}), self.kind)
        self.bags = bags
        self.seed = seed
        if device is None:
            from tessera.devices import torch_device

            device = torch_device(self.params.device)
        self.device = device

    def _make_net(self, tab_dim: int) -> FusedSurvivalNet:
        """The untrained network (built after ``torch.manual_seed``: its initial weights follow the seed)."""
        p = self.params
        return PorpoiseNet(self.bags.dim if self.bags is not None else 0, tab_dim, p.fusion, p.n_bins, p.dropout)

    # ---------------------------------------------------------------- data
    def _tabular(self, X: pd.DataFrame, fit: bool) -> np.ndarray:
        if X.shape[1] == 0:
            return np.zeros((len(X), 0), np.float32)
        if fit:
            self.columns_ = list(X.columns)
            self.pre_ = make_preprocessor(self.columns_, len(X), self.params.pca, self.seed).fit(X)
            self.tab_columns_ = preprocessed_columns(self.pre_, self.columns_)
        return self.pre_.transform(X[self.columns_]).astype(np.float32)

    def _batch(self, patients: list[str], tab: np.ndarray, rng: np.random.Generator | None):
        """Padded bags (:meth:`_pad`), (B, N) mask and (B, F) tabular input on the device.

        With ``rng`` (training) a bag larger than ``max_instances`` is subsampled (instances kept in order).
        """
        bags = mask = None
        if self.bags is not None:
            chosen = []
            for p in patients:
                bag = self.bags.get(p)
                keep = np.arange(len(bag))
                cap = self.params.max_instances
                if rng is not None and cap and len(bag) > cap:
                    keep = np.sort(rng.choice(len(bag), cap, replace=False))
                chosen.append((bag, keep))
            n_max = max(1, max(len(keep) for _, keep in chosen))
            mask = np.zeros((len(patients), n_max), bool)
            for i, (_, keep) in enumerate(chosen):
                mask[i, : len(keep)] = True
            bags, mask = self._pad(chosen, n_max), torch.from_numpy(mask).to(self.device)
        return bags, mask, torch.from_numpy(tab).to(self.device)

    def _pad(self, chosen: list[tuple[Bag, np.ndarray]], n_max: int):
        """(B, n_max, D) float32 instance features on the device, zero-padded (``chosen``: bag, rows kept)."""
        out = np.zeros((len(chosen), n_max, self.bags.dim), np.float32)
        for i, (bag, keep) in enumerate(chosen):
            out[i, : len(keep)] = bag.features[keep]
        return torch.from_numpy(out).to(self.device)

    # ---------------------------------------------------------------- training
    def fit(self, X: pd.DataFrame, y: np.ndarray, patient_id: np.ndarray) -> "PorpoiseModel":
        p = self.params
        patient_id = np.asarray(patient_id, dtype=str)
        with deterministic(self.device):
            torch.manual_seed(self.seed)
            rng = np.random.default_rng(self.seed)
            train, val = np.arange(len(y)), None
            if p.early_stopping:
                train, val = inner_holdout(y, p.early_stopping.get("validation_fraction", 0.2), self.seed)
            self.cuts_ = make_bins(y["time"][train], y["event"][train], p.n_bins)
            self.max_time_ = float(y["time"][train].max())
            tab = self._tabular(X.iloc[train], fit=True)
            tab_val = self._tabular(X.iloc[val], fit=False) if val is not None else None
            self.net_ = self._make_net(tab.shape[1]).to(self.device)
            # fused: one kernel per step instead of a loop of tensor ops; on CPU a step of the bilinear
            # fusion's 66049 x 256 layer takes 2.5x less time
            opt = torch.optim.Adam(self.net_.parameters(), lr=p.lr, weight_decay=p.weight_decay, fused=True)
            bins = torch.from_numpy(discretize(y["time"], self.cuts_)).to(self.device)
            event = torch.from_numpy(y["event"].astype(np.int64)).to(self.device)

            sizes = np.array([len(self.bags.get(p)) if self.bags is not None else 0 for p in patient_id[train]])
            self.history_, best, best_state, stale = [], math.inf, None, 0
            for epoch in range(p.epochs):
                self.net_.train()
                order = rng.permutation(len(train))
                total = 0.0
                for start in range(0, len(order), p.batch_size):
                    # micro-batches of similar bag sizes pad little; the step sees the whole batch anyway
                    batch = order[start:start + p.batch_size]
                    batch = batch[np.argsort(sizes[batch], kind="stable")]
                    opt.zero_grad(set_to_none=True)
                    for mb in np.array_split(batch, math.ceil(len(batch) / p.micro_batch)):
                        idx = train[mb]
                        b, m, t = self._batch(list(patient_id[idx]), tab[mb], rng)
                        logits, _ = self.net_(b, m, t)
                        loss = nll_loss(logits, bins[idx], event[idx], p.alpha).sum() / len(batch)
                        loss.backward()
                        total += float(loss.detach()) * len(batch)
                    opt.step()
                record = {"epoch": epoch + 1, "train_loss": total / len(train)}
                if val is not None:
                    record["val_loss"] = self._loss(patient_id[val], tab_val, bins[val], event[val])
                    if record["val_loss"] < best:
                        best, stale = record["val_loss"], 0
                        best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
                        self.best_epoch_ = epoch + 1
                    else:
                        stale += 1
                self.history_.append(record)
                if val is not None and stale >= p.early_stopping.get("patience", 5):
                    break
            if best_state is not None:
                self.net_.load_state_dict(best_state)
            else:
                self.best_epoch_ = len(self.history_)
        self.survival_domain_ = self.max_time_
        return self

    @torch.no_grad()
    def _loss(self, patients, tab, bins, event) -> float:
        self.net_.eval()
        losses = []
        for mb in np.array_split(np.arange(len(patients)), math.ceil(len(patients) / self.params.micro_batch)):
            b, m, t = self._batch(list(patients[mb]), tab[mb], None)
            losses.append(nll_loss(self.net_(b, m, t)[0], bins[mb], event[mb], self.params.alpha))
        return float(torch.cat(losses).mean())

    # ---------------------------------------------------------------- prediction
    @torch.no_grad()
    def _logits(self, X: pd.DataFrame, patient_id) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Logits (n, n_bins) and each patient's attention weights (None without a path branch), in input order.

        Patients are forwarded in micro-batches of similar bag sizes (little padding).
        """
        self.net_.eval()
        patients = np.asarray(patient_id, dtype=str)
        tab = self._tabular(X, fit=False)
        sizes = np.array([len(self.bags.get(p)) if self.bags is not None else 0 for p in patients])
        logits_out = np.zeros((len(patients), self.params.n_bins), np.float32)
        attn: list[np.ndarray | None] = [None] * len(patients)
        order = np.argsort(sizes, kind="stable")
        with deterministic(self.device):
            for mb in np.array_split(order, max(1, math.ceil(len(patients) / self.params.micro_batch))):
                if len(mb) == 0:
                    continue
                b, m, t = self._batch(list(patients[mb]), tab[mb], None)
                logits, a = self.net_(b, m, t)
                logits_out[mb] = logits.float().cpu().numpy()
                if a is not None:
                    for i, j in enumerate(mb):
                        attn[j] = a[i, : int(m[i].sum())].float().cpu().numpy()
        return logits_out, attn

    def predict_risk(self, X: pd.DataFrame, patient_id) -> np.ndarray:
        logits, _ = self._logits(X, patient_id)
        return risk_from_logits(torch.from_numpy(logits)).numpy().astype(float)

    def bin_survival(self, X: pd.DataFrame, patient_id) -> np.ndarray:
        """S_k per patient (n, n_bins): survival past the end of each bin."""
        logits, _ = self._logits(X, patient_id)
        return survival_from_logits(torch.from_numpy(logits)).numpy().astype(float)

    def predict_survival(self, X: pd.DataFrame, times: np.ndarray, patient_id) -> np.ndarray:
        """Survival at ``times`` (n, T): S is 1 at 0, S_k at the end of bin k (last bin ends at the last
        training time), linear in between."""
        s = self.bin_survival(X, patient_id)
        edges = np.r_[0.0, self.cuts_, self.max_time_]
        return np.vstack([np.interp(times, edges, np.r_[1.0, row]) for row in s])

    # ---------------------------------------------------------------- explanations
    def attention(self, X: pd.DataFrame, patient_id) -> pd.DataFrame:
        """One row per instance: patient_id, slide_id, instance (row in the slide's file), x, y,
        size_level0, attention (weights of a patient sum to 1)."""
        if self.bags is None:
            return pd.DataFrame()
        _, attn = self._logits(X, patient_id)
        frames = []
        for p, a in zip(np.asarray(patient_id, dtype=str), attn):
            bag = self.bags.get(p)
            if len(bag) == 0:
                continue
            frames.append(pd.DataFrame({"patient_id": p, "slide_id": bag.slide_id.astype(str), "instance": bag.row,
                                        "x": bag.coords[:, 0], "y": bag.coords[:, 1],
                                        "size_level0": bag.size_level0, "attention": a.astype(np.float32)}))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def integrated_gradients(self, X: pd.DataFrame, patient_id, n_steps: int = 32) -> tuple[pd.DataFrame, float]:
        """Integrated Gradients (captum) of the risk w.r.t. the tabular inputs (after preprocessing),
        the pathology embedding held at the patient's own; baseline = zeros (the training mean).

        Returns a long table (patient_id, feature, value, attribution) and the largest completeness
        error |Σ attributions − (risk(x) − risk(baseline))|.
        """
        from captum.attr import IntegratedGradients

        if self.net_.tab is None:
            return pd.DataFrame(), 0.0
        self.net_.eval()
        patients = np.asarray(patient_id, dtype=str)
        tab = self._tabular(X, fit=False)
        rows, worst = [], 0.0
        with deterministic(self.device):
            for i, p in enumerate(patients):
                b, m, t = self._batch([p], tab[i:i + 1], None)
                with torch.no_grad():
                    h_path = self.net_.embed_path(b, m)[0] if self.net_.has_path else None

                def forward(x, h_path=h_path):
                    hp = None if h_path is None else h_path.expand(len(x), -1)
                    return risk_from_logits(self.net_.head_from(hp, x))

                ig = IntegratedGradients(forward)
                attr, delta = ig.attribute(t, baselines=torch.zeros_like(t), n_steps=n_steps,
                                           return_convergence_delta=True)
                worst = max(worst, float(delta.abs().max()))
                rows.append(pd.DataFrame({"patient_id": p, "feature": self.tab_columns_, "value": tab[i],
                                          "attribution": attr[0].detach().cpu().numpy()}))
        return pd.concat(rows, ignore_index=True), worst

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """safetensors file: network weights, preprocessing arrays, and the settings as JSON metadata."""
        from safetensors.torch import save_file

        from tessera.atomic import atomic_path

        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        for name, arr in preprocessing_arrays(getattr(self, "pre_", None)).items():
            tensors[f"preprocess.{name}"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
        meta = {"kind": self.kind, "params": asdict(self.params), "cuts": self.cuts_.tolist(), "max_time": self.max_time_,
                "columns": getattr(self, "columns_", []), "tabular_inputs": getattr(self, "tab_columns_", []),
                "path_dim": self.bags.dim if self.bags is not None else 0, "seed": self.seed,
                "best_epoch": self.best_epoch_}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"tessera": json.dumps(meta, sort_keys=True)})


def preprocessing_arrays(pre) -> dict[str, np.ndarray]:
    """Fitted imputer medians, scaler mean/scale and PCA components/means of a preprocessing pipeline."""
    if pre is None:
        return {}
    out = {"impute.statistics": pre.named_steps["impute"].statistics_,
           "scale.mean": pre.named_steps["scale"].mean_, "scale.scale": pre.named_steps["scale"].scale_}
    if "pca" in pre.named_steps:
        for name, pca, _ in pre.named_steps["pca"].transformers_:
            if hasattr(pca, "components_"):
                out[f"{name}.components"] = pca.components_
                out[f"{name}.mean"] = pca.mean_
                out[f"{name}.explained_variance"] = pca.explained_variance_
    return out
