"""Cluster prevalence: per patient, the fraction of its patches in each cluster; per cluster, across patients.

A patient's fraction pools all their slides (patches counted, not slides averaged), as in Wulczyn et
al. 2021. Patients without any patch (every slide empty or failed) have no fractions and are returned
apart, so the report can list them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def read_counts(shard_dirs: list[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The assignment shards' ``counts.tsv`` and ``index.tsv`` tables, concatenated."""
    def cat(name: str) -> pd.DataFrame:
        frames = [pd.read_csv(Path(d) / name, sep="\t", dtype={"slide_id": str, "patient_id": str},
                              keep_default_na=False) for d in shard_dirs]
        return pd.concat(frames, ignore_index=True)
    return cat("counts.tsv"), cat("index.tsv")


def count_matrix(counts: pd.DataFrame, k: int) -> pd.DataFrame:
    """Patients × clusters (0 … k-1) patch counts, int64, from long ``counts`` (patient_id, cluster, n_patches)."""
    table = counts.pivot_table(index="patient_id", columns="cluster", values="n_patches", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=range(k), fill_value=0).astype(np.int64)
    table.columns.name = "cluster"
    return table.sort_index()


def patient_fractions(counts: pd.DataFrame, slides: pd.DataFrame, k: int) -> tuple[pd.DataFrame, list[str]]:
    """Per patient, the fraction of their patches in each cluster (rows sum to 1), and the patients left out.

    ``slides``: the assignment index (slide_id, patient_id, status, reason). Returns ``(fractions,
    without)``; ``without`` lists the patients of ``slides`` with no assigned patch (every slide empty or
    failed), sorted.
    """
    matrix = count_matrix(counts, k)
    totals = matrix.sum(axis=1)
    without = sorted(set(slides["patient_id"]) - set(matrix.index[totals > 0]))
    return matrix[totals > 0].div(totals[totals > 0], axis=0), without


def cluster_prevalence(fractions: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Per cluster: patients with any patch in it (count and share), mean and median fraction, patches.

    Index: cluster. Columns: ``n_patients``, ``share_patients``, ``mean_fraction``, ``median_fraction``,
    ``n_patches``. A cluster no patient has keeps a row of zeros.
    """
    present = (fractions > 0).sum(axis=0)
    n_patches = counts.groupby("cluster")["n_patches"].sum().reindex(fractions.columns, fill_value=0)
    n = max(len(fractions), 1)
    return pd.DataFrame({
        "n_patients": present.astype(int),
        "share_patients": present / n,
        "mean_fraction": fractions.mean(axis=0).fillna(0.0),
        "median_fraction": fractions.median(axis=0).fillna(0.0),
        "n_patches": n_patches.astype(np.int64),
    }).rename_axis("cluster")
