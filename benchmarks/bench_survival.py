"""Survival-stage timings, each beside the anchor it competes with, measured in the same run.

1. 5-fold cross-validation wall time on a synthetic cohort table (default 17,000 patients × 1,000
   features, 10 of them carrying a planted proportional-hazards signal), through tessera's trainers
   (in-fold imputation + scaling, folds run ``--jobs`` at a time):
   * Coxnet (fixed alpha, l1_ratio 0.5) — anchor: scikit-survival's defaults, the same folds one after
     another (``CoxnetSurvivalAnalysis()`` fits its 100-alpha path; standardised input);
   * GBSA (100 trees, depth 3, learning rate 0.1, ``max_features='sqrt'``) — anchors: scikit-survival's
     ``GradientBoostingSurvivalAnalysis()`` defaults (all 1,000 features per split) and the same
     sqrt-features model with scikit-survival's own O(n²) Cox loss. These take hours at this size, so
     they are timed for ``--anchor-stages`` boosting stages on one fold and scaled linearly to 100
     stages × 5 folds (every stage costs the same: one loss gradient and one tree on all samples).
   Goal: ≤ 2 min each on 2 cores.
2. The multimodal model: seconds per epoch per 1,000 patients on CPU (bilinear fusion, bags of
   ``--instances`` 384-d instance embeddings, 200 tabular inputs), with our padded micro-batches of 8
   patients — anchor: PORPOISE's loop, one patient per forward pass with gradient accumulation.
3. HIPT's slide-level kinds in the same run, seconds per epoch per 1,000 patients of ``--regions``
   regions each (no tabular branch, micro-batches of 8, ``--device``): ``hipt_gp`` on 192-d region
   features, ``hipt_lgp`` on 16 x 16 x 384 token grids with the ViT-4K fine-tuned and frozen, beside the
   ``porpoise`` kind on the same number of 384-d instances. The ViT-4K kinds are timed on
   ``--lgp-patients`` patients and scaled (every patient costs the same: the same number of full grids);
   the token bags are a pool of 8 reused across patients (memory), which changes no arithmetic.

Run: ``.venv/bin/python benchmarks/bench_survival.py`` (``--quick`` for a small smoke run;
``--skip tabular --skip deep --device cuda`` for the HIPT kinds alone on a GPU).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import pandas as pd


def synthetic_table(n: int, p: int, seed: int = 0):
    from tessera.survival.data import SurvivalData, make_y

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    beta = np.zeros(p)
    beta[:10] = rng.normal(0, 0.4, 10)
    lp = X.astype(float) @ beta
    t = rng.exponential(1000 * np.exp(-lp))
    c = rng.uniform(200, 4000, n)
    y = make_y(np.maximum(1, np.minimum(t, c)), t <= c)
    cols = [f"pathology__f{j:04d}" for j in range(p)]
    return SurvivalData(np.array([f"S{i:06d}" for i in range(n)]), pd.DataFrame(X, columns=cols), y)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_tabular(args) -> list[dict]:
    from sklearn.preprocessing import StandardScaler
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    from tessera.survival.boosting import GradientBoostingSurvival
    from tessera.survival.cv import outer_folds
    from tessera.survival.experiment import run_cv
    from tessera.survival.metrics import harrell_c
    from tessera.survival.settings import CVSettings, EvalSettings, HPOSettings, ModelSpec

    data = synthetic_table(args.patients, args.features)
    cv = CVSettings(n_splits=args.folds, n_repeats=1, seed=0, n_jobs=args.jobs)
    ev = EvalSettings(n_bootstrap=0)
    hpo = HPOSettings(storage_dir=os.path.join(args.tmp, "hpo"))
    folds = outer_folds(data.y, args.folds, 1, 0)
    X = data.X.to_numpy()
    rows = []

    def pooled_c(run):
        risk = np.empty(len(data))
        for r in run.results:
            risk[r.fold.test] = r.risk
        return harrell_c(data.y, risk)

    # Coxnet
    spec = ModelSpec("coxnet", "coxnet", params={"alpha": 0.02, "l1_ratio": 0.5})
    ours, run = timed(lambda: run_cv(spec, data, cv, ev, hpo, threads=args.jobs))

    def anchor_coxnet():
        risk = np.empty(len(data))
        for f in folds:
            scaler = StandardScaler().fit(X[f.train])
            model = CoxnetSurvivalAnalysis().fit(scaler.transform(X[f.train]), data.y[f.train])
            risk[f.test] = model.predict(scaler.transform(X[f.test]))
        return harrell_c(data.y, risk)

    anchor, anchor_c = timed(anchor_coxnet)
    rows.append({"task": f"Coxnet {args.folds}-fold CV", "tessera_s": ours, "anchor_s": anchor,
                 "anchor": "sksurv CoxnetSurvivalAnalysis() defaults, folds in sequence",
                 "tessera_C": pooled_c(run), "anchor_C": anchor_c, "anchor_measured": "yes"})

    # GBSA
    params = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "max_features": "sqrt"}
    spec = ModelSpec("gbsa", "gbsa", params=params)
    ours, run = timed(lambda: run_cv(spec, data, cv, ev, hpo, threads=args.jobs))
    f = folds[0]
    k = args.anchor_stages
    scale = 100 / k * args.folds
    stock, _ = timed(lambda: GradientBoostingSurvivalAnalysis(n_estimators=k, random_state=0).fit(X[f.train], data.y[f.train]))
    slow_loss, _ = timed(lambda: GradientBoostingSurvivalAnalysis(
        n_estimators=k, max_depth=3, max_features="sqrt", random_state=0).fit(X[f.train], data.y[f.train]))
    fast_one, _ = timed(lambda: GradientBoostingSurvival(
        n_estimators=k, max_depth=3, max_features="sqrt", random_state=0).fit(X[f.train], data.y[f.train]))
    c = pooled_c(run)
    rows.append({"task": f"GBSA {args.folds}-fold CV", "tessera_s": ours, "anchor_s": stock * scale,
                 "anchor": "sksurv GradientBoostingSurvivalAnalysis() defaults (all features per split)",
                 "tessera_C": c, "anchor_C": None, "anchor_measured": f"{k} stages x1 fold, scaled x{scale:g}"})
    rows.append({"task": f"GBSA {args.folds}-fold CV", "tessera_s": ours, "anchor_s": slow_loss * scale,
                 "anchor": "same model (sqrt features) with sksurv's own O(n^2) Cox loss",
                 "tessera_C": c, "anchor_C": None, "anchor_measured": f"{k} stages x1 fold, scaled x{scale:g}"})
    rows.append({"task": f"GBSA {k} stages, 1 fold, 1 core", "tessera_s": fast_one, "anchor_s": slow_loss,
                 "anchor": "same stages with sksurv's own Cox loss", "tessera_C": None, "anchor_C": None,
                 "anchor_measured": "yes"})
    return rows


def bench_deep(args) -> list[dict]:
    import torch

    from tessera.survival.bags import Bag
    from tessera.survival.data import make_y
    from tessera.survival.porpoise import PorpoiseModel

    rng = np.random.default_rng(0)
    n, m, d = args.deep_patients, args.instances, 384

    class SyntheticBags:
        dim = d

        def __init__(self):
            self.feats = {f"P{i:05d}": rng.standard_normal((m, d)).astype(np.float32) for i in range(n)}

        def get(self, pid):
            f = self.feats[pid]
            return Bag(f, np.full(len(f), "s", dtype=object), np.arange(len(f)), np.zeros((len(f), 2), np.int64),
                       np.zeros(len(f), int))

    bags = SyntheticBags()
    ids = np.array(sorted(bags.feats))
    X = pd.DataFrame(rng.standard_normal((n, 200)), columns=[f"genomics__g{j:03d}" for j in range(200)])
    y = make_y(rng.uniform(10, 3000, n), rng.random(n) < 0.6)
    torch.set_num_threads(args.jobs)
    rows = {}
    for label, micro in (("tessera (padded micro-batches of 8)", 8), ("PORPOISE loop (1 patient per pass)", 1)):
        model = PorpoiseModel({"epochs": 1, "micro_batch": micro, "batch_size": 32, "fusion": "bilinear"}, bags=bags,
                              device=torch.device("cpu"))
        seconds, _ = timed(lambda model=model: model.fit(X, y, ids))
        rows[label] = seconds * 1000 / n
    tessera_s, anchor_s = rows["tessera (padded micro-batches of 8)"], rows["PORPOISE loop (1 patient per pass)"]
    return [{"task": f"multimodal model, s/epoch/1000 patients ({m} instances x {d}-d, {args.jobs} threads)",
             "tessera_s": tessera_s, "anchor_s": anchor_s, "anchor": "PORPOISE loop, batch 1 + grad. accumulation",
             "tessera_C": None, "anchor_C": None, "anchor_measured": "yes"}]


def bench_hipt(args) -> list[dict]:
    import torch

    from tessera.survival.bags import Bag
    from tessera.survival.data import make_y
    from tessera.survival.hipt import HIPTGPModel, HIPTLGPModel
    from tessera.survival.porpoise import PorpoiseModel

    rng = np.random.default_rng(1)
    m = args.regions
    device = torch.device(args.device)

    class PoolBags:
        """``n`` patients' bags drawn from a pool of 8 synthetic bags of ``m`` instances of ``shape``."""

        def __init__(self, shape: tuple[int, ...], dtype) -> None:
            self.dim = shape[-1]
            self.pool = [rng.standard_normal((m, *shape)).astype(dtype) for _ in range(8)]

        def get(self, pid):
            f = self.pool[int(pid[1:]) % len(self.pool)]
            grid = np.full((m, 2), f.shape[1], np.int64) if f.ndim == 4 else None
            return Bag(f, np.full(m, "s", dtype=object), np.arange(m), np.zeros((m, 2), np.int64),
                       np.zeros(m, int), grid)

    def per_epoch(learner, params: dict, bags, n: int) -> float:
        ids = np.array([f"P{i:05d}" for i in range(n)])
        X = pd.DataFrame(index=range(n))
        y = make_y(rng.uniform(10, 3000, n), np.arange(n) % 5 != 4)  # 80 % events: 4 bins even at n = 4
        model = learner({"epochs": 1, "batch_size": 32, "micro_batch": 8, **params}, bags=bags, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, _ = timed(lambda: model.fit(X, y, ids))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seconds * 1000 / n

    torch.set_num_threads(args.jobs)
    regions = PoolBags((192,), np.float32)
    tokens = PoolBags((16, 16, 384), np.float16)
    rows = [("porpoise", PorpoiseModel, {}, PoolBags((384,), np.float32), args.deep_patients, "384-d instances"),
            ("hipt_gp", HIPTGPModel, {}, regions, args.deep_patients, "192-d region features"),
            ("hipt_lgp (ViT-4K fine-tuned)", HIPTLGPModel, {}, tokens, args.lgp_patients, "16x16x384 token grids"),
            ("hipt_lgp (ViT-4K frozen)", HIPTLGPModel, {"freeze_4k": True}, tokens, args.lgp_patients,
             "16x16x384 token grids")]
    out = []
    for name, learner, params, bags, n, what in rows:
        per_epoch(learner, params, bags, min(n, 4))  # warm-up (allocator, kernels)
        s = per_epoch(learner, params, bags, n)
        out.append({"task": f"{name}: s/epoch/1000 patients ({m} {what}, {device.type}"
                            + (f", {args.jobs} threads" if device.type == "cpu" else "")
                            + f"; timed on {n} patients)", "tessera_s": s})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=17000)
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2, help="cores: folds in parallel / torch threads")
    ap.add_argument("--anchor-stages", type=int, default=3, help="boosting stages timed for the GBSA anchors")
    ap.add_argument("--deep-patients", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=256, help="instances per patient bag")
    ap.add_argument("--regions", type=int, default=50, help="regions per patient of the HIPT kinds")
    ap.add_argument("--lgp-patients", type=int, default=8, help="patients the ViT-4K kinds are timed on")
    ap.add_argument("--device", default="cpu", help="device of the HIPT kinds' timings (cpu | cuda)")
    ap.add_argument("--skip", choices=["tabular", "deep", "hipt"], action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--tmp", default="/tmp/tessera-bench-survival")
    args = ap.parse_args()
    if args.quick:
        args.patients, args.features, args.deep_patients, args.instances = 2000, 100, 64, 32
        args.regions, args.lgp_patients = 8, 4
    rows = []
    if "tabular" not in args.skip:
        rows += bench_tabular(args)
    if "deep" not in args.skip:
        rows += bench_deep(args)
    hipt = bench_hipt(args) if "hipt" not in args.skip else []
    print(f"survival benchmark: {args.patients} patients x {args.features} features, {args.folds} folds, "
          f"{args.jobs} cores (os.cpu_count() = {os.cpu_count()}, load {os.getloadavg()[0]:.1f})")
    for r in rows:
        ratio = r["anchor_s"] / r["tessera_s"] if r["tessera_s"] else math.nan
        c = "" if r["tessera_C"] is None else f"  C {r['tessera_C']:.3f}" + (
            "" if r["anchor_C"] is None else f" (anchor {r['anchor_C']:.3f})")
        print(f"- {r['task']}: tessera {r['tessera_s']:.1f} s | anchor {r['anchor_s']:.1f} s "
              f"[{r['anchor']}; {r['anchor_measured']}] | speed-up x{ratio:.1f}{c}")
    for r in hipt:
        print(f"- {r['task']}: {r['tessera_s']:.1f} s")


if __name__ == "__main__":
    main()
