"""The SageMaker executor end to end: profiles/sagemaker, S3 storage (moto) and the job emulator."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from anywhere_support import (
    IMAGE, JOB_ROLE, REGION, REPO, aws_sandbox, copy_cohort, copy_workflow, executor_workflow, run_snakemake,
    s3_client, s3_keys, s3_read, tiny_config,
)

BUCKET = "tessera-sagemaker"


def _args(run: str) -> list[str]:
    return [
        "--profile", str(REPO / "profiles" / "sagemaker"),
        "--default-storage-prefix", f"s3://{BUCKET}/{run}",
        "--container-image", IMAGE,
        "--sagemaker-role", JOB_ROLE,
        "--sagemaker-region", REGION,
        # The emulated container's filesystem is a fresh directory; a relative workdir stays inside it.
        "--sagemaker-workdir", "work",
        "--sagemaker-tags", "project=tessera-test", "owner=ci",
        "--seconds-between-status-checks", "1",
        "--jobs", "4",
    ]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with aws_sandbox(tmp_path_factory.mktemp("sagemaker"), BUCKET) as box:
        yield box


def _created(emulator) -> dict[str, dict]:
    """CreateProcessingJob requests by rule."""
    return {next(t["Value"] for t in r.params["Tags"] if t["Key"] == "snakemake:rule"): r.params
            for r in emulator.requests if r.operation == "CreateProcessingJob"}


@pytest.mark.workflow
def test_workflow_runs_and_a_failing_job_reports_its_reason(sandbox, tmp_path):
    emulator, env = sandbox["emulator"], sandbox["env"]
    workdir = executor_workflow(tmp_path / "wf")
    creds = sandbox["credentials"]
    # The user's own keys also set as S3 storage settings (the aws-batch plugin would write these into
    # job definitions): this process uses them, the jobs never see them.
    env = dict(env, SNAKEMAKE_STORAGE_S3_ACCESS_KEY=creds["AWS_ACCESS_KEY_ID"],
               SNAKEMAKE_STORAGE_S3_SECRET_KEY=creds["AWS_SECRET_ACCESS_KEY"])
    run = run_snakemake([*_args("main"), "all", "fail/never.txt"], workdir, env)
    out = run.stdout + run.stderr
    assert run.returncode != 0, "failing_step must fail the run"
    assert "not passing SNAKEMAKE_STORAGE_S3_ACCESS_KEY, SNAKEMAKE_STORAGE_S3_SECRET_KEY to SageMaker jobs" in out

    # The default target completed: both jobs ran in the image and wrote to S3.
    keys = set(s3_keys(sandbox["s3"], BUCKET, "main/"))
    assert {"main/cpu/numbers.txt", "main/gpu/report.json"} <= keys, out[-4000:]
    report = json.loads(s3_read(sandbox["s3"], BUCKET, "main/gpu/report.json"))
    assert report["sum"] == 5050
    # The GPU rule ran on a GPU instance (one GPU visible, pinned); its credentials came from the role.
    assert report["gpus_visible"] == 1 and report["pinned"] == "0"
    assert report["credential_source"] == "container-role" and report["access_key_prefix"] == "ASIA"
    assert emulator.credential_fetches[JOB_ROLE] >= 2

    created = _created(emulator)
    gpu, cpu = created["gpu_step"], created["cpu_step"]
    assert gpu["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.g5.xlarge"
    # cpu_step: 2 threads, 4096 MB → the cheapest instance with 2 vCPUs and room for 3907 MiB.
    assert cpu["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.large"
    assert gpu["StoppingCondition"]["MaxRuntimeInSeconds"] == 20 * 60
    assert cpu["StoppingCondition"]["MaxRuntimeInSeconds"] == 10 * 60
    for params in created.values():
        assert params["RoleArn"] == JOB_ROLE
        assert params["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"] >= 30
        assert {"Key": "project", "Value": "tessera-test"} in params["Tags"]
        assert params["NetworkConfig"]["EnableNetworkIsolation"] is False

    # The failing job is reported as failed, with SageMaker's reason and where its logs are.
    assert created["failing_step"]
    assert "AlgorithmError: See job logs for more information" in out
    assert "CloudWatch log group /aws/sagemaker/ProcessingJobs" in out
    assert "failing_step: the input is corrupt" in s3_read(sandbox["s3"], BUCKET, "main/logs/failing_step.log").decode()

    # Status came from listing (many jobs per call); each job was described once, when it left InProgress.
    assert emulator.calls("ListProcessingJobs") >= 1
    assert emulator.calls("DescribeProcessingJob") == len(created)

    # No credential of the launching user anywhere: job requests, job logs, Snakemake's output and logs.
    texts = [r.body for r in emulator.requests if r.operation == "CreateProcessingJob"]
    texts += list(emulator.log_texts().values()) + [out]
    texts += [p.read_text(errors="replace") for p in (workdir / ".snakemake" / "log").glob("*.log")]
    for secret in sandbox["credentials"].values():
        assert not any(secret in t for t in texts)


@pytest.mark.workflow
def test_a_job_that_would_carry_credentials_is_not_submitted(sandbox, tmp_path):
    emulator = sandbox["emulator"]
    env = dict(sandbox["env"], INNOCENT_LOOKING=sandbox["credentials"]["AWS_SECRET_ACCESS_KEY"])
    before = emulator.calls("CreateProcessingJob")
    run = run_snakemake([*_args("leak"), "--envvars", "INNOCENT_LOOKING"], executor_workflow(tmp_path / "wf"), env)
    assert run.returncode != 0
    assert "refusing to send SageMaker request CreateProcessingJob" in run.stdout + run.stderr
    assert emulator.calls("CreateProcessingJob") == before


@pytest.mark.workflow
def test_cancel_stops_running_jobs(sandbox, tmp_path):
    emulator, env = sandbox["emulator"], sandbox["env"]
    workdir = executor_workflow(tmp_path / "wf")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *_args("cancel"), "slow/never.txt"], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def slow_job():
            return next((j for j in list(emulator.processing_jobs.values())
                         if {"Key": "snakemake:rule", "Value": "slow_step"} in j.request["Tags"]), None)

        def sleeping():
            job = slow_job()
            # job.run exists a moment before its process starts
            running = job is not None and job.run is not None and job.run.proc is not None
            return running and "sleep 600" in _group_cmdlines(job.run.proc.pid)

        emulator.wait_for(sleeping, timeout_s=180, what="slow_step to be running its command")
        job = slow_job()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    emulator.wait_for(lambda: job.status == "Stopped", timeout_s=30, what="the job to stop")
    assert emulator.calls("StopProcessingJob") == 1
    assert job.run.proc.poll() is not None
    assert "sleep 600" not in _group_cmdlines(job.run.proc.pid)
    assert time.time() - job.created < 300


def _group_cmdlines(pid: int) -> str:
    """Command lines of ``pid``'s process group (what still runs in the emulated container)."""
    return subprocess.run(["pgrep", "-a", "-g", str(pid)], capture_output=True, text=True).stdout


@pytest.mark.workflow
def test_the_workflows_slide_stage_runs_on_sagemaker(sandbox, tmp_path, tiny_cohort):
    """tessera itself, not a toy: slides in S3, sheets shipped by git, one Processing job per shard.

    Runs the slide stage's cohort output (the default target's first part), so the test stays small
    as later stages join the default target.
    """
    s3, env = sandbox["s3"], sandbox["env"]
    workdir = copy_workflow(tmp_path / "wf")
    cohort = copy_cohort(tiny_cohort, workdir / "cohort")
    config = tiny_config(workdir, "cohort", n_shards=1)
    git = ["git", "-c", "user.name=tessera-test", "-c", "user.email=test@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=workdir, check=True)
    subprocess.run([*git, "add", "Snakefile", "rules", "scripts", "config", "envs", "cohort/clinical.tsv",
                    "cohort/genomics.tsv", "cohort/slides.tsv"], cwd=workdir, check=True)
    args = ["results/qc/slides.tsv", "--configfile", str(config), *_args("tessera")]

    # Slides on this machine: stopped before anything is submitted.
    before = len(sandbox["emulator"].requests)
    run = run_snakemake(args, workdir, env)
    assert run.returncode != 0 and "is not an s3:// URI" in run.stderr, run.stderr[-3000:]
    assert len(sandbox["emulator"].requests) == before

    # Slides in S3, the sheet naming them by URI; the cohort's other files under the storage prefix.
    client = s3_client(s3)
    for f in cohort.rglob("*"):
        if f.is_file():
            client.upload_file(str(f), BUCKET, f"tessera/{f.relative_to(workdir)}")
    sheet = pd.read_csv(cohort / "slides.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet["path"] = [f"s3://{BUCKET}/tessera/cohort/{p}" for p in sheet["path"]]
    sheet.to_csv(cohort / "slides.tsv", sep="\t", index=False)
    genomics = pd.read_csv(cohort / "genomics.tsv", sep="\t", dtype=str, keep_default_na=False)
    for col in ("vcf", "bam"):
        genomics[col] = [f"s3://{BUCKET}/tessera/cohort/{p}" if p else "" for p in genomics[col]]
    genomics.to_csv(cohort / "genomics.tsv", sep="\t", index=False)
    subprocess.run([*git, "commit", "-qam", "cohort"], cwd=workdir, check=True)

    run = run_snakemake(args, workdir, env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    qc = pd.read_csv(io.BytesIO(s3_read(s3, BUCKET, "tessera/results/qc/slides.tsv")), sep="\t")
    assert sorted(qc["slide_id"]) == sorted(sheet["slide_id"]) and (qc["status"] == "ok").all()
    keys = set(s3_keys(s3, BUCKET, "tessera/results/"))
    assert all(f"tessera/{p}" in keys for p in qc["patches_h5"])
    jobs = [r.params for r in sandbox["emulator"].requests[before:] if r.operation == "CreateProcessingJob"]
    rules = sorted(next(t["Value"] for t in j["Tags"] if t["Key"] == "snakemake:rule") for j in jobs)
    assert rules == ["patch_slides", "slides_qc"]
    assert jobs[0]["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.large"
