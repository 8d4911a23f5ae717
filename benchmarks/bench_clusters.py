"""Clustering + assignment of 10 million 384-d patch embeddings on 2 cores, with peak memory per phase.

What is measured (the explain stage's own functions, each phase in a fresh process so its peak RSS is its own):

1. ``sample``: :func:`tessera.explain.clusters.sample_shard` over every shard (``--cap`` rows per slide);
2. ``fit``: :func:`~tessera.explain.clusters.fit_centroids` (MiniBatchKMeans, k = ``--k``) on the pooled sample;
3. ``assign``: :func:`~tessera.explain.clusters.assign_shard` over every shard, streaming every patch from
   the per-slide HDF5 files (gallery reading off: it reads slides, not embeddings).

Anchors, measured in the same run:

- fit: scikit-learn's full-batch ``KMeans`` (Lloyd, n_init=1) on the same sample;
- assign: raw float32 matmul throughput (``X @ C.T`` on an in-memory block, the arithmetic floor of any
  nearest-centroid search), extrapolated to all patches;
- memory: the embeddings themselves (N x D x 4 bytes), what any in-memory clustering of the cohort holds.

Goal: memory bounded by the sample, not the cohort (peak RSS far below the embeddings' size, and about the
same at 1 M and 10 M patches).

The synthetic cohort (``--slides`` slides, shards of ``--slides-per-shard``) is drawn from 50 Gaussian
"tissue types" and written as per-slide HDF5 files in the pathology stage's layout (14.3 GiB at 10 M x 384;
removed afterwards unless ``--keep``).

Usage: python benchmarks/bench_clusters.py [--patches 10000000 --dim 384 --k 200 --threads 2 --workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_cohort(root: Path, n_patches: int, dim: int, n_slides: int, per_shard: int, seed: int) -> list[Path]:
    import h5py
    import pandas as pd

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (50, dim)).astype(np.float32)
    sizes = np.full(n_slides, n_patches // n_slides)
    sizes[: n_patches - sizes.sum()] += 1
    shards = []
    for s0 in range(0, n_slides, per_shard):
        shard = root / f"shard-{s0 // per_shard:04d}"
        shard.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(s0, min(s0 + per_shard, n_slides)):
            n = int(sizes[i])
            types = rng.integers(0, 50, n)
            x = rng.standard_normal((n, dim), dtype=np.float32)
            x *= 0.35
            x += centres[types]
            with h5py.File(shard / f"S{i:06d}.h5", "w") as f:
                f["coords"] = np.zeros((n, 2), np.int64)
                f["features"] = x
                f.attrs.update({"encoder": "hipt256", "weights_sha256": "random", "patch_size_level0": 512})
            rows.append({"slide_id": f"S{i:06d}", "patient_id": f"P{i:06d}", "path": f"S{i:06d}.h5", "n": n,
                         "dim": dim})
        pd.DataFrame(rows).to_csv(shard / "index.tsv", sep="\t", index=False)
        shards.append(shard)
    return shards


def phase(name: str, args: argparse.Namespace) -> dict:
    """Run one phase in this process; return its wall time and peak RSS."""
    from threadpoolctl import threadpool_limits

    from tessera.explain.clusters import assign_shard, fit_centroids, sample_shard

    work = Path(args.workdir)
    shards = sorted(p for p in (work / "features").iterdir() if p.is_dir())
    start = time.perf_counter()
    with threadpool_limits(args.threads):
        if name == "sample":
            for s in shards:
                sample_shard(s, work / "sample" / f"{s.name}.h5", args.cap, args.seed)
        elif name == "fit":
            fit_centroids(sorted((work / "sample").glob("*.h5")), work / "centroids.h5", args.k, args.seed,
                          max_sample=10**7)
        elif name == "assign":
            for s in shards:
                assign_shard(s, work / "centroids.h5", [], work / "assign" / s.name, gallery_size=0)
        elif name == "kmeans_anchor":
            import h5py
            from sklearn.cluster import KMeans

            x = np.concatenate([h5py.File(p)["features"][()] for p in sorted((work / "sample").glob("*.h5"))])
            start = time.perf_counter()
            KMeans(n_clusters=args.k, n_init=1, random_state=args.seed).fit(x)
        elif name == "matmul_anchor":
            import h5py

            rng = np.random.default_rng(0)
            x = rng.standard_normal((args.matmul_rows, args.dim), dtype=np.float32)
            c = h5py.File(work / "centroids.h5")["centroids"][()]
            x @ c.T  # warm-up
            start = time.perf_counter()
            for _ in range(3):
                x @ c.T
            return {"seconds": (time.perf_counter() - start) / 3 * args.patches / args.matmul_rows,
                    "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    return {"seconds": time.perf_counter() - start, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_phase(name: str, argv: list[str], threads: int) -> dict:
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, __file__, *argv, "--phase", name], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--slides", type=int, default=1000)
    ap.add_argument("--slides-per-shard", type=int, default=100)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--cap", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matmul-rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None, help="where the synthetic cohort is written (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic cohort")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args)))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="tessera-bench-clusters-"))
    argv = [a for a in sys.argv[1:]] + ([] if args.workdir else ["--workdir", str(work)])
    try:
        t0 = time.perf_counter()
        write_cohort(work / "features", args.patches, args.dim, args.slides, args.slides_per_shard, args.seed)
        size_gb = args.patches * args.dim * 4 / 2**30
        print(f"synthetic cohort: {args.patches:,} patches x {args.dim} float32 in {args.slides} slides "
              f"({size_gb:.1f} GiB of embeddings) written in {time.perf_counter() - t0:.0f} s; k = {args.k}, "
              f"cap {args.cap}/slide, {args.threads} threads")
        r = {name: run_phase(name, argv, args.threads)
             for name in ("sample", "fit", "assign", "kmeans_anchor", "matmul_anchor")}
        total = r["sample"]["seconds"] + r["fit"]["seconds"] + r["assign"]["seconds"]
        peak = max(r[p]["rss_gb"] for p in ("sample", "fit", "assign"))
        n_sample = min(args.cap, args.patches // args.slides) * args.slides
        print(f"{'phase':<34}{'seconds':>10}{'peak RSS GiB':>14}")
        for name, label in (("sample", f"sample ({n_sample:,} rows)"), ("fit", "fit (MiniBatchKMeans)"),
                            ("assign", "assign (streamed, all patches)")):
            print(f"{label:<34}{r[name]['seconds']:>10.1f}{r[name]['rss_gb']:>14.2f}")
        print(f"{'total':<34}{total:>10.1f}{peak:>14.2f}   ({args.patches / total:,.0f} patches/s)")
        print("anchors (same run):")
        print(f"  full-batch KMeans on the same sample: {r['kmeans_anchor']['seconds']:.1f} s "
              f"-> MiniBatchKMeans fit is {r['kmeans_anchor']['seconds'] / r['fit']['seconds']:.1f}x faster")
        print(f"  raw matmul X @ C.T over all patches:  {r['matmul_anchor']['seconds']:.1f} s "
              f"-> assignment runs at {r['matmul_anchor']['seconds'] / r['assign']['seconds']:.2f} of matmul speed")
        print(f"  embeddings in memory (any in-memory clustering of the cohort): {size_gb:.1f} GiB "
              f"-> peak RSS is {peak / size_gb:.3f} of it")
    finally:
        if not args.keep:
            shutil.rmtree(work / "features", ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
