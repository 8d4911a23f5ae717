"""Shared pieces of the run-anywhere tests: a local S3 (moto), a tiny cohort, an offline wheelhouse,
and the environment of a Snakemake process that submits jobs to AWS."""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.metadata
import io
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from conftest import TEST_ENCODERS, with_test_encoders

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)
REGION = "eu-west-2"
# pinned by digest, as the remote profiles require (tessera.profiles.require_pinned_image)
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/tessera@sha256:{'5e' * 32}"
JOB_ROLE = "arn:aws:iam::123456789012:role/tessera-job"
JOB_QUEUE = f"arn:aws:batch:{REGION}:123456789012:job-queue/tessera"


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port) with ``bucket`` created; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        s3_client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str):
    """A client of the test's S3 server (moto accepts any credentials)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test-setup",
                        aws_secret_access_key="test-setup")


def s3_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    s3 = s3_client(endpoint)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def s3_read(endpoint: str, bucket: str, key: str) -> bytes:
    return s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()


def driver_credentials() -> dict[str, str]:
    """Credentials of the person launching the workflow: must never reach a job spec or a log."""
    return {"AWS_ACCESS_KEY_ID": "AKIADRIVER" + secrets.token_hex(5).upper(),
            "AWS_SECRET_ACCESS_KEY": "driver-secret-" + secrets.token_urlsafe(24),
            "AWS_SESSION_TOKEN": "driver-session-" + secrets.token_urlsafe(32)}


def driver_env(home: Path, **endpoints: str) -> dict[str, str]:
    """The launching process's environment: no AWS settings from this machine, ``endpoints`` and keys added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SNAKEMAKE_", "BOTO"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), AWS_DEFAULT_REGION=REGION, PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}",
               OMP_NUM_THREADS="1", **endpoints)
    return env


def wheel_from_installed(dist_name: str, dest: Path) -> Path:
    """Rebuild the wheel of an installed pure-Python distribution (for an offline wheelhouse)."""
    dist = importlib.metadata.distribution(dist_name)
    name = dist.metadata["Name"].replace("-", "_")
    dist_info = f"{name}-{dist.version}.dist-info"
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{name}-{dist.version}-py3-none-any.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in dist.files or []:
            if f.name in skip or f.suffix == ".pyc" or "__pycache__" in f.parts or f.parts[0].startswith(".."):
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(str(f), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([str(f), f"sha256={digest}", len(data)])
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        zf.writestr(f"{dist_info}/RECORD", record.getvalue())
    return wheel


def dockerfile_env(dockerfile: Path = REPO / "containers" / "Dockerfile") -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's final stage (what every job's container starts with)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM "):]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


def image_env(wheelhouse: Path, s3_endpoint: str) -> dict[str, str]:
    """The environment of the emulated image: containers/Dockerfile's ENV (its wheelhouse here at
    ``wheelhouse``; PATH comes from the emulated image's path) plus the account's S3 endpoint, which in
    AWS is simply the default one."""
    env = {k: v for k, v in dockerfile_env().items() if k != "PATH"}
    env.update(PIP_FIND_LINKS=str(wheelhouse), AWS_ENDPOINT_URL_S3=s3_endpoint, OMP_NUM_THREADS="1")
    return env


def copy_cohort(cohort: Path, dest: Path) -> Path:
    """A copy of a demo cohort (conftest's ``tiny_cohort``) at ``dest``, inside a test's working directory."""
    shutil.copytree(cohort, dest)
    return dest


def copy_workflow(dest: Path) -> Path:
    """The workflow's files (Snakefile, rules, scripts, config, envs, profiles, report captions) in ``dest``, as a user's clone."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "rules", "scripts", "config", "envs", "profiles", "report"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item)
        elif src.exists():
            shutil.copy2(src, dest / item)
    return dest


def tiny_config(workdir: Path, cohort: str, n_shards: int = 2, encoders: list[str] = TEST_ENCODERS) -> Path:
    """``workdir/tiny.yaml``: the workflow's config with the tiny cohort's sheets, fewer shards and
    ``encoders`` (conftest.TEST_ENCODERS unless told)."""
    config = with_test_encoders(yaml.safe_load((workdir / "config" / "config.yaml").read_text()), encoders)
    for key, name in (("slides", "slides.tsv"), ("clinical", "clinical.tsv"), ("genomics", "genomics.tsv"),
                      ("reference", "reference.fa"), ("annotation", "genes.gtf")):
        config[key] = f"{cohort}/{name}"
    config["n_shards"] = n_shards
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def aws_sandbox(tmp: Path, bucket: str) -> Iterator[dict]:
    """S3 (moto) and the Batch/SageMaker emulator on 127.0.0.1, the workflow image emulated by this
    virtual environment, and the launching user's environment (with their own credentials)."""
    from aws_emulator import AwsJobEmulator, Image

    with moto_s3(bucket) as s3:
        wheelhouse = tmp / "wheelhouse"
        wheel_from_installed("snakemake-storage-plugin-s3", wheelhouse)
        images = {IMAGE: Image(path=[VENV_BIN], env=image_env(wheelhouse, s3))}
        emulator = AwsJobEmulator(tmp / "aws", images, roles=[JOB_ROLE], job_queues=[JOB_QUEUE], region=REGION).start()
        creds = driver_credentials()
        env = driver_env(tmp / "home", AWS_ENDPOINT_URL_S3=s3, AWS_ENDPOINT_URL_BATCH=emulator.endpoint,
                         AWS_ENDPOINT_URL_SAGEMAKER=emulator.endpoint, **creds)
        try:
            yield {"s3": s3, "emulator": emulator, "env": env, "credentials": creds}
        finally:
            emulator.stop()


def executor_workflow(dest: Path) -> Path:
    """tests/executor_workflow (one CPU rule, one GPU rule, one failing, one slow) copied to ``dest``."""
    shutil.copytree(Path(__file__).parent / "executor_workflow", dest)
    return dest
