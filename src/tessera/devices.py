"""Which device a job computes on, and one GPU per job on a multi-GPU host.

Snakemake only counts ``resources: gpu=1`` and never pins a device (snakemake#281), so two GPU
jobs would both land on GPU 0. :func:`acquire_gpu` gives each job its own GPU: it takes an
exclusive ``flock`` on ``{lock_dir}/gpu{i}.lock`` for the first free ``i`` and holds it for the rest
of the process. The kernel drops the lock when the process ends however it ends (crash, SIGKILL),
so a dead job never keeps a device. The chosen GPU is exported as ``CUDA_VISIBLE_DEVICES`` before
CUDA is initialised, so the job (and its child processes) see exactly one device.

Where an executor already set ``CUDA_VISIBLE_DEVICES`` (a remote GPU instance, a Slurm job), it is
respected and no lock is taken.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = Path(os.environ.get("TESSERA_GPU_LOCK_DIR", "/tmp/tessera-gpu-locks"))
_held: list[int] = []  # file descriptors of held locks, kept open for the process lifetime


def visible_gpu_count() -> int:
    """GPUs on this host according to ``nvidia-smi -L`` (0 without an NVIDIA driver).

    Asked of the driver, not of torch: torch fixes its device list at first use, which must come
    after ``CUDA_VISIBLE_DEVICES`` is set.
    """
    if os.environ.get("TESSERA_GPU_COUNT"):
        return int(os.environ["TESSERA_GPU_COUNT"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def acquire_gpu(n_gpus: int, lock_dir: str | os.PathLike = DEFAULT_LOCK_DIR, timeout_s: float = 24 * 3600,
                poll_s: float = 2.0) -> int:
    """Lock the first free GPU index in ``[0, n_gpus)``, waiting up to ``timeout_s``; return it.

    The lock is held until the process exits. Raises ``TimeoutError`` if none frees up in time.
    """
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for i in range(n_gpus):
            fd = os.open(lock_dir / f"gpu{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held.append(fd)
            return i
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {n_gpus} after {timeout_s:.0f} s (locks in {lock_dir})")
        time.sleep(poll_s)


def torch_device(requested: str = "auto"):
    """The ``torch.device`` for this job: ``cpu``, ``cuda`` or ``auto`` (CUDA when present, else CPU).

    On a host with several GPUs and no ``CUDA_VISIBLE_DEVICES`` set, one free GPU is locked for
    this process first (see :func:`acquire_gpu`). Asking for ``cuda`` where there is none is an error.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {requested!r}")
    if requested != "cpu" and "CUDA_VISIBLE_DEVICES" not in os.environ:
        n = visible_gpu_count()
        if n > 0:
            gpu = acquire_gpu(n)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
            log.info("pinned to GPU %d of %d (lock in %s)", gpu, n, DEFAULT_LOCK_DIR)

    import torch

    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available; set device: auto or cpu")
    return torch.device("cuda")
