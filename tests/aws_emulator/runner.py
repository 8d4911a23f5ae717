"""Runs an emulated container: a command in a subprocess with the environment a real one would get.

The "image" is a local environment (a ``PATH`` and the variables its Dockerfile sets); the
container's filesystem is a fresh directory per job; its credentials come from the emulator's
container-credentials endpoint for the job's role, as ECS and SageMaker provide them
(``AWS_CONTAINER_CREDENTIALS_FULL_URI``, which botocore reads); nothing of the test process's own
environment leaks in. GPUs visible in the container are modelled by ``TESSERA_GPU_COUNT`` (what
``nvidia-smi -L`` would list there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil


@dataclass
class Image:
    """An emulated container image: directories on ``PATH`` and the ``ENV`` of its Dockerfile."""

    path: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerRun:
    """One container's process. ``on_exit(exit_code, timed_out, stopped)`` is called once when it ends."""

    argv: list[str]
    env: dict[str, str]
    root: Path
    log_path: Path
    timeout_s: float | None
    on_exit: Callable[[int, bool, bool], None]
    proc: subprocess.Popen | None = None
    stopped: bool = False

    def start(self) -> None:
        for sub in ("home", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        assert self.proc is not None
        timed_out = False
        try:
            code = self.proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill()
            code = self.proc.wait()
        self.on_exit(code, timed_out, self.stopped)

    def stop(self) -> None:
        """Stop the container as ``docker stop`` does: SIGTERM to every process, SIGKILL after 2 s."""
        self.stopped = True
        self._kill()

    def _kill(self) -> None:
        """SIGTERM to the container's processes (its process group and every descendant, like a PID
        namespace), SIGKILL to what is left after 2 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            members = [self.proc] + psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            for p in members:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
            _, alive = psutil.wait_procs(members, timeout=2)
            if not alive:
                return


def container_env(image: Image, root: Path, job_env: dict[str, str], platform_env: dict[str, str]) -> dict[str, str]:
    """The environment inside the container: image ENV, then the job's, then what the platform sets."""
    env = {"PATH": os.pathsep.join(image.path + ["/usr/local/bin", "/usr/bin", "/bin"]),
           "HOME": str(root / "home"), "LANG": "C.UTF-8", "TMPDIR": str(root / "tmp")}
    env.update(image.env)
    env.update(job_env)
    env.update(platform_env)
    return env
