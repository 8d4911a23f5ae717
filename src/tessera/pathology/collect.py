"""Cohort-level feature tables: the shard directories of one encoder → one index and one embedding table.

``results/features/{encoder}/index.tsv``: one row per slide with features (``slide_id``, ``patient_id``,
``path`` relative to the working directory, ``n`` rows, ``dim``), sorted by slide_id; slides that failed
are listed in their shard's ``index.tsv`` with the reason and in this job's log.
``results/features/{encoder}/slide_embeddings.parquet``: the shards' slide embeddings concatenated
(``slide_id``, ``patient_id``, ``f0000``… float32), in the same order. Only the small per-shard tables are
read, never the per-slide feature files, so the job costs the same at 200,000 slides.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tessera.atomic import atomic_path
from tessera.errors import TesseraError

log = logging.getLogger(__name__)

COHORT_COLUMNS = ["slide_id", "patient_id", "path", "n", "dim"]


def collect_encoder(encoder: str, shard_dirs: list[str], local_dirs: list[str], out_index: str | Path,
                    out_embeddings: str | Path) -> pd.DataFrame:
    """Write the cohort index and embedding table of ``encoder``; return the index.

    ``shard_dirs``: the shards' paths relative to the working directory (as users see them);
    ``local_dirs``: where this job reads them (the same unless a storage plugin staged them).
    """
    indexes, tables = [], []
    for shard_dir, local in zip(shard_dirs, local_dirs):
        index = pd.read_csv(Path(local) / "index.tsv", sep="\t", dtype={"slide_id": str, "patient_id": str},
                            keep_default_na=False)
        index["path"] = [f"{shard_dir}/{p}" if p else "" for p in index["path"]]
        indexes.append(index)
        tables.append(pd.read_parquet(Path(local) / "slide_embeddings.parquet"))
    cohort = pd.concat(indexes, ignore_index=True).sort_values("slide_id", kind="stable")
    failed = cohort[cohort["status"] != "ok"]
    if len(failed):
        log.warning("%s: %d of %d slides have no features (later stages skip them):", encoder, len(failed), len(cohort))
        for row in failed.itertuples():
            log.warning("  %s: %s", row.slide_id, row.reason)
    ok = cohort[cohort["status"] == "ok"][COHORT_COLUMNS].reset_index(drop=True)
    embeddings = pd.concat(tables, ignore_index=True).sort_values("slide_id", kind="stable").reset_index(drop=True)
    if embeddings["slide_id"].tolist() != ok["slide_id"].tolist():
        raise TesseraError(f"{encoder}: the shards' slide_embeddings.parquet and index.tsv list different slides; "
                           "rerun the feature stage for the shards involved")
    with atomic_path(out_index) as tmp:
        ok.to_csv(tmp, sep="\t", index=False)
    with atomic_path(out_embeddings) as tmp:
        embeddings.to_parquet(tmp, index=False)
    log.info("%s: %d slides, %d patients, dim %s", encoder, len(ok), ok["patient_id"].nunique(),
             ok["dim"].iloc[0] if len(ok) else "-")
    return ok
