"""Attention heatmaps of the deep survival models: which slides, the colour scale, the figure files."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image

from tessera.explain.heatmaps import INDEX_COLUMNS, choose_slides, paint, percentiles, write_heatmaps


def _attention(patients: dict[str, list[str]], n: int = 3) -> pd.DataFrame:
    rows = [{"patient_id": p, "repeat": 0, "fold": 0, "slide_id": s, "instance": i, "x": 512 * i, "y": 0,
             "size_level0": 512, "attention": 1.0 / n} for p, slides in patients.items() for s in slides
            for i in range(n)]
    return pd.DataFrame(rows)


def test_slides_alternate_highest_and_lowest_risk_and_stay_bounded():
    att = _attention({"A": ["A-1", "A-2"], "B": ["B-1"], "C": ["C-1"], "D": ["D-1"], "E": ["E-1"]})
    oof = pd.DataFrame({"patient_id": list("ABCDE") * 2, "repeat": [0] * 5 + [1] * 5,
                        "risk": [5.0, 1.0, 3.0, 2.0, 4.0, 5.2, 1.2, 3.0, 2.0, 4.0]})
    chosen = choose_slides(att, oof, 4)
    # risk order A > E > C > D > B: highest A (both slides), lowest B, then the second highest E
    assert list(chosen["slide_id"]) == ["A-1", "A-2", "B-1", "E-1"]
    assert list(chosen["risk_group"]) == ["highest", "highest", "lowest", "highest"]
    assert list(chosen["risk_rank"]) == [1, 1, 5, 2] and chosen["risk"].iloc[0] == 5.1
    assert len(choose_slides(att, oof, 100)) == 6 and choose_slides(att, oof, 0).empty  # each slide once
    odd = choose_slides(_attention({"A": ["A-1"], "B": ["B-1"], "C": ["C-1"]}), oof, 10)
    assert list(odd["slide_id"]) == ["A-1", "B-1", "C-1"] and odd["risk_group"].iloc[2] == "highest"


def test_the_colour_scale_is_the_percentile_within_the_slide_in_jet():
    np.testing.assert_allclose(percentiles([0.5, 0.1, 0.3, 0.3]), [1.0, 0.0, 0.5, 0.5])
    assert list(percentiles([0.2])) == [1.0]
    thumb = np.full((8, 24, 3), 200, np.uint8)
    image = paint(thumb, (64.0, 64.0), np.array([[0, 0], [512, 0]]), 512, np.array([1.0, 0.0]))
    red, blue = (np.array(colormaps["jet"](v)[:3]) * 255 for v in (1.0, 0.0))
    np.testing.assert_allclose(image[4, 4], np.round(0.5 * 200 + 0.5 * red), atol=1)  # most attended: red
    np.testing.assert_allclose(image[4, 12], np.round(0.5 * 200 + 0.5 * blue), atol=1)  # least attended: blue
    assert (image[:, 16:] == 200).all()  # no instance there: the thumbnail as it was


def test_heatmaps_are_drawn_over_the_slide_thumbnail(tmp_path, cmu_slide):
    att = _attention({"P1": ["S1"]}, n=4).assign(attention=[0.1, 0.2, 0.3, 0.4])
    att.to_parquet(tmp_path / "attention.parquet")
    pd.DataFrame({"patient_id": ["P1"], "repeat": [0], "fold": [0], "risk": [0.7]}).to_csv(
        tmp_path / "oof.tsv", sep="\t", index=False)
    pd.DataFrame({"slide_id": ["S1", "S2"], "patient_id": ["P1", "P2"], "path": [str(cmu_slide), "missing.svs"],
                  "mpp": ["", ""]}).to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    index = write_heatmaps(tmp_path / "attention.parquet", tmp_path / "oof.tsv", tmp_path / "slides.tsv",
                           tmp_path / "heatmaps", tmp_path / "heatmaps.tsv", model="m", n_slides=8, thumbnail_px=256)
    assert list(index.columns) == INDEX_COLUMNS and list(index["file"]) == ["S1.png"]
    assert pd.read_csv(tmp_path / "heatmaps.tsv", sep="\t")["slide_id"].tolist() == ["S1"]
    with Image.open(tmp_path / "heatmaps" / "S1.png") as im:
        assert im.format == "PNG" and im.width > 256
