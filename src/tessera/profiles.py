"""What Snakemake profiles compute while they are read (``profiles/*/config.v8+.yaml``, via YTE): checks
that stop a remote run before anything is submitted, and the resources that send a cluster's jobs to
the partitions/queues the launching shell names (:func:`slurm_resources`, :func:`lsf_resources`).

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


#: Where the cluster profiles send jobs, from the launching shell's environment (README "SLURM", "LSF").
#: Unset or empty: the scheduler's default (partition/queue, account/project) and no QOS or GPU model.
SLURM_SITE = {"partition": "TESSERA_SLURM_PARTITION", "gpu_partition": "TESSERA_SLURM_GPU_PARTITION",
              "account": "TESSERA_SLURM_ACCOUNT", "qos": "TESSERA_SLURM_QOS", "gpu_model": "TESSERA_SLURM_GPU_MODEL"}
LSF_SITE = {"queue": "TESSERA_LSF_QUEUE", "gpu_queue": "TESSERA_LSF_GPU_QUEUE", "project": "TESSERA_LSF_PROJECT",
            "gpu_model": "TESSERA_LSF_GPU_MODEL"}


def _site(names: Mapping[str, str], environ: Mapping[str, str] | None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {key: environ.get(var, "").strip() for key, var in names.items()}


def _resources(values: Mapping[str, str]) -> dict[str, str]:
    """Resources for a profile's default-resources / set-resources, set values only. Each is quoted:
    Snakemake evaluates resource values as Python, and a partition named ``all`` or ``max`` would
    otherwise become a builtin."""
    return {name: repr(value) for name, value in values.items() if value}


def slurm_resources(gpus: int = 0, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Resources of snakemake-executor-plugin-slurm for a CPU rule (``gpus=0``: partition, account,
    QOS) or a GPU rule (GPU partition instead, and the GPU model, which the plugin turns into
    ``--gpus=MODEL:N`` with the rule's own ``gpu=N``), from ``TESSERA_SLURM_*`` (:data:`SLURM_SITE`)."""
    site = _site(SLURM_SITE, environ)
    if gpus:
        return _resources({"slurm_partition": site["gpu_partition"], "gpu_model": site["gpu_model"]})
    return _resources({"slurm_partition": site["partition"], "slurm_account": site["account"], "qos": site["qos"]})


def lsf_resources(gpus: int = 0, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Resources of snakemake-executor-plugin-lsf for a CPU rule (``gpus=0``: queue, project) or a GPU
    rule with ``gpus`` GPUs (the GPU queue, and ``bsub -gpu "num=N[:gmodel=MODEL]"`` through
    ``lsf_extra``: the plugin has no GPU resource of its own), from ``TESSERA_LSF_*`` (:data:`LSF_SITE`)."""
    site = _site(LSF_SITE, environ)
    if gpus:
        gpu = f"num={gpus}" + (f":gmodel={site['gpu_model']}" if site["gpu_model"] else "")
        return _resources({"lsf_queue": site["gpu_queue"], "lsf_extra": f'-gpu "{gpu}"'})
    return _resources({"lsf_queue": site["queue"], "lsf_project": site["project"]})
