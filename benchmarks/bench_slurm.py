"""The tiny cohort's default target through profiles/slurm on the one-node test cluster, beside the same
run through profiles/local (the anchor), one after the other on this machine.

The cluster is tests/slurm_cluster.py (Debian's SLURM 22.05 with slurmdbd accounting, needs root and the
packages `make test` installs). Each SLURM job pays scheduling, two Snakemake start-ups (the job and its
srun step parse the workflow) and the plugin's polling: states are read 40 s after a change and then
every 40–180 s by default; ``--poll S`` sets the first wait to S seconds (the tests use 1).

    .venv/bin/python benchmarks/bench_slurm.py [--poll 1] [--cohort-seed 3] [--patients 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import cohort_config  # noqa: E402
from slurm_cluster import ACCOUNT, GPU_MODEL, slurm_cluster  # noqa: E402
from tessera.demo import make_demo_cohort  # noqa: E402


def run(workdir: Path, args: list[str], env: dict[str, str]) -> float:
    """Seconds the run took (it must succeed)."""
    workdir.mkdir()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args],
                          cwd=workdir, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{workdir.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll", type=int, default=1, help="seconds before the first status check (plugin: 40)")
    parser.add_argument("--cohort-seed", type=int, default=3)
    parser.add_argument("--patients", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, slurm_cluster() as cluster:
        root = Path(tmp)
        cohort = make_demo_cohort(root / "cohort", seed=args.cohort_seed, n_patients=args.patients)
        config = cohort_config(cohort, root, n_shards=2)
        env = {**cluster.env, "PATH": f"{cluster.env['PATH']}{os.pathsep}{Path(sys.executable).parent}",
               "TESSERA_SLURM_PARTITION": "cpu", "TESSERA_SLURM_GPU_PARTITION": "gpu",
               "TESSERA_SLURM_ACCOUNT": ACCOUNT, "TESSERA_SLURM_GPU_MODEL": GPU_MODEL}
        local = run(root / "local", ["--profile", str(REPO / "profiles/local"), "--cores", "2",
                                     "--configfile", str(config)], env)
        on_slurm = run(root / "slurm", ["--profile", str(REPO / "profiles/slurm"), "--configfile", str(config),
                                        "--max-threads", "2", "--slurm-init-seconds-before-status-checks",
                                        str(args.poll)], env)
        jobs = len(cluster.accounting("JobID"))
    print(f"tiny cohort ({args.patients} patients, default target), {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  profiles/local (--cores 2):            {local:7.1f} s   (anchor)")
    print(f"  profiles/slurm ({jobs} jobs, poll {args.poll} s): {on_slurm:7.1f} s   {on_slurm / local:.2f} x local")


if __name__ == "__main__":
    main()
