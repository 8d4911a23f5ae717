"""profiles/local-cuda end to end: Snakemake caps GPU jobs at the GPU count, the allocator pins one each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SNAKEFILE = """
rule all:
    input: expand("out/{i}.json", i=range(6))

rule fake_gpu_job:
    output: "out/{i}.json"
    resources: gpu=1
    shell: "python job.py > {output}"
"""

# Records when the job process started (before it asked for a GPU), which GPU it got and when it ended.
JOB = """
import json, os, time
launched = time.time()
from tessera.devices import pin_gpu
gpu = pin_gpu()
time.sleep(1.0)
print(json.dumps({"launched": launched, "gpu": gpu, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "end": time.time()}))
"""


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.workflow
def test_local_cuda_profile_runs_at_most_one_job_per_gpu(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "job.py").write_text(JOB)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(TESSERA_GPU_COUNT="2", TESSERA_GPU_LOCK_DIR=str(tmp_path / "locks"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(REPO / "profiles" / "local-cuda"), "--cores", "6"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'gpu=Resource("gpu", 2)' in run.stderr  # the profile read the GPU count

    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*.json"))]
    assert len(records) == 6
    assert all(r["visible"] == r["gpu"] and r["gpu"] in ("0", "1") for r in records)
    # Six cores would allow six jobs at once: the gpu=2 cap keeps it to two processes at a time ...
    assert _max_overlap([(r["launched"], r["end"]) for r in records]) == 2
    # ... and the two that run together are on different GPUs.
    for gpu in ("0", "1"):
        assert _max_overlap([(r["launched"], r["end"]) for r in records if r["gpu"] == gpu]) == 1
