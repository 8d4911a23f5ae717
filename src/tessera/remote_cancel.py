"""Ctrl-C cancels every job a remote executor submitted, not only those it is not checking right then.

Snakemake's remote executors (SLURM, LSF, AWS Batch, SageMaker) keep the submitted jobs in
``RemoteExecutor.active_jobs``; a status thread takes them all *out* of that list while it asks the
scheduler for their states and puts the running ones back afterwards (snakemake-interface-executor-plugins
9.4.0, ``_wait_for_jobs``). Ctrl-C cancels ``active_jobs``: arriving during a status check, it cancels
nothing, and the cluster jobs run on after Snakemake has exited. The longer a check takes (a loaded
scheduler or machine), the likelier: the SLURM Ctrl-C test failed so in 2 of 3 runs of the whole suite
(slurmctld never got a kill request for the job), not when run alone.

:func:`keep_checked_jobs_cancellable` replaces that loop with one that leaves the jobs in the list while
they are checked and then removes those that finished. The remote profiles call it while they are read.
A job that finishes during the last check before a Ctrl-C may then be cancelled after it ended, which the
schedulers answer with a warning at most.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version

#: The interface release whose status loop this replaces (constraints.txt pins it).
PATCHED_RELEASE = "9.4.0"


async def _wait_for_jobs(self) -> None:
    """``RemoteExecutor._wait_for_jobs`` with the jobs under check left in ``active_jobs``."""
    from snakemake_interface_executor_plugins.utils import async_lock

    await asyncio.sleep(self.workflow.executor_plugin.common_settings.init_seconds_before_status_checks)
    while True:
        async with async_lock(self.lock):
            if not self.wait:
                return
            checking = list(self.active_jobs)
        still_active = [job async for job in self.check_active_jobs(checking)]
        async with async_lock(self.lock):
            checked = {id(job) for job in checking}
            submitted_meanwhile = [job for job in self.active_jobs if id(job) not in checked]
            self.active_jobs[:] = submitted_meanwhile + still_active
        await self.sleep()


def keep_checked_jobs_cancellable() -> None:
    """Install :func:`_wait_for_jobs` on Snakemake's ``RemoteExecutor`` (idempotent). Another release of
    snakemake-interface-executor-plugins is left as it is, with a warning: its loop may differ."""
    from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

    installed = version("snakemake-interface-executor-plugins")
    if installed != PATCHED_RELEASE:
        print(f"tessera: snakemake-interface-executor-plugins {installed} (not {PATCHED_RELEASE}): Ctrl-C may "
              "leave jobs running that were being checked (tessera.remote_cancel)", file=sys.stderr)
        return
    RemoteExecutor._wait_for_jobs = _wait_for_jobs
