"""Feature extraction throughput: end to end (read + decode + transform + forward + HDF5) vs forward only.

Real architectures, random weights (``--depth N`` cuts every ViT-family encoder to N blocks so the big
foundation models fit a CPU run: the catalogue's ViTs, CONCH's trunks and the Phikons; the figures then
say so). The slides are demo slides, or larger
synthetic ones in the same format (``--size``: GPUs need slides of thousands of patches, as real slides
are), at 0.25 µm/px: each 256-px tile at 0.5 µm/px is a 512-px box of JPEG tiles, resampled.
``--repeat`` lists the slides several times under distinct IDs for a longer run.

* forward only, per encoder: the batches the stage runs (per slide and grid, the same sizes), as uint8
  tensors already in memory (pinned on CUDA), through the same encode step (transform views, copy to
  the device, normalisation, model, precision);
* end to end, per encoder alone (``--each``) and for all ``--encoders`` together: ``encode_plans`` of the
  feature stage: workers read, decode, resample and transform tiles once per grid; this process
  normalises them, runs every encoder of the grid and writes the HDF5 files.

Goals (issue 12): per encoder end to end >= 0.8 x forward only (CPU); several encoders on one grid in one
run <= 1.1 x the sum of their forward-only times; HIPT >= 5,000 patches/s end to end on an H100.

    .venv/bin/python benchmarks/bench_features.py                                  # HIPT, CPU, 4 demo slides
    .venv/bin/python benchmarks/bench_features.py --encoders uni_v1,kaiko-vits16,gigapath --depth 2 --each
    .venv/bin/python benchmarks/bench_features.py --device cuda --size 16384 --slides 4 --repeat 8 --workers 14
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tessera.pathology.encoders import catalog, conch, hf, registry
from tessera.pathology.extract import Encoders, Job, ShardResult, TileBatch, _plan_group, encode_plans
from tessera.pathology.params import ExtractParams
from tessera.pathology.resume import ResumeCache
from tessera.slides.patching import PatchingParams, patch_shard

REPO = Path(__file__).resolve().parents[1]


def demo_slides(demo: Path, n: int, scratch: Path, size: int = 0) -> list[Path]:
    """``n`` demo slides, or (``size`` > 0, or no demo cohort) synthetic slides of ``size`` level-0 pixels."""
    slides = sorted((demo / "slides").glob("*.tiff"))[:n]
    if slides and not size:
        return slides
    from tessera.demo.slides import synth_slide, write_aperio_tiff

    rng = np.random.default_rng(0)
    size = size or 3072
    for i in range(n):
        tile, _ = synth_slide(rng, (2048, 2048), 0.3)  # a mosaic of flipped copies: large slides stay cheap to make
        reps = -(-size // 2048)
        rows = [np.concatenate([tile[:, ::-1] if (r + c) % 2 else tile for c in range(reps)], 1) for r in range(reps)]
        rgb = np.ascontiguousarray(np.concatenate([row[::-1] if r % 2 else row for r, row in enumerate(rows)], 0)[:size, :size])
        write_aperio_tiff(scratch / f"synthetic-{i}.tiff", rgb)
    return sorted(scratch.glob("synthetic-*.tiff"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def end_to_end(jobs: list[Job], enc: Encoders, params: ExtractParams, out: Path) -> float:
    """Seconds of the feature stage's read-encode-write loop over ``jobs``."""
    dirs = {name: out / name for name in enc.set.outputs}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    result = ShardResult(enc.set.outputs)
    sync(enc.device)
    start = time.perf_counter()
    encode_plans(jobs, enc, params, dirs, ResumeCache(None), result)
    sync(enc.device)
    seconds = time.perf_counter() - start
    failed = [r for rows in result.rows.values() for r in rows if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"benchmark slides failed: {failed[:3]}")
    return seconds


def forward_only(jobs: list[Job], enc: Encoders, batch_size: int, only: str | None = None) -> float:
    """Seconds to encode the same batches (sizes per job) from uint8 tensors in memory."""
    out = 0.0
    for group in enc.set.groups:
        sizes = [min(batch_size, len(j.plan.unique) - s) for j in jobs if j.group is group
                 for s in range(0, len(j.plan.unique), batch_size)]
        if not sizes:
            continue
        patches = tuple(s for s in group.patches if only is None or s.name == only)
        if not patches:
            continue
        sub = replace(group, patches=patches, regions=())
        views = [torch.randint(0, 256, (max(sizes), t.out_px(group.patch_px), t.out_px(group.patch_px), 3),
                               dtype=torch.uint8) for t in group.transforms]
        if enc.device.type == "cuda":
            views = [v.pin_memory() for v in views]
        with torch.inference_mode():
            sync(enc.device)
            start = time.perf_counter()
            for n in sizes:
                enc.encode_patches(TileBatch(sub, [v[:n] for v in views]))
            sync(enc.device)
        out += time.perf_counter() - start
    return out


def make_jobs(records, index, slides_dir: Path, enc: Encoders, repeat: int) -> list[Job]:
    jobs = []
    for k in range(repeat):
        for r in records:
            row = index.loc[r["slide_id"]]
            if row["status"] != "ok":
                continue
            rec = {**r, "slide_id": f"{r['slide_id']}-r{k}"}
            row = {**row.to_dict(), "patches_h5": row["patches_h5"], "tissue_geojson": row["tissue_geojson"]}
            for group in enc.set.groups:
                jobs.append(Job(_plan_group(rec, row, slides_dir, group, 0.25), "", group))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="hipt256,hipt4k", help="comma-separated registry names")
    parser.add_argument("--depth", type=int, default=0, help="cut ViT-family encoders to this many blocks (0: full)")
    parser.add_argument("--each", action="store_true", help="also run each patch encoder end to end alone")
    parser.add_argument("--demo", type=Path, default=REPO / "demo", help="demo cohort directory (tessera demo DIR)")
    parser.add_argument("--slides", type=int, default=4, help="distinct demo slides")
    parser.add_argument("--repeat", type=int, default=1, help="list each slide this many times (a larger workload)")
    parser.add_argument("--size", type=int, default=0,
                        help="make synthetic slides of SIZE x SIZE level-0 px at 0.25 µm/px instead (e.g. 16384 for GPUs)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 on CPU, 256 on CUDA")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 1 on CPU, cores - 2 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores on CPU)")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is reported")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from tessera.devices import torch_device

    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    if args.depth:  # every architecture of the catalogue cut to --depth blocks (width, patching, heads kept)
        for name in list(catalog.VIT_CONFIGS):
            catalog.VIT_CONFIGS[name] = catalog.reduced(catalog.VIT_CONFIGS[name], args.depth)
        conch.CONCH_V15_TRUNK = catalog.reduced(conch.CONCH_V15_TRUNK, args.depth)
        conch.CONCH_V1_TRUNK = catalog.reduced(conch.CONCH_V1_TRUNK, args.depth)
        for cfg in (hf.PHIKON_CONFIG, hf.PHIKON_V2_CONFIG):
            cfg["num_hidden_layers"] = args.depth
    device = torch_device(args.device)
    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads or cores)
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    workers = args.workers if args.workers is not None else (max(1, cores - 2) if device.type == "cuda" else 1)
    resolved = registry.resolve(names)
    params = ExtractParams(encoders=tuple(names), weights={s.name: "random" for s in resolved.models},
                           device=device.type, batch_size=batch, num_workers=workers, precision=args.precision,
                           channels_last=not args.no_channels_last, resume_dir="")
    with tempfile.TemporaryDirectory(prefix="tessera-bench-features-") as tmp:
        tmp = Path(tmp)
        slides = demo_slides(args.demo, args.slides, tmp, args.size)
        records = [{"slide_id": p.stem, "patient_id": p.stem, "path": str(p), "mpp": None} for p in slides]
        index = patch_shard(records, PatchingParams(), tmp / "slides").set_index("slide_id")
        enc = Encoders(params, device)
        jobs = make_jobs(records, index, tmp / "slides", enc, args.repeat)
        print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{cores} cores'}), "
              f"precision {enc.precision}, batch {batch}, {workers} workers, {torch.get_num_threads()} threads, "
              f"channels_last {enc.channels_last}" + (f", ViT encoders cut to {args.depth} blocks" if args.depth else ""))
        for g in enc.set.groups:
            n = sum(len(j.plan.unique) for j in jobs if j.group is g)
            print(f"grid {g.patch_px} px @ {g.mpp} µm/px: {', '.join(s.name for s in g.models)}: {n} tiles")
        end_to_end(jobs[:len(enc.set.groups)], enc, params, tmp / "warmup")  # first-call costs
        patch_names = [s.name for g in enc.set.groups for s in g.patches]
        singles = {name: Encoders(replace(params, encoders=(name,)), device) for name in patch_names} if args.each else {}
        fwd = {name: float("inf") for name in patch_names}
        alone = {name: float("inf") for name in patch_names}
        together = float("inf")
        for r in range(args.rounds):
            for name in patch_names:
                fwd[name] = min(fwd[name], forward_only(jobs, enc, batch, only=name))
            together = min(together, end_to_end(jobs, enc, params, tmp / f"round{r}"))
            for name, one in singles.items():
                sub = [Job(j.plan, "", one.set.groups[0]) for j in jobs if any(s.name == name for s in j.group.patches)]
                alone[name] = min(alone[name], end_to_end(sub, one, params, tmp / f"alone-{name}-{r}"))
    tiles = {name: sum(len(j.plan.unique) for j in jobs if any(s.name == name for s in j.group.patches))
             for name in patch_names}
    print(f"{'encoder':<16}{'tiles':>8}{'forward only':>16}" + (f"{'end to end':>16}{'ratio':>8}" if args.each else ""))
    for name in patch_names:
        line = f"{name:<16}{tiles[name]:>8}{tiles[name] / fwd[name]:>12.1f} t/s"
        if args.each:
            line += f"{tiles[name] / alone[name]:>12.1f} t/s{fwd[name] / alone[name]:>8.2f}"
        print(line)
    total_fwd = sum(fwd.values())
    print(f"all {len(patch_names)} patch encoders in one run (shared grids, one read per tile): {together:.2f} s "
          f"= {together / total_fwd:.2f} x the sum of their forward-only times ({total_fwd:.2f} s); goal <= 1.1")
    if args.each:
        separate = sum(alone.values())
        print(f"separate runs, one per encoder: {separate:.2f} s (one run / separate runs = {together / separate:.2f})")
        print("per-encoder goal: end to end / forward only >= 0.8 (ratio column = forward-only time / end-to-end time)")
    if names == ["hipt256", "hipt4k"] or names == ["hipt256"]:
        print(f"HIPT end to end {tiles['hipt256'] / together:.1f} patches/s (H100 goal >= 5,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
