"""Status of many Processing jobs: one list call per 100 running jobs, one describe per finished job."""

from __future__ import annotations

import asyncio

import boto3
import pytest

from anywhere_support import IMAGE, JOB_ROLE, REGION, VENV_BIN
from aws_emulator import AwsJobEmulator, Image
from snakemake_executor_plugin_sagemaker.status import ProcessingJobStatus

N_RUNNING = 120


@pytest.fixture
def emulator(tmp_path, monkeypatch):
    em = AwsJobEmulator(tmp_path, {IMAGE: Image(path=[VENV_BIN])}, roles=[JOB_ROLE], job_queues=[]).start()
    for k, v in {"AWS_ENDPOINT_URL_SAGEMAKER": em.endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    yield em
    em.stop()


def _create(client, name: str, command: str) -> None:
    client.create_processing_job(
        ProcessingJobName=name, RoleArn=JOB_ROLE, StoppingCondition={"MaxRuntimeInSeconds": 300},
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 30}},
        AppSpecification={"ImageUri": IMAGE, "ContainerEntrypoint": ["/bin/bash", "-c", command]},
    )


def test_many_jobs_cost_few_calls(emulator):
    client = boto3.client("sagemaker")
    names = [f"snakejob-run1-{i}" for i in range(N_RUNNING)]
    for name in names:
        _create(client, name, "sleep 120")
    _create(client, "snakejob-run2-0", "sleep 120")  # another run's job is never looked at
    _create(client, "snakejob-run1-failing", "exit 3")
    status = ProcessingJobStatus(client, "snakejob-run1-")
    emulator.wait_for(lambda: emulator.processing_jobs["snakejob-run1-failing"].status == "Failed", 30, "the failure")

    first = asyncio.run(status.poll([*names, "snakejob-run1-failing"]))
    assert all(first[n] is None for n in names)  # all running
    assert first["snakejob-run1-failing"]["FailureReason"] == "AlgorithmError: See job logs for more information"
    assert emulator.calls("ListProcessingJobs") == 2  # 121 InProgress jobs, 100 per page
    assert emulator.calls("DescribeProcessingJob") == 1  # only the finished one

    for name in names[:3]:
        client.stop_processing_job(ProcessingJobName=name)
    emulator.wait_for(lambda: all(emulator.processing_jobs[n].status == "Stopped" for n in names[:3]), 30, "stops")
    second = asyncio.run(status.poll(names))
    assert [second[n]["ProcessingJobStatus"] for n in names[:3]] == ["Stopped"] * 3
    assert all(second[n] is None for n in names[3:])
    assert emulator.calls("ListProcessingJobs") == 4
    assert emulator.calls("DescribeProcessingJob") == 4
