"""The SageMaker executor's pure parts: instance choice and the CreateProcessingJob request."""

from __future__ import annotations

import shlex
import subprocess

import botocore.session
import pytest
from botocore.validate import ParamValidator

from aws_emulator.validate import validate
from snakemake_executor_plugin_sagemaker.instances import (
    CPU_INSTANCES, GPU_INSTANCES, InstanceChoiceError, choose_instance,
)
from snakemake_executor_plugin_sagemaker.jobspec import (
    JobSpecError, job_name, max_runtime_s, parse_tags, processing_job_request, split_command,
    split_environment, volume_size_gb,
)

MODEL = botocore.session.get_session().get_service_model("sagemaker")
CREATE = MODEL.operation_model("CreateProcessingJob").input_shape


def test_every_instance_in_the_tables_is_a_processing_instance_type():
    allowed = set(MODEL.shape_for("ProcessingInstanceType").enum)
    assert {i.name for i in CPU_INSTANCES} <= allowed
    assert set(GPU_INSTANCES) <= allowed


@pytest.mark.parametrize(
    "threads, mem_mib, expected",
    [
        (1, 1000, "ml.m5.large"),      # smallest: 2 vCPU / 8 GiB
        (2, 7000, "ml.m5.large"),      # 7000 MiB fits in 90 % of 8 GiB (7372 MiB)
        (2, 7500, "ml.r5.large"),      # does not: 2 vCPU with 16 GiB is cheaper than 4 vCPU
        (4, 6000, "ml.c5.xlarge"),     # compute-optimised when little memory per core is needed
        (8, 28000, "ml.m5.2xlarge"),
        (8, 30000, "ml.r5.2xlarge"),   # 30000 MiB > 90 % of 32 GiB: r5.2xlarge is cheaper than m5.4xlarge
        (16, 100_000, "ml.r5.4xlarge"),
        (96, 600_000, "ml.r5.24xlarge"),
    ],
)
def test_cpu_jobs_get_the_cheapest_instance_that_fits(threads, mem_mib, expected):
    chosen = choose_instance(threads, mem_mib, 0, "ml.g5.xlarge")
    assert chosen == expected
    spec = next(i for i in CPU_INSTANCES if i.name == chosen)
    assert spec.vcpus >= threads and spec.usable_mib >= mem_mib


def test_gpu_jobs_get_the_gpu_type_and_are_checked_against_it():
    assert choose_instance(1, 8000, 1, "ml.g5.xlarge") == "ml.g5.xlarge"
    assert choose_instance(8, 28000, 1, "ml.g5.2xlarge") == "ml.g5.2xlarge"
    with pytest.raises(InstanceChoiceError, match="ml.g5.xlarge has 1 GPU"):
        choose_instance(8, 8000, 1, "ml.g5.xlarge")
    with pytest.raises(InstanceChoiceError, match="--sagemaker-gpu-instance-type"):
        choose_instance(1, 1000, 2, "ml.g5.xlarge")
    assert choose_instance(1, 1000, 1, "ml.p5.4xlarge") == "ml.p5.4xlarge"  # not in the table: trusted
    assert choose_instance(64, 10, 0, "ml.g5.xlarge", override="ml.c6i.16xlarge") == "ml.c6i.16xlarge"
    with pytest.raises(InstanceChoiceError, match="no CPU instance"):
        choose_instance(200, 1000, 0, "ml.g5.xlarge")


def test_job_names_follow_sagemakers_pattern():
    name = job_name("snakejob", "3f2a9c1d", 12345, "extract_features_hipt256_with_a_very_long_rule_name")
    assert len(name) <= 63 and name.startswith("snakejob-3f2a9c1d-12345-extract-features")
    assert not validate(CREATE.members["ProcessingJobName"], name)


def test_a_long_command_survives_the_256_character_arguments(tmp_path):
    payload = "x" * 700 + " 'quoted $HOME' \"double\" $((1+2)) `backticks` ; & | \\ end"
    command = f"printf '%s' {shlex.quote(payload)} > {tmp_path}/out"
    entrypoint, arguments = split_command(command)
    assert all(len(a) <= 256 for a in entrypoint + arguments) and len(arguments) > 2
    subprocess.run(entrypoint + arguments, check=True)
    assert (tmp_path / "out").read_text() == payload
    with pytest.raises(JobSpecError, match="at most 25600"):
        split_command("y" * 30_000)
    with pytest.raises(JobSpecError, match="several lines"):
        split_command("echo a\necho b")


def _request(**overrides):
    kwargs = dict(
        name="snakejob-3f2a9c1d-1-cpu-step", image="123456789012.dkr.ecr.eu-west-2.amazonaws.com/tessera:1",
        role="arn:aws:iam::123456789012:role/tessera-job", command="python -m snakemake " + "--arg value " * 200,
        environment={"SNAKEMAKE_STORAGE_S3_REGION": "eu-west-2"}, instance_type="ml.m5.large", volume_gb=30,
        max_runtime=600, subnets=["subnet-0abc"], security_groups=["sg-0def"], volume_kms_key="alias/tessera",
        tags=parse_tags(["project=tessera", "cost-centre=CC 42/gel"]),
    )
    kwargs.update(overrides)
    return processing_job_request(**kwargs)


def test_the_request_is_valid_for_the_api():
    request = _request()
    report = ParamValidator().validate(request, CREATE)  # what botocore checks on the client
    assert not report.has_errors(), report.generate_report()
    assert not validate(CREATE, request)  # and what AWS checks: lengths, counts, enums, patterns
    assert request["NetworkConfig"]["VpcConfig"] == {"Subnets": ["subnet-0abc"], "SecurityGroupIds": ["sg-0def"]}
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == "alias/tessera"
    with pytest.raises(JobSpecError, match="both"):
        _request(security_groups=[])


def test_credentials_never_enter_the_environment():
    env, dropped = split_environment({"SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "AKIA1234567890",
                                      "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "s3cr3t-value", "AWS_SESSION_TOKEN": "tok",
                                      "SNAKEMAKE_STORAGE_S3_REGION": "eu-west-2", "OMP_NUM_THREADS": "4"})
    assert env == {"SNAKEMAKE_STORAGE_S3_REGION": "eu-west-2", "OMP_NUM_THREADS": "4"}
    assert dropped == ["AWS_SESSION_TOKEN", "SNAKEMAKE_STORAGE_S3_ACCESS_KEY", "SNAKEMAKE_STORAGE_S3_SECRET_KEY"]
    with pytest.raises(JobSpecError, match="allows 256"):
        split_environment({"LONG": "v" * 300})


def test_volume_and_runtime():
    assert volume_size_gb(None, 30) == 30
    assert volume_size_gb(100 * 1024 + 1, 30) == 101
    assert max_runtime_s(20, 86400) == 1200
    assert max_runtime_s(None, 86400) == 86400
    with pytest.raises(JobSpecError, match="9 days"):
        max_runtime_s(20_000, 86400)
    with pytest.raises(JobSpecError, match="KEY=VALUE"):
        parse_tags(["no-equals-sign"])
