"""A job's log is its lock: two processes never run the same job (the same shard) at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tessera import locks
from tessera.locks import JobRunning
from tessera.runlog import log_to

# The job of a Snakemake process that was killed: still running, writing its shard and its log.
ORPHAN = """
import logging, sys, time
from tessera.runlog import log_to
with log_to(sys.argv[1]):
    logging.getLogger("tessera").info("orphan at work")
    print("ready", flush=True)
    time.sleep(60)
"""


def test_a_rerun_of_a_job_still_running_elsewhere_stops_before_it_writes(tmp_path):
    log = tmp_path / "logs" / "features" / "shard-3.log"
    orphan = subprocess.Popen([sys.executable, "-c", ORPHAN, str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout.readline().strip() == "ready"
        with pytest.raises(JobRunning, match=rf"PID {orphan.pid}.*kill {orphan.pid}"):
            with log_to(log):
                raise AssertionError("the rerun's job must not start")
        assert "orphan at work" in log.read_text()  # its log is left alone
        orphan.send_signal(signal.SIGKILL)
        orphan.wait(timeout=30)
        with log_to(log):  # the lock went with the process
            pass
        assert "orphan at work" not in log.read_text()
    finally:
        orphan.kill()
        while locks._held:
            os.close(locks._held.popitem()[1])
