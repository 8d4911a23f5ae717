"""Synthetic H&E-like tissue textures for the demo slides, at 0.25 µm/px (40x).

Five clearly different textures, drawn with a fixed random generator:

- ``tumour``: large, crowded, irregular purple nuclei on a lilac cytoplasm background;
- ``stroma``: pink wavy collagen fibres with sparse spindle-shaped nuclei;
- ``lymphocytes``: dense small round dark nuclei on pale pink;
- ``adipose``: large empty (white) fat cells with thin pink membranes;
- ``necrosis``: pale grey-pink eosinophilic debris with scattered nuclear fragments — the planted
  texture whose share of a patient's tissue drives the demo's survival times.
"""

from __future__ import annotations

import cv2
import numpy as np

TEXTURES = ("tumour", "stroma", "lymphocytes", "adipose", "necrosis")
PLANTED_TEXTURE = "necrosis"
BACKGROUND_RGB = (243, 241, 244)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Smooth random field in [0, 1] with features about ``scale_px`` pixels wide."""
    h, w = shape
    small = rng.random((max(2, int(h / scale_px) + 2), max(2, int(w / scale_px) + 2))).astype(np.float32)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, 1e-6)


def _base(rng: np.random.Generator, shape: tuple[int, int], rgb: tuple[int, int, int], jitter: float) -> np.ndarray:
    mod = 1.0 + jitter * (smooth_noise(rng, shape, 60.0) - 0.5)
    return np.asarray(rgb, np.float32)[None, None, :] * mod[..., None]  # clipped when the slide is assembled


def _nuclei(
    rng: np.random.Generator, img: np.ndarray, density: float, radius: tuple[float, float],
    elongation: tuple[float, float], rgb: tuple[int, int, int],
) -> None:
    """Draw filled ellipses (nuclei) in place; ``density`` in nuclei per 10,000 px²."""
    h, w = img.shape[:2]
    n = rng.poisson(density * h * w / 1e4)
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    radii = rng.uniform(*radius, n)
    ratios = rng.uniform(*elongation, n)
    angles = rng.uniform(0, 180, n)
    shades = rng.uniform(0.8, 1.15, n)
    for x, y, r, e, a, s in zip(xs, ys, radii, ratios, angles, shades):
        colour = tuple(float(min(255.0, c * s)) for c in rgb)
        cv2.ellipse(img, (int(x), int(y)), (max(1, int(r * e)), max(1, int(r))), float(a), 0, 360, colour, -1)


def render(name: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An RGB float32 image (h, w, 3) of the named texture."""
    h, w = shape
    if name == "tumour":
        img = _base(rng, shape, (205, 150, 200), 0.12)
        _nuclei(rng, img, 3.2, (14, 22), (1.0, 1.6), (95, 55, 145))
    elif name == "stroma":
        img = _base(rng, shape, (236, 160, 190), 0.08)
        waves = np.sin(np.arange(h)[:, None] / 9.0 + 6 * smooth_noise(rng, shape, 200.0)) * 0.5 + 0.5
        img *= (0.88 + 0.12 * waves)[..., None]
        _nuclei(rng, img, 0.35, (5, 7), (3.0, 4.5), (120, 70, 150))
    elif name == "lymphocytes":
        img = _base(rng, shape, (232, 195, 218), 0.08)
        _nuclei(rng, img, 9.0, (7, 10), (1.0, 1.15), (55, 35, 110))
    elif name == "adipose":
        img = np.full((h, w, 3), 250.0, np.float32)
        seeds = max(4, int(h * w / 160**2))
        subdiv = cv2.Subdiv2D((0, 0, w, h))
        for x, y in zip(rng.uniform(1, w - 1, seeds), rng.uniform(1, h - 1, seeds)):
            subdiv.insert((float(x), float(y)))
        facets, _ = subdiv.getVoronoiFacetList([])
        for facet in facets:
            cv2.polylines(img, [facet.astype(np.int32)], True, (228, 140, 185), 5)
        _nuclei(rng, img, 0.05, (5, 7), (2.0, 3.0), (120, 70, 150))
    elif name == "necrosis":
        img = _base(rng, shape, (222, 188, 200), 0.25)
        _nuclei(rng, img, 2.5, (2, 5), (1.0, 2.0), (150, 105, 160))
        _nuclei(rng, img, 0.6, (8, 14), (1.0, 1.5), (200, 150, 180))
    else:
        raise ValueError(f"unknown texture {name!r}; choose from {TEXTURES}")
    return img
