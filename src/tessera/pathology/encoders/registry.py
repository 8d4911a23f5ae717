"""Encoder registry: which models turn tiles (and regions of tiles) into feature vectors, and how they read.

A **patch encoder** reads ``patch_px`` × ``patch_px`` RGB tiles at ``tile_mpp`` µm/px, turns them into its
network input with its :class:`~tessera.pathology.encoders.transforms.TileTransform` (resize and centre
crop as the published preprocessing does), normalises with ``mean``/``std`` (pixels scaled to [0, 1]) and
maps them to ``dim``-d vectors. A **region encoder** maps the row-major grid of one patch encoder's
outputs over a region (rows × cols tiles) to one ``dim``-d vector; it names the patch encoder it reads.

Each registered name becomes an output ``results/features/{name}/`` with the same HDF5 contract. The
foundation models are registered in :mod:`~tessera.pathology.encoders.catalog`; an installed package adds
its own specs through the ``tessera.encoders`` entry-point group (each entry point names an
:class:`EncoderSpec` or a list of them), so workflow jobs, which run in fresh processes, see them too.

:func:`resolve` turns a configured list into an :class:`EncoderSet`: patch encoders that read the same tile
size at the same resolution form one :class:`GridGroup` (one grid, one read of each tile, each encoder's
own transform); region encoders join the group of their patch encoder.

Builders import torch lazily: the Snakefile reads this registry at parse time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from tessera.errors import InputError
from tessera.pathology.encoders.transforms import IDENTITY, TileTransform

#: The weights setting that asks for random weights (demo and tests).
RANDOM = "random"


@dataclass(frozen=True)
class Checkpoint:
    """What a weights setting must point at, and how its tensors map onto the model.

    ``files``: the published file(s) (messages, docs); ``layout``: ``file`` (one state-dict file) or
    ``hf_dir:{model_type}`` (a transformers directory: ``config.json`` + ``model.safetensors`` /
    ``pytorch_model.bin``, loaded by the stock class of that model type).
    ``select``: keep only keys under this prefix and strip it (e.g. CONCH's ``visual.``); ``ignore``: key
    prefixes dropped after that (parts of the published file the features never use, each stated);
    ``adapt``: a stated transformation of the state dict before strict loading (or None).
    """

    files: str = ""
    layout: str = "file"
    select: str = ""
    ignore: tuple[str, ...] = ()
    adapt: Callable[[dict, Any], dict] | None = None
    licence: str = ""
    gated: str = ""  # how access is granted ('' = openly downloadable)


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder. ``kind`` is ``patch`` or ``region``.

    ``build()`` returns the torch module with freshly initialised weights; ``checkpoint`` names the
    official weights (a file name, or a :class:`Checkpoint`). Patch encoders set ``patch_px`` (tile read
    size at ``tile_mpp``), ``transform``, ``mean`` and ``std``; region encoders set ``patch_encoder``.
    ``output`` says in words what one row is; ``n_params`` is the published backbone size (tested).
    """

    name: str
    kind: str
    dim: int
    build: Callable[[], Any]
    checkpoint: str | Checkpoint = ""
    patch_px: int = 0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    patch_encoder: str = ""
    tile_mpp: float = 0.5
    transform: TileTransform = IDENTITY
    output: str = "CLS token after the final norm"
    n_params: int = 0

    @property
    def weights(self) -> Checkpoint:
        return self.checkpoint if isinstance(self.checkpoint, Checkpoint) else Checkpoint(files=self.checkpoint)

    @property
    def input_px(self) -> int:
        """Side of the network input after the transform."""
        return self.transform.out_px(self.patch_px)

    @property
    def input_mpp(self) -> float:
        """µm per pixel the network sees (the tile's, changed by any resize)."""
        return self.transform.out_mpp(self.patch_px, self.tile_mpp)

    @property
    def grid(self) -> tuple[int, float]:
        """(tile px, µm/px): encoders with the same grid share one read."""
        return self.patch_px, self.tile_mpp


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
    """Register the catalogue and the specs that installed packages declare in ``tessera.encoders``."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from tessera.pathology.encoders import catalog  # noqa: F401  (registers on import)

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
class GridGroup:
    """Encoders that share one grid: ``patch_px`` tiles at ``mpp``, each tile read once.

    ``patches``: the patch encoders run on every tile (outputs, and those a region encoder needs);
    ``regions``: region encoders built on one of them (their regions need every tile of each region).
    """

    patch_px: int
    mpp: float
    patches: tuple[EncoderSpec, ...]
    regions: tuple[EncoderSpec, ...] = ()

    @property
    def models(self) -> tuple[EncoderSpec, ...]:
        return (*self.patches, *self.regions)

    @property
    def transforms(self) -> tuple[TileTransform, ...]:
        """The distinct transforms of the group's patch encoders, in first-use order."""
        return tuple(dict.fromkeys(s.transform for s in self.patches))


@dataclass(frozen=True)
class EncoderSet:
    """The encoders of one run, grouped by grid. ``outputs``: the encoders whose features are written
    (the configured list); a patch encoder only a region encoder needs is computed but not written."""

    groups: tuple[GridGroup, ...]
    outputs: tuple[str, ...]

    @property
    def models(self) -> tuple[EncoderSpec, ...]:
        """Every model to build and load weights for."""
        return tuple(s for g in self.groups for s in g.models)


def resolve(encoders: list[str], file: str = "config") -> EncoderSet:
    """Check a configured encoder list and return its :class:`EncoderSet` (groups in first-use order)."""
    if not encoders:
        raise InputError("no encoder listed", file=file, field="pathology.encoders", fix="list e.g. [hipt256, hipt4k]")
    specs = [get(n) for n in encoders]
    patches = list(dict.fromkeys(get(s.patch_encoder if s.kind == "region" else s.name).name for s in specs))
    for s in specs:
        if s.kind == "region" and get(s.patch_encoder).kind != "patch":
            raise InputError(f"region encoder '{s.name}' reads '{s.patch_encoder}', which is not a patch encoder",
                             file=file, field="pathology.encoders", fix="register it with a patch encoder")
    grids: dict[tuple[int, float], list[EncoderSpec]] = {}
    for name in patches:
        spec = get(name)
        grids.setdefault(spec.grid, []).append(spec)
    groups = []
    for (px, mpp), members in grids.items():
        names_here = {m.name for m in members}
        regions = tuple(s for s in specs if s.kind == "region" and s.patch_encoder in names_here)
        groups.append(GridGroup(px, mpp, tuple(members), regions))
    return EncoderSet(tuple(groups), tuple(encoders))
