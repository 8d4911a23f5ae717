"""Attention heatmaps of the deep survival models (``porpoise``, ``hipt_gp``, ...) over slide thumbnails.

A deep model job writes the attention weight of every instance (256-px patch or 4096-px region) of
every test patient (``attention.parquet``: first repeat, each patient seen by the fold model that never
trained on them). Here, per slide, as CLAM users expect:

* the colour scale: each instance's attention as its **percentile within the slide** (0 = the slide's
  least attended instance, 1 = its most attended; ties share their mean rank), so slides of patients
  with few or many instances read the same way; matplotlib's ``jet`` colour map (blue → red, CLAM's
  default), painted at 50 % opacity over a thumbnail read from the slide's pyramid; a colour bar on
  every figure. Tissue without an instance keeps the thumbnail's own colours;
* the slides drawn: patients ranked by their mean out-of-fold risk, alternately the highest- and the
  lowest-risk patient's slides (in slide-ID order) until ``n_slides`` are chosen — bounded, whatever
  the cohort's size.

Outputs: ``{out_dir}/{slide_id}.png`` and an index TSV (:data:`INDEX_COLUMNS`).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tessera.atomic import atomic_path

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["slide_id", "patient_id", "risk", "risk_group", "risk_rank", "n_instances", "size_level0", "file"]
COLOUR_MAP = "jet"
ALPHA = 0.5


def percentiles(values: np.ndarray) -> np.ndarray:
    """Percentile of each value within ``values`` in [0, 1] (mean rank of ties; a single value → 1)."""
    from scipy.stats import rankdata

    values = np.asarray(values, float)
    if len(values) <= 1:
        return np.ones(len(values))
    return (rankdata(values, method="average") - 1) / (len(values) - 1)


def choose_slides(attention: pd.DataFrame, oof: pd.DataFrame, n_slides: int) -> pd.DataFrame:
    """Slides to draw (:data:`INDEX_COLUMNS` but ``file``): alternately the highest- and lowest-risk
    patients' slides. ``attention``: patient_id, slide_id, repeat, ...; ``oof``: patient_id, risk (per repeat)."""
    if attention.empty or n_slides <= 0:
        return pd.DataFrame(columns=INDEX_COLUMNS[:-1])
    risk = oof.groupby("patient_id")["risk"].mean()
    slides = (attention.groupby(["patient_id", "slide_id"], sort=True)
              .agg(n_instances=("attention", "size"), size_level0=("size_level0", "max")).reset_index())
    risk = risk[risk.index.isin(slides["patient_id"])].sort_values(ascending=False, kind="stable")
    order = risk.index.to_list()
    ranks = {p: i + 1 for i, p in enumerate(order)}
    rows = []
    hi, lo = 0, len(order) - 1
    while hi <= lo and len(rows) < n_slides:
        for patient, group in ((order[hi], "highest"), (order[lo], "lowest")):
            if len(rows) >= n_slides or (group == "lowest" and lo == hi):
                continue
            for r in slides[slides["patient_id"] == patient].itertuples():
                if len(rows) < n_slides:
                    rows.append({"slide_id": r.slide_id, "patient_id": patient, "risk": float(risk[patient]),
                                 "risk_group": group, "risk_rank": ranks[patient], "n_instances": int(r.n_instances),
                                 "size_level0": int(r.size_level0)})
        hi, lo = hi + 1, lo - 1
    return pd.DataFrame(rows, columns=INDEX_COLUMNS[:-1])


def paint(thumb: np.ndarray, scale: tuple[float, float], coords: np.ndarray, size_level0: int,
          scores: np.ndarray) -> np.ndarray:
    """``thumb`` (H, W, 3) uint8 with each instance (level-0 ``coords`` (N, 2) of its top-left corner,
    side ``size_level0``) filled with ``scores`` ∈ [0, 1] in :data:`COLOUR_MAP` at :data:`ALPHA`."""
    from matplotlib import colormaps

    sx, sy = scale
    field = np.full(thumb.shape[:2], np.nan, np.float32)
    for (x, y), s in zip(coords, scores):
        x0, y0 = int(x / sx), int(y / sy)
        x1, y1 = max(x0 + 1, int((x + size_level0) / sx)), max(y0 + 1, int((y + size_level0) / sy))
        block = field[y0:y1, x0:x1]
        np.fmax(block, s, out=block)  # overlapping instances: the higher score shows
    painted = ~np.isnan(field)
    colours = (colormaps[COLOUR_MAP](np.nan_to_num(field))[..., :3] * 255).astype(np.float32)
    out = thumb.astype(np.float32)
    out[painted] = (1 - ALPHA) * out[painted] + ALPHA * colours[painted]
    return np.round(out).astype(np.uint8)


def figure_png(image: np.ndarray, title: str) -> bytes:
    """The painted thumbnail with a title and the colour bar, as PNG bytes."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    h, w = image.shape[:2]
    width, image_h, below, above = 7.0, 6.7 * h / w, 0.95, 0.35  # inches: image, colour bar + label, title
    height = image_h + below + above
    fig = Figure(figsize=(width, height), dpi=110)
    ax = fig.add_axes((0.02, below / height, 0.96, image_h / height))
    ax.imshow(image)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    bar = fig.add_axes((0.25, 0.5 / height, 0.5, 0.15 / height))
    fig.colorbar(ScalarMappable(Normalize(0, 1), COLOUR_MAP), cax=bar, orientation="horizontal",
                 label="attention, percentile within the slide")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write_heatmaps(attention_parquet: str | os.PathLike, oof_tsv: str | os.PathLike, slide_sheet: str | os.PathLike,
                   out_dir: str | os.PathLike, index_tsv: str | os.PathLike, *, model: str, n_slides: int = 8,
                   thumbnail_px: int = 1024) -> pd.DataFrame:
    """Draw the chosen slides' heatmaps into ``out_dir`` and write ``index_tsv``; returns the index.

    A slide that cannot be read is logged and left out of the index (the others are drawn).
    """
    from tessera.explain.cluster_maps import read_thumbnail
    from tessera.sheets import read_slide_sheet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attention = pd.read_parquet(attention_parquet)
    if len(attention):
        attention = attention[attention["repeat"] == attention["repeat"].min()]
    oof = pd.read_csv(oof_tsv, sep="\t", dtype={"patient_id": str})
    chosen = choose_slides(attention, oof, n_slides)
    ranked = set(attention["patient_id"]) & set(oof["patient_id"]) if len(attention) else set()
    sheet = read_slide_sheet(slide_sheet).set_index("slide_id") if len(chosen) else None
    rows = []
    for r in chosen.itertuples(index=False):
        own = attention[attention["slide_id"] == r.slide_id]
        try:
            mpp = sheet.loc[r.slide_id, "mpp"]
            thumb, scale = read_thumbnail(sheet.loc[r.slide_id, "path"], None if pd.isna(mpp) else float(mpp),
                                          thumbnail_px)
        except Exception as e:  # a heatmap is an illustration: one unreadable slide must not cost the others
            log.warning("no heatmap for slide %s: %s", r.slide_id, e)
            continue
        image = paint(thumb, scale, own[["x", "y"]].to_numpy(), r.size_level0, percentiles(own["attention"]))
        # no IDs on the figure: the explain report shows it under pseudonyms when asked to
        title = (f"{model} attention: a {r.risk_group}-risk patient (rank {r.risk_rank} of {len(ranked)}, "
                 f"risk {r.risk:.3g}), {r.n_instances} instance{'' if r.n_instances == 1 else 's'}")
        with atomic_path(out / f"{r.slide_id}.png") as tmp:
            Path(tmp).write_bytes(figure_png(image, title))
        rows.append({**r._asdict(), "file": f"{r.slide_id}.png"})
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    with atomic_path(index_tsv) as tmp:
        index.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    log.info("%s: %d attention heatmap(s) in %s", model, len(index), out)
    return index
