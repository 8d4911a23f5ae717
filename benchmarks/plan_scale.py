"""Planning cost of the real Snakefile at cohort scale: `snakemake -n -q` wall time and peak RSS.

Writes an N-slide cohort (about 12 slides per patient, as in a 200,000-slide / 17,000-patient
cohort) with empty placeholder slide files, a clinical table and a genomics sheet, then times a
dry run of the default target in a fresh working directory. Peak RSS is the largest of any dry
run so far, so give sizes in increasing order.

Target (issue 2): <= 60 s and <= 2 GB peak RSS at N = 200,000 on 2 cores. Anchors measured with
placeholder rules (GUIDE §4): one job + file per slide per stage 270 s / 5.7 GB; one tracked file
per shard 14-19 s / 0.6 GB.

Usage: python benchmarks/plan_scale.py N [N ...] [--slides-per-shard 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SLIDES_PER_PATIENT = 200_000 / 17_000


def write_cohort(root: Path, n_slides: int) -> tuple[int, Path]:
    """Sheets and placeholder files for ``n_slides`` slides; returns (patients, sheet dir)."""
    n_patients = max(1, round(n_slides / SLIDES_PER_PATIENT))
    (root / "slides").mkdir(parents=True)
    with open(root / "slides.tsv", "w") as f:
        f.write("slide_id\tpatient_id\tpath\tmpp\n")
        for i in range(n_slides):
            path = root / "slides" / f"S{i:07d}.svs"
            path.touch()
            f.write(f"S{i:07d}\tP{i % n_patients:06d}\tslides/{path.name}\t\n")
    with open(root / "clinical.tsv", "w") as f:
        f.write("patient_id\ttime\tevent\tage\n")
        f.writelines(f"P{p:06d}\t{100 + p % 3000}\t{p % 2}\t{40 + p % 40}\n" for p in range(n_patients))
    with open(root / "genomics.tsv", "w") as f:
        f.write("patient_id\tvcf\tvcf_sample\tbam\n")
        f.writelines(f"P{p:06d}\tcohort.vcf.gz\tS{p:06d}\t\n" for p in range(n_patients))
    for name in ("cohort.vcf.gz", "reference.fa", "reference.fa.fai", "genes.gtf"):
        (root / name).touch()
    return n_patients, root


def dry_run(workdir: Path, config: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one `snakemake -n -q` in ``workdir``."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), "-n", "-q", "--cores", "2"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak_kb, before) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="+", help="cohort sizes in slides, e.g. 10000 50000 200000")
    ap.add_argument("--slides-per-shard", type=int, default=200)
    ap.add_argument("--keep", type=Path, help="write the cohort here instead of a temporary directory")
    args = ap.parse_args()
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    print(f"{'slides':>8} {'patients':>8} {'shards':>6} {'plan s':>7} {'RSS GB':>7}   target <= 60 s, <= 2 GB")
    for n in args.n:
        root = Path(tempfile.mkdtemp(prefix=f"plan-{n}-", dir=args.keep))
        try:
            n_patients, cohort = write_cohort(root / "cohort", n)
            n_shards = max(8, n // args.slides_per_shard)
            config = root / "config.yaml"
            config.write_text(yaml.safe_dump({
                **base, "n_shards": n_shards, "slides": str(cohort / "slides.tsv"),
                "clinical": str(cohort / "clinical.tsv"), "genomics": str(cohort / "genomics.tsv"),
                "reference": str(cohort / "reference.fa"), "annotation": str(cohort / "genes.gtf"),
            }))
            (root / "work").mkdir()
            seconds, rss = dry_run(root / "work", config)
            print(f"{n:>8} {n_patients:>8} {n_shards:>6} {seconds:>7.1f} {rss:>7.2f}", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
