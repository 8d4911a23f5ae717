"""Cluster maps: every patch of a slide coloured by its cluster, over a thumbnail of the slide.

The ``n_colours`` clusters ranked highest get distinct colours (matplotlib's tab10, then tab20); every
other cluster is drawn in grey, so the map shows where the patterns that drive risk lie. The thumbnail
is read from the slide's pyramid levels (never its label, macro or embedded thumbnail image).
"""

from __future__ import annotations

import os

import cv2
import h5py
import numpy as np
import pandas as pd
from matplotlib import colormaps

from tessera.slides.patching import _read_downsampled
from tessera.slides.slide import Slide
from tessera.uri import local_file

OTHER = (170, 170, 170)


def palette(ranked_clusters: list[int], n_colours: int = 10) -> dict[int, tuple[int, int, int]]:
    """Cluster → RGB: distinct colours for the first ``n_colours`` of ``ranked_clusters``, grey for the rest."""
    cmap = colormaps["tab10" if n_colours <= 10 else "tab20"]
    out = {}
    for i, c in enumerate(ranked_clusters):
        out[int(c)] = tuple(int(round(255 * v)) for v in cmap(i % cmap.N)[:3]) if i < n_colours else OTHER
    return out


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def read_thumbnail(path: str, mpp: float | None, max_px: int) -> tuple[np.ndarray, tuple[float, float]]:
    """RGB thumbnail (longest side about ``max_px``) and level-0 pixels per thumbnail pixel (x, y)."""
    with local_file(path) as local, Slide(local, mpp_override=mpp) as slide:
        pyr = slide.pyramid
        return _read_downsampled(slide, max(1.0, max(pyr.width, pyr.height) / max_px), prefer_coarser=False)


def draw(thumb: np.ndarray, scale: tuple[float, float], coords: np.ndarray, clusters: np.ndarray, size_level0: int,
         colours: dict[int, tuple[int, int, int]], alpha: float = 0.55) -> np.ndarray:
    """``thumb`` with each patch (level-0 ``coords`` (N, 2), ``size_level0`` px) filled in its cluster's colour."""
    sx, sy = scale
    paint = np.zeros_like(thumb)
    painted = np.zeros(thumb.shape[:2], np.uint8)
    for (x, y), c in zip(coords, clusters):
        p0 = (int(x / sx), int(y / sy))
        p1 = (int((x + size_level0) / sx) - 1, int((y + size_level0) / sy) - 1)
        cv2.rectangle(paint, p0, p1, colours.get(int(c), OTHER), -1)
        cv2.rectangle(painted, p0, p1, 1, -1)
    blended = cv2.addWeighted(paint, alpha, thumb, 1 - alpha, 0)
    out = np.where(painted[..., None] > 0, blended, thumb)
    return out.astype(np.uint8)


def choose_slides(counts: pd.DataFrame, ranked_clusters: list[int], n_maps: int) -> list[tuple[str, int]]:
    """Slides to map: for each top-ranked cluster in turn, the slide where it covers the largest share.

    ``counts``: slide_id, cluster, n_patches. Returns (slide_id, cluster) pairs, each slide at most once.
    """
    if counts.empty or n_maps <= 0:
        return []
    share = counts.assign(share=counts["n_patches"] / counts.groupby("slide_id")["n_patches"].transform("sum"))
    chosen: list[tuple[str, int]] = []
    for c in ranked_clusters:
        rows = share[(share["cluster"] == c) & ~share["slide_id"].isin([s for s, _ in chosen])]
        if len(rows):
            chosen.append((rows.sort_values(["share", "slide_id"], ascending=[False, True]).iloc[0]["slide_id"], int(c)))
        if len(chosen) == n_maps:
            break
    return chosen


def read_labels(labels_h5: str | os.PathLike, slide_id: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Level-0 coords (N, 2), cluster (N,) and patch size (level-0 px) of one slide from an assignment shard."""
    with h5py.File(labels_h5, "r") as f:
        g = f[slide_id]
        return g["coords"][()], g["cluster"][()], int(g.attrs["patch_size_level0"])
