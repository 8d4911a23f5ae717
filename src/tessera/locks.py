"""Exclusive locks held for the rest of a process: one GPU per job (:mod:`tessera.devices`), one job per
shard (:func:`hold_job_lock`).

Each is a POSIX record lock (``fcntl``/``lockf``) on a lock file. It belongs to the process that took
it, so it is released exactly when that process ends, however it ends (exit, crash, SIGKILL), and
children never inherit it: a DataLoader worker or any other child the process forked that outlives it
holds nothing. (An ``flock`` belongs to the open file instead, which forked children share.) The lock is
also dropped if the process closes *any* descriptor of the lock file, so each lock file is opened once
per process and kept open (:data:`_held`). The file holds the holder's PID, for the person reading it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from tessera.errors import TesseraError

log = logging.getLogger(__name__)

_held: dict[Path, int] = {}  # lock file → descriptor of each held lock, open for the process lifetime


class JobRunning(TesseraError):
    """Another live process holds the job's lock: it computes the same outputs."""


def _open(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's file in a sticky directory (fs.protected_regular refuses O_CREAT)
        try:
            return os.open(path, os.O_RDWR)
        except PermissionError:
            raise PermissionError(f"cannot open the lock file {path} for writing (an exclusive lock needs it). "
                                  f"Fix: its owner runs chmod 666 {path}") from None
    try:
        os.fchmod(fd, 0o666)  # let other users' processes lock it as well
    except OSError:
        pass
    return fd


def holds(path: str | os.PathLike) -> bool:
    """Whether this process holds the lock on ``path``."""
    return Path(os.path.abspath(path)) in _held


def try_lock(path: str | os.PathLike) -> bool:
    """Lock ``path`` (created if missing) for the rest of this process; ``False`` if another process holds it.

    Never call it for a lock this process holds (:func:`holds`): POSIX locks of one process do not
    conflict, and the second descriptor would drop the lock when closed.
    """
    path = Path(os.path.abspath(path))
    assert path not in _held, f"{path} is locked by this process already"
    fd = _open(path)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    _held[path] = fd
    return True


def holder(path: str | os.PathLike) -> str:
    """The PID written in a lock file ("unknown" if unreadable)."""
    try:
        return Path(path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def hold_job_lock(log_path: str | os.PathLike) -> None:
    """Hold ``{log_path}.lock`` for the rest of this job; raise :class:`JobRunning` if a live process holds it.

    A job's log path is unique to the job (rule and wildcards, e.g. ``logs/features/shard-3.log``), so two
    processes hold it only when they compute the same outputs — typically the job of a Snakemake run that
    was killed (SIGKILL leaves its jobs running) and the same job of a rerun, which would write one shard
    directory and resume cache together. A file system without POSIX locks (some network mounts) gets a
    warning and no lock.
    """
    lock = Path(f"{os.fspath(log_path)}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    if holds(lock):
        return
    try:
        held = try_lock(lock)
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            log.warning("no lock for this job (%s does not support POSIX locks: %s)", lock.parent, e)
            return
        raise
    if not held:
        pid = holder(lock)
        raise JobRunning(
            f"this job's outputs are being computed by another process still running (PID {pid}, lock {lock}): "
            "typically the job of a Snakemake run that was killed. Fix: wait for it to end, or stop it "
            f"(kill {pid}), then run Snakemake again"
        )
