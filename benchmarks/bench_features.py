"""Feature extraction throughput: end to end (read + decode + forward) vs forward only, same device.

Real HIPT dimensions (ViT-256 = ViT-S/16, ViT-4K), random weights. The slides are demo slides, or larger
synthetic ones in the same format (``--size``: GPUs need slides of thousands of patches, as real slides
are, not the demo's twenty), at 0.25 µm/px: each 256-px patch at 0.5 µm/px is a 512-px box of four JPEG
tiles, resampled. ``--repeat`` lists the slides several times under distinct IDs for a longer run.

* end to end: ``encode_plans`` of the feature stage over the slides: DataLoader workers read, decode and
  resample patches; this process normalises them, runs ViT-256 once per distinct patch, ViT-4K per
  region, and writes the HDF5 files. Figure: ViT-256 patches/s.
* forward only: the same batches (per slide, so the same sizes), as uint8 tensors already in memory
  (pinned on CUDA), through the same encode step (copy to the device, normalisation, ViT-256, precision).

Goals (issue 3): end to end >= 0.8 x forward only on CPU; on an H100 >= 5,000 patches/s end to end.

    .venv/bin/python benchmarks/bench_features.py                    # CPU, 4 demo slides
    .venv/bin/python benchmarks/bench_features.py --device cuda --size 16384 --slides 4 --repeat 8 --workers 14
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tessera.pathology.extract import Encoders, ShardResult, encode_plans
from tessera.pathology.params import ExtractParams
from tessera.pathology.patches import plan_slide
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


def end_to_end(plans, enc, params, out: Path) -> tuple[int, float]:
    dirs = {name: out / name for name in enc.set.outputs}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    result = ShardResult(enc.set.outputs)
    sync(enc.device)
    start = time.perf_counter()
    encode_plans([(p, "") for p in plans], enc, params, dirs, ResumeCache(None), result)
    sync(enc.device)
    seconds = time.perf_counter() - start
    failed = [r for r in result.rows[enc.set.outputs[0]] if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"benchmark slides failed: {failed[:3]}")
    return sum(len(p.unique) for p in plans), seconds


def batch_sizes(plans, batch_size: int) -> list[int]:
    """The batches the feature stage runs: per slide, full batches then the remainder (never mixed)."""
    return [min(batch_size, len(p.unique) - s) for p in plans for s in range(0, len(p.unique), batch_size)]


def forward_only(sizes: list[int], enc: Encoders) -> tuple[int, float]:
    size = enc.set.patch.patch_px
    pool = [torch.randint(0, 256, (max(sizes), size, size, 3), dtype=torch.uint8) for _ in range(4)]
    if enc.device.type == "cuda":
        pool = [b.pin_memory() for b in pool]
    with torch.inference_mode():
        sync(enc.device)
        start = time.perf_counter()
        for i, n in enumerate(sizes):
            enc.encode_patches(pool[i % len(pool)][:n])
        sync(enc.device)
    return sum(sizes), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

    device = torch_device(args.device)
    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads or cores)
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    workers = args.workers if args.workers is not None else (max(1, cores - 2) if device.type == "cuda" else 1)
    params = ExtractParams(weights={"hipt256": "random", "hipt4k": "random"}, device=device.type, batch_size=batch,
                           num_workers=workers, precision=args.precision, channels_last=not args.no_channels_last,
                           resume_dir="")
    with tempfile.TemporaryDirectory(prefix="tessera-bench-features-") as tmp:
        tmp = Path(tmp)
        slides = demo_slides(args.demo, args.slides, tmp, args.size)
        records = [{"slide_id": p.stem, "patient_id": p.stem, "path": str(p), "mpp": None} for p in slides]
        index = patch_shard(records, PatchingParams(), tmp / "slides").set_index("slide_id")
        plans = [plan_slide(f"{r['slide_id']}-r{k}", r["patient_id"], r["path"],
                            tmp / "slides" / index.loc[r["slide_id"], "patches_h5"])
                 for k in range(args.repeat) for r in records if index.loc[r["slide_id"], "status"] == "ok"]
        enc = Encoders(params, device)
        n_patches = sum(len(p.unique) for p in plans)
        print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{cores} cores'}), "
              f"precision {enc.precision}, batch {batch}, {workers} workers, {torch.get_num_threads()} threads, "
              f"channels_last {enc.channels_last}")
        print(f"{len(plans)} slides ({len(slides)} distinct), {n_patches} ViT-256 patches, "
              f"{sum(len(p.region_rows) for p in plans)} ViT-4K regions")
        end_to_end(plans[:1], enc, params, tmp / "warmup")  # first-call costs (allocations, kernel selection)
        forward_only([batch, batch], enc)
        e2e, fwd = 0.0, 0.0
        for r in range(args.rounds):
            n, s = forward_only(batch_sizes(plans, batch), enc)
            fwd = max(fwd, n / s)
            n, s = end_to_end(plans, enc, params, tmp / f"round{r}")
            e2e = max(e2e, n / s)
    print(f"{'forward only':<14}{fwd:10.1f} patches/s")
    print(f"{'end to end':<14}{e2e:10.1f} patches/s")
    print(f"end to end / forward only = {e2e / fwd:.2f}  (goal on CPU >= 0.8; H100 goal >= 5,000 patches/s end to end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
