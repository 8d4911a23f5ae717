"""profiles/aws-batch end to end: snakemake-executor-plugin-aws-batch, S3 storage (moto), the job emulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from unittest import mock

import pytest
import yte

from anywhere_support import (
    IMAGE, JOB_QUEUE, JOB_ROLE, REGION, REPO, aws_sandbox, executor_workflow, run_snakemake, s3_keys, s3_read,
)

BUCKET = "tessera-batch"
PROFILE = REPO / "profiles" / "aws-batch"


def _args(run: str) -> list[str]:
    return [
        "--profile", str(PROFILE),
        "--default-storage-prefix", f"s3://{BUCKET}/{run}",
        "--container-image", IMAGE,
        "--aws-batch-region", REGION,
        "--aws-batch-job-queue", JOB_QUEUE,
        "--aws-batch-job-role", JOB_ROLE,
        # The tiny workflow's GPU rule, listed as profiles/aws-batch lists the workflow's own GPU rules.
        "--set-resources", "gpu_step:_gpus=1",
        "--jobs", "4",
    ]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with aws_sandbox(tmp_path_factory.mktemp("batch"), BUCKET) as box:
        yield box


def _definitions(emulator) -> dict[str, dict]:
    """RegisterJobDefinition requests by rule (the plugin names definitions snakejob-def-RULE-UUID)."""
    return {r.params["jobDefinitionName"].removeprefix("snakejob-def-").rsplit("-", 5)[0]: r.params
            for r in emulator.requests if r.operation == "RegisterJobDefinition"}


def _requirements(definition: dict) -> dict[str, str]:
    return {r["type"]: r["value"] for r in definition["containerProperties"]["resourceRequirements"]}


@pytest.mark.workflow
def test_workflow_runs_and_a_failing_job_reports_its_reason(sandbox, tmp_path):
    emulator, env = sandbox["emulator"], sandbox["env"]
    workdir = executor_workflow(tmp_path / "wf")
    run = run_snakemake([*_args("main"), "all", "fail/never.txt"], workdir, env)
    out = run.stdout + run.stderr
    assert run.returncode != 0, "failing_step must fail the run"

    assert {"main/cpu/numbers.txt", "main/gpu/report.json"} <= set(s3_keys(sandbox["s3"], BUCKET, "main/")), out[-4000:]
    report = json.loads(s3_read(sandbox["s3"], BUCKET, "main/gpu/report.json"))
    assert report["sum"] == 5050
    assert report["gpus_visible"] == 1 and report["pinned"] == "0"
    assert report["credential_source"] == "container-role" and report["access_key_prefix"] == "ASIA"

    definitions = _definitions(emulator)
    gpu, cpu = _requirements(definitions["gpu_step"]), _requirements(definitions["cpu_step"])
    assert gpu == {"VCPU": "1", "MEMORY": "8192", "GPU": "1"}
    assert cpu == {"VCPU": "2", "MEMORY": "4096"}  # no GPU, and the memory asked for, not less
    with open(PROFILE / "config.v8+.yaml") as f, mock.patch.object(sys, "argv", ["snakemake", "--container-image", IMAGE]):
        timeout = yte.process_yaml(f, require_use_yte=True)["aws-batch-task-timeout"]  # (the profile's guards read argv)
    assert timeout > 300
    for d in definitions.values():
        assert d["timeout"] == {"attemptDurationSeconds": timeout}
        assert d["containerProperties"]["jobRoleArn"] == JOB_ROLE
        assert d["containerProperties"]["image"] == IMAGE

    # The failing job: reported failed with Batch's reason and the container's exit code (the job's
    # Snakemake exits 1 when its rule fails); the rule's log reached S3.
    assert "AWS Batch job failed. Code: 1, Msg: Essential container in task exited" in out
    assert "failing_step: the input is corrupt" in s3_read(sandbox["s3"], BUCKET, "main/logs/failing_step.log").decode()

    texts = [r.body for r in emulator.requests] + list(emulator.log_texts().values()) + [out]
    texts += [p.read_text(errors="replace") for p in (workdir / ".snakemake" / "log").glob("*.log")]
    for secret in sandbox["credentials"].values():
        assert not any(secret in t for t in texts)


def _bypass(case: str, creds: dict[str, str], tmp_path) -> tuple[list[str], dict[str, str], str]:
    """``(extra arguments, extra environment, the secret that must not be sent)`` of one way credentials
    could reach a job definition. Storage keys of their own (not the identity's) in the first three:
    a storage setting that is a credential is guarded whoever it belongs to."""
    storage_key, storage_secret = "AKIASTORAGE" + "7" * 9, "storage-secret-" + "x" * 24
    if case == "variables":
        return [], {"SNAKEMAKE_STORAGE_S3_ACCESS_KEY": storage_key,
                    "SNAKEMAKE_STORAGE_S3_SECRET_KEY": storage_secret}, storage_secret
    if case == "abbreviated-options":  # argparse accepts unambiguous prefixes of options
        return ["--storage-s3-access", storage_key, "--storage-s3-secret", storage_secret], {}, storage_secret
    if case == "workflow-profile":
        profile = tmp_path / "wfprofile"
        profile.mkdir()
        (profile / "config.v8+.yaml").write_text(
            f"storage-s3-access-key: {storage_key}\nstorage-s3-secret-key: {storage_secret}\n")
        return ["--workflow-profile", str(profile)], {}, storage_secret
    if case == "envvar-by-name":  # --envvar: an abbreviation of --envvars
        return ["--envvar", "AWS_SECRET_ACCESS_KEY"], {}, creds["AWS_SECRET_ACCESS_KEY"]
    assert case == "envvar-by-value"
    return ["--envvars", "MYVAR"], {"MYVAR": creds["AWS_SECRET_ACCESS_KEY"]}, creds["AWS_SECRET_ACCESS_KEY"]


@pytest.mark.workflow
@pytest.mark.parametrize("case", ["variables", "abbreviated-options", "workflow-profile", "envvar-by-name",
                                  "envvar-by-value"])
def test_no_way_of_passing_credentials_puts_them_into_a_job_definition(sandbox, tmp_path, case):
    """Each way is refused at the request itself: nothing the executor sends holds the secret."""
    emulator = sandbox["emulator"]
    before = len(emulator.requests)
    args, extra_env, secret = _bypass(case, sandbox["credentials"], tmp_path)
    run = run_snakemake(["cpu/numbers.txt", *_args(f"keys-{case}"), *args], executor_workflow(tmp_path / "wf"),
                        dict(sandbox["env"], **extra_env))  # (the target first: --envvars takes every word after it)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "refusing to send AWS Batch request RegisterJobDefinition: it would put credentials into a job" in out, \
        out[-3000:]
    sent = [r for r in emulator.requests[before:] if r.operation in ("RegisterJobDefinition", "SubmitJob")]
    assert not sent and not any(secret in r.body for r in emulator.requests[before:])
    # (Snakemake's own error report repeats the command line the user typed, keys included; ours masks them)
    assert not any(secret in line for line in out.splitlines() if "refusing to send" in line)


@pytest.mark.workflow
def test_cancel_terminates_running_jobs(sandbox, tmp_path):
    emulator, env = sandbox["emulator"], sandbox["env"]
    workdir = executor_workflow(tmp_path / "wf")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *_args("cancel"), "slow/never.txt"], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def slow_job():
            return next((j for j in list(emulator.batch_jobs.values()) if j.name.startswith("snakejob-slow_step-")),
                        None)

        def sleeping():
            job = slow_job()
            # job.run exists a moment before its process starts
            running = job is not None and job.run is not None and job.run.proc is not None
            return running and "sleep 600" in _group_cmdlines(job.run.proc.pid)

        emulator.wait_for(sleeping, timeout_s=180, what="slow_step to be running its command")
        job = slow_job()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    emulator.wait_for(lambda: job.status == "FAILED", timeout_s=30, what="the job to be terminated")
    assert job.status_reason == "terminated by snakemake"
    assert emulator.calls("TerminateJob") >= 1
    assert "sleep 600" not in _group_cmdlines(job.run.proc.pid)


def _group_cmdlines(pid: int) -> str:
    return subprocess.run(["pgrep", "-a", "-g", str(pid)], capture_output=True, text=True).stdout
