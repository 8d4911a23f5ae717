"""Small fabricated cohorts in the exact upstream file formats, with a planted survival signal.

The pathology and genomics stages are built elsewhere; these files follow their contracts (common
brief, GUIDE §3) so the survival stage can be tested now:

* ``clinical.tsv``, ``slides.tsv``, ``genomics.tsv`` — the sheets (GUIDE §2);
* ``results/qc/slides.tsv`` — slide QC index (status ok | failed, reason);
* ``results/features/{encoder}/shard-0/{slide_id}.h5`` — ``coords`` (N, 2) int64, ``features`` (N, D)
  float32; ``results/features/{encoder}/index.tsv`` (slide_id, patient_id, path, n, dim) and
  ``slide_embeddings.parquet`` (slide_id, patient_id, f0000…);
* ``results/genomics/{model}/embeddings.parquet`` (patient_id, {gene}_e0000…).

Planted truth of the demo cohort's form (its own weights): log-hazard = 1.6·z(planted fraction) + 0.9·variant dosage +
0.3·z(age). A patch is "planted" (a fixed prototype plus noise) with probability = the patient's planted
fraction; GENEA's embedding moves along a fixed direction with the dosage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tessera.h5 import write_h5

ENCODER = "hipt256"
GENOMIC_MODEL = "nt"


def fabricate_cohort(root: Path, n: int = 48, seed: int = 0, dim: int = 16, gene_dim: int = 8,
                     patches: tuple[int, int] = (20, 40), strength: float = 1.0, region_tokens: bool = False) -> dict:
    """Write a cohort under ``root``; return its paths and the truth (DataFrame).

    ``region_tokens``: also ``results/features/hipt4k/`` with token grids (``pathology.region_tokens``):
    per ok slide two border regions of 2 x 2 hipt256-sized (384-d) tokens, float16.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    ids = [f"P{i:03d}" for i in range(1, n + 1)]
    planted = rng.uniform(0, 0.6, n)
    dosage = rng.choice([0, 1, 2], n, p=[0.5, 0.38, 0.12])
    age = np.round(rng.normal(63, 10, n)).astype(int)
    sex = rng.choice(["F", "M"], n)
    stage = rng.choice(["I", "II", "III", "IV"], n)
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    lp = strength * (1.6 * z(planted) + 0.9 * dosage + 0.3 * z(age.astype(float)))
    t_event = -np.log(rng.random(n)) / (np.exp(lp) / 3000)
    t_cens = rng.uniform(365, 3650, n)
    time = np.maximum(1, np.round(np.minimum(t_event, t_cens))).astype(int)
    event = (t_event <= t_cens).astype(int)
    pd.DataFrame({"patient_id": ids, "time": time, "event": event, "age": age, "sex": sex, "stage": stage}).to_csv(
        root / "clinical.tsv", sep="\t", index=False)

    # slides: patient 2 has a second slide that failed QC; patient 3's only slide failed QC
    slides, qc = [], []
    prototype = rng.normal(0, 1, dim)
    others = rng.normal(0, 1, (4, dim))
    feat_dir = root / "results" / "features" / ENCODER / "shard-0"
    feat_dir.mkdir(parents=True, exist_ok=True)
    index, slide_emb = [], []
    for i, p in enumerate(ids):
        n_slides = 2 if i % 6 == 1 else 1
        for k in range(1, n_slides + 1):
            sid = f"{p}-S{k}"
            slides.append({"slide_id": sid, "patient_id": p, "path": f"slides/{sid}.tiff", "mpp": ""})
            failed = (i == 1 and k == 2) or i == 2
            qc.append({"slide_id": sid, "patient_id": p, "status": "failed" if failed else "ok",
                       "reason": "no tissue found" if failed else "", "mpp": 0.25, "n_patches": 0 if failed else 1})
            if failed:
                continue
            m = int(rng.integers(*patches))
            is_planted = rng.random(m) < planted[i]
            feats = np.where(is_planted[:, None], prototype, others[rng.integers(0, 4, m)])
            feats = (feats + rng.normal(0, 0.5, (m, dim))).astype(np.float32)
            coords = np.stack([np.arange(m) % 8 * 512, np.arange(m) // 8 * 512], axis=1).astype(np.int64)
            rel = f"results/features/{ENCODER}/shard-0/{sid}.h5"
            write_h5(root / rel, {"coords": coords, "features": feats},
                     {"patch_size": 256, "patch_size_level0": 512, "encoder": ENCODER})
            index.append({"slide_id": sid, "patient_id": p, "path": rel, "n": m, "dim": dim})
            slide_emb.append({"slide_id": sid, "patient_id": p, **{f"f{j:04d}": feats[:, j].mean() for j in range(dim)}})
    if region_tokens:
        region_index = []
        (root / "results" / "features" / "hipt4k" / "shard-0").mkdir(parents=True, exist_ok=True)
        for r in index:
            rel = f"results/features/hipt4k/shard-0/{r['slide_id']}.h5"
            tokens = np.zeros((2, 16, 16, 384), np.float16)
            tokens[:, :2, :2] = rng.normal(0, 1, (2, 2, 2, 384))
            write_h5(root / rel, {"coords": np.array([[0, 0], [8192, 0]], np.int64),
                                  "features": rng.normal(0, 1, (2, 192)).astype(np.float32),
                                  "tokens": tokens, "token_grid": np.full((2, 2), 2, np.int64)},
                     {"patch_size": 4096, "patch_size_level0": 8192, "encoder": "hipt4k"})
            region_index.append({**r, "path": rel, "n": 2, "dim": 192})
        pd.DataFrame(region_index).to_csv(root / "results" / "features" / "hipt4k" / "index.tsv", sep="\t",
                                          index=False)
    pd.DataFrame(slides).to_csv(root / "slides.tsv", sep="\t", index=False)
    (root / "results" / "qc").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(qc).to_csv(root / "results" / "qc" / "slides.tsv", sep="\t", index=False)
    pd.DataFrame(index).to_csv(root / "results" / "features" / ENCODER / "index.tsv", sep="\t", index=False)
    emb = pd.DataFrame(slide_emb)
    emb[[c for c in emb.columns if c.startswith("f")]] = emb[[c for c in emb.columns if c.startswith("f")]].astype(np.float32)
    emb.to_parquet(root / "results" / "features" / ENCODER / "slide_embeddings.parquet", index=False)

    # genomics: the last patient has no genomic data at all
    direction = rng.normal(0, 1, gene_dim)
    rows, sheet = [], []
    for i, p in enumerate(ids[:-1]):
        sheet.append({"patient_id": p, "vcf": "variants.vcf.gz", "vcf_sample": f"DNA-{p}", "bam": ""})
        row = {"patient_id": p}
        a = dosage[i] * direction + rng.normal(0, 0.5, gene_dim)
        b = rng.normal(0, 1, gene_dim)
        row.update({f"GENEA_e{j:04d}": a[j] for j in range(gene_dim)})
        row.update({f"GENEB_e{j:04d}": b[j] for j in range(gene_dim)})
        rows.append(row)
    pd.DataFrame(sheet).to_csv(root / "genomics.tsv", sep="\t", index=False)
    gdir = root / "results" / "genomics" / GENOMIC_MODEL
    gdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(gdir / "embeddings.parquet", index=False)

    truth = pd.DataFrame({"patient_id": ids, "planted_fraction": planted, "variant_dosage": dosage, "log_hazard": lp})
    return {
        "root": root, "clinical": root / "clinical.tsv", "slides": root / "slides.tsv", "genomics": root / "genomics.tsv",
        "qc": root / "results" / "qc" / "slides.tsv",
        "slide_embeddings": root / "results" / "features" / ENCODER / "slide_embeddings.parquet",
        "feature_index": root / "results" / "features" / ENCODER / "index.tsv",
        "genomic_embeddings": gdir / "embeddings.parquet", "truth": truth,
    }


# Fixtures shared by the survival tests (imported by name into each test module: a conftest.py here
# would shadow tests/conftest.py, which other tests import as ``conftest``).
@pytest.fixture(scope="session")
def cohort_files(tmp_path_factory):
    """A 60-patient fabricated cohort with a planted signal."""
    return fabricate_cohort(tmp_path_factory.mktemp("cohort"), n=60, seed=3)


@pytest.fixture
def one_thread():
    """Small models run fastest on one thread, and results then match across machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
