"""The cohort table: one row per patient, outcome plus the chosen modalities' features.

Modalities (``survival.cohort.modalities``):

* ``clinical`` — the clinical table's covariates: numeric columns as numbers, columns listed under
  ``ordinal`` as their level's position, other text columns one-hot encoded (first level, in sorted
  order, is the reference). Empty cells and ``NA``/``NaN``/``null`` are missing.
* ``pathology`` — slide-level embeddings (``results/features/{encoder}/slide_embeddings.parquet``,
  columns ``f0000``…) averaged over the patient's slides that passed QC (``results/qc/slides.tsv``).
* ``genomics`` — the genomic cohort table (``results/genomics/{model}/embeddings.parquet``, columns
  ``{gene}_e0000``…).

Feature columns are named ``{modality}__{name}``. Missing-modality policy (``missing``):

* ``drop`` — a patient lacking any chosen modality is left out;
* ``impute`` — the patient stays; the modality's features are missing (imputed inside each training
  fold) and an indicator column ``{modality}__missing`` = 1 is added.

A patient with no data in any chosen modality is always left out. Every patient left out is listed in
``excluded.tsv`` with the modality and the reason (e.g. "all 2 slide(s) failed QC: ...").
Values missing *within* a present modality (a covariate left empty, a gene without embedding) are
imputed inside the folds under both policies.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tessera.atomic import atomic_path, write_text
from tessera.errors import InputError
from tessera.sheets import read_clinical
from tessera.survival.settings import MODALITIES, SEP

NA_STRINGS = {"", "NA", "na", "NaN", "nan", "null", "NULL", "None"}
POLICIES = ("drop", "impute")
PATHOLOGY_COLUMN = r"f\d+"
GENOMIC_COLUMN = r"_e\d+$"


@dataclass
class CohortTable:
    """``table``: patient_id, time, event, feature columns; ``excluded``: patient_id, modality, reason."""

    table: pd.DataFrame
    excluded: pd.DataFrame
    summary: dict


RESERVED = ("patient_id", "time", "event", "line")


def check_clinical_columns(columns, covariates: list[str] | None = None, ordinal: dict | None = None,
                           source: str | None = None) -> None:
    """Raise :class:`InputError` when ``survival.cohort.covariates`` or ``.ordinal`` names a column the
    clinical table (``columns``: its header) lacks. Cheap: the workflow calls it when planning."""
    available = [c for c in columns if c not in RESERVED]
    have = ", ".join(available) or "none"
    unknown = [c for c in (covariates or []) if c not in available]
    if unknown:
        raise InputError(f"covariate(s) {', '.join(unknown)} not in the clinical table (it has {have})",
                         file=source, field="survival.cohort.covariates",
                         fix="name columns of the clinical table")
    unknown = [c for c, levels in (ordinal or {}).items() if levels is not None and c not in available]
    if unknown:
        first = unknown[0]
        raise InputError(
            f"ordinal column(s) {', '.join(unknown)} not in the clinical table (its covariates: {have})",
            file=source, field=f"survival.cohort.ordinal.{first}",
            fix="correct the column name, or switch it off with "
                f"'survival.cohort.ordinal: {{{first}: null}}' in your config "
                "(config/config.yaml's demo value stays merged under a --configfile)")


def check_cohort_columns(cohort: dict, clinical: pd.DataFrame, source: str) -> None:
    """Planning check of ``survival.cohort`` against the clinical table read by the plan: the columns
    the clinical modality names must exist (see :func:`check_clinical_columns`)."""
    if "clinical" in cohort.get("modalities", ["clinical"]):
        check_clinical_columns(clinical.columns, cohort.get("covariates"), cohort.get("ordinal"), source)


def encode_clinical(clinical: pd.DataFrame, covariates: list[str] | None = None,
                    ordinal: dict[str, list[str]] | None = None, source: str | None = None) -> pd.DataFrame:
    """Numeric covariate frame (index patient_id) with ``clinical__`` columns (see module docstring).

    ``ordinal``: column → ordered levels (None = not ordinal; a column the table lacks is an error).
    """
    check_clinical_columns(clinical.columns, covariates, ordinal, source)
    available = [c for c in clinical.columns if c not in RESERVED]
    chosen = available if covariates is None else list(covariates)
    ordinal = {c: levels for c, levels in (ordinal or {}).items() if levels is not None}
    out = {}
    for col in chosen:
        raw = clinical[col].astype(str).str.strip()
        missing = raw.isin(NA_STRINGS)
        if col in ordinal:
            levels = [str(v) for v in ordinal[col]]
            bad = ~missing & ~raw.isin(levels)
            if bad.any():
                raise InputError(
                    f"covariate '{col}' has value(s) {sorted(set(raw[bad]))} outside its ordinal levels {levels} "
                    f"(patients {', '.join(clinical.loc[bad, 'patient_id'].head(5))})", file=source, field=col,
                    fix=f"add the level to survival.cohort.ordinal.{col} or correct the table")
            out[f"clinical{SEP}{col}"] = raw.map({v: float(i) for i, v in enumerate(levels)}).where(~missing)
            continue
        numbers = pd.to_numeric(raw.where(~missing), errors="coerce")
        if (numbers.notna() | missing).all():
            out[f"clinical{SEP}{col}"] = numbers.astype(float)
            continue
        levels = sorted(raw[~missing].unique())
        for level in levels[1:]:  # first level is the reference
            out[f"clinical{SEP}{col}={level}"] = (raw == level).astype(float).where(~missing)
    return pd.DataFrame({k: v.to_numpy() for k, v in out.items()},
                        index=pd.Index(clinical["patient_id"].to_numpy(), name="patient_id"))


def patient_pathology(slide_embeddings: str | os.PathLike, qc_tsv: str | os.PathLike | None,
                      slides: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per-patient mean of the slide embeddings of ok slides, and why each patient of the slide sheet
    has none (patient → reason)."""
    emb = pd.read_parquet(slide_embeddings)
    emb["slide_id"] = emb["slide_id"].astype(str)
    emb["patient_id"] = emb["patient_id"].astype(str)
    feats = [c for c in emb.columns if re.fullmatch(PATHOLOGY_COLUMN, str(c))]
    if not feats:
        raise InputError("slide embeddings have no f0000… columns", file=str(slide_embeddings),
                         fix="use the slide_embeddings.parquet written by the pathology stage")
    failed: dict[str, list[str]] = {}
    if qc_tsv is not None:
        qc = pd.read_csv(qc_tsv, sep="\t", dtype=str, keep_default_na=False)
        ok = set(qc.loc[qc["status"] == "ok", "slide_id"])
        for row in qc.loc[qc["status"] != "ok"].itertuples():
            failed.setdefault(row.patient_id, []).append(f"{row.slide_id}: {row.reason or row.status}")
        emb = emb[emb["slide_id"].isin(ok)]
    means = emb.groupby("patient_id", sort=True)[feats].mean()
    means.columns = [f"pathology{SEP}{c}" for c in feats]
    reasons = {}
    sheet_patients = set(slides["patient_id"]) if slides is not None else set()
    for p in set(sheet_patients) | set(failed):
        if p in means.index:
            continue
        if p in failed:
            reasons[p] = f"all {len(failed[p])} slide(s) failed QC: " + "; ".join(failed[p])
        else:
            reasons[p] = "no pathology embedding for its slide(s) (see the pathology stage's logs)"
    return means, reasons


def patient_genomics(embeddings: str | os.PathLike, genomics: pd.DataFrame | None) -> tuple[pd.DataFrame, dict]:
    """Genomic embedding columns per patient, and why each patient of the genomics sheet has none."""
    emb = pd.read_parquet(embeddings)
    emb["patient_id"] = emb["patient_id"].astype(str)
    feats = [c for c in emb.columns if c != "patient_id" and re.search(GENOMIC_COLUMN, str(c))]
    if not feats:
        raise InputError("genomic embeddings have no {gene}_e0000… columns", file=str(embeddings),
                         fix="use the embeddings.parquet written by the genomics stage")
    table = emb.set_index("patient_id")[feats].astype(float)
    table.columns = [f"genomics{SEP}{c}" for c in feats]
    reasons = {p: "no genomic embedding (see the genomics stage's logs)"
               for p in (genomics["patient_id"] if genomics is not None else []) if p not in table.index}
    return table, reasons


def build_cohort_table(clinical_tsv: str | os.PathLike, *, modalities: list[str], missing: str = "drop",
                       covariates: list[str] | None = None, ordinal: dict | None = None,
                       slides: pd.DataFrame | None = None, qc_tsv: str | os.PathLike | None = None,
                       slide_embeddings: str | os.PathLike | None = None, genomics: pd.DataFrame | None = None,
                       genomic_embeddings: str | os.PathLike | None = None) -> CohortTable:
    """Join the chosen modalities onto the clinical table and apply the missing-modality policy.

    ``slides``/``genomics`` are the validated slide and genomics sheets (used to explain absences).
    """
    if not modalities or any(m not in MODALITIES for m in modalities):
        raise InputError(f"modalities {modalities} are not a non-empty subset of {list(MODALITIES)}",
                         field="survival.cohort.modalities", fix=f"choose among {', '.join(MODALITIES)}")
    if missing not in POLICIES:
        raise InputError(f"missing-modality policy '{missing}' is unknown", field="survival.cohort.missing",
                         fix="use drop or impute")
    clinical = read_clinical(clinical_tsv)
    base = clinical.set_index("patient_id")[["time", "event"]]
    blocks: dict[str, pd.DataFrame] = {}
    reasons: dict[str, dict[str, str]] = {}
    if "clinical" in modalities:
        enc = encode_clinical(clinical, covariates, ordinal, source=str(clinical_tsv))
        if enc.shape[1] == 0:
            raise InputError("the clinical modality has no covariates", file=str(clinical_tsv),
                             field="survival.cohort.covariates",
                             fix="add covariate columns to the clinical table, or choose other modalities")
        blocks["clinical"] = enc
        reasons["clinical"] = {p: "every clinical covariate is missing" for p in enc.index[enc.isna().all(axis=1)]}
    if "pathology" in modalities:
        if slide_embeddings is None:
            raise InputError("the pathology modality needs slide embeddings", field="survival.cohort.modalities",
                             fix="run the pathology stage or remove pathology from the modalities")
        blocks["pathology"], reasons["pathology"] = patient_pathology(slide_embeddings, qc_tsv, slides)
    if "genomics" in modalities:
        if genomic_embeddings is None:
            raise InputError("the genomics modality needs genomic embeddings", field="survival.cohort.modalities",
                             fix="run the genomics stage or remove genomics from the modalities")
        blocks["genomics"], reasons["genomics"] = patient_genomics(genomic_embeddings, genomics)

    fallback = {  # the reason when a patient is absent from the upstream stage's sheet altogether
        "clinical": "no clinical covariates",
        "pathology": "no slide in the slide sheet" if slides is not None else "no pathology embedding",
        "genomics": "no VCF or BAM in the genomics sheet" if genomics is not None else "no genomic embedding",
    }
    patients = base.index
    has = {m: patients.isin(b.index[b.notna().any(axis=1)]) for m, b in blocks.items()}
    excluded = []
    keep = np.zeros(len(patients), bool)
    for i, p in enumerate(patients):
        absent = [m for m in modalities if not has[m][i]]
        why = {m: reasons[m].get(p, fallback[m]) for m in absent}
        if len(absent) == len(modalities):
            excluded += [{"patient_id": p, "modality": m, "reason": f"no data in any chosen modality; {m}: {why[m]}"}
                         for m in absent]
        elif absent and missing == "drop":
            excluded += [{"patient_id": p, "modality": m, "reason": why[m]} for m in absent]
        else:
            keep[i] = True
    kept = patients[keep]
    table = base.loc[kept].copy()
    for m in modalities:
        block = blocks[m].reindex(kept)
        table = table.join(block)
        if missing == "impute" and not has[m][keep].all():
            table[f"{m}{SEP}missing"] = (~has[m][keep]).astype(float)
    table = table.reset_index().rename(columns={"index": "patient_id"})
    table["event"] = table["event"].astype(int)
    excluded_df = pd.DataFrame(excluded, columns=["patient_id", "modality", "reason"])
    summary = {
        "modalities": list(modalities), "missing_policy": missing,
        "n_clinical_patients": int(len(patients)), "n_patients": int(len(kept)),
        "n_events": int(table["event"].sum()), "n_excluded": int(excluded_df["patient_id"].nunique()),
        "features": {m: int(sum(c.startswith(f"{m}{SEP}") for c in table.columns)) for m in modalities},
        "available": {m: int(has[m].sum()) for m in modalities},
        "imputed_modality": {m: int((~has[m][keep]).sum()) for m in modalities} if missing == "impute" else {},
    }
    if len(kept) == 0:
        raise InputError("no patient is left in the cohort table", field="survival.cohort",
                         fix="see the reasons in the excluded list; consider missing: impute")
    return CohortTable(table, excluded_df, summary)


def write_cohort_table(cohort: CohortTable, table_path: str | os.PathLike, excluded_path: str | os.PathLike,
                       summary_path: str | os.PathLike) -> None:
    """Write the table (Parquet), the excluded patients (TSV) and the summary (JSON), atomically."""
    with atomic_path(table_path) as tmp:
        cohort.table.to_parquet(tmp, index=False)
    with atomic_path(excluded_path) as tmp:
        cohort.excluded.to_csv(tmp, sep="\t", index=False)
    write_text(summary_path, json.dumps(cohort.summary, indent=2) + "\n")
