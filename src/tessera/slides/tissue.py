"""Tissue masks at low resolution, and their contours as QuPath-readable GeoJSON.

The mask is computed on an RGB overview of the slide at about ``mask_mpp`` µm/px (see
:func:`tessera.slides.patching.read_overview`). Three ways to call a pixel tissue (``method``):

``background`` (default) separates tissue from the *background*, not stained from pale tissue.
The background (glass) is estimated from the image itself: the most common luma among the bright,
nearly grey pixels, with its chroma (max - min of R, G, B) and the robust standard deviations of
both. A pixel is tissue when it is both darker than the glass (absorbs light: pale necrosis, loose
stroma and thin strands do) and more coloured than it (is stained, not grey): ``darkness >
max(min_darkness, noise_sigmas · sd)`` and ``chroma excess > max(min_colour, noise_sigmas · sd)``.
Brightness is measured on luma, which JPEG keeps at full resolution, so the halo that chroma
subsampling smears around stained tissue on coarse pyramid levels is not taken for tissue.
Artefacts are dropped as the peers do (TRIDENT's CPU segmenter drops grey and black pixels,
LazySlide keeps only pixels whose red and blue exceed green, CLAM's pen filter drops blue and green
hues): grey dust, air-bubble rims and the slide border fail the colour test; with ``remove_pen``,
pen ink (hues within :data:`PEN_HUES`) and black (brightest channel below :data:`BLACK_MAX`) are
dropped too.

``otsu`` (TRIDENT's CPU method, the default before) thresholds the HSV saturation after a median
blur at Otsu's threshold, floored at ``min_saturation``; ``fixed`` (CLAM's method) at
``saturation_threshold``. Over a slide holding strongly stained tissue, Otsu's threshold falls
between stained and pale tissue and loses the pale.

All methods then close the mask (radius ``close_um``), drop tissue pieces smaller than
``min_tissue_area_um2`` and fill holes smaller than ``min_hole_area_um2``; larger holes (lumens,
open fat) are kept. The mask is padded with background first, so nothing is cut or stretched along
the image border. Sizes are physical (µm), so the result does not depend on the magnification.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

METHODS = ("background", "otsu", "fixed")
#: Hues (degrees, from included to excluded) of pen ink and marking dye, dropped by ``remove_pen``:
#: yellow, green, cyan and blue. H&E lies outside: from purple-blue hematoxylin (240-300°, red above
#: green, as LazySlide's filter requires) through pink eosin to red and brown (0-45°).
PEN_HUES = (45.0, 240.0)
#: Pixels whose brightest channel is below this are black ink or the scanner's border, not H&E tissue.
BLACK_MAX = 60
#: Glass must be at least this bright (luma, 0-255) and at most this colourful (chroma) to count as background.
GLASS_MIN_LUMA, GLASS_MAX_CHROMA = 160, 30


@dataclass(frozen=True)
class TissueParams:
    """Tissue detection settings (config key ``patching.tissue``)."""

    mask_mpp: float = 8.0  # µm per mask pixel (about: the nearest pyramid level's grid is used)
    method: str = "background"  # one of METHODS
    min_darkness: float = 6.0  # "background": luma below the glass's, at least (0-255)
    min_colour: float = 3.0  # "background": chroma (max - min of R, G, B) above the glass's, at least (0-255)
    noise_sigmas: float = 4.0  # "background": both margins are at least this many SDs of the glass
    remove_pen: bool = True  # "background": drop pen ink and black
    saturation_threshold: int = 20  # "fixed", 0-255
    min_saturation: int = 15  # "otsu": floor for Otsu's threshold, 0-255
    median_blur_um: float = 56.0  # "otsu" and "fixed": median filter width (CLAM: 7 px at ~8 µm/px)
    close_um: float = 32.0  # closing radius
    min_tissue_area_um2: float = 4_000.0  # smaller tissue pieces are dropped
    min_hole_area_um2: float = 5_000.0  # smaller holes are filled

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown tissue method {self.method!r}; choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class Glass:
    """The background of an overview image: its luma and chroma (0-255) and their robust SDs."""

    luma: float
    chroma: float
    luma_sd: float
    chroma_sd: float


def _odd(n: float) -> int:
    n = max(1, int(round(n)))
    return n if n % 2 else n + 1


def tissue_mask(rgb: np.ndarray, mpp: float, params: TissueParams) -> np.ndarray:
    """Boolean tissue mask (h, w) of an RGB image (h, w, 3) uint8 whose pixels are ``mpp`` µm wide."""
    if params.method == "background":
        mask = _not_background(rgb, params)
    else:
        mask = _saturation_threshold(rgb, mpp, params)
    return _clean(mask, mpp, params)


def _saturation_threshold(rgb: np.ndarray, mpp: float, params: TissueParams) -> np.ndarray:
    """The ``otsu`` and ``fixed`` methods: median-blurred HSV saturation above a threshold, (h, w) uint8 0/1."""
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    saturation = cv2.medianBlur(saturation, min(_odd(params.median_blur_um / mpp), 255))
    if params.method == "otsu":
        otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = max(otsu, params.min_saturation)
    else:
        threshold = params.saturation_threshold
    return (saturation > threshold).astype(np.uint8)


def estimate_glass(luma: np.ndarray, chroma: np.ndarray) -> Glass | None:
    """The glass of an overview: the most common luma among bright, nearly grey pixels.

    ``luma``, ``chroma``: (h, w) uint8. Pure white (luma 255), which is what OpenSlide gives outside
    a scanner's scanned areas, counts only when no other pixel looks like glass. Returns None when
    under 1 % of the pixels look like glass (tissue fills the image).
    """
    enough = max(16, 0.01 * luma.size)
    candidate = (luma >= GLASS_MIN_LUMA) & (chroma <= GLASS_MAX_CHROMA)
    if (candidate & (luma < 255)).sum() >= enough:
        candidate &= luma < 255
    elif candidate.sum() < enough:
        return None
    histogram = np.bincount(luma[candidate], minlength=256).astype(np.float64)
    mode = int(np.convolve(histogram, np.ones(5), mode="same").argmax())
    glass = candidate & (np.abs(luma.astype(np.int16) - mode) <= 6)
    (lum, lum_sd), (chr_, chr_sd) = _median_and_sd(luma[glass]), _median_and_sd(chroma[glass])
    return Glass(luma=lum, chroma=chr_, luma_sd=lum_sd, chroma_sd=chr_sd)


def _median_and_sd(values: np.ndarray) -> tuple[float, float]:
    """Median and robust SD (1.4826 × median absolute deviation) of uint8 values, from histograms."""
    def median(counts: np.ndarray) -> int:
        return int(np.searchsorted(np.cumsum(counts), counts.sum() / 2))

    counts = np.bincount(values, minlength=256)
    centre = median(counts)
    deviations = np.bincount(np.abs(np.arange(256) - centre), weights=counts, minlength=256)
    return float(centre), 1.4826 * median(deviations)


def _not_background(rgb: np.ndarray, params: TissueParams) -> np.ndarray:
    """The ``background`` method's pixel test (before morphology): (h, w) uint8 0/1."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    r, g, b = cv2.split(rgb)
    brightest = cv2.max(cv2.max(r, g), b)
    chroma = cv2.subtract(brightest, cv2.min(cv2.min(r, g), b))
    glass = estimate_glass(luma, chroma)
    if glass is None:  # no glass in view: everything is tissue but the palest percent
        glass = Glass(float(np.percentile(luma, 99)), float(np.percentile(chroma, 1)), 0.0, 0.0)
    darkness_margin = max(params.min_darkness, params.noise_sigmas * glass.luma_sd)
    colour_margin = max(params.min_colour, params.noise_sigmas * glass.chroma_sd)
    tissue = (luma < glass.luma - darkness_margin) & (chroma > glass.chroma + colour_margin)
    if params.remove_pen:
        hue = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 0]
        lo, hi = (h / 2 for h in PEN_HUES)  # OpenCV's hue is degrees / 2
        tissue &= ((hue < lo) | (hue >= hi)) & (brightest >= BLACK_MAX)
    return tissue.astype(np.uint8)


def _clean(mask: np.ndarray, mpp: float, params: TissueParams) -> np.ndarray:
    """Close, drop small pieces, fill small holes; on a background-padded copy. (h, w) uint8 → bool."""
    radius = max(1, int(round(params.close_um / mpp)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Pad with background: OpenCV's morphology treats pixels beyond the border as foreground for
    # erosion, which would cut or stretch tissue along the border; and the padding joins all
    # background that touches the border into one piece, which is then not a hole.
    padded = cv2.copyMakeBorder(mask, radius, radius, radius, radius, cv2.BORDER_CONSTANT, value=0)
    padded = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
    px_area = mpp * mpp
    padded = _remove_small(padded, params.min_tissue_area_um2 / px_area)
    background = _remove_small(1 - padded, params.min_hole_area_um2 / px_area, keep=(0, 0))  # holes filled
    return (1 - background)[radius:-radius, radius:-radius].astype(bool)


def _remove_small(mask: np.ndarray, min_pixels: float, keep: tuple[int, int] | None = None) -> np.ndarray:
    """Drop 8-connected components of ``mask`` (uint8 0/1) smaller than ``min_pixels``; the one at
    pixel ``keep`` (row, column) stays whatever its size."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    kept = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    if keep is not None:
        kept[labels[keep]] = True
    kept[0] = False
    return kept[labels].astype(np.uint8)


Ring = list[list[float]]


def mask_polygons(mask: np.ndarray, scale: tuple[float, float]) -> list[tuple[Ring, list[Ring]]]:
    """Polygons of a mask as (exterior, holes), in level-0 pixels.

    ``scale`` = level-0 pixels per mask pixel (x, y). Rings are closed (first point repeated) and valid
    (never touch themselves): pixels touching only at a corner are first joined by one pixel, and the
    rings are traced on the mask enlarged 2x, so a one-pixel-wide strand has a ring of non-zero width.
    Rings run a quarter of a mask pixel inside the mask's edge. Tissue islands inside a hole become
    polygons of their own.
    """
    enlarged = _join_corner_contacts(mask.astype(np.uint8)).repeat(2, axis=0).repeat(2, axis=1)
    contours, hierarchy = cv2.findContours(enlarged, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    sx, sy = scale[0] / 2, scale[1] / 2

    def ring(contour: np.ndarray) -> Ring | None:
        pts = contour[:, 0, :].astype(np.float64)
        if len(pts) < 3:
            return None
        pts = np.column_stack(((pts[:, 0] + 0.5) * sx, (pts[:, 1] + 0.5) * sy)).round(1)
        return [*pts.tolist(), pts[0].tolist()]

    polygons = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:  # a hole; attached to its parent below
            continue
        exterior = ring(contour)
        if exterior is None:
            continue
        holes, child = [], hierarchy[i][2]
        while child != -1:
            if (r := ring(contours[child])) is not None:
                holes.append(r)
            child = hierarchy[child][0]
        polygons.append((exterior, holes))
    return polygons


def _join_corner_contacts(mask: np.ndarray) -> np.ndarray:
    """``mask`` (uint8 0/1) with every 2 x 2 block whose two set pixels touch only at a corner filled in
    by one more pixel (the block's top-right or top-left), so traced rings do not pinch."""
    mask = mask.copy()
    while True:
        a, b, c, d = mask[:-1, :-1], mask[:-1, 1:], mask[1:, :-1], mask[1:, 1:]
        falling = (a & d) & (1 - b) & (1 - c)  # set at top-left and bottom-right only
        rising = (b & c) & (1 - a) & (1 - d)  # set at top-right and bottom-left only
        if not (falling.any() or rising.any()):
            return mask
        b |= falling
        a |= rising


def polygons_geojson(polygons: list[tuple[Ring, list[Ring]]], slide_id: str) -> dict:
    """A GeoJSON FeatureCollection QuPath imports as 'Tissue' annotations (level-0 pixel coordinates)."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": f"{slide_id}-tissue-{i}",
                "geometry": {"type": "Polygon", "coordinates": [exterior, *holes]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tissue", "color": [0, 160, 0]},
                    "slide_id": slide_id,
                },
            }
            for i, (exterior, holes) in enumerate(polygons)
        ],
    }
