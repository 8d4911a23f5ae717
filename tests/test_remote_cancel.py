"""Ctrl-C during a remote executor's status check (tessera.remote_cancel): the jobs under check stay
cancellable. End to end on a real SLURM: tests/test_slurm.py::test_ctrl_c_cancels_the_running_jobs."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import threading
from types import SimpleNamespace

from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

from tessera import remote_cancel

RUNNING, FINISHED, SUBMITTED_MEANWHILE = "job 1 (running)", "job 2 (finishes)", "job 3 (submitted meanwhile)"


class ExecutorDuringOneCheck:
    """What ``_wait_for_jobs`` uses of a RemoteExecutor, for one status check: it records the jobs a
    Ctrl-C would cancel while the scheduler is being asked, a job is submitted meanwhile, one finishes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active_jobs = [RUNNING, FINISHED]
        self.wait = True
        self.workflow = SimpleNamespace(executor_plugin=SimpleNamespace(
            common_settings=SimpleNamespace(init_seconds_before_status_checks=0)))
        self.cancellable_during_check = None

    async def check_active_jobs(self, jobs):
        with self.lock:  # as RemoteExecutor.cancel() reads them
            self.cancellable_during_check = list(self.active_jobs)
            self.active_jobs.append(SUBMITTED_MEANWHILE)  # as report_job_submission() adds one
        for job in jobs:
            if job == RUNNING:
                yield job

    async def sleep(self):
        self.wait = False  # one check is enough


def upstream_remote_executor() -> type:
    """A fresh copy of the interface's RemoteExecutor (a profile read in this process may have patched
    the imported one)."""
    spec = importlib.util.spec_from_file_location("upstream_remote", inspect.getfile(RemoteExecutor))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RemoteExecutor


def test_snakemakes_status_loop_hides_the_jobs_it_checks_from_a_cancel():
    """The pinned interface release still has the window (if this fails, upstream fixed it: drop the patch)."""
    executor = ExecutorDuringOneCheck()
    asyncio.run(upstream_remote_executor()._wait_for_jobs(executor))
    assert executor.cancellable_during_check == []
    assert executor.active_jobs == [SUBMITTED_MEANWHILE, RUNNING]


def test_jobs_under_a_status_check_stay_cancellable_and_finished_ones_leave():
    executor = ExecutorDuringOneCheck()
    asyncio.run(remote_cancel._wait_for_jobs(executor))
    assert executor.cancellable_during_check == [RUNNING, FINISHED]
    assert executor.active_jobs == [SUBMITTED_MEANWHILE, RUNNING]


def test_the_fix_is_installed_for_the_pinned_release(monkeypatch):
    monkeypatch.setattr(RemoteExecutor, "_wait_for_jobs", upstream_remote_executor()._wait_for_jobs)
    remote_cancel.keep_checked_jobs_cancellable()
    assert RemoteExecutor.__dict__["_wait_for_jobs"] is remote_cancel._wait_for_jobs
