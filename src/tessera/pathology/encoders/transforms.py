"""Tile → network input, as each model's published preprocessing does it (before ToTensor/Normalize).

The published transforms are torchvision ``Resize(size, interpolation)`` (+ ``CenterCrop(size)``) on a PIL
image: PIL's resampling, which is antialiased (the filter support widens by the scale factor when
shrinking) and rounds to uint8 before ``ToTensor``. :class:`TileTransform` runs that very PIL call on each
uint8 tile, so the network input is byte-identical to the reference's. (A resize on float tensors —
``F.interpolate(..., antialias=True)`` — cannot equal it: torch's bicubic uses a = −0.75 where PIL's uses
−0.5, and it skips the uint8 rounding: on real H&E tiles up to 9 grey levels apart for bicubic, 1 for
bilinear, on ~8 % of the values; ``benchmarks/resize_tensor_vs_pil.py`` prints the difference.)

Normalisation ``(x / 255 − mean) / std`` happens on the model's device (see :mod:`tessera.pathology.extract`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class TileTransform:
    """``resize`` the tile's shorter side to this many px (0: keep) with ``interpolation``, then
    ``crop`` a centred square of this side (0: keep). Square tiles stay square."""

    resize: int = 0
    interpolation: str = "bilinear"
    crop: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")

    def resized_px(self, tile_px: int) -> int:
        return self.resize or tile_px

    def out_px(self, tile_px: int) -> int:
        return self.crop or self.resized_px(tile_px)

    def out_mpp(self, tile_px: int, tile_mpp: float) -> float:
        """µm per input pixel: the tile's, scaled by the resize."""
        return tile_mpp * tile_px / self.resized_px(tile_px)

    def is_identity(self, tile_px: int) -> bool:
        return self.resized_px(tile_px) == tile_px and self.out_px(tile_px) == tile_px

    def describe(self, tile_px: int) -> str:
        """In words, e.g. ``resize 256 -> 224 (PIL bilinear, antialiased), centre crop 224``."""
        steps = []
        if self.resized_px(tile_px) != tile_px:
            steps.append(f"resize {tile_px} -> {self.resize} (PIL {self.interpolation}, antialiased)")
        if self.out_px(tile_px) != self.resized_px(tile_px):
            steps.append(f"centre crop {self.crop}")
        return ", ".join(steps) or "none"

    def apply(self, tiles: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 tiles → (B, P, P, 3) uint8 network inputs (the tiles themselves if identity)."""
        size = tiles.shape[1]
        if self.is_identity(size):
            return tiles
        from PIL import Image

        resample = Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.BICUBIC
        side, out = self.resized_px(size), self.out_px(size)
        top = int(round((side - out) / 2.0))  # torchvision's center_crop offsets
        result = np.empty((len(tiles), out, out, 3), np.uint8)
        for i, tile in enumerate(tiles):
            image = Image.fromarray(tile)
            if side != size:
                image = image.resize((side, side), resample)
            result[i] = np.asarray(image)[top:top + out, top:top + out]
        return result


IDENTITY = TileTransform()
