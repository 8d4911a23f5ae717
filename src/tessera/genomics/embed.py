"""Gene embeddings: haplotype sequences → NT token windows → pooled hidden states → per-gene and cohort tables.

Per haplotype sequence:

1. tokenize (:class:`~tessera.genomics.tokenizer.NTTokenizer`; ``<cls>`` per window);
2. split the tokens into windows of at most ``max_tokens`` (``<cls>`` included; default and ceiling:
   the model's limit, 2,048 for v2) overlapping by ``overlap_tokens``;
3. per window, the hidden states of ``layer`` averaged over the attention mask (``<cls>`` included,
   pads excluded: the NT model card's mean embedding);
4. per sequence, the windows' means weighted by their token counts (= the mean over all window tokens).

Per patient, the two haplotypes are averaged (``haplotypes: mean``) or kept as separate columns
(``separate``: ``h1_e0000…``, ``h2_e0000…``). Identical sequences are embedded once (many patients share
a haplotype); windows are sorted by length before batching to waste little compute on padding.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tessera import __version__
from tessera.atomic import atomic_path
from tessera.errors import InputError
from tessera.genomics.nt import NTModel
from tessera.genomics.sequences import read_shard_sequences

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HAPLOTYPE_MODES = ("mean", "separate")
EMBEDDING_COLUMN = re.compile(r"(h[12]_)?e\d{4}")


@dataclass(frozen=True)
class EmbedParams:
    """How sequences become embeddings (config ``genomics_model``, minus the weights keys)."""

    layer: int = -1
    max_tokens: int | None = None  # None: the model's limit
    overlap_tokens: int = 0
    haplotypes: str = "mean"
    batch_size: int = 8  # windows per forward pass
    device: str = "auto"
    dtype: str = "float32"
    lowercase: str = "upper"

    def __post_init__(self) -> None:
        if self.haplotypes not in HAPLOTYPE_MODES:
            raise ValueError(f"haplotypes must be one of {HAPLOTYPE_MODES}, not {self.haplotypes!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, not {self.dtype!r}")

    @classmethod
    def from_config(cls, cfg: dict) -> "EmbedParams":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})


def windows(ids: np.ndarray, max_tokens: int, overlap: int, cls_id: int) -> list[np.ndarray]:
    """Split token ids (without ``<cls>``) into windows of ≤ ``max_tokens`` tokens, each led by ``<cls>``.

    Consecutive windows share ``overlap`` tokens; the last window ends at the last token. An empty
    sequence gives one window holding only ``<cls>``.
    """
    body = max_tokens - 1
    if body < 1 or not 0 <= overlap < body:
        raise InputError(f"max_tokens {max_tokens} / overlap_tokens {overlap} leave no room for tokens",
                         field="genomics_model.overlap_tokens", fix="use 0 <= overlap_tokens < max_tokens - 1")
    cls = np.array([cls_id], ids.dtype)
    out, start, step = [], 0, body - overlap
    while True:
        out.append(np.concatenate([cls, ids[start: start + body]]))
        if start + body >= len(ids):
            return out
        start += step


class SequenceEmbedder:
    """Embeds DNA sequences with a loaded NT model (see module docstring)."""

    def __init__(self, nt: NTModel, params: EmbedParams) -> None:
        self.nt, self.params = nt, params
        limit = nt.max_tokens
        self.max_tokens = min(params.max_tokens or limit, limit)
        if params.max_tokens and params.max_tokens > limit:
            log.warning("max_tokens %d exceeds the model's %d; using %d", params.max_tokens, limit, limit)
        self.tokenizer = nt.tokenizer

    def embed(self, sequences: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Embeddings (n, H) float32 of ``sequences``, with each one's token count and window count."""
        unique = list(dict.fromkeys(sequences))
        position = {s: i for i, s in enumerate(unique)}
        owners, wins = [], []
        n_tokens = np.zeros(len(unique), np.int64)
        for i, seq in enumerate(unique):
            ids = self.tokenizer.encode(seq, add_cls=False)
            n_tokens[i] = len(ids)
            for w in windows(ids, self.max_tokens, self.params.overlap_tokens, self.tokenizer.cls_id):
                owners.append(i)
                wins.append(w)
        sums = np.zeros((len(unique), self.nt.hidden_size), np.float64)
        counts = np.zeros(len(unique), np.float64)
        for batch in self.batches(wins):
            pooled, count = self.forward([wins[j] for j in batch])
            for j, p, c in zip(batch, pooled, count):
                sums[owners[j]] += p
                counts[owners[j]] += c
        means = (sums / counts[:, None]).astype(np.float32)
        n_windows = np.bincount(np.asarray(owners, np.int64), minlength=len(unique))
        idx = [position[s] for s in sequences]
        log.info("embedded %d sequences (%d distinct) in %d windows", len(sequences), len(unique), len(wins))
        return means[idx], n_tokens[idx], n_windows[idx]

    def batches(self, wins: list[np.ndarray]) -> list[list[int]]:
        """Window indices grouped ``batch_size`` at a time, longest first (little padding per batch)."""
        order = sorted(range(len(wins)), key=lambda j: -len(wins[j]))
        size = self.params.batch_size
        return [order[k: k + size] for k in range(0, len(order), size)]

    @torch.inference_mode()
    def forward(self, batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per window: the hidden-state sum over its real tokens (H,) and the number of real tokens."""
        ids, mask = pad_batch(batch, self.tokenizer.pad_id, self.nt.device)
        hidden = self.nt.hidden_state(ids, mask, self.params.layer)
        summed = (hidden.float() * mask.unsqueeze(-1)).sum(dim=1)
        return summed.double().cpu().numpy(), mask.sum(dim=1).double().cpu().numpy()


def pad_batch(batch: list[np.ndarray], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad windows to the longest: ids (B, T) int64 and attention mask (B, T) int64 on ``device``."""
    longest = max(len(w) for w in batch)
    ids = np.full((len(batch), longest), pad_id, np.int64)
    for row, w in enumerate(batch):
        ids[row, : len(w)] = w
    ids_t = torch.from_numpy(ids).to(device, non_blocking=True)
    return ids_t, (ids_t != pad_id).long()


def embedding_columns(dim: int, prefix: str = "") -> list[str]:
    return [f"{prefix}e{i:04d}" for i in range(dim)]


def embed_gene(
    gene: str, shard_dirs: list[str | os.PathLike], nt: NTModel, params: EmbedParams, model_name: str,
    out_parquet: str | os.PathLike,
) -> pd.DataFrame:
    """Embed every ``ok`` patient of the gene's sequence shards; write ``out_parquet``; return it.

    One row per patient (sorted by ``patient_id``): ``patient_id``, embedding columns (float32), then
    provenance (region, source, token/window counts, model, weights path and SHA-256, whether random,
    layer, windowing). Shards are read one at a time; a haplotype already embedded (in any shard) is
    looked up by its hash rather than embedded again.
    """
    if nt.random:
        log.warning("the model's weights are RANDOM: these embeddings carry no biology (demo and tests only)")
    embedder = SequenceEmbedder(nt, params)
    cache: dict[bytes, tuple[np.ndarray, int, int]] = {}  # sequence hash -> (embedding, tokens, windows)
    patients, info, rows = [], [], []
    for shard_dir in shard_dirs:
        index, seqs = read_shard_sequences(shard_dir)
        for row in index.itertuples():
            if row.status != "ok":
                log.warning("%s %s: no sequence (%s); not embedded", row.patient_id, gene, row.reason)
        ok = index[index["status"] == "ok"]
        haps = {hashlib.blake2b(h.encode(), digest_size=16).digest(): h for p in ok["patient_id"] for h in seqs[p]}
        new = [k for k in haps if k not in cache]
        if new:
            emb, n_tok, n_win = embedder.embed([haps[k] for k in new])
            cache.update(zip(new, zip(emb, n_tok, n_win)))
        for row in ok.itertuples():
            keys = [hashlib.blake2b(h.encode(), digest_size=16).digest() for h in seqs[row.patient_id]]
            patients.append(row.patient_id)
            rows.append([cache[k] for k in keys])
            info.append({"region": row.region, "source": row.source})
    dim = nt.hidden_size
    h1 = np.array([r[0][0] for r in rows], np.float32).reshape(-1, dim)
    h2 = np.array([r[1][0] for r in rows], np.float32).reshape(-1, dim)
    if params.haplotypes == "mean":
        values = dict(zip(embedding_columns(dim), ((h1 + h2) / 2).T))
    else:
        values = {**dict(zip(embedding_columns(dim, "h1_"), h1.T)), **dict(zip(embedding_columns(dim, "h2_"), h2.T))}
    table = pd.DataFrame({"patient_id": patients, **{c: v.astype(np.float32) for c, v in values.items()}})
    table = pd.concat([table, pd.DataFrame(info, columns=["region", "source"]).assign(
        gene=gene, hap1_tokens=[int(r[0][1]) for r in rows], hap2_tokens=[int(r[1][1]) for r in rows],
        n_windows=[int(r[0][2] + r[1][2]) for r in rows], model=model_name, model_kind=nt.kind, weights=nt.source,
        weights_sha256=nt.sha256, weights_random=nt.random, layer=params.layer, max_tokens=embedder.max_tokens,
        overlap_tokens=params.overlap_tokens, haplotypes=params.haplotypes, tessera_version=__version__,
    )], axis=1).sort_values("patient_id", kind="stable").reset_index(drop=True)
    write_parquet(table, out_parquet)
    log.info("%s: %d patients embedded (%d-d, %s, %d distinct haplotypes) -> %s", gene, len(table), dim,
             params.haplotypes, len(cache), out_parquet)
    return table


def cohort_table(gene_tables: dict[str, str | os.PathLike], out_parquet: str | os.PathLike) -> pd.DataFrame:
    """Join per-gene tables into one row per patient: ``patient_id`` then ``{gene}_{column}`` embeddings.

    Only patients embedded for every gene are kept (the rest are logged): later stages see complete rows.
    """
    merged: pd.DataFrame | None = None
    for gene, path in gene_tables.items():
        table = pd.read_parquet(path)
        cols = [c for c in table.columns if EMBEDDING_COLUMN.fullmatch(c)]
        part = table[["patient_id", *cols]].rename(columns={c: f"{gene}_{c}" for c in cols})
        if merged is None:
            merged = part
            continue
        missing = set(merged["patient_id"]) ^ set(part["patient_id"])
        if missing:
            log.warning("patients without an embedding for every gene (left out): %s", ", ".join(sorted(missing)))
        merged = merged.merge(part, on="patient_id", how="inner")
    if merged is None:
        raise InputError("no genes to combine", field="genes", fix="configure at least one gene")
    merged = merged.sort_values("patient_id").reset_index(drop=True)
    write_parquet(merged, out_parquet)
    log.info("cohort genomic embeddings: %d patients x %d columns -> %s", len(merged), merged.shape[1] - 1, out_parquet)
    return merged


def write_parquet(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``table`` to ``path`` atomically (pyarrow)."""
    with atomic_path(Path(path)) as tmp:
        table.to_parquet(tmp, index=False)
