"""Settings of the feature stage (config key ``pathology``) and their checks; no torch import.

The Snakefile checks them at parse time (:func:`check_pathology_config`), so a missing weights file
or an unknown encoder stops the run before any job starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from tessera.errors import InputError
from tessera.pathology.encoders import registry
from tessera.pathology.encoders.registry import RANDOM
from tessera.uri import is_s3


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
    region_tokens: bool = False  # region encoders also store each region's grid of patch tokens (float16)

    @classmethod
    def from_config(cls, cfg: dict) -> "ExtractParams":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in cfg.items() if k in known}
        if "encoders" in values:
            values["encoders"] = tuple(values["encoders"])
        return cls(**values)


def check_pathology_config(config: dict, file: str = "config") -> registry.EncoderSet:
    """Raise :class:`InputError` for encoders, weights or grids that cannot work; return the encoders."""
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
                fix=f"give the path or s3:// URI of {spec.weights.files or 'its checkpoint'}, or 'random' for a "
                    "demo or test run (features then carry no pretrained knowledge)",
            )
        is_dir = spec.weights.layout.startswith("hf_dir")
        exists = os.path.isdir(value) if is_dir else os.path.isfile(value)
        if value != RANDOM and not is_s3(value) and not exists:
            raise InputError(f"weights {'directory' if is_dir else 'file'} '{value}' not found", file=file,
                             field=f"pathology.weights.{spec.name}",
                             fix="correct the path (relative to the working directory) or use an s3:// URI")
    patching = config.get("patching", {})
    grid = (patching.get("patch_size", 256), patching.get("target_mpp", 0.5))
    for group in encoders.groups:
        if group.regions and (group.patch_px, group.mpp) != grid:
            patch = group.patches[0]
            raise InputError(
                f"encoder '{patch.name}' reads {group.patch_px}-px patches at {group.mpp} µm/px, and its region "
                f"encoder(s) {', '.join(s.name for s in group.regions)} need the slide stage's regions on that grid, "
                f"but patching makes {grid[0]}-px patches at {grid[1]} µm/px", file=file, field="patching.patch_size",
                fix=f"set patching.patch_size to {group.patch_px} and patching.target_mpp to {group.mpp} "
                    "(the region grid and the encoder must agree)",
            )
    return encoders


def uses_random_weights(config: dict) -> list[str]:
    """Names of the encoders configured with random weights."""
    return sorted(n for n, w in (config.get("pathology", {}).get("weights", {}) or {}).items() if w == RANDOM)
