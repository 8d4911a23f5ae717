"""Settings of the feature stage (config key ``pathology``) and their checks; no torch import.

The Snakefile checks them at parse time (:func:`check_pathology_config`), so a missing weights file
or an unknown encoder stops the run before any job starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from tessera.errors import InputError
from tessera.pathology import registry
from tessera.uri import is_s3

RANDOM = "random"


@dataclass(frozen=True)
class ExtractParams:
    """Settings of the feature stage; each is described in config/README.md (section ``pathology``)."""

    encoders: tuple[str, ...] = ("hipt256", "hipt4k")
    weights: dict = field(default_factory=dict)  # encoder → path | s3:// URI | "random"
    random_seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 64
    num_workers: int = 4
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: bool = True  # CUDA only
    tile_cache_mb: int = 64  # per worker
    resume_dir: str = ".tessera/resume/features"

    @classmethod
    def from_config(cls, cfg: dict) -> "ExtractParams":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in cfg.items() if k in known}
        if "encoders" in values:
            values["encoders"] = tuple(values["encoders"])
        return cls(**values)


def check_pathology_config(config: dict, file: str = "config") -> registry.EncoderSet:
    """Raise :class:`InputError` for encoders, weights or patch size that cannot work; return the encoders."""
    cfg = config.get("pathology", {})
    encoders = registry.resolve(list(cfg.get("encoders", ExtractParams.encoders)), file=file)
    weights = cfg.get("weights", {}) or {}
    for spec in encoders.models:
        value = weights.get(spec.name)
        if not value:
            raise InputError(
                f"no weights for encoder '{spec.name}'" + (f" (needed by {', '.join(encoders.outputs)})"
                                                           if spec.name not in encoders.outputs else ""),
                file=file, field=f"pathology.weights.{spec.name}",
                fix=f"give the path or s3:// URI of {spec.checkpoint or 'its checkpoint'}, or 'random' for a "
                    "demo or test run (features then carry no pretrained knowledge)",
            )
        if value != RANDOM and not is_s3(value) and not os.path.isfile(value):
            raise InputError(f"weights file '{value}' not found", file=file, field=f"pathology.weights.{spec.name}",
                             fix="correct the path (relative to the working directory) or use an s3:// URI")
    patch_size = config.get("patching", {}).get("patch_size", 256)
    if patch_size != encoders.patch.patch_px:
        raise InputError(
            f"encoder '{encoders.patch.name}' reads {encoders.patch.patch_px}-px patches but patching.patch_size is "
            f"{patch_size}", file=file, field="patching.patch_size",
            fix=f"set patching.patch_size to {encoders.patch.patch_px} (the patch grid and the encoder must agree)",
        )
    return encoders


def uses_random_weights(config: dict) -> list[str]:
    """Names of the encoders configured with random weights."""
    return sorted(n for n, w in (config.get("pathology", {}).get("weights", {}) or {}).items() if w == RANDOM)
