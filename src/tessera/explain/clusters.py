"""Clusters of patch embeddings: a seeded per-slide sample, MiniBatchKMeans, streaming assignment.

Memory is bounded by the sample, never by the cohort: :func:`sample_shard` keeps at most
``per_slide_cap`` rows per slide; :func:`fit_centroids` pools the shards' samples (at most
``max_sample`` rows); :func:`assign_shard` streams every slide's features in chunks of ``chunk_rows``
rows against the centroids.

Files:

- sample (one per feature shard, HDF5): ``features`` (M, D) float32, ``slide`` (M,) int32 index into
  ``slide_ids`` / ``patient_ids``, ``row`` (M,) int64 row in the slide's feature file; attributes
  ``dim``, ``per_slide_cap``, ``seed``, ``n_patches_total``, ``provenance`` (JSON).
- centroids (HDF5): ``centroids`` (k, D) float32, ``sample_counts`` (k,) int64; attributes ``k``,
  ``k_setting``, ``seed``, ``n_sample``, ``n_sample_pooled``, ``n_patients``, ``inertia``, ``provenance``.
- assignment shard directory: ``index.tsv`` (slide_id, patient_id, status ok|empty|failed, reason,
  n_patches), ``counts.tsv`` (slide_id, patient_id, cluster, n_patches: non-zero counts only),
  ``nearest.tsv`` (per patient and cluster, the patient's patch nearest the centroid among those assigned
  to it: patient_id, cluster, slide_id, x, y, size_level0, distance), ``labels.h5`` (one group per slide:
  ``coords``, ``cluster`` int32, ``distance`` float32; attributes ``patch_size_level0``, ``level0_width``,
  ``level0_height``) and the gallery candidates (see :mod:`tessera.explain.gallery`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

from tessera.atomic import atomic_path
from tessera.errors import InputError, SlideError
from tessera.explain import gallery
from tessera.explain.features import (
    check_same_provenance,
    open_features,
    provenance,
    provenance_json,
    read_shard_index,
)
from tessera.h5 import write_h5

log = logging.getLogger(__name__)

#: ``k: auto`` → one cluster per five patients, at least 8 and at most 200 (GUIDE §4: ~200 at scale).
AUTO_K_PER_PATIENTS, AUTO_K_MIN, AUTO_K_MAX = 5, 8, 200
INDEX_COLUMNS = ["slide_id", "patient_id", "status", "reason", "n_patches"]
NEAREST_COLUMNS = ["patient_id", "cluster", "slide_id", "x", "y", "size_level0", "distance"]


def slide_rng(seed: int, slide_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the slide, so a slide's sample never depends on its shard."""
    return np.random.default_rng([seed, zlib.crc32(slide_id.encode("utf-8"))])


def choose_k(setting: int | str, n_patients: int, n_sample: int) -> int:
    """The number of clusters: ``setting`` itself, or for ``auto`` ``clip(n_patients // 5, 8, 200)``.

    ``auto`` never asks for more clusters than sampled patches. An explicit ``k`` larger than the sample
    is an error (a silent smaller k would change what the report means).
    """
    if n_sample < 2:
        raise InputError(
            f"only {n_sample} patch embedding(s) in the whole cohort; clustering needs at least 2",
            field="explain", fix="check the pathology stage produced features (results/features/.../index.tsv)",
        )
    if setting == "auto":
        return int(min(np.clip(n_patients // AUTO_K_PER_PATIENTS, AUTO_K_MIN, AUTO_K_MAX), n_sample))
    k = int(setting)
    if k < 2:
        raise InputError(f"k = {k} clusters explain nothing", field="explain.k", fix="use k >= 2 or k: auto")
    if k > n_sample:
        raise InputError(
            f"k = {k} clusters is larger than the {n_sample} sampled patch embeddings", field="explain.k",
            fix="lower explain.k, raise explain.per_slide_cap, or use k: auto",
        )
    return k


def _check_finite(x: np.ndarray, path: Path) -> None:
    if not np.isfinite(x).all():
        raise SlideError(f"{path} holds non-finite feature values (NaN or inf). Fix: rerun the pathology stage "
                         "for this slide")


def sample_shard(feature_shard_dir: str | os.PathLike, out_h5: str | os.PathLike, per_slide_cap: int, seed: int) -> int:
    """Sample at most ``per_slide_cap`` patch embeddings of every slide of a feature shard; returns the count.

    Slides whose feature file is unreadable are logged and skipped (the assignment records them);
    features from different weights in one shard are an error.
    """
    slides = read_shard_index(feature_shard_dir)
    blocks, slide_of, rows, kept = [], [], [], []
    prov: dict[str, str] = {}
    first, dim, n_total = "", 0, 0
    for s in slides:
        try:
            with open_features(s.path) as (features, _, attrs):
                this = provenance(attrs)
                check_same_provenance(prov, first, this, s.slide_id)
                prov, first = this, first or s.slide_id
                n, d = features.shape
                if dim and d != dim:
                    raise InputError(f"{s.path} has {d}-d features, other slides {dim}-d",
                                     fix="rerun the pathology stage for the whole cohort with one encoder")
                dim, n_total = d, n_total + n
                if n == 0:
                    log.warning("%s: no patches; nothing to sample", s.slide_id)
                    continue
                take = np.sort(slide_rng(seed, s.slide_id).choice(n, size=min(per_slide_cap, n), replace=False))
                x = features[()] if len(take) == n else features[take]
                _check_finite(x, s.path)
        except SlideError as e:
            log.error("%s skipped: %s", s.slide_id, e)
            continue
        blocks.append(np.asarray(x, np.float32))
        slide_of.append(np.full(len(take), len(kept), np.int32))
        rows.append(take.astype(np.int64))
        kept.append(s)
    x = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    write_h5(out_h5, {
        "features": x,
        "slide": np.concatenate(slide_of) if slide_of else np.zeros(0, np.int32),
        "row": np.concatenate(rows) if rows else np.zeros(0, np.int64),
        "slide_ids": np.asarray([s.slide_id for s in kept], dtype=h5py.string_dtype()),
        "patient_ids": np.asarray([s.patient_id for s in kept], dtype=h5py.string_dtype()),
    }, {"dim": dim, "per_slide_cap": per_slide_cap, "seed": seed, "n_patches_total": n_total,
        "provenance": provenance_json(prov)})
    log.info("sampled %d of %d patch embeddings from %d slides", len(x), n_total, len(kept))
    return len(x)


def fit_centroids(
    sample_paths: list[str | os.PathLike], out_h5: str | os.PathLike, k: int | str, seed: int,
    max_sample: int, batch_size: int = 1024,
) -> np.ndarray:
    """Fit MiniBatchKMeans on the pooled per-shard samples; write and return the centroids (k, D) float32.

    The pooled sample is subsampled (seeded) to ``max_sample`` rows when larger. Deterministic for a
    given seed and sample (scikit-learn's ``random_state``).
    """
    blocks, patients, provs, n_total = [], set(), {}, 0
    for path in sample_paths:
        with h5py.File(path, "r") as f:
            prov = json.loads(f.attrs["provenance"])
            if len(f["features"]):
                check_same_provenance(next(iter(provs.values()), {}), next(iter(provs), ""), prov, str(path))
                provs.setdefault(str(path), prov)
                blocks.append(f["features"][()])
                patients.update(p.decode() if isinstance(p, bytes) else p for p in f["patient_ids"][()])
            n_total += int(f.attrs["n_patches_total"])
    x = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    n_pooled = len(x)
    if n_pooled > max_sample:
        x = x[np.sort(np.random.default_rng(seed).choice(n_pooled, size=max_sample, replace=False))]
    k_eff = choose_k(k, len(patients), len(x))
    km = MiniBatchKMeans(n_clusters=k_eff, random_state=seed, batch_size=batch_size, max_no_improvement=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # checked below, with a message that says what to do
        km.fit(x)
    if len(np.unique(km.cluster_centers_, axis=0)) < k_eff:
        raise InputError(
            f"the sample holds fewer distinct patch embeddings than k = {k_eff} clusters", field="explain.k",
            fix="lower explain.k (or use k: auto); identical embeddings usually mean a broken encoder",
        )
    centroids = km.cluster_centers_.astype(np.float32)
    labels, _ = nearest_centroid(x, centroids)
    prov = next(iter(provs.values()), {})
    write_h5(out_h5, {"centroids": centroids, "sample_counts": np.bincount(labels, minlength=k_eff).astype(np.int64)}, {
        "k": k_eff, "k_setting": str(k), "seed": seed, "n_sample": len(x), "n_sample_pooled": n_pooled,
        "n_patches_total": n_total, "n_patients": len(patients), "inertia": float(km.inertia_),
        "n_steps": int(km.n_steps_), "provenance": provenance_json(prov),
    })
    log.info("k = %d clusters fitted on %d of %d sampled embeddings (%d patients, %d patches in the cohort)",
             k_eff, len(x), n_pooled, len(patients), n_total)
    return centroids


def read_centroids(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Centroids (k, D) and the attributes of a centroids file (``provenance`` decoded from JSON)."""
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        centroids = f["centroids"][()]
    attrs["provenance"] = json.loads(attrs["provenance"])
    return centroids, attrs


def nearest_per_cluster(labels: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every cluster present in ``labels``: (clusters, index of its member nearest its centroid)."""
    order = np.lexsort((distance, labels))
    first = np.ones(len(order), bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    return labels[order][first], order[first]


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (N,) int32 and Euclidean distance to it (N,) float32 of each row of ``x`` (N, D).

    ||x - c||² = ||x||² - 2 x·c + ||c||²: one float32 BLAS product per call. scikit-learn's
    ``pairwise_distances_argmin_min`` computes the same in float64 chunks, 2-3x slower here
    (benchmarks/bench_clusters.py); the tests check both agree with brute force.
    """
    scores = x @ centroids.T
    scores *= -2
    scores += np.einsum("ij,ij->i", centroids, centroids)
    labels = scores.argmin(axis=1)
    d2 = scores[np.arange(len(x)), labels] + np.einsum("ij,ij->i", x, x)
    return labels.astype(np.int32), np.sqrt(np.maximum(d2, 0)).astype(np.float32)


def assign_slide(features: h5py.Dataset, centroids: np.ndarray, chunk_rows: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (N,) int32 and Euclidean distance to it (N,) float32 of every row, streamed in chunks."""
    n = features.shape[0]
    labels, distance = np.empty(n, np.int32), np.empty(n, np.float32)
    for start in range(0, n, chunk_rows):
        x = np.asarray(features[start : start + chunk_rows], np.float32)
        _check_finite(x, path)
        labels[start : start + len(x)], distance[start : start + len(x)] = nearest_centroid(x, centroids)
    return labels, distance


def assign_shard(
    feature_shard_dir: str | os.PathLike, centroids_h5: str | os.PathLike, slides: list[dict],
    out_dir: str | os.PathLike, gallery_size: int = 8, gallery_px: int = 256, chunk_rows: int = 65536,
) -> pd.DataFrame:
    """Assign every patch of a feature shard's slides to its nearest centroid; write the shard's files.

    ``slides``: the shard's slide-sheet records (``slide_id``, ``path``, ``mpp``), used to read gallery
    candidates from the slides. A slide whose features cannot be read is recorded as failed and the shard
    goes on; a slide with zero patches is recorded as ``empty``. Returns the shard index.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    centroids, cattrs = read_centroids(centroids_h5)
    k = len(centroids)
    index, counts, nearest = [], [], []
    with atomic_path(out / "labels.h5") as tmp, h5py.File(tmp, "w") as labels_h5:
        for s in read_shard_index(feature_shard_dir):
            row = {"slide_id": s.slide_id, "patient_id": s.patient_id, "status": "ok", "reason": "", "n_patches": 0}
            try:
                with open_features(s.path) as (features, coords, attrs):
                    check_same_provenance(cattrs["provenance"], str(centroids_h5), provenance(attrs), s.slide_id)
                    if features.shape[1] != centroids.shape[1]:
                        raise InputError(f"{s.path} has {features.shape[1]}-d features, the centroids "
                                         f"{centroids.shape[1]}-d", fix="rerun the explain stage from its sample")
                    row["n_patches"] = n = features.shape[0]
                    if n == 0:
                        row.update(status="empty", reason="the slide has no patches (no features to assign)")
                        index.append(row)
                        continue
                    labels, distance = assign_slide(features, centroids, chunk_rows, s.path)
                    xy = coords[()]
                    size0 = int(attrs.get("patch_size_level0", 0))
            except SlideError as e:
                log.error("%s failed: %s", s.slide_id, e)
                row.update(status="failed", reason=str(e))
                index.append(row)
                continue
            group = labels_h5.create_group(s.slide_id)
            for name, data in (("coords", xy), ("cluster", labels), ("distance", distance)):
                group.create_dataset(name, data=data)
            for key in ("patch_size_level0", "level0_width", "level0_height"):
                group.attrs[key] = int(attrs.get(key, 0))
            n_per = np.bincount(labels, minlength=k)
            counts += [(s.slide_id, s.patient_id, c, int(n_per[c])) for c in np.flatnonzero(n_per)]
            for c, i in zip(*nearest_per_cluster(labels, distance)):
                nearest.append((s.patient_id, int(c), s.slide_id, int(xy[i, 0]), int(xy[i, 1]), size0, float(distance[i])))
            index.append(row)
    index = pd.DataFrame(index, columns=INDEX_COLUMNS)
    counts = pd.DataFrame(counts, columns=["slide_id", "patient_id", "cluster", "n_patches"])
    nearest = pd.DataFrame(nearest, columns=NEAREST_COLUMNS)
    # One row per patient and cluster: the patient's nearest patch over all their slides.
    nearest = nearest.sort_values(["cluster", "distance", "patient_id"], kind="stable").drop_duplicates(
        ["patient_id", "cluster"]).reset_index(drop=True)
    gallery.write_candidates(nearest, slides, out, gallery_size, gallery_px)
    for name, table in (("counts.tsv", counts), ("nearest.tsv", nearest), ("index.tsv", index)):
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    log.info("%d slides assigned (%d empty, %d failed), %d patches", (index["status"] == "ok").sum(),
             (index["status"] == "empty").sum(), (index["status"] == "failed").sum(), index["n_patches"].sum())
    return index
