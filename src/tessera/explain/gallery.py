"""Galleries: per cluster, the patches nearest its centroid, one per patient, read from the slides.

A patient's patches all lie in one shard, so each assignment shard picks, per cluster, its
``gallery_size`` patients nearest the centroid and reads those patches; the report keeps the cohort's
``gallery_size`` nearest of all shards' candidates, which are exactly the cohort-wide nearest.

Patches are read from the slide's pyramid levels only (never its label or macro image) at the level
that holds at least ``gallery_px`` pixels across the patch, resampled to ``gallery_px`` (for 256-px
patches at the target resolution, that is the patch as the encoder saw it). Candidates are stored per
shard as ``gallery.tsv`` (cluster, patient_id, slide_id, x, y, size_level0, distance, status) and
``gallery.h5`` (dataset ``jpeg``: one variable-length uint8 JPEG per row of the table; empty where the
slide could not be read, with the reason in ``status``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd

from tessera.atomic import atomic_path
from tessera.errors import SlideError, TesseraError
from tessera.slides.slide import Slide
from tessera.uri import local_file

log = logging.getLogger(__name__)

JPEG_QUALITY = 88


def read_patch(slide: Slide, x: int, y: int, size_level0: int, out_px: int) -> np.ndarray:
    """RGB (out_px, out_px, 3) uint8 of the level-0 box (x, y, size_level0²), read from a pyramid level."""
    pyr = slide.pyramid
    level = pyr.level_for_downsample(size_level0 / out_px)
    side = max(1, int(round(size_level0 / pyr.downsamples[level])))
    image = slide.read_region(x, y, level, side, side)
    if side != out_px:
        image = cv2.resize(image, (out_px, out_px), interpolation=cv2.INTER_AREA if side > out_px else cv2.INTER_CUBIC)
    return image


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """JPEG bytes of an RGB uint8 image."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise TesseraError("JPEG encoding failed")
    return buf.tobytes()


def select(nearest: pd.DataFrame, gallery_size: int) -> pd.DataFrame:
    """Per cluster, the ``gallery_size`` rows nearest the centroid (``nearest`` holds one row per patient)."""
    ordered = nearest.sort_values(["cluster", "distance", "patient_id"], kind="stable")
    return ordered.groupby("cluster", sort=True).head(gallery_size).reset_index(drop=True)


def write_candidates(
    nearest: pd.DataFrame, slides: list[dict], out_dir: str | os.PathLike, gallery_size: int, gallery_px: int
) -> pd.DataFrame:
    """Read this shard's gallery candidates from the slides; write ``gallery.tsv`` and ``gallery.h5``.

    A slide that cannot be opened costs only its candidates (status says why); the shard goes on.
    """
    out = Path(out_dir)
    cand = select(nearest, gallery_size).assign(status="ok")
    jpegs: list[bytes] = [b""] * len(cand)
    where = {s["slide_id"]: s for s in slides}
    for slide_id, rows in cand.groupby("slide_id", sort=True):
        rec = where.get(slide_id)
        try:
            if rec is None:
                raise SlideError(f"slide {slide_id} is not in this shard's slide sheet records")
            with local_file(rec["path"]) as local, Slide(local, mpp_override=rec.get("mpp")) as slide:
                for i, r in rows.iterrows():
                    if r.size_level0 <= 0:
                        raise SlideError(f"the feature file of {slide_id} lacks the patch_size_level0 attribute")
                    jpegs[i] = encode_jpeg(read_patch(slide, int(r.x), int(r.y), int(r.size_level0), gallery_px))
        except SlideError as e:
            log.warning("gallery patches of %s not read: %s", slide_id, e)
            cand.loc[rows.index, "status"] = f"not read: {e}"
    with atomic_path(out / "gallery.h5") as tmp, h5py.File(tmp, "w") as f:
        data = f.create_dataset("jpeg", (len(cand),), dtype=h5py.vlen_dtype(np.uint8))
        for i, b in enumerate(jpegs):
            data[i] = np.frombuffer(b, np.uint8)
    with atomic_path(out / "gallery.tsv") as tmp:
        cand.to_csv(tmp, sep="\t", index=False)
    return cand


def gather(shard_dirs: list[str | os.PathLike], gallery_size: int) -> pd.DataFrame:
    """The cohort's gallery: per cluster the ``gallery_size`` readable candidates nearest the centroid.

    Returns the candidate rows with a ``jpeg`` column (bytes) and ``rank`` (1 = nearest).
    """
    frames = []
    for d in shard_dirs:
        cand = pd.read_csv(Path(d) / "gallery.tsv", sep="\t", dtype={"slide_id": str, "patient_id": str},
                           keep_default_na=False)
        with h5py.File(Path(d) / "gallery.h5", "r") as f:
            cand["jpeg"] = [bytes(b) for b in f["jpeg"][()]] if len(cand) else []
        frames.append(cand[cand["status"] == "ok"])
    columns = ["cluster", "patient_id", "slide_id", "x", "y", "size_level0", "distance", "status", "jpeg"]
    pooled = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    chosen = select(pooled, gallery_size)
    chosen["rank"] = chosen.groupby("cluster").cumcount() + 1
    return chosen
