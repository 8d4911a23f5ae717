"""profiles/slurm on a real one-node SLURM cluster (tests/slurm_cluster.py: Debian's slurmctld, slurmd and
munged 22.05, with slurmdbd and MariaDB for accounting).

snakemake-executor-plugin-slurm reads job states, and a failed job's reason, with ``sacct``, which
answers only from SLURM's accounting database; the plugin's alternative (``--slurm-status-command
squeue``) is not used: it loses a failed job's reason and sees only jobs younger than MinJobAge. So
the fixture runs slurmdbd with MariaDB, as production clusters do.

The GPUs are a typed gres (``gpu:tgpu:3``, device files made by the fixture; there is no GPU): SLURM
counts it, hands it out and sets ``CUDA_VISIBLE_DEVICES``; GPU rules ask for it the plugin's way
(``--gpus=tgpu:1`` from ``gpu=1`` and the profile's GPU model) in the GPU partition.

Every run polls job states 1 s after a change instead of the plugin's 40 s (a one-node cluster answers
at once), and passes ``--max-threads 2``: no rule may ask for more CPUs than the node has, and the local
run it is compared with runs on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import PATCH_ENCODER_ONLY, REPO, cohort_config, demo_slides_sheet, job_stats
from slurm_cluster import ACCOUNT, GPU_MODEL
from tessera.profiles import SLURM_SITE, slurm_resources
from tessera.rundiff import compare_runs

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

PROFILE = str(REPO / "profiles" / "slurm")
# The shell a user launches from: the partitions, account and GPU model of this cluster.
SITE = {SLURM_SITE["partition"]: "cpu", SLURM_SITE["gpu_partition"]: "gpu", SLURM_SITE["account"]: ACCOUNT,
        SLURM_SITE["qos"]: "normal", SLURM_SITE["gpu_model"]: GPU_MODEL}
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "1", "--max-threads", "2"]


def slurm_env(cluster) -> dict[str, str]:
    return {**cluster.env, **SITE, "PATH": f"{cluster.env['PATH']}{os.pathsep}{Path(sys.executable).parent}"}


def run_id(output: str) -> str:
    """The run's SLURM job name (the plugin names every job of a run by one UUID)."""
    return re.search(r"SLURM run ID: (\S+)", output)[1]


def jobs_of(cluster, output: str) -> list[dict[str, str]]:
    """sacct's record of every job of the run that printed ``output``, by rule (from the job comment)."""
    name = run_id(output)
    out = cluster.run("sacct", "--allusers", "--allocations", "--noheader", "--parsable2", "--name", name,
                      "--starttime", "now-1days", "--format=JobID,Comment%200,Partition,Account,QOS,State,AllocTRES%200")
    fields = ("id", "comment", "partition", "account", "qos", "state", "tres")
    jobs = [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line]
    for job in jobs:
        job["rule"] = re.match(r"rule_(\w+?)(_wildcards_|$)", job["comment"])[1]
    return jobs


@dataclass
class Run:
    """A snakemake run going on in the background; ``finish()`` waits for it."""

    cwd: Path
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    output: str = ""
    seconds: float = 0.0

    @classmethod
    def start(cls, cwd: Path, args: list[str], env: dict[str, str]) -> "Run":
        with open(cwd / "run.log", "w") as log:  # the child keeps its own copy of the descriptor
            return cls(cwd, subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def finish(self, timeout: float = 1500) -> "Run":
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.seconds = time.monotonic() - self.started
        self.output = (self.cwd / "run.log").read_text()
        return self


@pytest.fixture(scope="module")
def runs(slurm, tiny_cohort, tmp_path_factory):
    """Three runs at once (their jobs mostly wait on the scheduler, so they share the machine well):
    - ``tiny``: the tiny cohort's default target through profiles/slurm;
    - ``local``: the same through profiles/local, the reference; both from the repository's Snakefile
      with one config file, so the run manifests differ only in the profile they record;
    - ``toy``: tests/executor_workflow through profiles/slurm with --keep-going: its CPU step, its GPU
      step (given what the profile gives every GPU rule) and its failing step, while another job holds
      GPU 0, so SLURM gives the GPU step another one.
    Returns the finished runs by name, and the GPU index the holder had."""
    root = tmp_path_factory.mktemp("slurm-runs")
    # the demo slides and the patch encoder only: the CMU slide (40 % of the tiny cohort's tiles) and hipt4k
    # add reading and compute, not scheduling
    slides = demo_slides_sheet(tiny_cohort, root / "slides.tsv")
    config = cohort_config(tiny_cohort, root, PATCH_ENCODER_ONLY, n_shards=2, slides=str(slides))
    for name in ("tiny", "local", "toy"):
        (root / name).mkdir()
    shutil.copytree(REPO / "tests" / "executor_workflow", root / "toy", dirs_exist_ok=True)
    env = slurm_env(slurm)
    holder = slurm.run("sbatch", "--parsable", "--partition=gpu", f"--gpus={GPU_MODEL}:1", "--output=/dev/null",
                       "--wrap=sleep 600").stdout.strip()
    gpu_rule = [f"gpu_step:{k}={v}" for k, v in slurm_resources(gpus=1, environ=SITE).items()]
    started: dict[str, Run] = {}
    try:
        slurm.wait_for("the GPU holder", lambda: "R" in slurm.run("squeue", "-h", "-j", holder, "-o", "%t").stdout)
        held = re.search(r"IDX:(\d+)", slurm.run("scontrol", "-d", "show", "job", holder).stdout)[1]
        workflow = ["--snakefile", str(REPO / "Snakefile"), "--configfile", str(config)]
        started["toy"] = Run.start(root / "toy", ["--profile", PROFILE, *FAST_POLLING, "--set-resources",
                                                  *gpu_rule, "--keep-going", "gpu/report.json", "fail/never.txt"], env)
        started["tiny"] = Run.start(root / "tiny", [*workflow, "--profile", PROFILE, *FAST_POLLING], env)
        started["local"] = Run.start(root / "local", [*workflow, "--profile", str(REPO / "profiles" / "local"),
                                                      "--cores", "2"], env)
        finished = {"toy": started["toy"].finish()}
        slurm.run("scancel", holder)
        finished.update((name, started[name].finish()) for name in ("tiny", "local"))
    finally:
        slurm.run("scancel", holder, check=False)
        for run in started.values():
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)
    assert finished["local"].proc.returncode == 0, f"the local reference run failed:\n{finished['local'].output[-5000:]}"
    return finished, held


def test_tiny_cohort_on_slurm_writes_the_bytes_of_a_local_run(slurm, runs):
    local, on_slurm = runs[0]["local"].cwd, runs[0]["tiny"].cwd
    output = runs[0]["tiny"].output
    assert runs[0]["tiny"].proc.returncode == 0, output[-6000:]
    print(f"tiny cohort at once through profiles/slurm: {runs[0]['tiny'].seconds:.0f} s, "
          f"profiles/local: {runs[0]['local'].seconds:.0f} s")

    diff = compare_runs(local, on_slurm)
    assert diff.only_a == diff.only_b == [], diff
    assert diff.differ == ["results/manifest.json"], diff.differ
    manifests = [json.loads((d / "results/manifest.json").read_text()) for d in (local, on_slurm)]
    assert manifests[1].pop("profile") == [PROFILE] and manifests[0].pop("profile") == [str(REPO / "profiles/local")]
    assert manifests[0] == manifests[1]

    # Every job but the local ones (the manifest) ran as a SLURM job of this run, where the profile says.
    jobs = jobs_of(slurm, output)
    expected = {rule: n for rule, n in job_stats(output).items() if rule not in ("all", "manifest")}
    assert {rule: sum(j["rule"] == rule for j in jobs) for rule in expected} == expected
    assert all(j["state"] == "COMPLETED" and j["account"] == ACCOUNT and j["qos"] == "normal" for j in jobs), jobs
    gpu_rules = {"extract_features", "embed_gene"}
    for job in jobs:
        if job["rule"] in gpu_rules:
            assert job["partition"] == "gpu" and "gres/gpu=1" in job["tres"], job
        else:
            assert job["partition"] == "cpu" and "gpu" not in job["tres"], job


def test_the_gpu_rule_gets_the_gpu_slurm_chose_and_cpu_rules_none(slurm, runs):
    toy, held = runs[0]["toy"], runs[1]
    workdir, output = toy.cwd, toy.output
    report = json.loads((workdir / "gpu/report.json").read_text())
    assert report["sum"] == 5050
    jobs = {j["rule"]: j for j in jobs_of(slurm, output)}
    gpu_job = jobs["gpu_step"]
    assert gpu_job["partition"] == "gpu" and "gres/gpu=1" in gpu_job["tres"], gpu_job
    assert jobs["cpu_step"]["partition"] == "cpu" and "gpu" not in jobs["cpu_step"]["tres"], jobs["cpu_step"]
    # SLURM gave the job a GPU the holder did not have; tessera's pinning kept exactly that one
    assert report["scheduler_gpus"] not in (None, held)
    assert report["cuda_visible_devices"] == report["pinned"] == report["scheduler_gpus"]
    assert report["gpus_visible"] == 1


def test_a_failed_job_reports_its_slurm_state_and_log_and_the_rest_completes(slurm, runs):
    toy = runs[0]["toy"]
    workdir, output = toy.cwd, toy.output
    assert toy.proc.returncode != 0
    assert (workdir / "gpu/report.json").exists()  # --keep-going: the other jobs finished
    failed = next(j for j in jobs_of(slurm, output) if j["rule"] == "failing_step")
    assert failed["state"] == "FAILED"
    assert f"SLURM-job '{failed['id']}' failed, SLURM status is: 'FAILED'" in output
    log = re.search(rf"log: logs/failing_step\.log, (\S+/{failed['id']}\.log)", output)
    assert log, output[-4000:]
    slurm_log = Path(log[1])
    assert slurm_log.is_file() and slurm_log.is_relative_to(workdir / ".snakemake" / "slurm_logs")
    # the reason, as the rule wrote it, is printed (show-failed-logs) and is in the SLURM log
    assert "Logfile logs/failing_step.log:\n" in output and "failing_step: the input is corrupt" in output
    assert "failing_step: the input is corrupt" in slurm_log.read_text()


def test_ctrl_c_cancels_the_running_jobs(slurm, tmp_path):
    shutil.copytree(REPO / "tests" / "executor_workflow", tmp_path, dirs_exist_ok=True)
    log = open(tmp_path / "run.log", "w")
    main = subprocess.Popen([sys.executable, "-m", "snakemake", "--profile", PROFILE, *FAST_POLLING, "slow/never.txt"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=slurm_env(slurm),
                            start_new_session=True)  # SIGINT at its default: see conftest.pytest_configure
    try:
        def running() -> bool:
            text = (tmp_path / "run.log").read_text()
            return "SLURM run ID" in text and "R" in slurm.run("squeue", "-h", "--name", run_id(text), "-o", "%t").stdout
        slurm.wait_for("the slow job", running, timeout=120)
        os.killpg(main.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the foreground group
        main.wait(timeout=120)
    finally:
        if main.poll() is None:
            os.killpg(main.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "run.log").read_text()
    # scancel returns before SLURM has ended the job (its state reads R for a few seconds on a loaded
    # machine); a 600-s sleep that leaves the queue within a minute was cancelled
    slurm.wait_for("the cancelled job leaving the queue",
                   lambda: slurm.run("squeue", "-h", "--name", run_id(output)).stdout.strip() == "", timeout=60)
    slurm.wait_for("the cancellation's accounting record", lambda: jobs_of(slurm, output), timeout=30)
    (job,) = jobs_of(slurm, output)
    assert job["rule"] == "slow_step" and job["state"].startswith("CANCELLED"), job
    assert not (tmp_path / "slow/never.txt").exists()
