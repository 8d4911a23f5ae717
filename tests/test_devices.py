"""The one-GPU-per-job allocator: fake GPUs (``TESSERA_GPU_COUNT``), real processes, real flocks; and CPU
threads whose results do not depend on timing (``use_cpu_threads``)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from tessera import devices, locks

# A fake GPU job: pin a device, hold it for a while, record when.
JOB = """
import json, os, sys, time
from tessera.devices import pin_gpu
gpu = pin_gpu()
start = time.monotonic()
time.sleep(float(sys.argv[2]))
print(json.dumps({"gpu": gpu, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                  "end": time.monotonic()}))
"""


# What decides which GPUs a job may use; the tests set each themselves (the suite may run inside a SLURM job).
DEVICE_ENV = ("CUDA_VISIBLE_DEVICES", "TESSERA_GPU_COUNT", "CUDA_DEVICE_ORDER", "SLURM_JOB_ID", "LSB_JOBID")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEVICE_ENV}
    env["TESSERA_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    env.update(extra)
    return env


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in DEVICE_ENV:
        monkeypatch.setenv(var, "unset")  # recorded, so whatever pin_gpu() sets is undone afterwards
        monkeypatch.delenv(var)
    monkeypatch.setenv("TESSERA_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(devices, "_nvidia_smi_count", lambda: 0)
    yield
    while locks._held:
        os.close(locks._held.popitem()[1])


@pytest.mark.parametrize(
    "visible, count, expected",
    [
        (None, None, []),
        (None, "3", ["0", "1", "2"]),
        ("2,3", "8", ["2", "3"]),  # CUDA_VISIBLE_DEVICES wins over TESSERA_GPU_COUNT
        ("GPU-5f1c,GPU-77aa", None, ["GPU-5f1c", "GPU-77aa"]),
        ("", "4", []),
        ("-1", None, []),
    ],
)
def test_host_gpus_reads_the_environment(clean_env, monkeypatch, visible, count, expected):
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if count is not None:
        monkeypatch.setenv("TESSERA_GPU_COUNT", count)
    assert devices.host_gpus() == expected
    assert devices.visible_gpu_count() == len(expected)


def test_one_listed_gpu_is_kept_without_a_lock(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert devices.pin_gpu() == "5"
    assert not locks._held and not (tmp_path / "locks").exists()


def test_several_listed_gpus_are_shared_out_one_each(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert devices.pin_gpu() == "2"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert devices.pin_gpu() == "2"  # pinned already: the same GPU, no second lock
    assert len(locks._held) == 1
    # another process sharing the lock directory gets the other GPU
    out = subprocess.run([sys.executable, "-c", JOB, "x", "0"], env=_env(tmp_path, CUDA_VISIBLE_DEVICES="2,3"),
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["visible"] == "3"


def test_no_gpu_means_cpu_and_no_pinning(clean_env):
    assert devices.pin_gpu() is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert str(devices.torch_device("auto")) == "cpu"
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda'"):
        devices.torch_device("gpu")


@pytest.mark.parametrize("job_var", ["SLURM_JOB_ID", "LSB_JOBID"])
def test_a_scheduler_job_without_a_gpu_takes_none_of_the_nodes(clean_env, monkeypatch, tmp_path, job_var):
    """SLURM sets CUDA_VISIBLE_DEVICES only for the GPUs it allocated: a job it gave none must not
    lock and use a GPU of the node (another job's), whatever nvidia-smi lists."""
    monkeypatch.setenv(job_var, "4242")
    monkeypatch.setenv("TESSERA_GPU_COUNT", "4")
    monkeypatch.setattr(devices, "_nvidia_smi_count", lambda: 4)
    assert devices.host_gpus() == [] and devices.visible_gpu_count() == 0
    assert devices.pin_gpu() is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and not (tmp_path / "locks").exists()
    assert str(devices.torch_device("auto")) == "cpu"


def test_the_gpu_slurm_allocated_is_the_one_used(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what slurmd sets for the job's GPU
    assert devices.pin_gpu() == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not locks._held and not (tmp_path / "locks").exists()


def test_slurm_jobs_never_wait_for_each_others_gpus(clean_env, monkeypatch, tmp_path):
    """With device cgroups every SLURM job numbers its own GPUs from 0: job 101 holding its GPUs 0 and 1
    must not hold back job 102, whose GPUs 0 and 1 are other devices."""
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    assert {devices.acquire_gpu(["0", "1"], timeout_s=0) for _ in range(2)} == {"0", "1"}
    code = "from tessera.devices import pin_gpu; print(pin_gpu(timeout_s=0))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env(tmp_path, SLURM_JOB_ID="102", CUDA_VISIBLE_DEVICES="0,1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_requested_without_cuda_is_a_clear_error(clean_env, monkeypatch):
    monkeypatch.setenv("TESSERA_GPU_COUNT", "2")  # a GPU is pinned, but torch finds no CUDA
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        devices.torch_device("cuda")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert str(devices.torch_device("cpu")) == "cpu"


def test_concurrent_jobs_never_share_a_gpu(tmp_path):
    """Nine jobs on three fake GPUs: jobs on the same GPU never overlap in time; all three are used."""
    env = _env(tmp_path, TESSERA_GPU_COUNT="3")
    procs = [subprocess.Popen([sys.executable, "-c", JOB, "x", "0.6"], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(9)]
    records = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(r["visible"] == r["gpu"] for r in records)  # each job sees exactly its own GPU
    assert {r["gpu"] for r in records} == {"0", "1", "2"}
    for gpu in ("0", "1", "2"):
        spans = sorted((r["start"], r["end"]) for r in records if r["gpu"] == gpu)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"two jobs held GPU {gpu} at once: {spans}"


def test_a_killed_jobs_gpu_is_released(tmp_path):
    env = _env(tmp_path, TESSERA_GPU_COUNT="1")
    holder = subprocess.Popen([sys.executable, "-c", JOB, "x", "600"], env=env, stdout=subprocess.PIPE)
    lock = tmp_path / "locks" / "gpu-0.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text().strip() == str(holder.pid)):
        assert time.monotonic() < deadline and holder.poll() is None, "the holder never took GPU 0"
        time.sleep(0.05)
    try:
        with pytest.raises(TimeoutError, match="no free GPU"):
            devices.acquire_gpu(["0"], tmp_path / "locks", timeout_s=0)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        started = time.monotonic()
        assert devices.acquire_gpu(["0"], tmp_path / "locks", timeout_s=10, poll_s=0.05) == "0"
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        while locks._held:
            os.close(locks._held.popitem()[1])


# A GPU job that forks a child (as DataLoader workers are forked) which outlives it; it writes the child's PID.
JOB_FORKS = """
import os, sys, time
from tessera.devices import pin_gpu
pin_gpu()
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
open(sys.argv[1], "w").write(str(child))
"""


def test_a_child_that_outlives_its_job_does_not_keep_the_gpu(tmp_path):
    env = _env(tmp_path, TESSERA_GPU_COUNT="1")
    pid_file = tmp_path / "child.pid"
    subprocess.run([sys.executable, "-c", JOB_FORKS, str(pid_file)], env=env, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = int(pid_file.read_text())
    try:
        os.kill(child, 0)  # the job has ended, its child still runs
        assert devices.acquire_gpu(["0"], tmp_path / "locks", timeout_s=0) == "0"
    finally:
        os.kill(child, signal.SIGKILL)
        while locks._held:
            os.close(locks._held.popitem()[1])


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_torch_device_on_a_cuda_host_sees_exactly_one_gpu(tmp_path):
    code = "from tessera.devices import torch_device; import torch; d = torch_device('cuda'); " \
           "print(d.type, torch.cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cuda", "1"]


def test_the_first_vector_math_call_on_two_threads_gives_the_usual_bits():
    """Without the set-up in use_cpu_threads, 7.5 % of fresh processes got other bits from their first
    call (21 of 280 in benchmarks/vml_first_call.py): 30 processes all agreeing would then happen 1 time in 10.
    Each trial is the benchmark's: a fresh process, the NT rotary table, one function, first call vs second."""
    from concurrent.futures import ThreadPoolExecutor

    spec = importlib.util.spec_from_file_location("vml_first_call", REPO / "benchmarks" / "vml_first_call.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    names = [devices.VML_FUNCTIONS[i % len(devices.VML_FUNCTIONS)] for i in range(30)]
    with ThreadPoolExecutor(2) as pool:
        differs = list(pool.map(lambda name: benchmark.first_call_differs(2, name, "tessera"), names))
    assert not any(differs), [name for name, bad in zip(names, differs) if bad]
