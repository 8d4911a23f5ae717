"""Local paths and ``s3://`` URIs, read the same way.

Slides and model weights may live in S3 (GUIDE §2). Jobs stage such an object to a local file
first: OpenSlide, h5py and torch need real files. Credentials come from the environment or the job
role (boto3's default chain), never from tessera's config.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tessera.errors import InputError


def is_s3(uri: str) -> bool:
    """True for ``s3://bucket/key`` URIs."""
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``."""
    bucket, _, key = str(uri)[len("s3://"):].partition("/")
    if not bucket or not key:
        raise InputError(f"'{uri}' is not an s3://bucket/key URI", fix="write the URI as s3://bucket/path/to/object")
    return bucket, key


def s3_client():
    """A boto3 S3 client honouring ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (e.g. a local S3 server)."""
    import boto3

    return boto3.client("s3")


def download(uri: str, dest: str | os.PathLike) -> Path:
    """Copy the object at ``uri`` (local path or s3://) to ``dest``, atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().download_file(bucket, key, str(tmp))
    else:
        shutil.copyfile(uri, tmp)
    os.replace(tmp, dest)
    return dest


@contextlib.contextmanager
def local_file(uri: str) -> Iterator[Path]:
    """Yield a local path for ``uri``: the path itself, or a temporary copy of an S3 object."""
    if not is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="tessera-") as tmp:
        yield download(uri, Path(tmp) / Path(split_s3(uri)[1]).name)
