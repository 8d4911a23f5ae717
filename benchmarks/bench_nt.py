"""Tokens per second of the genomic embedding pipeline vs the bare model forward on the same batches.

The model is NT v2 in the v2-50m shape (12 layers, 512 hidden, 16 heads, FFN 2048) with random weights,
written to disk and loaded through the strict loader. The pipeline (``SequenceEmbedder.embed``: tokenize,
window, batch, pad, forward, masked mean) runs on random DNA; the anchor runs only the model forward on
the very same padded batches. Goal: pipeline / bare >= 0.9.

    .venv/bin/python benchmarks/bench_nt.py                      # CPU, 8 x 3 kb
    .venv/bin/python benchmarks/bench_nt.py --device cuda --sequences 64 --bases 12000 --batch-size 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tessera.devices import torch_device
from tessera.genomics.embed import DTYPES, EmbedParams, SequenceEmbedder, pad_batch, windows
from tessera.genomics.nt import count_parameters, load_nt, write_random_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--bases", type=int, default=3000, help="bases per sequence (6 per token)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = write_random_model(Path(tmp) / "nt-v2-50m", "nt-v2", seed=0)
        nt = load_nt(path, "nt-v2", device, DTYPES[args.dtype])
        load_s = time.perf_counter() - t0
    params = EmbedParams(max_tokens=args.max_tokens, batch_size=args.batch_size, dtype=args.dtype)
    embedder = SequenceEmbedder(nt, params)
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), args.bases)) for _ in range(args.sequences)]

    # the anchor's input: exactly the batches the pipeline builds
    wins = [w for s in seqs for w in windows(nt.tokenizer.encode(s, add_cls=False), embedder.max_tokens, 0,
                                              nt.tokenizer.cls_id)]
    batches = [pad_batch([wins[j] for j in b], nt.tokenizer.pad_id, device) for b in embedder.batches(wins)]
    tokens = int(sum(m.sum() for _, m in batches))

    def bare() -> None:
        with torch.inference_mode():
            for ids, mask in batches:
                nt.hidden_state(ids, mask, -1)
        sync(device)

    def pipeline() -> None:
        embedder.embed(seqs)
        sync(device)

    def timed(fn) -> tuple[float, float]:
        """Wall seconds and CPU seconds of this process (CPU time is steadier on a shared machine)."""
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - t, time.process_time() - c

    bare(), pipeline()  # warm-up
    runs = [(timed(bare), timed(pipeline)) for _ in range(args.repeats)]  # interleaved: both see the same load
    t_bare, t_pipe = (statistics.median(r[i][0] for r in runs) for i in (0, 1))
    c_bare, c_pipe = (statistics.median(r[i][1] for r in runs) for i in (0, 1))
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"NT v2-50m shape ({count_parameters(nt.model):,} parameters, random weights; load {load_s:.1f} s) on {name}, "
          f"{args.dtype}")
    print(f"{args.sequences} sequences x {args.bases:,} bp = {len(wins)} windows, {tokens:,} tokens, batch {args.batch_size}")
    print(f"bare model forward : {tokens / t_bare:10,.0f} tokens/s  ({t_bare:.3f} s wall, {c_bare:.3f} s CPU)")
    print(f"tessera pipeline   : {tokens / t_pipe:10,.0f} tokens/s  ({t_pipe:.3f} s wall, {c_pipe:.3f} s CPU)")
    print(f"ratio pipeline/bare: {t_bare / t_pipe:.3f} wall-clock, {c_bare / c_pipe:.3f} CPU time  (goal >= 0.9; "
          f"median of {args.repeats} interleaved runs)")


if __name__ == "__main__":
    main()
