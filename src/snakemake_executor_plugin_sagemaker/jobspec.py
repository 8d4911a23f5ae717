"""The CreateProcessingJob request for one Snakemake job: pure functions, no AWS calls.

SageMaker limits every container argument and every environment value to 256 characters and
allows 100 of each. A Snakemake job command is longer than that, so it travels as consecutive
256-character pieces of ``ContainerArguments`` that a short bash entrypoint joins back together
and runs: ``bash -c 'exec bash -c "$(printf %s "$@")"' snakejob PIECE1 PIECE2 …``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

MAX_ARG_CHARS = 256
MAX_ARGS = 100
MAX_ENV_VARS = 100
MAX_RUNTIME_S = 777_600  # SageMaker's limit for MaxRuntimeInSeconds (9 days)
ENTRYPOINT = ["/bin/bash", "-c", 'exec /bin/bash -c "$(printf %s "$@")"', "snakejob"]

#: Environment variables that carry credentials never go into a job: jobs get theirs from the role.
CREDENTIAL_NAME = re.compile(r"ACCESS_KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9]+")
_TAG_TEXT = re.compile(r"^[\w\s.:/=+\-@]*$")


class JobSpecError(ValueError):
    """The job cannot be expressed as a Processing job; the message says what to change."""


def job_name(prefix: str, run_id: str, jobid: int | str, rule: str) -> str:
    """``{prefix}-{run_id}-{jobid}-{rule}``, made of letters, digits and single hyphens, ≤ 63 characters."""
    parts = [_JOB_NAME_UNSAFE.sub("-", str(p)).strip("-") for p in (prefix, run_id, jobid, rule)]
    return "-".join(p for p in parts if p)[:63].rstrip("-")


def split_command(command: str) -> tuple[list[str], list[str]]:
    """``(ContainerEntrypoint, ContainerArguments)`` that run ``command`` with bash."""
    if "\n" in command or "\r" in command:
        raise JobSpecError("the job command spans several lines; SageMaker arguments must be single lines")
    pieces = [command[i:i + MAX_ARG_CHARS] for i in range(0, len(command), MAX_ARG_CHARS)] or [""]
    if len(pieces) > MAX_ARGS:
        raise JobSpecError(
            f"the job command has {len(command)} characters; SageMaker takes at most "
            f"{MAX_ARGS * MAX_ARG_CHARS} ({MAX_ARGS} arguments of {MAX_ARG_CHARS})"
        )
    return list(ENTRYPOINT), pieces


def volume_size_gb(disk_mib: int | None, min_gb: int) -> int:
    """ML storage volume in GiB: the job's ``disk_mib`` rounded up, at least ``min_gb``."""
    need = math.ceil(disk_mib / 1024) if disk_mib else 0
    return max(min_gb, need)


def max_runtime_s(runtime_min: int | None, default_s: int) -> int:
    """The job's ``runtime`` (minutes) in seconds, or ``default_s`` when the rule sets none."""
    seconds = int(runtime_min) * 60 if runtime_min else int(default_s)
    if not 1 <= seconds <= MAX_RUNTIME_S:
        raise JobSpecError(f"a runtime of {seconds} s is outside SageMaker's 1 s to {MAX_RUNTIME_S} s (9 days)")
    return seconds


def split_environment(envvars: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``(environment to pass, names dropped)``: variables whose names look like credentials are dropped."""
    dropped = sorted(k for k in envvars if CREDENTIAL_NAME.search(k))
    env = {k: str(v) for k, v in envvars.items() if k not in dropped}
    if len(env) > MAX_ENV_VARS:
        raise JobSpecError(f"{len(env)} environment variables for the job; SageMaker allows {MAX_ENV_VARS}")
    for key, value in env.items():
        if len(value) > MAX_ARG_CHARS:
            raise JobSpecError(f"environment variable {key} is {len(value)} characters; SageMaker allows 256")
    return env, dropped


def parse_tags(items: Iterable[str] | None) -> list[dict[str, str]]:
    """``["team=path", "cost-centre=1234"]`` → SageMaker ``Tags``."""
    tags = []
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key or not _TAG_TEXT.match(key) or not _TAG_TEXT.match(value):
            raise JobSpecError(f"tag {item!r} is not KEY=VALUE of letters, digits, spaces and _.:/=+-@")
        tags.append({"Key": key, "Value": value})
    return tags


def processing_job_request(
    *,
    name: str,
    image: str,
    role: str,
    command: str,
    environment: Mapping[str, str],
    instance_type: str,
    volume_gb: int,
    max_runtime: int,
    subnets: Sequence[str] = (),
    security_groups: Sequence[str] = (),
    volume_kms_key: str | None = None,
    tags: Sequence[Mapping[str, str]] = (),
) -> dict:
    """Keyword arguments for ``boto3.client("sagemaker").create_processing_job``."""
    entrypoint, arguments = split_command(command)
    cluster = {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": volume_gb}
    if volume_kms_key:
        cluster["VolumeKmsKeyId"] = volume_kms_key
    request = {
        "ProcessingJobName": name,
        "ProcessingResources": {"ClusterConfig": cluster},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": entrypoint, "ContainerArguments": arguments},
        "Environment": dict(environment),
        # Jobs read and write S3 through Snakemake's storage plugin, which network isolation would block.
        "NetworkConfig": {"EnableNetworkIsolation": False},
        "RoleArn": role,
        "Tags": [dict(t) for t in tags],
    }
    if subnets or security_groups:
        if not (subnets and security_groups):
            raise JobSpecError("give both --sagemaker-subnets and --sagemaker-security-groups, or neither")
        request["NetworkConfig"]["VpcConfig"] = {"Subnets": list(subnets), "SecurityGroupIds": list(security_groups)}
    return request
