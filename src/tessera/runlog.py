"""Logging for workflow jobs: the library logs through ``logging``; a job sends it to its log file.

Every job script runs inside :func:`log_to` with its log, which is unique to the job (rule and
wildcards), so that is also where a job takes its lock (:func:`tessera.locks.hold_job_lock`): two
processes never compute the same job — the same shard — at once, e.g. a job left running by a
Snakemake process that was killed and the same job of a rerun.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from tessera.locks import hold_job_lock


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send all log records to ``path`` (and stderr) for the duration; log a failure's traceback there too.

    With a ``path``, first hold the job's lock (``{path}.lock``): raises
    :class:`tessera.locks.JobRunning` if another live process runs the same job (its log is left alone).
    """
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path:
        hold_job_lock(path)
        handlers.append(logging.FileHandler(path, mode="w", encoding="utf-8"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    old_level = root.level
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(level)
    logger = logging.getLogger("tessera")
    try:
        yield logger
    except BaseException:
        logger.exception("job failed")
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)
