"""Which SageMaker Processing instance a job runs on, from its resources.

CPU jobs get the cheapest instance of the table below that has at least the job's threads as vCPUs
and at least its memory within 90 % of the instance's (the rest is left to the OS, the container
runtime and SageMaker's agent). "Cheapest" ranks by vCPUs × the family's relative on-demand price per
vCPU (c5 : m5 : r5 = 1.00 : 1.13 : 1.48, from EC2 Linux on-demand list prices, us-east-1: c5.xlarge
$0.170/h, m5.xlarge $0.192/h, r5.xlarge $0.252/h; SageMaker's prices keep roughly the same ratios).
These three families are offered for Processing in every commercial region.

| family | sizes (vCPU / GiB) |
|---|---|
| ml.c5 (compute, 2 GiB per vCPU) | xlarge 4/8, 2xlarge 8/16, 4xlarge 16/32, 9xlarge 36/72, 18xlarge 72/144 |
| ml.m5 (general, 4 GiB per vCPU) | large 2/8, xlarge 4/16, 2xlarge 8/32, 4xlarge 16/64, 12xlarge 48/192, 24xlarge 96/384 |
| ml.r5 (memory, 8 GiB per vCPU) | large 2/16, xlarge 4/32, 2xlarge 8/64, 4xlarge 16/128, 8xlarge 32/256, 12xlarge 48/384, 16xlarge 64/512, 24xlarge 96/768 |

GPU jobs (``gpu`` ≥ 1) run on the configured GPU instance type (default ``ml.g5.xlarge``: one
NVIDIA A10G with 24 GB, 4 vCPU, 16 GiB). Where that type is in :data:`GPU_INSTANCES` the job's
threads, memory and GPU count are checked against it before anything is submitted. A rule (or
``--set-resources RULE:sagemaker_instance_type=ml.…``) may name its instance type outright.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Share of an instance's memory a job may ask for.
USABLE_MEMORY = 0.9


@dataclass(frozen=True)
class Instance:
    name: str
    vcpus: int
    memory_gib: int
    gpus: int = 0
    price_weight: float = 1.0  # relative on-demand price per vCPU (ranking only)

    @property
    def usable_mib(self) -> int:
        return int(self.memory_gib * 1024 * USABLE_MEMORY)

    @property
    def rank(self) -> float:
        return self.vcpus * self.price_weight


def _family(family: str, weight: float, sizes: dict[str, tuple[int, int]]) -> list[Instance]:
    return [Instance(f"ml.{family}.{size}", v, m, 0, weight) for size, (v, m) in sizes.items()]


CPU_INSTANCES: tuple[Instance, ...] = tuple(
    _family("c5", 1.00, {"xlarge": (4, 8), "2xlarge": (8, 16), "4xlarge": (16, 32), "9xlarge": (36, 72),
                         "18xlarge": (72, 144)})
    + _family("m5", 1.13, {"large": (2, 8), "xlarge": (4, 16), "2xlarge": (8, 32), "4xlarge": (16, 64),
                           "12xlarge": (48, 192), "24xlarge": (96, 384)})
    + _family("r5", 1.48, {"large": (2, 16), "xlarge": (4, 32), "2xlarge": (8, 64), "4xlarge": (16, 128),
                           "8xlarge": (32, 256), "12xlarge": (48, 384), "16xlarge": (64, 512),
                           "24xlarge": (96, 768)})
)

#: GPU instance types whose size is known, for checking a job against the configured type.
GPU_INSTANCES: dict[str, Instance] = {
    i.name: i
    for i in (
        Instance("ml.g4dn.xlarge", 4, 16, 1), Instance("ml.g4dn.2xlarge", 8, 32, 1),
        Instance("ml.g4dn.4xlarge", 16, 64, 1), Instance("ml.g4dn.8xlarge", 32, 128, 1),
        Instance("ml.g4dn.12xlarge", 48, 192, 4), Instance("ml.g4dn.16xlarge", 64, 256, 1),
        Instance("ml.g5.xlarge", 4, 16, 1), Instance("ml.g5.2xlarge", 8, 32, 1),
        Instance("ml.g5.4xlarge", 16, 64, 1), Instance("ml.g5.8xlarge", 32, 128, 1),
        Instance("ml.g5.12xlarge", 48, 192, 4), Instance("ml.g5.16xlarge", 64, 256, 1),
        Instance("ml.g5.24xlarge", 96, 384, 4), Instance("ml.g5.48xlarge", 192, 768, 8),
        Instance("ml.g6.xlarge", 4, 16, 1), Instance("ml.g6.2xlarge", 8, 32, 1),
        Instance("ml.g6.4xlarge", 16, 64, 1), Instance("ml.g6.8xlarge", 32, 128, 1),
        Instance("ml.g6.12xlarge", 48, 192, 4), Instance("ml.g6.16xlarge", 64, 256, 1),
        Instance("ml.g6.24xlarge", 96, 384, 4), Instance("ml.g6.48xlarge", 192, 768, 8),
    )
}


class InstanceChoiceError(ValueError):
    """No instance fits the job; the message says what to change."""


def choose_instance(threads: int, mem_mib: int, gpus: int, gpu_instance_type: str,
                    override: str | None = None) -> str:
    """The instance type for a job with ``threads`` cores, ``mem_mib`` MiB of memory and ``gpus`` GPUs."""
    if override:
        return override
    if gpus > 0:
        known = GPU_INSTANCES.get(gpu_instance_type)
        if known is not None:
            if gpus > known.gpus or threads > known.vcpus or mem_mib > known.usable_mib:
                raise InstanceChoiceError(
                    f"the job needs {gpus} GPU(s), {threads} threads and {mem_mib} MiB but {known.name} has "
                    f"{known.gpus} GPU(s), {known.vcpus} vCPUs and {known.usable_mib} MiB usable; choose a larger "
                    "--sagemaker-gpu-instance-type or set the rule's sagemaker_instance_type resource"
                )
        return gpu_instance_type
    fitting = [i for i in CPU_INSTANCES if i.vcpus >= threads and i.usable_mib >= mem_mib]
    if not fitting:
        raise InstanceChoiceError(
            f"no CPU instance has {threads} vCPUs and {mem_mib} MiB; lower the rule's threads or mem_mb, "
            "or set its sagemaker_instance_type resource"
        )
    return min(fitting, key=lambda i: (i.rank, i.memory_gib)).name
