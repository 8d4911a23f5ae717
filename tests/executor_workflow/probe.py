"""gpu_step: sums the CPU step's numbers and reports what the job saw: its GPU and its credentials."""

import json
import os

import boto3

from tessera.devices import pin_gpu, visible_gpu_count

numbers = [int(x) for x in open(snakemake.input[0]).read().split()]
creds = boto3.Session().get_credentials()
report = {
    "sum": sum(numbers),
    "gpus_visible": visible_gpu_count(),
    "pinned": pin_gpu(),
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    # a batch scheduler's own record of the GPUs it gave the job (SLURM)
    "scheduler_gpus": os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS"),
    "credential_source": creds.method if creds else None,
    "access_key_prefix": creds.get_frozen_credentials().access_key[:4] if creds else None,
    "cwd": os.getcwd(),
}
with open(snakemake.output[0], "w") as f:
    json.dump(report, f)
with open(snakemake.log[0], "w") as f:
    f.write(f"gpu_step done: {report['sum']}\n")
