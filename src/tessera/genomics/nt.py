"""Nucleotide Transformer models without remote code: v1 in transformers' ``EsmForMaskedLM``, v2 our own.

**v2** (50M/100M/250M/500M; GUIDE §4) is an ESM-style pre-LayerNorm encoder with rotary positions and a
bias-free SwiGLU feed-forward that stock transformers cannot represent (``add_bias_fnn: false``), so
:class:`NTv2ForMaskedLM` implements it with the exact state-dict layout of the published checkpoints
(v2-50m: 192 tensors, 55,904,972 parameters plus one 16-value ``inv_freq`` buffer per layer):

- ``esm.embeddings.word_embeddings`` and an unused ``esm.embeddings.position_embeddings`` [2050, H];
- per layer ``esm.encoder.layer.{i}``: ``attention.LayerNorm`` → ``attention.self.{query,key,value}``
  (with biases; rotary over the full head dim, base 10000, channel j paired with j + d/2, positions
  0…T−1, q scaled by d^-0.5) → ``attention.output.dense`` + residual; ``LayerNorm`` →
  ``intermediate.dense`` [2·I, H] → SiLU(first half) · second half → ``output.dense`` [H, I] + residual;
- ``esm.encoder.emb_layer_norm_after``; ``esm.contact_head.regression`` [1, L·heads];
- ``lm_head.{dense, layer_norm, decoder (no bias)}`` and ``lm_head.bias``.

No embedding scaling, no token dropout; LayerNorm eps from the config (1e-12). Padded positions are
masked out of attention (pass the mask: without it pads are attended to).

**v1** (500M/2.5B) is stock ESM (absolute positions, GELU feed-forward with biases, ``token_dropout``
kept: part of the trained model) and loads into ``transformers.EsmForMaskedLM``.

Weights are read from a directory (local or ``s3://``) holding ``config.json`` and ``model.safetensors``
or ``pytorch_model.bin`` (or their sharded ``*.index.json`` forms). Loading is strict: every key and
shape must match (``torch.load`` runs with ``weights_only=True``); ``trust_remote_code`` is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tessera.checksum import sha256_file
from tessera.errors import InputError
from tessera.genomics.tokenizer import NTTokenizer
from tessera.uri import download, is_s3, split_s3

log = logging.getLogger(__name__)

KINDS = ("nt-v1", "nt-v2")

#: The published v2-50m configuration (InstaDeepAI/nucleotide-transformer-v2-50m-multi-species).
V2_50M = {
    "vocab_size": 4107, "hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 16,
    "intermediate_size": 2048, "max_position_embeddings": 2050, "layer_norm_eps": 1e-12,
    "pad_token_id": 1, "mask_token_id": 2, "position_embedding_type": "rotary", "add_bias_fnn": False,
    "token_dropout": False, "emb_layer_norm_before": False, "tie_word_embeddings": False,
}
#: Keys of ``config.json`` that v2 must have these values for (anything else this module cannot represent).
_V2_FIXED = {"position_embedding_type": "rotary", "token_dropout": False, "emb_layer_norm_before": False,
             "tie_word_embeddings": False}
#: Keys that old transformers versions saved as persistent buffers; dropped when present (value unused).
_IGNORABLE_KEYS = ("esm.embeddings.position_ids",)


@dataclass(frozen=True)
class NTv2Config:
    """The architecture fields of a v2 ``config.json``."""

    vocab_size: int = 4107
    hidden_size: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    intermediate_size: int = 2048
    max_position_embeddings: int = 2050
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    mask_token_id: int = 2
    add_bias_fnn: bool = False

    @classmethod
    def from_dict(cls, cfg: dict, file: str = "config.json") -> "NTv2Config":
        for key, value in _V2_FIXED.items():
            if cfg.get(key, value) != value:
                raise InputError(
                    f"{key} is {cfg[key]!r}; the NT v2 architecture has {value!r}", file=file,
                    fix="use kind nt-v1 for stock ESM checkpoints, or an NT v2 checkpoint",
                )
        names = cls.__dataclass_fields__
        return cls(**{k: cfg[k] for k in names if k in cfg})

    def to_dict(self) -> dict:
        """A ``config.json`` in the published layout (without the remote-code ``auto_map``)."""
        return {**V2_50M, **self.__dict__, "architectures": ["EsmForMaskedLM"], "model_type": "esm",
                "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary positions over the full head dim; ``inv_freq`` is a persistent buffer as in the checkpoints."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q, k of shape (B, heads, T, d) by positions 0…T−1."""
        t = torch.arange(q.shape[-2], device=q.device, dtype=torch.float32)  # exact positions, even in bf16
        freqs = torch.outer(t, self.inv_freq.float())
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


class _SelfAttention(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.rotary_embeddings = RotaryEmbedding(cfg.head_dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, T, H), keep (B, 1, 1, T) bool (True = a real token) → (B, T, H)."""
        b, t, _ = x.shape
        q, k, v = (lin(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        q, k = self.rotary_embeddings(q * self.head_dim ** -0.5, k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1.0)
        return out.transpose(1, 2).reshape(b, t, -1)


class _SelfOutput(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class _Attention(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _SelfOutput(cfg)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return x + self.output.dense(self.self(self.LayerNorm(x), keep))


class _Intermediate(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.add_bias_fnn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.dense(x).chunk(2, dim=-1)
        return F.silu(gate) * up


class _Output(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.add_bias_fnn)


class _Layer(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _Output(cfg)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, keep)
        return x + self.output.dense(self.intermediate(self.LayerNorm(x)))


class _Embeddings(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        # Present in the published checkpoints but unused: v2 encodes positions by rotary embeddings.
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size,
                                                padding_idx=cfg.pad_token_id)


class _Encoder(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.emb_layer_norm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class _ContactHead(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.regression = nn.Linear(cfg.num_hidden_layers * cfg.num_attention_heads, 1)


class _Esm(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.contact_head = _ContactHead(cfg)


class _LMHead(nn.Module):
    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))


class NTv2ForMaskedLM(nn.Module):
    """Nucleotide Transformer v2 with the published state-dict layout (see module docstring)."""

    def __init__(self, cfg: NTv2Config) -> None:
        super().__init__()
        self.config = cfg
        self.esm = _Esm(cfg)
        self.lm_head = _LMHead(cfg)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    def hidden_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Hidden states (B, T, H) at ``layer`` as transformers numbers them (see :func:`layer_index`).

        Only the blocks up to ``layer`` run.
        """
        index = layer_index(layer, self.num_layers)
        mask = attention_mask.bool()
        embed = self.esm.embeddings.word_embeddings
        x = embed(input_ids) * mask.unsqueeze(-1).to(embed.weight.dtype)
        keep = mask[:, None, None, :]
        for block in self.esm.encoder.layer[:index]:
            x = block(x, keep)
        if index == self.num_layers:
            x = self.esm.encoder.emb_layer_norm_after(x)
        return x

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked-LM logits (B, T, vocab): final hidden → dense → GELU → LayerNorm → decoder + bias."""
        x = self.hidden_state(input_ids, attention_mask, -1)
        x = self.lm_head.layer_norm(F.gelu(self.lm_head.dense(x)))
        return self.lm_head.decoder(x) + self.lm_head.bias


def layer_index(layer: int, num_layers: int) -> int:
    """Index into the ``num_layers + 1`` hidden states transformers returns: 0 = token embeddings,
    k = output of block k (for k < L), L (or −1) = the last block after the final LayerNorm (what the
    NT model card pools). Negative values count from the end."""
    if not -(num_layers + 1) <= layer <= num_layers:
        raise InputError(f"layer {layer} is out of range for a {num_layers}-layer model",
                         field="genomics_model.layer", fix=f"use -1 (last) or 0..{num_layers}")
    return layer % (num_layers + 1)


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """BERT/ESM-style random initialisation: linear and embedding weights N(0, std), biases 0, LayerNorm 1/0."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if isinstance(model, NTv2ForMaskedLM):
        nn.init.zeros_(model.lm_head.bias)


# --- loading ----------------------------------------------------------------------------------------


@dataclass
class NTModel:
    """A loaded NT model ready for embedding, with where its weights came from."""

    kind: str
    model: nn.Module
    config: dict
    source: str
    sha256: str
    random: bool
    tokenizer: NTTokenizer

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def max_tokens(self) -> int:
        """Longest input in tokens, ``<cls>`` included (2,048 for v2, 1,000 for v1)."""
        return int(self.config["max_position_embeddings"]) - 2

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def hidden_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """(B, T, H) hidden states at ``layer`` (see :func:`layer_index`)."""
        if self.kind == "nt-v2":
            return self.model.hidden_state(input_ids, attention_mask, layer)
        index = layer_index(layer, self.num_layers)
        out = self.model.esm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[index]


def _build(kind: str, cfg: dict, file: str) -> nn.Module:
    if kind == "nt-v2":
        return NTv2ForMaskedLM(NTv2Config.from_dict(cfg, file))
    from transformers import EsmConfig, EsmForMaskedLM

    if cfg.get("position_embedding_type", "absolute") != "absolute" or cfg.get("add_bias_fnn", True) is False:
        raise InputError("this checkpoint is not a stock ESM (NT v1) model", file=file,
                         fix="use kind nt-v2 for rotary / SwiGLU (NT v2) checkpoints")
    known = {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "tessera")}
    return EsmForMaskedLM(EsmConfig(**known))


def expected_layout(kind: str, cfg: dict) -> dict[str, tuple[int, ...]]:
    """State-dict key → shape of the architecture ``cfg`` describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = _build(kind, cfg, "config.json")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], file: str) -> None:
    """Raise :class:`InputError` listing missing, unexpected and mis-shaped keys (strict loading)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or shapes:
        parts = [f"{name}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if items]
        raise InputError(
            f"weights do not match the {len(expected)}-tensor layout of config.json ({'; '.join(parts)})", file=file,
            fix="give the weights that belong to this config.json (and the right genomics_model.kind)",
        )


def _fetch(source: str, name: str, dest: Path) -> Path | None:
    """``source/name`` as a local path (downloaded from S3 when needed), or None when absent."""
    if not is_s3(source):
        path = Path(source) / name
        return path if path.is_file() else None
    from botocore.exceptions import ClientError

    bucket, prefix = split_s3(source.rstrip("/") + "/" + name)
    try:
        return download(f"s3://{bucket}/{prefix}", dest / name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, nothing executed
    except Exception as e:
        raise InputError(f"cannot read weights safely: {e}", file=str(path),
                         fix="give a plain state dict (safetensors preferred)") from e
    if not isinstance(state, dict):
        raise InputError("weights file is not a state dict", file=str(path), fix="give a plain state dict")
    return state


def read_checkpoint(source: str, work: Path) -> tuple[dict, dict[str, torch.Tensor], str, str]:
    """``config.json``, the state dict, the weights' SHA-256 and the weights' path under ``source``.

    Accepts ``model.safetensors``, ``pytorch_model.bin`` and their sharded ``*.index.json`` forms.
    """
    config_path = _fetch(source, "config.json", work)
    if config_path is None:
        raise InputError("no config.json in the model directory", file=source,
                         fix="give the directory (or s3:// prefix) holding config.json and the weights")
    cfg = json.loads(config_path.read_text())
    for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"):
        path = _fetch(source, name, work)
        if path is None:
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            state, digests = {}, []
            for shard in shards:
                shard_path = _fetch(source, shard, work)
                if shard_path is None:
                    raise InputError(f"weight shard {shard} listed in {name} is missing", file=source,
                                     fix="copy every shard of the checkpoint")
                state.update(_read_weights(shard_path))
                digests.append(f"{shard}:{sha256_file(shard_path)}")
            return cfg, state, hashlib.sha256("\n".join(digests).encode()).hexdigest(), f"{source.rstrip('/')}/{name}"
        return cfg, _read_weights(path), sha256_file(path), f"{source.rstrip('/')}/{name}"
    raise InputError("no weights in the model directory", file=source,
                     fix="give model.safetensors or pytorch_model.bin (or their sharded .index.json forms)")


def load_nt(source: str | os.PathLike, kind: str, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32, lowercase: str = "upper", shown: str | None = None) -> NTModel:
    """Load an NT model strictly from a local directory or ``s3://`` prefix; eval mode on ``device``.

    ``shown``: the directory as the workflow names it, when ``source`` is a staged copy (a storage
    plugin's cache): the model's ``source`` (recorded in every output) is the weights file under it.
    """
    if kind not in KINDS:
        raise InputError(f"model kind {kind!r} is not one of {', '.join(KINDS)}", field="genomics_model.kind",
                         fix="use nt-v2 (v2 50M-500M) or nt-v1 (500M, 2.5B)")
    source = str(source)
    with tempfile.TemporaryDirectory(prefix="tessera-nt-") as tmp:
        cfg, state, sha, weights = read_checkpoint(source, Path(tmp))
    for key in _IGNORABLE_KEYS:
        state.pop(key, None)
    expected = expected_layout(kind, cfg)
    check_state_dict(state, expected, weights)
    with torch.device("meta"):
        model = _build(kind, cfg, f"{source}/config.json")
    model.load_state_dict(state, strict=True, assign=True)
    _materialise_buffers(model, cfg)
    model = model.to(device=device).eval()
    for p in model.parameters():  # buffers (rotary inv_freq) stay float32: bf16 would shift the frequencies
        p.data = p.data.to(dtype)
    random = bool(cfg.get("tessera", {}).get("random_weights", False))
    log.info("loaded %s from %s (sha256 %s%s): %d layers, hidden %d", kind, weights, sha[:12],
             ", RANDOM weights" if random else "", cfg["num_hidden_layers"], cfg["hidden_size"])
    if shown:
        weights = f"{str(shown).rstrip('/')}/{weights[len(source.rstrip('/')) + 1:]}"
    return NTModel(kind, model, cfg, weights, sha, random, NTTokenizer(1 if kind == "nt-v1" else 2, lowercase))


def _materialise_buffers(model: nn.Module, cfg: dict) -> None:
    """Re-create the non-persistent buffers a meta-device build leaves empty (transformers' ESM position ids)."""
    for name, buf in list(model.named_buffers()):
        if not buf.is_meta:
            continue
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        leaf = name.rsplit(".", 1)[1]
        if leaf == "position_ids":
            owner._buffers[leaf] = torch.arange(cfg["max_position_embeddings"]).expand((1, -1))
        elif leaf == "inv_freq":
            dim = buf.shape[0] * 2
            owner._buffers[leaf] = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        else:
            raise RuntimeError(f"buffer {name} was not loaded and cannot be re-created")


def write_random_model(out_dir: str | os.PathLike, kind: str = "nt-v2", architecture: dict | None = None,
                       seed: int = 0) -> Path:
    """Write ``config.json`` + ``model.safetensors`` of a random-weight model in the real architecture.

    ``architecture`` overrides the v2-50m shape (e.g. ``{"hidden_size": 64, "num_hidden_layers": 2, ...}``);
    for ``nt-v1`` the defaults are v1's vocabulary and absolute positions. ``config.json`` records
    ``"tessera": {"random_weights": true, "seed": seed}`` so every output can say its weights were random.
    """
    from safetensors.torch import save_file

    from tessera.atomic import atomic_path, write_text

    if kind == "nt-v2":
        cfg = NTv2Config.from_dict({**V2_50M, **(architecture or {})}).to_dict()
    elif kind == "nt-v1":
        cfg = {**V2_50M, "vocab_size": 4105, "max_position_embeddings": 1002, "position_embedding_type": "absolute",
               "token_dropout": True, "add_bias_fnn": True, **(architecture or {}),
               "architectures": ["EsmForMaskedLM"], "model_type": "esm"}
    else:
        raise InputError(f"model kind {kind!r} is not one of {', '.join(KINDS)}", field="genomics_model.kind",
                         fix="use nt-v2 or nt-v1")
    cfg["tessera"] = {"random_weights": True, "seed": seed}
    torch.manual_seed(seed)
    model = _build(kind, cfg, "config.json")
    init_weights(model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text(out / "config.json", json.dumps(cfg, indent=2) + "\n")
    params = sum(v.numel() for k, v in state.items() if not k.endswith("inv_freq"))
    log.info("wrote random %s (%s parameters) to %s", kind, f"{params:,}", out)
    return out


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as ``inv_freq`` excluded)."""
    return sum(p.numel() for p in model.parameters())
