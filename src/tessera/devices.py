"""Which device a job computes on, one GPU per job on a multi-GPU host, and its CPU threads.

Snakemake only counts ``resources: gpu=1`` and never pins a device (snakemake#281), so two GPU
jobs would both land on GPU 0. :func:`pin_gpu` gives each job its own GPU: it takes an exclusive
lock (:mod:`tessera.locks`) on ``{lock_dir}/gpu-{id}.lock`` for the first free GPU and holds it for
the rest of the process. The chosen GPU is exported as ``CUDA_VISIBLE_DEVICES`` before CUDA is
initialised, so the job (and the programs it starts) see exactly one device.

The lock is released exactly when the job's process ends, however it ends (exit, crash, SIGKILL); a
DataLoader worker or any other child forked by the job that outlives it (forked workers take a few
seconds to notice their parent died) does not hold it. What the lock does not cover: a program the
job started that goes on using the GPU after the job ended — the device counts as free while it runs.

Which GPUs a job may use (:func:`host_gpus`):

- ``CUDA_VISIBLE_DEVICES`` when set: its entries (indices or UUIDs). One entry means a scheduler or
  a one-GPU instance already gave this job its device: it is kept and no lock is taken. Several
  entries are shared out among the jobs, one each. Empty (or ``-1``) means no GPU.
- otherwise, inside a SLURM or LSF job (``SLURM_JOB_ID``, ``LSB_JOBID``), none: the scheduler sets
  ``CUDA_VISIBLE_DEVICES`` for the GPUs it allocated, so a job without it was given no GPU, and the
  node's other GPUs belong to other jobs,
- otherwise ``TESSERA_GPU_COUNT`` GPUs ``0 … n-1`` when set (to use fewer GPUs than the host has,
  and in tests),
- otherwise every GPU that ``nvidia-smi -L`` lists.

Inside a scheduler's job the locks are the job's own (its ID is in their names): the GPUs are that
job's alone, and with device cgroups every job numbers its GPUs from 0.

Jobs of one user, or of several users sharing ``TESSERA_GPU_LOCK_DIR`` (default
``/tmp/tessera-gpu-locks``, created world-writable with the sticky bit like ``/tmp``), never share
a GPU. The ``local-cuda`` profile caps concurrent GPU jobs at :func:`visible_gpu_count`, so within
one run a job never waits for a device; a job waits (up to ``timeout_s``) only for GPUs another
run holds.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tessera import locks

log = logging.getLogger(__name__)

#: torch's float functions that call Intel MKL's vector-math library (VML) in the x86 CPU builds.
VML_FUNCTIONS = ("exp", "log", "sqrt", "sin", "cos", "tanh", "erf")


def default_lock_dir() -> Path:
    """``TESSERA_GPU_LOCK_DIR``, or ``/tmp/tessera-gpu-locks``."""
    return Path(os.environ.get("TESSERA_GPU_LOCK_DIR") or "/tmp/tessera-gpu-locks")


def scheduler_job_id() -> str | None:
    """The SLURM or LSF job this process runs in (``SLURM_JOB_ID``, ``LSB_JOBID``), or None."""
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("LSB_JOBID") or None


def _nvidia_smi_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def host_gpus() -> list[str]:
    """IDs of the GPUs this process may use (see the module docstring for where they come from).

    Asked of the environment and the driver, never of torch: torch fixes its device list at first
    use, which must come after ``CUDA_VISIBLE_DEVICES`` is set.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        # CUDA stops at the first invalid entry; "-1" is the usual way to hide every GPU.
        return [] if not ids or ids[0].startswith("-") else ids
    if scheduler_job_id() is not None:
        return []
    count = os.environ.get("TESSERA_GPU_COUNT")
    if count:
        try:
            n = int(count)
        except ValueError:
            raise ValueError(f"TESSERA_GPU_COUNT must be a whole number, not {count!r}") from None
        return [str(i) for i in range(max(n, 0))]
    return [str(i) for i in range(_nvidia_smi_count())]


def visible_gpu_count() -> int:
    """How many GPUs jobs on this host may use: the ``local-cuda`` profile's cap on GPU jobs."""
    return len(host_gpus())


def _lock_dir_ready(lock_dir: Path) -> None:
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock_dir.chmod(0o1777)
        except OSError:
            pass


def _lock_name(gpu: str) -> str:
    """``gpu-{id}.lock``, or ``gpu-{job}-{id}.lock`` inside a scheduler's job (module docstring)."""
    job = scheduler_job_id()
    return "gpu-" + re.sub(r"[^A-Za-z0-9._-]", "_", f"{job}-{gpu}" if job else gpu) + ".lock"


def acquire_gpu(
    gpus: Sequence[str],
    lock_dir: str | os.PathLike | None = None,
    timeout_s: float = 24 * 3600,
    poll_s: float = 1.0,
) -> str:
    """Lock the first free GPU of ``gpus`` (IDs), waiting up to ``timeout_s`` seconds; return its ID.

    The lock is held until the process exits (module docstring). Raises ``TimeoutError`` if none frees up in time
    (``timeout_s=0`` tries once).
    """
    if not gpus:
        raise ValueError("no GPUs to choose from")
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    _lock_dir_ready(lock_dir)
    deadline = time.monotonic() + timeout_s
    while True:
        for gpu in gpus:
            path = lock_dir / _lock_name(gpu)
            if not locks.holds(path) and locks.try_lock(path):
                return gpu
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no free GPU among {list(gpus)} after {timeout_s:.0f} s (locks in {lock_dir})")
        time.sleep(poll_s)


def pin_gpu(lock_dir: str | os.PathLike | None = None, timeout_s: float = 24 * 3600) -> str | None:
    """Make exactly one GPU visible to this process and return its ID; ``None`` when there is none.

    Call before anything initialises CUDA. With one GPU listed in ``CUDA_VISIBLE_DEVICES`` that GPU
    is returned as it is; with several, or none listed, a free one is locked (:func:`acquire_gpu`)
    and ``CUDA_VISIBLE_DEVICES`` set to it. Calling it again returns the GPU already pinned.
    """
    gpus = host_gpus()
    if not gpus:
        return None
    if len(gpus) == 1 and "CUDA_VISIBLE_DEVICES" in os.environ:
        return gpus[0]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised before a GPU was pinned; call pin_gpu() before using torch.cuda")
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    gpu = acquire_gpu(gpus, lock_dir, timeout_s=timeout_s)
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # indices as nvidia-smi numbers them
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log.info("pinned to GPU %s of %s (lock in %s)", gpu, ",".join(gpus), lock_dir)
    return gpu


def torch_device(requested: str = "auto"):
    """The ``torch.device`` for this job: ``cpu``, ``cuda`` or ``auto`` (CUDA when present, else CPU).

    For ``auto`` and ``cuda`` one GPU is pinned for this process first (:func:`pin_gpu`). Asking for
    ``cuda`` where there is none is an error.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {requested!r}")
    if requested != "cpu":
        pin_gpu()

    import torch

    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available; set device: auto or cpu")
    return torch.device("cuda")


def use_cpu_threads(threads: int) -> None:
    """Compute on ``threads`` CPU threads (torch's intra-op pool), with bits that do not depend on timing.

    MKL's vector-math library, behind torch's exp, log, sqrt, sin, cos, tanh and erf, sets itself up
    on its first call. When that first call is split over two OpenMP threads or more, it returns
    other last bits in some fresh processes: 7.5 % of them with torch 2.13 and MKL 2024.2 on 2
    threads (benchmarks/vml_first_call.py), and so one run's NT embeddings differed from another's.
    Later calls agree. Calling each function once here, on a tensor small enough for ATen to compute
    on this thread alone, sets the library up before any parallel call.
    """
    import torch

    torch.set_num_threads(max(1, threads))
    for dtype in (torch.float32, torch.float64):
        small = torch.ones(8, dtype=dtype)
        for name in VML_FUNCTIONS:
            getattr(torch, name)(small)
