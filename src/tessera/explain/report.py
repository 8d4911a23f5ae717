"""The cohort-level explanation: prevalence, association, galleries, maps → report.html and TSV tables.

Writes into ``out_dir``:

- ``report.html``: self-contained (every image a data URI, no external resource), see the template
  ``templates/report.html.j2``;
- ``clusters.tsv``: one row per cluster in rank order (prevalence and association columns);
- ``patient_fractions.tsv``: patient_id, then ``c000``… fractions (patients with patches);
- ``patients.tsv``: every patient seen (features or risk): n_slides, n_patches, has_risk, included, reason;
- ``variance_explained.tsv``: cross-validated R² of risk by clusters, clinical covariates, both;
- ``gallery.tsv``: the patches shown (cluster, rank, patient_id, slide_id, x, y, size_level0, distance).

With pseudonymisation on, every patient and slide ID in these outputs is a pseudonym
(:mod:`tessera.explain.pseudonyms`); the per-shard assignment files keep the real IDs.
"""

from __future__ import annotations

import base64
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from tessera import __version__
from tessera.atomic import atomic_path, write_text
from tessera.errors import InputError
from tessera.explain import cluster_maps, gallery, plots
from tessera.explain.association import associate, clinical_covariates, read_oof, variance_explained
from tessera.explain.clusters import read_centroids
from tessera.explain.features import is_random
from tessera.explain.prevalence import cluster_prevalence, patient_fractions, read_counts
from tessera.explain.pseudonyms import Pseudonyms
from tessera.sheets import read_clinical, read_slide_sheet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainSettings:
    """Config section ``explain`` (see config/README.md)."""

    encoder: str = "hipt256"
    model: str | None = "coxnet"  # None: no risk to explain (the clusters ranked by prevalence)
    attention_model: str | None = None
    k: int | str = "auto"
    per_slide_cap: int = 256
    max_sample: int = 1_000_000
    seed: int = 0
    min_patients: int = 3
    gallery_size: int = 8
    gallery_px: int = 256
    n_maps: int = 4
    n_colours: int = 10
    thumbnail_px: int = 768
    cv_folds: int = 5
    covariates: list[str] = field(default_factory=list)
    pseudonymise: bool = False
    pseudonym_salt_env: str = "TESSERA_PSEUDONYM_SALT"

    @classmethod
    def from_config(cls, cfg: dict) -> "ExplainSettings":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in cfg.items() if k in known})

    def shown(self) -> list[tuple[str, str]]:
        """The settings as the report shows them (the salt's variable name, never the salt)."""
        return [(k, str(v)) for k, v in asdict(self).items() if k != "pseudonym_salt_env" or self.pseudonymise]


def _f(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else (f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png_uri(rgb: np.ndarray) -> str:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return data_uri(buf.tobytes(), "image/png")


def _tsv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _patients_table(index: pd.DataFrame, fractions: pd.DataFrame, oof: pd.DataFrame | None, without: list[str],
                    ids: Pseudonyms) -> pd.DataFrame:
    """Every patient with slides or a risk: what they contribute and why they are left out (``oof``
    None: no risk is explained, every patient with patches is included).

    With pseudonyms, a reason names slides by pseudonym and leaves out the slides' free-text reasons
    (they may hold file paths); the run's logs keep them.
    """
    per = index.groupby("patient_id").agg(n_slides=("slide_id", "size"), n_patches=("n_patches", "sum"))
    risk_ids = oof.index if oof is not None else pd.Index([])
    out = pd.DataFrame(index=pd.Index(sorted(set(per.index) | set(risk_ids)), name="patient_id"))
    out = out.join(per).fillna({"n_slides": 0, "n_patches": 0}).astype({"n_slides": int, "n_patches": int})
    out["has_risk"] = out.index.isin(risk_ids)
    out["included"] = out.index.isin(fractions.index) & (out["has_risk"] | (oof is None))
    reason = pd.Series("", index=out.index, dtype=object)
    reason[~out.index.isin(per.index)] = "no slide with features (not in the feature index)"
    by_patient = index.groupby("patient_id")
    for patient in without:
        own = by_patient.get_group(patient)
        detail = "; ".join(f"{ids.slide(r.slide_id)}: {r.status}" + ("" if ids.enabled else f" ({r.reason})")
                           for r in own.itertuples())
        reason[patient] = f"no patch to assign ({detail})"
    if oof is not None:
        reason[out.index.isin(fractions.index) & ~out["has_risk"]] = "no out-of-fold risk (not in the model's cohort)"
    out["reason"] = reason
    return out.reset_index().assign(patient_id=lambda t: t["patient_id"].map(ids.patient))


def _heatmaps(index_tsv: str | os.PathLike, model: str, ids: Pseudonyms) -> dict:
    """The attention heatmaps of ``heatmaps.tsv`` (PNGs beside it in ``heatmaps/``) for the template."""
    index = pd.read_csv(index_tsv, sep="\t", dtype={"slide_id": str, "patient_id": str})
    folder = Path(index_tsv).with_suffix("")
    out: dict = {"model": model, "highest": [], "lowest": [],
                 "level": "4096-px region" if len(index) and index["size_level0"].min() >= 4096 else "patch"}
    for r in index.itertuples():
        out[r.risk_group].append({
            "image": data_uri((folder / r.file).read_bytes(), "image/png"), "slide": ids.slide(r.slide_id),
            "patient": ids.patient(r.patient_id), "rank": int(r.risk_rank), "risk": _f(r.risk, 3),
            "n_instances": int(r.n_instances)})
    return out


def by_prevalence(prevalence: pd.DataFrame) -> pd.DataFrame:
    """The ranking table without a risk: clusters by share of patients, then mean fraction; the
    association columns empty (NaN), status saying why."""
    order = prevalence.sort_values(["n_patients", "mean_fraction"], ascending=False, kind="stable").index
    table = pd.DataFrame(index=prevalence.index)
    table.loc[order, "rank"] = np.arange(1, len(order) + 1)
    table["rank"] = table["rank"].astype(int)
    table["status"] = "not tested: no risk to explain (explain.model is null)"
    table["n_patients_tested"] = 0
    for col in ("spearman_rho", "spearman_p", "spearman_q", "cox_hr_per_sd", "cox_ci_low", "cox_ci_high", "cox_p",
                "cox_q", "km_threshold", "km_n_high", "km_n_low", "logrank_p"):
        table[col] = np.nan
    return table.sort_values("rank")


def build_report(
    assign_dirs: list[str | os.PathLike], centroids_h5: str | os.PathLike, oof_tsv: str | os.PathLike | None,
    clinical_tsv: str | os.PathLike | None, slide_sheet: str | os.PathLike, out_dir: str | os.PathLike,
    settings: ExplainSettings, heatmaps_tsv: str | os.PathLike | None = None,
) -> Path:
    """Run the cohort-level analysis and write the report and tables into ``out_dir``; returns the report path.

    Without ``oof_tsv`` (``explain.model`` null: no survival stage, or none asked for) the report shows
    the clusters ranked by prevalence, their galleries and maps, with no association or R² (empty tables).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = Pseudonyms.from_env(settings.pseudonym_salt_env) if settings.pseudonymise else Pseudonyms(None)
    _, cattrs = read_centroids(centroids_h5)
    k, prov = int(cattrs["k"]), cattrs["provenance"]
    counts, index = read_counts(assign_dirs)
    fractions_all, without = patient_fractions(counts, index, k)
    prevalence = cluster_prevalence(fractions_all, counts)
    has_risk = oof_tsv is not None
    if has_risk:
        oof = read_oof(oof_tsv)
        included = sorted(set(fractions_all.index) & set(oof.index))
        if len(included) < 2:
            raise InputError(
                f"only {len(included)} patient(s) have both patches and an out-of-fold risk", file=str(oof_tsv),
                fix=f"check that model '{settings.model}' was trained on the patients whose slides have features",
            )
        fractions, outcomes = fractions_all.loc[included], oof.loc[included]
        assoc, curves = associate(fractions, outcomes, settings.min_patients)
        clinical = clinical_covariates(read_clinical(clinical_tsv), settings.covariates)
        r2 = variance_explained(fractions, clinical.reindex(included), outcomes["risk"].to_numpy(float),
                                settings.cv_folds, settings.seed)
    else:
        oof, included, curves = None, sorted(fractions_all.index), {}
        assoc = by_prevalence(prevalence)
        r2 = pd.DataFrame({"features": pd.Series(dtype=str), "n_features": pd.Series(dtype=int),
                           "cv_r2": pd.Series(dtype=float)})
    table = assoc.join(prevalence).sort_values("rank")
    ranked = [int(c) for c in table.index]
    colours = cluster_maps.palette(ranked, settings.n_colours)

    # Galleries and maps (images only from pyramid levels).
    chosen = gallery.gather(assign_dirs, settings.gallery_size)
    shown_gallery = {c: rows for c, rows in chosen.groupby("cluster")}
    maps, maps_note = [], ""
    slide_shard = {s: d for d in assign_dirs for s in pd.read_csv(Path(d) / "index.tsv", sep="\t", dtype=str,
                                                                  keep_default_na=False)["slide_id"]}
    tested_top = [c for c in ranked if table.loc[c, "status"].startswith("tested")] if has_risk else ranked
    picks = cluster_maps.choose_slides(counts, tested_top, settings.n_maps)
    sheet = read_slide_sheet(slide_sheet).set_index("slide_id") if picks else None
    for slide_id, c in picks:
        try:
            coords, labels, size0 = cluster_maps.read_labels(Path(slide_shard[slide_id]) / "labels.h5", slide_id)
            if size0 <= 0:
                raise ValueError("the feature file lacks the patch_size_level0 attribute")
            mpp = sheet.loc[slide_id, "mpp"]
            thumb, scale = cluster_maps.read_thumbnail(sheet.loc[slide_id, "path"],
                                                       None if pd.isna(mpp) else float(mpp), settings.thumbnail_px)
            image = cluster_maps.draw(thumb, scale, coords, labels, size0, colours)
        except Exception as e:  # a map is an illustration: one unreadable slide must not cost the report
            log.warning("no cluster map for %s: %s", slide_id, e)
            maps_note = f"slide {ids.slide(slide_id)} could not be read ({type(e).__name__})"
            continue
        maps.append({"image": _png_uri(image), "slide": ids.slide(slide_id),
                     "patient": ids.patient(index.set_index("slide_id").loc[slide_id, "patient_id"]),
                     "cluster": c, "share": f"{(labels == c).mean():.0%}"})

    clusters = []
    for c in ranked:
        r = table.loc[c]
        rows = shown_gallery.get(c, pd.DataFrame())
        clusters.append({
            "cluster": c, "rank": int(r["rank"]), "colour": cluster_maps.hex_colour(colours[c]),
            "n_patients": int(r["n_patients"]), "share_patients": f"{r['share_patients']:.0%}",
            "n_patches": int(r["n_patches"]), "mean_fraction": _f(r["mean_fraction"], 3),
            "rho": _f(r["spearman_rho"]), "rho_q": _p(r["spearman_q"]), "cox_p": _p(r["cox_p"]),
            "cox_q": _p(r["cox_q"]), "logrank_p": _p(r["logrank_p"]), "status": r["status"],
            "hr": "–" if not math.isfinite(r["cox_ci_low"]) else
                  f"{r['cox_hr_per_sd']:.2f} ({r['cox_ci_low']:.2f}–{r['cox_ci_high']:.2f})",
            "direction": "" if not math.isfinite(r["spearman_rho"]) else ("up" if r["spearman_rho"] > 0 else "down"),
            "gallery_note": "No patch to show: no patient's patch is assigned to this cluster." if r["n_patches"] == 0
            else "No patch to show: the slides of this cluster's patches could not be read (see the log).",
            "gallery": [{"image": data_uri(g.jpeg, "image/jpeg"), "patient": ids.patient(g.patient_id),
                         "slide": ids.slide(g.slide_id), "distance": _f(g.distance)} for g in rows.itertuples()],
        })
    figures = {
        "r2": data_uri(plots.r2_bars(r2), "image/png"),
        "association": data_uri(plots.association_bars(table, colours), "image/png"),
        "forest": data_uri(plots.forest(table), "image/png"),
        "km": data_uri(plots.km_grid(curves, table), "image/png"),
    } if has_risk else {}
    patients = _patients_table(index, fractions_all, oof, without, ids)
    excluded = patients[~patients["included"]]
    bad_slides = index[index["status"] != "ok"]
    env = jinja2.Environment(loader=jinja2.PackageLoader("tessera.explain", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    html = env.get_template("report.html.j2").render(
        model=settings.model, has_risk=has_risk, encoder=settings.encoder, version=__version__, k=k, random_weights=is_random(prov),
        pseudonymised=ids.enabled, n_patients=len(included), n_slides=int((index["status"] == "ok").sum()),
        n_patches=int(index["n_patches"].sum()), cv_folds=settings.cv_folds, min_patients=settings.min_patients,
        r2=[{"features": r.features, "n_features": r.n_features, "cv_r2": _f(r.cv_r2)} for r in r2.itertuples()],
        clusters=clusters, plots=figures, maps=maps, maps_note=maps_note, n_colours=settings.n_colours,
        heatmaps=None if heatmaps_tsv is None else _heatmaps(heatmaps_tsv, settings.attention_model, ids),
        legend=[c for c in clusters[: settings.n_colours]], gallery_px=settings.gallery_px,
        excluded=[{"patient": e.patient_id, "reason": e.reason} for e in excluded.itertuples()],
        bad_slides=[{"slide": ids.slide(s.slide_id), "status": s.status,
                     "reason": "(in the run log)" if ids.enabled else s.reason} for s in bad_slides.itertuples()],
        settings=settings.shown() + [("k fitted", str(k)), ("sample size", str(cattrs["n_sample"])),
                                     ("patches in the cohort", str(cattrs["n_patches_total"]))],
        provenance=sorted(prov.items()),
    )

    # Tables beside the report, with the same IDs as the report.
    _tsv(out / "clusters.tsv", table.reset_index().assign(colour=lambda t: [cluster_maps.hex_colour(colours[c])
                                                                           for c in t["cluster"]]))
    frac = fractions_all.rename(columns=lambda c: f"c{c:03d}").reset_index()
    frac["patient_id"] = frac["patient_id"].map(ids.patient)
    _tsv(out / "patient_fractions.tsv", frac)
    _tsv(out / "patients.tsv", patients)
    _tsv(out / "variance_explained.tsv", r2)
    _tsv(out / "gallery.tsv", chosen.drop(columns=["jpeg", "status"]).assign(
        patient_id=lambda t: t["patient_id"].map(ids.patient), slide_id=lambda t: t["slide_id"].map(ids.slide)))
    write_text(out / "report.html", html)
    top = table.iloc[0]
    if has_risk:
        log.info("report: %d clusters, %d patients; top cluster %d (rho %.2f); R2 clusters %s, clinical %s",
                 k, len(included), table.index[0], top["spearman_rho"], _f(r2["cv_r2"].iloc[0]),
                 _f(r2["cv_r2"].iloc[1]))
    else:
        log.info("report without a risk (explain.model null): %d clusters, %d patients; most prevalent cluster %d "
                 "(%d patients)", k, len(included), table.index[0], top["n_patients"])
    return out / "report.html"
