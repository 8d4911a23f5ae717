"""What Snakemake profiles compute while they are read (``profiles/*/config.v8+.yaml``, via YTE): checks
that stop a remote run before anything is submitted, and the resources that send a cluster's jobs to
the partitions/queues the launching shell names (:func:`slurm_resources`, :func:`lsf_resources`).

The AWS Batch profile also installs :func:`tessera.credentials.guard_default_session`, which refuses
any Batch request that would carry credentials into a job definition.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence

from tessera.errors import InputError

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
