"""The slide stage's outputs measured against the demo slides' truth maps (``slides/*.truth.png``).

The truth map of a synthetic slide is the label map the generator painted it from (codes in
:data:`tessera.demo.slides.TRUTH_CODES`), sampled every ``downsample`` level-0 pixels (cohort
``README.md``, "Slide truth"). Tissue GeoJSON is rasterised onto that grid; patch boxes are cut from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tessera.demo.slides import TRUTH_CODES

ADIPOSE = TRUTH_CODES.index("adipose")


def slide_truth(cohort: str | Path) -> pd.DataFrame:
    """The cohort's ``slide_truth.tsv``, indexed by slide_id, with ``labels_png`` made absolute."""
    table = pd.read_csv(Path(cohort) / "slide_truth.tsv", sep="\t").set_index("slide_id")
    table["labels_png"] = [str(Path(cohort) / p) for p in table["labels_png"]]
    return table


def truth_labels(png: str | Path) -> np.ndarray:
    """A truth map (h, w) uint8."""
    labels = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise FileNotFoundError(f"cannot read the truth map {png}")
    return labels


def rasterise(geojson: dict, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """The polygons of a tissue GeoJSON (level-0 pixels) as a bool mask (h, w) on a truth grid: truth
    pixel (i, j), centred on level-0 (downsample·(j + ½), downsample·(i + ½)), is set when its centre
    lies inside a polygon and outside its holes (even-odd rule over all rings, row by row)."""
    h, w = shape
    segments = []
    for feature in geojson["features"]:
        for ring in feature["geometry"]["coordinates"]:
            points = np.asarray(ring, np.float64)[:, :2] / downsample - 0.5  # truth pixel-centre units
            segments.append(np.column_stack((points[:-1], points[1:])))
    mask = np.zeros(shape, bool)
    if not segments:
        return mask
    x0, y0, x1, y1 = np.concatenate(segments).T
    for row in range(h):
        crossing = (y0 <= row) != (y1 <= row)
        xs = np.sort(x0[crossing] + (row - y0[crossing]) * (x1[crossing] - x0[crossing]) / (y1[crossing] - y0[crossing]))
        for left, right in xs.reshape(-1, 2):
            mask[row, max(0, int(np.floor(left)) + 1):min(w, int(np.ceil(right)))] = True
    return mask


def enclosed_adipose(labels: np.ndarray) -> np.ndarray:
    """Adipose pixels enclosed by other tissue (not connected to the glass through adipose): (h, w) bool."""
    open_ = ((labels == 0) | (labels == ADIPOSE)).astype(np.uint8)
    padded = cv2.copyMakeBorder(open_, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    _, components = cv2.connectedComponents(padded, connectivity=4)
    outside = (components == components[0, 0])[1:-1, 1:-1]
    return (labels == ADIPOSE) & ~outside


def agreement(mask: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Pixel counts of a mask against a truth map on the same grid: ``intersection`` and ``union`` of
    tissue, and per label ``{name}_px`` (truth) and ``{name}_kept`` (inside the mask), plus the same
    for ``enclosed_adipose``."""
    tissue = labels > 0
    counts = {"intersection": int((mask & tissue).sum()), "union": int((mask | tissue).sum())}
    enclosed = enclosed_adipose(labels)
    for name, where in [*((n, labels == i) for i, n in enumerate(TRUTH_CODES) if i), ("enclosed_adipose", enclosed)]:
        counts[f"{name}_px"], counts[f"{name}_kept"] = int(where.sum()), int((where & mask).sum())
    return counts


def patch_label_counts(coords: np.ndarray, patch_size_level0: int, labels: np.ndarray, downsample: float) -> np.ndarray:
    """Truth pixels of each label inside each patch: (N, len(TRUTH_CODES)) int64.

    ``coords`` (N, 2) level-0 (x, y) of the patches' top-left corners; a truth pixel counts for a patch
    when its centre lies inside the patch.
    """
    integral = np.stack([cv2.integral((labels == i).astype(np.uint8)) for i in range(len(TRUTH_CODES))], axis=-1)
    h, w = labels.shape

    def index(level0: np.ndarray, size: int) -> np.ndarray:  # first truth pixel whose centre is ≥ level0
        return np.clip(np.ceil(level0 / downsample - 0.5), 0, size).astype(int)

    x0, y0 = index(coords[:, 0], w), index(coords[:, 1], h)
    x1, y1 = index(coords[:, 0] + patch_size_level0, w), index(coords[:, 1] + patch_size_level0, h)
    return (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]).astype(np.int64)


def measure_slide_stage(cohort: str | Path, index: pd.DataFrame, shard_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The slide stage's outputs for a demo cohort against its truth.

    ``index``: the stage's index (``patch_shard``), files relative to ``shard_dir``. Returns per
    synthetic slide the :func:`agreement` counts of its tissue GeoJSON plus ``iou``; and per patient
    ``patch_share`` (the planted texture's share of the true tissue inside the patch grids) beside
    ``planted_fraction`` (its share of all the tissue, from ``truth.tsv``).
    """
    import h5py

    from tessera.demo.textures import PLANTED_TEXTURE

    truth = slide_truth(cohort)
    planted = TRUTH_CODES.index(PLANTED_TEXTURE)
    slides, in_patches = [], {}
    for row in index[index["slide_id"].isin(truth.index)].itertuples():
        t = truth.loc[row.slide_id]
        labels = truth_labels(t["labels_png"])
        if row.status != "ok":  # no tissue found: nothing kept
            slides.append({"slide_id": row.slide_id, "patient_id": row.patient_id,
                           **agreement(np.zeros(labels.shape, bool), labels), "iou": 0.0})
            continue
        geojson = json.loads((Path(shard_dir) / row.tissue_geojson).read_text())
        counts = agreement(rasterise(geojson, labels.shape, t["downsample"]), labels)
        slides.append({"slide_id": row.slide_id, "patient_id": row.patient_id, **counts,
                       "iou": counts["intersection"] / max(1, counts["union"])})
        with h5py.File(Path(shard_dir) / row.patches_h5, "r") as f:
            per_patch = patch_label_counts(f["coords"][()], int(f.attrs["patch_size_level0"]), labels, t["downsample"])
        tissue_px, planted_px = in_patches.get(row.patient_id, (0, 0))
        in_patches[row.patient_id] = (tissue_px + per_patch[:, 1:].sum(), planted_px + per_patch[:, planted].sum())
    patients = pd.read_csv(Path(cohort) / "truth.tsv", sep="\t").set_index("patient_id")
    share = pd.Series({p: planted_px / max(1, tissue_px) for p, (tissue_px, planted_px) in in_patches.items()})
    per_patient = patients.loc[share.index, ["planted_fraction"]].assign(patch_share=share)
    return pd.DataFrame(slides).set_index("slide_id"), per_patient
