"""Model weights: official checkpoints loaded strictly and safely, or random weights when asked for.

Accepted weights (local path or ``s3://`` URI), per the encoder's
:class:`~tessera.pathology.encoders.registry.Checkpoint`:

* a timm state dict as the foundation models publish it (``pytorch_model.bin`` = ``torch.save(state_dict)``,
  or ``model.safetensors``), keys as timm names them; CONCH's files hold more than the image tower and
  their spec states which keys are used (``select``) and which are not (``ignore``);
* a transformers directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``) for the
  Phikon models: the architecture is built from its ``config.json`` (no remote code);
* PyTorch pickles such as HIPT's ``vit256_small_dino.pth`` / ``vit4k_xs_dino.pth``: full DINO training
  dicts with the weights under ``teacher`` (else ``state_dict`` or ``model``, else the dict itself),
  keys prefixed ``backbone.`` (and ``module.`` when saved from DDP), the DINO projection head
  ``head.*``, optimizer state, and an ``argparse.Namespace`` under ``args``. They are unpickled with
  ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allow-listed: nothing else can run.
* safetensors files (the same keys, with or without the prefixes).

Loading is strict, unlike the official ``strict=False``: every parameter of the model must be present
with its shape, and no key may be left over except the stated ones (the DINO head); otherwise an
:class:`~tessera.errors.InputError` lists what is missing, unexpected or mismatched. The file's SHA-256
is recorded with the outputs.

``random`` builds the architecture with DINO's initialisation from a fixed seed (the same weights in
every job, so shards stay comparable); outputs then say so, and a warning is logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera.checksum import sha256_file
from tessera.errors import InputError
from tessera.pathology.encoders.registry import RANDOM, Checkpoint, EncoderSpec
from tessera.uri import local_file

log = logging.getLogger(__name__)
#: The only non-torch type the official DINO checkpoints need to unpickle.
SAFE_GLOBALS = [argparse.Namespace]
#: Sub-dicts that hold the weights, in order of preference (DINO saves ``teacher`` and ``student``).
WEIGHT_KEYS = ("teacher", "state_dict", "model")
#: Weights files of a transformers directory, in order of preference (the first present is loaded).
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Key prefixes stripped from the front of every key, in this order.
PREFIXES = ("module.", "backbone.")


@dataclass(frozen=True)
class Weights:
    """Where an encoder's weights came from: ``source`` (path/URI or ``random``), ``sha256`` of the file."""

    source: str
    sha256: str
    random: bool
    seed: int | None = None

    def attrs(self, prefix: str = "weights") -> dict[str, object]:
        """HDF5 attributes: ``{prefix}``, ``{prefix}_sha256``, ``{prefix}_random`` (and ``_seed`` if random)."""
        out: dict[str, object] = {prefix: self.source, f"{prefix}_sha256": self.sha256, f"{prefix}_random": self.random}
        if self.random:
            out[f"{prefix}_seed"] = self.seed
        return out


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path)


def read_checkpoint(path: str | os.PathLike, *, label: str | None = None) -> object:
    """The object stored in a checkpoint file, unpickled with the allow-list only (or safetensors)."""
    path = Path(path)
    label = label or str(path)
    if _is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle refusals and corrupt archives alike
        detail = str(e).strip().splitlines()
        unsupported = [line.strip() for line in detail if "Unsupported global" in line or "GLOBAL" in line]
        raise InputError(
            "cannot read the checkpoint safely: "
            + ("it needs a type outside the allow-list (" + "; ".join(unsupported[:3]) + ")" if unsupported
               else f"{type(e).__name__}: {detail[-1] if detail else e}"),
            file=label,
            fix="give a PyTorch state dict or DINO checkpoint (tensors, plain containers, argparse.Namespace), or "
                "convert the weights to safetensors; tessera never unpickles arbitrary objects",
        ) from e


def backbone_state_dict(obj: object, *, label: str = "checkpoint", checkpoint: Checkpoint = Checkpoint()
                        ) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint object: sub-dict chosen, prefixes stripped, the spec's mapping applied.

    ``checkpoint.select`` keeps only keys under that prefix (stripped); ``checkpoint.ignore`` drops keys
    under those prefixes (after selection), each logged.
    """
    state = obj
    if isinstance(obj, dict):
        for key in WEIGHT_KEYS:
            if isinstance(obj.get(key), dict):
                log.info("%s: weights taken from '%s'", label, key)
                state = obj[key]
                break
    if not isinstance(state, dict) or not state:
        raise InputError("holds no state dict", file=label,
                         fix="give a file with a 'teacher' or 'state_dict' dict, or a flat name → tensor dict")
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, int] = {}
    for key, value in state.items():
        name = str(key)
        for prefix in PREFIXES:
            name = name.removeprefix(prefix)
        if checkpoint.select:
            if not name.startswith(checkpoint.select):
                dropped[checkpoint.select + " (not selected)"] = dropped.get(checkpoint.select + " (not selected)", 0) + 1
                continue
            name = name[len(checkpoint.select):]
        ignored = next((p for p in checkpoint.ignore if name.startswith(p)), None)
        if ignored is not None:
            dropped[ignored] = dropped.get(ignored, 0) + 1
            continue
        if not isinstance(value, torch.Tensor):
            raise InputError(f"entry '{key}' is a {type(value).__name__}, not a tensor", file=label,
                             fix="point the weights setting at a checkpoint of model parameters")
        out[name] = value
    for prefix, n in dropped.items():
        log.info("%s: ignored %d tensors (%s*), unused by the features", label, n, prefix)
    return out


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, label: str, expected_file: str = "") -> None:
    """Copy ``state`` into ``model``; every parameter must match by name and shape, nothing may be left over."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{len(missing)} missing: {_listing(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_listing(unexpected)}" if unexpected else "",
                 f"{len(mismatched)} with another shape: {_listing(mismatched)}" if mismatched else ""]
        raise InputError(
            f"does not fit the {type(model).__name__} architecture ({len(own)} tensors expected): "
            + "; ".join(p for p in parts if p),
            file=label,
            fix=f"point the weights at the right checkpoint{f' ({expected_file})' if expected_file else ''}, "
                "for the same architecture",
        )
    own_meta = any(t.is_meta for t in own.values())
    if own_meta:  # a model built on the meta device takes the tensors themselves, in its own dtypes
        state = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=own_meta)
    if own_meta and any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise RuntimeError(f"{type(model).__name__} has tensors outside its state dict; build it off the meta device")


def _load_file(spec: EncoderSpec, weights: str) -> tuple[torch.nn.Module, Weights]:
    """The model of ``spec`` with the tensors of one state-dict file (local or ``s3://``)."""
    ckpt = spec.weights
    with local_file(weights) as path:
        if not path.is_file():
            raise InputError(f"weights file not found for encoder '{spec.name}'", file=str(weights),
                             field=f"pathology.weights.{spec.name}", fix="correct the path or URI")
        digest = sha256_file(path)
        state = backbone_state_dict(read_checkpoint(path, label=str(weights)), label=str(weights), checkpoint=ckpt)
    with torch.device("meta"):  # no memory and no random init for weights about to be replaced
        model = spec.build()
    if ckpt.adapt is not None:
        state = ckpt.adapt(state, model)
    load_strict(model, state, label=str(weights), expected_file=ckpt.files)
    log.info("encoder %s: loaded %d tensors from %s (sha256 %s)", spec.name, len(state), weights, digest)
    return model, Weights(str(weights), digest, False)


def _load_hf_dir(spec: EncoderSpec, weights: str) -> tuple[torch.nn.Module, Weights]:
    """The stock transformers model of a directory (local or ``s3://`` prefix), loaded strictly."""
    from tessera.genomics.nt import _fetch
    from tessera.pathology.encoders.hf import load_dir

    ckpt = spec.weights
    with tempfile.TemporaryDirectory(prefix="tessera-encoder-") as tmp:
        local = Path(weights) if not weights.startswith("s3://") else Path(tmp)
        if not local.is_dir():
            raise InputError(f"weights directory not found for encoder '{spec.name}'", file=str(weights),
                             field=f"pathology.weights.{spec.name}", fix=f"give the directory (or s3:// prefix) "
                             f"holding {ckpt.files}")
        files = [_fetch(str(weights), name, Path(tmp)) for name in ("config.json", *HF_WEIGHTS)]
        present = [f for f in files[1:] if f is not None]
        if files[0] is None or not present:
            raise InputError("no config.json and weights in the model directory", file=str(weights),
                             field=f"pathology.weights.{spec.name}", fix=f"give the directory holding {ckpt.files}")
        digest = sha256_file(present[0])
        model = load_dir(local, ckpt.layout.removeprefix("hf_dir:"), ckpt.ignore, label=str(present[0]))
    log.info("encoder %s: loaded %s (sha256 %s)", spec.name, present[0], digest)
    return model, Weights(str(weights), digest, False)


def build_encoder(spec: EncoderSpec, weights: str, seed: int = 0) -> tuple[torch.nn.Module, Weights]:
    """The encoder of ``spec`` in eval mode, with ``weights`` (a path, an ``s3://`` URI or ``random``).

    Random weights come from ``torch.manual_seed(seed)`` in a forked RNG (the caller's RNG is untouched).
    """
    if not weights:
        raise InputError(f"no weights given for encoder '{spec.name}'", field=f"pathology.weights.{spec.name}",
                         fix=f"set it to the path or s3:// URI of {spec.weights.files or 'its checkpoint'}, or to 'random'")
    if weights == RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = spec.build()
        log.warning("encoder %s uses RANDOM weights (seed %d): its features carry no pretrained knowledge; "
                    "set pathology.weights.%s to a checkpoint for real use", spec.name, seed, spec.name)
        info = Weights(RANDOM, "", True, seed)
    elif spec.weights.layout.startswith("hf_dir"):
        model, info = _load_hf_dir(spec, str(weights))
    else:
        model, info = _load_file(spec, str(weights))
    model.eval().requires_grad_(False)
    return model, info
