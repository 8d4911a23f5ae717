"""How far a resize on tensors lands from the published PIL resize, on real H&E tiles.

The encoders' published transforms are torchvision ``Resize`` on PIL images (antialiased PIL filters,
rounded to uint8); tessera runs that PIL call (``tessera.pathology.encoders.transforms``). A GPU-side
resize, ``torch.nn.functional.interpolate(..., antialias=True)`` on the float tile, is the tempting
shortcut: this prints, per resize the registered encoders use, how many grey levels it is off (after
rounding to uint8) on every full 256- or 512-px tile of the CMU-1 H&E slide at level 0.

    .venv/bin/python benchmarks/resize_tensor_vs_pil.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import torch

from tessera.pathology.encoders.transforms import TileTransform

REPO = Path(__file__).resolve().parents[1]
SLIDE = REPO / "src" / "tessera" / "demo" / "data" / "CMU-1-Small-Region.svs"
#: (tile px, resize px, interpolation, encoders using it)
RESIZES = [
    (256, 224, "bilinear", "uni_v1, uni_v2, kaiko-*"),
    (512, 448, "bilinear", "conch_v15"),
    (512, 448, "bicubic", "conch_v1"),
]


def tiles(px: int) -> np.ndarray:
    """(N, px, px, 3) uint8: every whole px-sized tile of the slide's level 0."""
    with openslide.OpenSlide(str(SLIDE)) as slide:
        width, height = slide.dimensions
        image = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
    return np.stack([image[y:y + px, x:x + px] for y in range(0, height - px + 1, px)
                     for x in range(0, width - px + 1, px)])


def main() -> None:
    header = ("resize", "used by", "tiles", "max |diff|", "mean |diff|", "pixels off")
    print(f"{header[0]:<22} {header[1]:<28} {header[2]:>5} {header[3]:>10} {header[4]:>11} {header[5]:>10}")
    for tile_px, out_px, interpolation, used_by in RESIZES:
        batch = tiles(tile_px)
        pil = TileTransform(resize=out_px, interpolation=interpolation).apply(batch).astype(np.int16)
        tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        resized = torch.nn.functional.interpolate(tensor, size=(out_px, out_px), mode=interpolation,
                                                  antialias=True)
        torch_u8 = resized.round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.int16)
        diff = np.abs(torch_u8 - pil)
        print(f"{tile_px} -> {out_px} {interpolation:<12} {used_by:<28} {len(batch):>5} {diff.max():>10} "
              f"{diff.mean():>11.3f} {(diff > 0).mean():>10.1%}")


if __name__ == "__main__":
    main()
