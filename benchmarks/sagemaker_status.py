"""Status checks of N running SageMaker Processing jobs: API calls and time per poll.

tessera's executor lists the run's InProgress jobs (100 per ListProcessingJobs call) and describes
only jobs that left that list; the anchor is one DescribeProcessingJob per active job per poll, as
snakemake-executor-plugin-aws-batch does with Batch (one DescribeJobs call per job). Calls matter more
than seconds: SageMaker throttles Describe* calls per account, so per-job polling of thousands of
shard jobs slows every status check and competes with the jobs' own API use.

Runs against the local job emulator (tests/aws_emulator) on 127.0.0.1, so the seconds are local HTTP
round trips, not AWS latency; the call counts are what AWS would see.

    .venv/bin/python benchmarks/sagemaker_status.py [N_JOBS]   (default 1000)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from aws_emulator import AwsJobEmulator, Image  # noqa: E402
from snakemake_executor_plugin_sagemaker.status import ProcessingJobStatus  # noqa: E402

IMAGE = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/tessera:bench"
ROLE = "arn:aws:iam::123456789012:role/tessera-job"


def main(n_jobs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        emulator = AwsJobEmulator(Path(tmp), {IMAGE: Image(path=[str(Path(sys.executable).parent)])}, [ROLE], []).start()
        os.environ.update(AWS_ENDPOINT_URL_SAGEMAKER=emulator.endpoint, AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="eu-west-2")
        try:
            client = boto3.client("sagemaker")
            names = [f"snakejob-bench-{i}" for i in range(n_jobs)]
            for name in names:
                client.create_processing_job(
                    ProcessingJobName=name, RoleArn=ROLE, StoppingCondition={"MaxRuntimeInSeconds": 3600},
                    ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                           "VolumeSizeInGB": 30}},
                    AppSpecification={"ImageUri": IMAGE, "ContainerEntrypoint": ["sleep", "3600"]},
                )
            status = ProcessingJobStatus(client, "snakejob-bench-")

            calls0 = emulator.calls("ListProcessingJobs") + emulator.calls("DescribeProcessingJob")
            start = time.perf_counter()
            result = asyncio.run(status.poll(names))
            ours_s = time.perf_counter() - start
            ours_calls = emulator.calls("ListProcessingJobs") + emulator.calls("DescribeProcessingJob") - calls0
            assert all(v is None for v in result.values())

            calls0 = emulator.calls("DescribeProcessingJob")
            start = time.perf_counter()
            for name in names:
                client.describe_processing_job(ProcessingJobName=name)
            anchor_s = time.perf_counter() - start
            anchor_calls = emulator.calls("DescribeProcessingJob") - calls0
        finally:
            emulator.stop()
    print(f"status of {n_jobs} running jobs, one poll")
    print(f"  tessera (list InProgress, 100 per call): {ours_calls:6d} calls  {ours_s:7.3f} s")
    print(f"  anchor (describe each job):              {anchor_calls:6d} calls  {anchor_s:7.3f} s")
    print(f"  ratio anchor / tessera: {anchor_calls / ours_calls:.0f}x calls, {anchor_s / ours_s:.1f}x time")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
