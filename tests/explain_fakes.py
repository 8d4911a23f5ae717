"""Inputs of the explain stage fabricated in exactly the upstream contracts, for tests on any branch.

- Pathology features (``results/features/{encoder}/shard-*/{slide_id}.h5`` + ``index.tsv`` per shard + the
  cohort ``index.tsv``): one row per patch of the slide stage's grid, embedding = colour and texture
  statistics of the patch's real pixels, linearly projected to ``dim`` dimensions. The demo's textures
  differ in colour and nuclear density, so patches of one texture land close together, as they would
  with a trained encoder.
- Survival out-of-fold predictions (``results/models/{model}/oof_predictions.tsv``): the demo's true
  log-hazard plus noise, as a well-fitted model would predict; a deep model's attention over those
  features (``results/models/{model}/attention.parquet``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd

from tessera.explain.gallery import read_patch
from tessera.h5 import write_h5
from tessera.sheets import read_slide_sheet
from tessera.slides.slide import Slide


def pixel_stats(rgb: np.ndarray) -> np.ndarray:
    """Ten colour/texture statistics of an RGB patch, each scaled to about unit range."""
    x = rgb.astype(np.float32) / 255.0
    grey = x.mean(-1)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32) / 255.0
    lap = cv2.Laplacian((grey * 255).astype(np.uint8), cv2.CV_32F)
    return np.array([*x.reshape(-1, 3).mean(0), *(x.reshape(-1, 3).std(0) * 4), (grey < 0.55).mean() * 3,
                     (grey > 0.92).mean(), hsv[..., 1].mean() * 2, lap.std() / 30], np.float32)


def write_features_from_slides(workdir: Path, encoder: str = "hipt256", dim: int = 384, seed: int = 0,
                               empty_slides: tuple[str, ...] = ()) -> Path:
    """Features for every ok slide of ``workdir/results/qc/slides.tsv``; returns the cohort index path.

    Slides named in ``empty_slides`` get a feature file with zero patches (a contract-valid edge case).
    """
    rng = np.random.default_rng(seed)
    projection = rng.normal(0, 1, (10, dim)).astype(np.float32)
    qc = pd.read_csv(workdir / "results/qc/slides.tsv", sep="\t", dtype=str, keep_default_na=False)
    paths = read_slide_sheet(_config_value(workdir, "slides")).set_index("slide_id")["path"]
    rows: dict[str, list[dict]] = {}
    for r in qc[qc["status"] == "ok"].itertuples():
        shard = Path(r.patches_h5).parts[2]  # results/slides/shard-X/patches/...
        with h5py.File(workdir / r.patches_h5, "r") as f:
            coords = f["coords"][()]
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if r.slide_id in empty_slides:
            coords = np.zeros((0, 2), np.int64)
        with Slide(paths[r.slide_id]) as slide:
            stats = [pixel_stats(read_patch(slide, int(x), int(y), int(attrs["patch_size_level0"]), 64))
                     for x, y in coords]
        feats = (np.asarray(stats, np.float32).reshape(-1, 10) @ projection
                 + rng.normal(0, 0.02, (len(coords), dim)).astype(np.float32))
        rel = f"{r.slide_id}.h5"
        out = workdir / "results/features" / encoder / shard / rel
        write_h5(out, {"coords": coords.astype(np.int64), "features": feats.astype(np.float32)},
                 {**{k: attrs[k] for k in ("patch_size", "patch_size_level0", "target_magnification",
                                            "level0_magnification", "level0_width", "level0_height", "overlap")},
                  "encoder": encoder, "weights": "random", "weights_sha256": "random"})
        rows.setdefault(shard, []).append({"slide_id": r.slide_id, "patient_id": r.patient_id, "path": rel,
                                           "n": len(coords), "dim": dim})
    cohort = []
    for shard, shard_rows in rows.items():
        table = pd.DataFrame(shard_rows)
        table.to_csv(workdir / "results/features" / encoder / shard / "index.tsv", sep="\t", index=False)
        cohort.append(table.assign(path=[f"results/features/{encoder}/{shard}/{p}" for p in table["path"]]))
    index = workdir / "results/features" / encoder / "index.tsv"
    pd.concat(cohort).sort_values("slide_id").to_csv(index, sep="\t", index=False)
    return index


def write_oof(workdir: Path, cohort: Path, model: str = "coxnet", seed: int = 0, noise: float = 0.3,
              repeats: int = 2, folds: int = 3) -> Path:
    """Out-of-fold predictions: true log-hazard + N(0, noise²), per repeat, with the clinical time/event."""
    rng = np.random.default_rng(seed)
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t", dtype={"patient_id": str})
    clinical = pd.read_csv(cohort / "clinical.tsv", sep="\t", dtype={"patient_id": str})
    merged = truth.merge(clinical[["patient_id", "time", "event"]], on="patient_id")
    rows = []
    for rep in range(repeats):
        fold = rng.permutation(len(merged)) % folds
        rows.append(merged.assign(repeat=rep, fold=fold,
                                  risk=merged["log_hazard"] + rng.normal(0, noise, len(merged))))
    out = workdir / "results/models" / model / "oof_predictions.tsv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(rows)[["patient_id", "fold", "repeat", "risk", "time", "event"]].to_csv(out, sep="\t", index=False)
    return out


def write_attention(workdir: Path, model: str, encoder: str = "hipt256", seed: int = 0) -> Path:
    """A deep model's ``attention.parquet`` (first repeat) over every instance of the features written by
    :func:`write_features_from_slides`: seeded random weights, each patient's summing to 1."""
    rng = np.random.default_rng(seed)
    index = pd.read_csv(workdir / "results/features" / encoder / "index.tsv", sep="\t", dtype=str)
    frames = []
    for r in index.itertuples():
        with h5py.File(workdir / r.path, "r") as f:
            coords, size = f["coords"][()], int(f.attrs["patch_size_level0"])
        frames.append(pd.DataFrame({"patient_id": r.patient_id, "repeat": 0, "fold": 0, "slide_id": r.slide_id,
                                    "instance": np.arange(len(coords)), "x": coords[:, 0], "y": coords[:, 1],
                                    "size_level0": size, "attention": rng.random(len(coords)).astype(np.float32)}))
    table = pd.concat(frames, ignore_index=True)
    table["attention"] /= table.groupby("patient_id")["attention"].transform("sum")
    out = workdir / "results/models" / model / "attention.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    return out


def _config_value(workdir: Path, key: str) -> str:
    import yaml

    return yaml.safe_load((workdir / "config.yaml").read_text())[key]


def planted_cohort(root: Path, n_patients: int = 40, dim: int = 24, n_shards: int = 3, seed: int = 0,
                   encoder: str = "hipt256", weights: str = "random") -> dict:
    """Feature shards of synthetic patients whose patches come from five textures (Gaussian blobs).

    Texture 4 is planted: its share of a patient's patches (U(0, 0.6)) drives the risk and the hazard.
    Returns ``shard_dirs``, ``slides`` (slide-sheet records per shard, paths that do not exist),
    ``textures`` (slide_id → texture of each patch), ``outcomes`` (patient_id → planted, risk, time,
    event), ``oof`` and ``clinical`` (paths of written tables) and ``sheet`` (slide sheet path).
    """
    from tessera.shards import shard_label

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3.0, (5, dim)).astype(np.float32)
    records, textures, shard_rows, outcome_rows = {}, {}, {}, []
    for p in range(n_patients):
        patient = f"P{p + 1:03d}"
        shard = f"shard-{shard_label(patient, n_shards)}"
        planted = rng.uniform(0, 0.6)
        share = np.concatenate([(1 - planted) * rng.dirichlet(np.ones(4)), [planted]])
        for s in range(1 + (p % 4 == 0)):
            slide_id = f"{patient}-S{s + 1}"
            n = int(rng.integers(60, 120))
            tex = rng.choice(5, size=n, p=share)
            feats = centres[tex] + rng.normal(0, 0.7, (n, dim)).astype(np.float32)
            coords = np.column_stack([np.arange(n) % 10, np.arange(n) // 10]).astype(np.int64) * 512
            write_h5(root / shard / f"{slide_id}.h5", {"coords": coords, "features": feats.astype(np.float32)},
                     {"encoder": encoder, "patch_size": 256, "patch_size_level0": 512, "weights": weights,
                      "weights_sha256": weights if weights == "random" else "ab" * 32})
            shard_rows.setdefault(shard, []).append({"slide_id": slide_id, "patient_id": patient,
                                                     "path": f"{slide_id}.h5", "n": n, "dim": dim})
            records.setdefault(shard, []).append({"slide_id": slide_id, "patient_id": patient,
                                                  "path": str(root / "slides" / f"{slide_id}.svs"), "mpp": 0.25})
            textures[slide_id] = tex
        outcome_rows.append({"patient_id": patient, "planted": planted})
    for shard, rows in shard_rows.items():
        pd.DataFrame(rows).to_csv(root / shard / "index.tsv", sep="\t", index=False)
    outcomes = pd.DataFrame(outcome_rows).set_index("patient_id")
    z = (outcomes["planted"] - outcomes["planted"].mean()) / outcomes["planted"].std()
    outcomes["risk"] = 1.5 * z + rng.normal(0, 0.4, n_patients)
    event_time = rng.exponential(1500 * np.exp(-outcomes["risk"]))
    censor = rng.uniform(300, 3000, n_patients)
    outcomes["time"] = np.maximum(1, np.round(np.minimum(event_time, censor))).astype(int)
    outcomes["event"] = (event_time <= censor).astype(int)
    oof = root / "oof_predictions.tsv"
    o = outcomes.reset_index()
    pd.concat([o.assign(repeat=r, fold=np.arange(n_patients) % 5, risk=o["risk"] + rng.normal(0, 0.05, n_patients))
               for r in range(2)])[["patient_id", "fold", "repeat", "risk", "time", "event"]].to_csv(
        oof, sep="\t", index=False)
    clinical = root / "clinical.tsv"
    o.assign(age=rng.integers(40, 85, n_patients), stage=rng.choice(["I", "II", "III"], n_patients))[
        ["patient_id", "time", "event", "age", "stage"]].to_csv(clinical, sep="\t", index=False)
    sheet = root / "slides.tsv"
    pd.DataFrame([r for rs in records.values() for r in rs])[["slide_id", "patient_id", "path", "mpp"]].to_csv(
        sheet, sep="\t", index=False)
    return {"shard_dirs": {s: root / s for s in sorted(shard_rows)}, "slides": records, "textures": textures,
            "outcomes": outcomes, "oof": oof, "clinical": clinical, "sheet": sheet}


def run_explain(cohort: dict, out: Path, settings=None, centroids_hook=None) -> Path:
    """The explain stage through the library (sample → fit → assign → report); returns ``out``.

    ``centroids_hook(path)`` may rewrite the centroids file between fitting and assignment.
    """
    from tessera.explain.clusters import assign_shard, fit_centroids, sample_shard
    from tessera.explain.report import ExplainSettings, build_report

    st = settings or ExplainSettings(k=6, gallery_size=3, n_maps=0)
    samples = []
    for shard, d in cohort["shard_dirs"].items():
        samples.append(out / "sample" / f"{shard}.h5")
        sample_shard(d, samples[-1], st.per_slide_cap, st.seed)
    fit_centroids(samples, out / "centroids.h5", st.k, st.seed, st.max_sample)
    if centroids_hook:
        centroids_hook(out / "centroids.h5")
    assign = []
    for shard, d in cohort["shard_dirs"].items():
        assign.append(out / "assign" / shard)
        assign_shard(d, out / "centroids.h5", cohort["slides"][shard], assign[-1], st.gallery_size, st.gallery_px)
    build_report(assign, out / "centroids.h5", cohort["oof"], cohort["clinical"], cohort["sheet"], out, st)
    return out
