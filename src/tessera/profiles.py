"""Checks that Snakemake profiles run while they are read (``profiles/*/config.v8+.yaml``, via YTE).

Snakemake passes S3 storage settings that may come from environment variables (access key,
secret key, token) to every remote job as environment variables, and the AWS Batch executor plugin
(0.2.1) writes those, and any ``--envvars``, into its job definitions in plain text, where anyone
who may describe job definitions can read them. Jobs get credentials from their role instead;
:func:`refuse_job_credentials` stops a run before anything is submitted when credentials would
travel with the jobs.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence

from tessera.errors import InputError

#: S3 storage plugin settings that hold credentials, as options and as environment variables.
STORAGE_CREDENTIAL_OPTIONS = ("--storage-s3-access-key", "--storage-s3-secret-key", "--storage-s3-token")
STORAGE_CREDENTIAL_VARIABLES = tuple(
    "SNAKEMAKE_STORAGE_S3_" + o.removeprefix("--storage-s3-").replace("-", "_").upper()
    for o in STORAGE_CREDENTIAL_OPTIONS
)
CREDENTIAL_NAME = re.compile(r"ACCESS_KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


def _envvars_named(argv: Sequence[str]) -> list[str]:
    """Variable names given to ``--envvars`` (``--envvars A B`` or ``--envvars=A``)."""
    names, taking = [], False
    for arg in argv:
        if arg.startswith("--envvars="):
            names.append(arg.split("=", 1)[1])
            taking = False
        elif arg == "--envvars":
            taking = True
        elif taking and not arg.startswith("-"):
            names.append(arg)
        else:
            taking = False
    return names


def refuse_job_credentials(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`InputError` if credentials would be passed to remote jobs.

    Looks at the command line (``argv``, default ``sys.argv``) for S3 storage key options and for
    ``--envvars`` naming credential-like variables, and at the environment (default ``os.environ``)
    for ``SNAKEMAKE_STORAGE_S3_ACCESS_KEY`` / ``_SECRET_KEY`` / ``_TOKEN``.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    found = [o for o in STORAGE_CREDENTIAL_OPTIONS if any(a == o or a.startswith(o + "=") for a in argv)]
    found += [v for v in STORAGE_CREDENTIAL_VARIABLES if environ.get(v)]
    found += [f"--envvars {n}" for n in _envvars_named(argv) if CREDENTIAL_NAME.search(n)]
    if found:
        raise InputError(
            f"credentials would be written into every remote job's definition ({', '.join(found)})",
            fix="remove them: remote jobs get their credentials from the job role (and this process from "
            "your usual AWS configuration, e.g. AWS_PROFILE or SSO)",
        )


PINNED_IMAGE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def require_pinned_image(argv: Sequence[str] | None = None) -> None:
    """Raise :class:`InputError` unless ``--container-image`` names the job image by digest.

    A tag (``tessera:v1.2``) can be moved to another image; ``REGISTRY/tessera@sha256:<digest>`` cannot,
    so the remote profiles accept only that, and the run manifest records it (README, "Reproducing a
    paper's results").
    """
    argv = sys.argv if argv is None else argv
    images = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--container-image"]
    images += [a.split("=", 1)[1] for a in argv if a.startswith("--container-image=")]
    if not images or not PINNED_IMAGE.match(images[-1]):
        given = f"'{images[-1]}'" if images else "no --container-image"
        raise InputError(
            f"the job image must be pinned by digest ({given})",
            fix="pass --container-image REGISTRY/tessera@sha256:<digest>, the digest `docker push` printed "
            "(or: aws ecr describe-images --repository-name tessera --image-ids imageTag=TAG "
            "--query 'imageDetails[0].imageDigest'); containers/README.md, 'Pin the image by digest'",
        )
