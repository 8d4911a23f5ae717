"""Explanations of the multimodal model, computed by each fold model for its own test patients.

* attention: the attention-MIL weight of every instance (patch or region) of a test patient, with its
  slide, its index in the slide's feature file and its level-0 coordinates — enough to draw heatmaps;
* Integrated Gradients (captum) of the predicted risk with respect to the tabular inputs, the
  patient's pathology embedding held fixed, baseline = the training-fold mean (zero after scaling).

Only the first repeat is explained (every patient once, by a model that never saw them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tessera.survival.cv import Fold
from tessera.survival.data import SurvivalData, modality_of


class FoldExplainer:
    """Callable for :func:`tessera.survival.experiment.run_cv`: explanations of one fold model."""

    def __init__(self, attention: bool = True, integrated_gradients: bool = True, ig_steps: int = 32,
                 repeats: tuple[int, ...] = (0,)) -> None:
        self.attention, self.ig, self.ig_steps, self.repeats = attention, integrated_gradients, ig_steps, repeats

    def __call__(self, learner, test: SurvivalData, fold: Fold) -> dict | None:
        if fold.repeat not in self.repeats or not hasattr(learner, "attention"):
            return None
        out: dict = {}
        tag = {"repeat": fold.repeat, "fold": fold.fold}
        if self.attention:
            att = learner.attention(test.X, test.patient_id)
            if len(att):
                out["attention"] = att.assign(**tag)
        if self.ig:
            attr, delta = learner.integrated_gradients(test.X, test.patient_id, n_steps=self.ig_steps)
            if len(attr):
                out["attributions"] = attr.assign(**tag)
                out["ig_max_completeness_error"] = delta
        return out


def collect(results, key: str) -> pd.DataFrame:
    """Concatenate one kind of fold explanation (``attention`` or ``attributions``) over folds."""
    frames = [r.extras[key] for r in results if r.extras and key in r.extras]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    first = ["patient_id", "repeat", "fold"]
    return df[first + [c for c in df.columns if c not in first]].sort_values(first, kind="stable").reset_index(drop=True)


def attribution_summary(attributions: pd.DataFrame) -> pd.DataFrame:
    """Per input feature: modality, mean |attribution|, mean attribution, and the correlation of
    attribution with the feature's value (sign of its effect on risk); ranked by mean |attribution|."""
    if attributions.empty:
        return pd.DataFrame()
    g = attributions.groupby("feature", sort=True)
    out = pd.DataFrame({
        "modality": [modality_of(f) for f in g.groups],
        "mean_abs_attribution": g["attribution"].apply(lambda a: float(np.mean(np.abs(a)))).to_numpy(),
        "mean_attribution": g["attribution"].mean().to_numpy(),
        "value_attribution_corr": g.apply(
            lambda d: float(np.corrcoef(d["value"], d["attribution"])[0, 1])
            if d["value"].std() > 0 and d["attribution"].std() > 0 else np.nan, include_groups=False).to_numpy(),
    }, index=pd.Index(list(g.groups), name="feature"))
    return out.sort_values("mean_abs_attribution", ascending=False, kind="stable").reset_index()
