"""An opened whole-slide image: pyramid geometry, microns per pixel, pixel reads.

Wraps OpenSlide, so every format it reads works. Only pyramid levels are ever read: the slide's
associated images (``label``, ``macro``, ``thumbnail``) carry patient names and are never touched,
and no slide property is copied anywhere except MPP and objective power.

MPP (µm per level-0 pixel) is resolved in this order, and where it came from is recorded:

1. ``sheet``: the ``mpp`` column of the slide sheet, an explicit override by the user (scanner
   metadata is sometimes wrong, and the user must be able to correct it);
2. ``openslide``: the vendor metadata OpenSlide reports (``openslide.mpp-x`` / ``-y``);
3. ``tiff``: the TIFF resolution tags (``XResolution`` with unit centimetre or inch);

otherwise the slide fails with an error saying how to fix it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import openslide

from tessera.errors import SlideError

#: Plausible MPP range for brightfield slides (0.05 µm/px = 200x ... 20 µm/px = 0.5x).
MPP_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class Pyramid:
    """Geometry of a slide's pyramid. Level 0 is the full resolution."""

    dimensions: tuple[tuple[int, int], ...]  # (width, height) per level, pixels
    downsamples: tuple[float, ...]  # level-0 pixels per level pixel

    @property
    def width(self) -> int:
        return self.dimensions[0][0]

    @property
    def height(self) -> int:
        return self.dimensions[0][1]

    def level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (1 % tolerance).

        Reading from it and resampling down never upsamples, so no detail is invented.
        """
        fits = [i for i, d in enumerate(self.downsamples) if d <= downsample * 1.01]
        return max(fits, key=lambda i: self.downsamples[i]) if fits else 0

    def nearest_level(self, downsample: float) -> int:
        """The level nearest to ``downsample`` in log scale; ties (within 1 %) go to the coarser, cheaper level.

        Real pyramids have inexact downsamples (64.01 for a 100,000-px slide), hence the tolerance.
        """
        distance = [round(abs(math.log(d / downsample)), 2) for d in self.downsamples]
        return min(range(len(distance)), key=lambda i: (distance[i], -self.downsamples[i]))


def _mpp_from_properties(props: dict[str, str]) -> float | None:
    x, y = props.get(openslide.PROPERTY_NAME_MPP_X), props.get(openslide.PROPERTY_NAME_MPP_Y)
    values = [float(v) for v in (x, y) if v not in (None, "")]
    return float(np.mean(values)) if values else None


def _mpp_from_tiff_tags(props: dict[str, str]) -> float | None:
    unit = props.get("tiff.ResolutionUnit", "").lower()
    microns_per_unit = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
    res = [float(props[k]) for k in ("tiff.XResolution", "tiff.YResolution") if props.get(k)]
    if microns_per_unit is None or not res or min(res) <= 0:
        return None
    return microns_per_unit / float(np.mean(res))


def _plausible(mpp: float | None) -> bool:
    return mpp is not None and math.isfinite(mpp) and MPP_RANGE[0] <= mpp <= MPP_RANGE[1]


class Slide:
    """A whole-slide image opened read-only.

    Attributes: ``pyramid`` (:class:`Pyramid`), ``mpp`` (µm per level-0 pixel), ``mpp_source``
    (``sheet`` | ``openslide`` | ``tiff``), ``objective_power`` (from metadata, else ``10 / mpp``).
    Raises :class:`SlideError` when the file is missing or unreadable, or has no usable MPP.
    """

    def __init__(self, path: str | os.PathLike, mpp_override: float | None = None) -> None:
        self.path = str(path)
        if not os.path.exists(self.path):
            raise SlideError(f"slide file not found: {self.path}. Fix: correct the path in the slide sheet")
        try:
            self._osr = openslide.OpenSlide(self.path)
        except (openslide.OpenSlideError, OSError) as e:
            raise SlideError(
                f"cannot open slide {self.path}: {e}. Fix: check the file is a complete whole-slide image "
                "in a format OpenSlide reads (copy it again if it was truncated)"
            ) from e
        props = dict(self._osr.properties)
        self.pyramid = Pyramid(tuple(self._osr.level_dimensions), tuple(float(d) for d in self._osr.level_downsamples))
        self.mpp, self.mpp_source = self._resolve_mpp(props, mpp_override)
        power = props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        self.objective_power = float(power) if power else 10.0 / self.mpp

    def _resolve_mpp(self, props: dict[str, str], override: float | None) -> tuple[float, str]:
        if override is not None and not (isinstance(override, float) and math.isnan(override)):
            return float(override), "sheet"
        for source, mpp in (("openslide", _mpp_from_properties(props)), ("tiff", _mpp_from_tiff_tags(props))):
            if _plausible(mpp):
                return float(mpp), source
        raise SlideError(
            f"no microns-per-pixel for {self.path}: neither the scanner metadata nor the TIFF resolution tags "
            "give a plausible value. Fix: add the level-0 MPP (e.g. 0.25 for 40x, 0.5 for 20x) in the 'mpp' "
            "column of the slide sheet"
        )

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB pixels (height, width, 3) uint8 of a box at ``level``; (x, y) in level-0 pixels.

        Areas outside the scanned region (transparent in OpenSlide) are white, not black.
        """
        try:
            rgba = np.asarray(self._osr.read_region((int(x), int(y)), level, (int(width), int(height))))
        except openslide.OpenSlideError as e:
            raise SlideError(f"cannot read pixels of {self.path} at level {level}: {e}. Fix: the file is corrupt; "
                             "copy or export it again") from e
        return composite_on_white(rgba)

    def read_level(self, level: int) -> np.ndarray:
        """The whole pyramid level as RGB (height, width, 3) uint8."""
        w, h = self.pyramid.dimensions[level]
        return self.read_region(0, 0, level, w, h)

    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA (h, w, 4) uint8 with straight alpha → RGB (h, w, 3) uint8 over a white background."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32) / 255.0
    return np.round(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
