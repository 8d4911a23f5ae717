"""Encoder registry: which models turn patches (and regions of patches) into feature vectors.

A **patch encoder** maps ``patch_px`` × ``patch_px`` RGB patches, normalised with its ``mean``/``std``,
to ``dim``-d vectors. A **region encoder** maps the row-major grid of one patch encoder's outputs over
a region (rows × cols patches) to one ``dim``-d vector; it names the patch encoder it reads.

Each registered name becomes an output ``results/features/{name}/`` with the same HDF5 contract, so a
further encoder (a ViT-B/16 or ViT-L/16 checkpoint, say, built with
:class:`~tessera.pathology.hipt.PatchViT`) plugs in with an :class:`EncoderSpec` and a
``pathology.weights.{name}`` entry in the config; nothing else changes. An installed package adds its
specs through the ``tessera.encoders`` entry-point group (each entry point names an :class:`EncoderSpec`
or a list of them), so workflow jobs, which run in fresh processes, see them too. HIPT ships registered:
``hipt256`` (ViT-256, 384-d per 256-px patch) and ``hipt4k`` (ViT-4K, 192-d per region, from hipt256).

Builders import torch lazily: the Snakefile reads this registry at parse time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from tessera.errors import InputError


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder. ``kind`` is ``patch`` or ``region``.

    ``build()`` returns the torch module with freshly initialised weights; ``checkpoint`` names the
    official weights file (for messages). Patch encoders set ``patch_px``, ``mean`` and ``std``
    (applied to pixels scaled to [0, 1]); region encoders set ``patch_encoder``.
    """

    name: str
    kind: str
    dim: int
    build: Callable[[], Any]
    checkpoint: str = ""
    patch_px: int = 0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    patch_encoder: str = ""


ENTRY_POINT_GROUP = "tessera.encoders"
_REGISTRY: dict[str, EncoderSpec] = {}
_plugins_loaded = False


def register(spec: EncoderSpec) -> EncoderSpec:
    """Add ``spec`` (replacing a spec of the same name); return it."""
    if spec.kind not in ("patch", "region"):
        raise ValueError(f"encoder kind must be 'patch' or 'region', not {spec.kind!r}")
    if spec.kind == "patch" and spec.patch_px <= 0:
        raise ValueError(f"patch encoder {spec.name!r} needs patch_px")
    if spec.kind == "region" and not spec.patch_encoder:
        raise ValueError(f"region encoder {spec.name!r} needs the name of its patch encoder")
    _REGISTRY[spec.name] = spec
    return spec


def _load_plugins() -> None:
    """Register the specs that installed packages declare in the ``tessera.encoders`` entry points."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        specs = point.load()
        for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
            register(spec)


def names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def get(name: str) -> EncoderSpec:
    """The spec of ``name``; an :class:`InputError` naming the known encoders otherwise."""
    _load_plugins()
    if name not in _REGISTRY:
        raise InputError(f"unknown encoder '{name}'", field="pathology.encoders",
                         fix=f"use one of {', '.join(names())}")
    return _REGISTRY[name]


@dataclass(frozen=True)
class EncoderSet:
    """The encoders of one run: exactly one patch encoder, plus region encoders built on it.

    ``outputs`` are the encoders whose features are written (the configured list); ``patch`` is also
    computed when only a region encoder built on it is asked for.
    """

    patch: EncoderSpec
    regions: tuple[EncoderSpec, ...]
    outputs: tuple[str, ...]

    @property
    def models(self) -> tuple[EncoderSpec, ...]:
        """Every model to build and load weights for."""
        return (self.patch, *self.regions)


def resolve(encoders: list[str], file: str = "config") -> EncoderSet:
    """Check a configured encoder list and return its :class:`EncoderSet`."""
    if not encoders:
        raise InputError("no encoder listed", file=file, field="pathology.encoders", fix="list e.g. [hipt256, hipt4k]")
    specs = [get(n) for n in encoders]
    needed = {s.name if s.kind == "patch" else s.patch_encoder for s in specs}
    if len(needed) != 1:
        raise InputError(
            f"encoders {encoders} need {len(needed)} different patch encoders ({', '.join(sorted(needed))})",
            file=file, field="pathology.encoders",
            fix="use one patch encoder per run (with the region encoders built on it); run another config for another",
        )
    patch = get(needed.pop())
    return EncoderSet(patch, tuple(s for s in specs if s.kind == "region"), tuple(encoders))


def _hipt256():
    from tessera.pathology.hipt import hipt_vit256

    return hipt_vit256()


def _hipt4k():
    from tessera.pathology.hipt import hipt_vit4k

    return hipt_vit4k()


register(EncoderSpec("hipt256", "patch", 384, _hipt256, checkpoint="vit256_small_dino.pth", patch_px=256))
register(EncoderSpec("hipt4k", "region", 192, _hipt4k, checkpoint="vit4k_xs_dino.pth", patch_encoder="hipt256"))
