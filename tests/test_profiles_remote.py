"""Every rule of the workflow fits the remote and cluster profiles.

snakemake-executor-plugin-aws-batch reads `_gpus` (not `gpu`), accepts only Fargate's
(memory, vCPU) pairs (silently lowering other memory values) and takes one timeout for all jobs; the
SageMaker executor needs each rule to fit an instance; the cluster profiles (SLURM, LSF) must send GPU
rules, and only those, to GPUs. When a stage adds or changes a rule, these tests say which profile
entry it needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from unittest import mock

import pytest
import yte

from anywhere_support import REPO, copy_cohort, copy_workflow, tiny_config
from snakemake_executor_plugin_aws_batch.constant import VALID_RESOURCES_MAPPING
from snakemake_executor_plugin_sagemaker.instances import InstanceChoiceError, choose_instance
from snakemake_executor_plugin_sagemaker.jobspec import MAX_RUNTIME_S
from tessera.profiles import slurm_resources

# Prints every rule with its declared resources (None where a resource is computed per job).
LIST_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), snakefile=Path("Snakefile"), workdir=Path("."),
                      config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]))._workflow
    rules = [{"name": r.name, "local": r.name in wf._localrules or r.norun or r.is_template_engine,
              "resources": {k: None if v.is_evaluable() else v.value for k, v in r.resources.items()}}
             for r in wf.rules]
print("RULES=" + json.dumps(rules))
"""


def _profile(name: str) -> dict:
    """The profile as Snakemake reads it, on a command line that names a pinned image (its guard)."""
    argv = ["snakemake", "--profile", f"profiles/{name}", "--container-image", f"r/tessera@sha256:{'0' * 64}"]
    with open(REPO / "profiles" / name / "config.v8+.yaml") as f, mock.patch.object(sys, "argv", argv):
        return yte.process_yaml(f, require_use_yte=True)


def _defaults(profile: dict) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=", 1) for item in profile.get("default-resources", []))}


@pytest.fixture(scope="module")
def rules(tmp_path_factory, tiny_cohort) -> list[dict]:
    workdir = copy_workflow(tmp_path_factory.mktemp("rules") / "wf")
    copy_cohort(tiny_cohort, workdir / "cohort")
    run = subprocess.run([sys.executable, "-c", LIST_RULES, str(tiny_config(workdir, "cohort"))], cwd=workdir,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("RULES="))
    return [r for r in json.loads(line.removeprefix("RULES=")) if not r["local"]]


def test_the_workflow_has_remote_rules(rules):
    assert {"patch_slides", "slides_qc"} <= {r["name"] for r in rules}


def test_every_rule_fits_profiles_aws_batch(rules):
    profile = _profile("aws-batch")
    overrides = profile.get("set-resources", {})
    defaults = _defaults(profile)
    timeout = int(profile["aws-batch-task-timeout"])
    problems = []
    for rule in rules:
        name, res = rule["name"], rule["resources"]
        fix = f"profiles/aws-batch/config.v8+.yaml, set-resources: {name}:"
        override = overrides.get(name, {})
        gpu, threads = res.get("gpu", 0), res.get("_cores")
        if gpu is None or threads is None:
            problems.append(f"{name}: declare gpu and threads as numbers (computed values cannot be checked)")
            continue
        if int(override.get("_gpus", 0)) != gpu:
            problems.append(f"{name}: declares gpu={gpu} but the plugin reads _gpus; put `_gpus: {gpu}` in {fix}"
                            if gpu else f"{name}: a CPU rule must not set _gpus in {fix}")
        declared = res.get("mem_mb", defaults.get("mem_mb"))
        mem = int(override.get("mem_mb", declared or 0))
        if declared is None and "mem_mb" not in override:
            problems.append(f"{name}: its mem_mb is computed per job; give a fixed one in {fix}")
        elif threads not in VALID_RESOURCES_MAPPING.get(mem, []):
            valid = sorted(m for m, cpus in VALID_RESOURCES_MAPPING.items() if threads in cpus and m >= (declared or 0))
            problems.append(f"{name}: mem_mb={mem} with {threads} thread(s) is not a pair the plugin accepts (it "
                            f"would lower the memory); put `mem_mb: {valid[0] if valid else '?'}` in {fix}")
        elif declared is not None and mem < declared:
            problems.append(f"{name}: {fix} mem_mb={mem} is less than the rule's {declared}")
        runtime = res.get("runtime", defaults.get("runtime"))
        if runtime is not None and runtime * 60 > timeout:
            problems.append(f"{name}: runtime {runtime} min exceeds aws-batch-task-timeout {timeout} s")
    stale = set(overrides) - {r["name"] for r in rules}
    problems += [f"set-resources names {r}, which is not a remote rule of the workflow" for r in sorted(stale)]
    assert not problems, "\n".join(problems)


def test_every_rule_fits_profiles_sagemaker(rules):
    profile = _profile("sagemaker")
    defaults = _defaults(profile)
    overrides = profile.get("set-resources", {})
    problems = []
    for rule in rules:
        res = {**rule["resources"], **overrides.get(rule["name"], {})}
        mem_mb = res.get("mem_mb", defaults.get("mem_mb")) or 0
        try:
            choose_instance(res.get("_cores") or 1, int(mem_mb * 1e6 / 2**20), res.get("gpu") or 0,
                            profile["sagemaker-gpu-instance-type"], res.get("sagemaker_instance_type"))
        except InstanceChoiceError as e:
            problems.append(f"{rule['name']}: {e}")
        runtime = res.get("runtime", defaults.get("runtime"))
        if runtime is None or not 0 < runtime * 60 <= MAX_RUNTIME_S:
            problems.append(f"{rule['name']}: runtime {runtime} min is not a SageMaker maximum runtime")
    assert not problems, "\n".join(problems)


# The cluster profiles (profiles/slurm, profiles/lsf) read where to send jobs from the launching shell.
CLUSTER_SITES = {
    "slurm": {"TESSERA_SLURM_PARTITION": "cpu", "TESSERA_SLURM_GPU_PARTITION": "gpu-a100",
              "TESSERA_SLURM_ACCOUNT": "lab42", "TESSERA_SLURM_QOS": "high", "TESSERA_SLURM_GPU_MODEL": "a100"},
    "lsf": {"TESSERA_LSF_QUEUE": "normal", "TESSERA_LSF_GPU_QUEUE": "gpu", "TESSERA_LSF_PROJECT": "lab42",
            "TESSERA_LSF_GPU_MODEL": "NVIDIAA100_SXM4_80GB"},
}
# What a CPU rule and a GPU rule with n GPUs must ask for, under CLUSTER_SITES.
CLUSTER_CPU = {"slurm": {"slurm_partition": "cpu", "slurm_account": "lab42", "qos": "high"},
               "lsf": {"lsf_queue": "normal", "lsf_project": "lab42"}}
CLUSTER_GPU = {"slurm": lambda n: {"slurm_partition": "gpu-a100", "gpu_model": "a100"},
               "lsf": lambda n: {"lsf_queue": "gpu", "lsf_extra": f'-gpu "num={n}:gmodel=NVIDIAA100_SXM4_80GB"'}}


def _evaluated(resources: dict) -> dict:
    """Resource values as Snakemake reads them from a profile (it evaluates each as Python)."""
    return {k: eval(v) if isinstance(v, str) else v for k, v in resources.items()}


@pytest.mark.parametrize("name", ["slurm", "lsf"])
def test_every_rule_fits_the_cluster_profiles(rules, name):
    """Every rule asks for its threads, memory and runtime; GPU rules for GPUs (in the GPU partition or
    queue, of the configured model) and CPU rules for none, in the CPU partition/queue with the account."""
    with mock.patch.dict("os.environ", CLUSTER_SITES[name]):
        profile = _profile(name)
    fix = f"profiles/{name}/config.v8+.yaml, set-resources:"
    defaults = _evaluated(profile["default-resources"])
    overrides = {rule: _evaluated(res) for rule, res in profile.get("set-resources", {}).items()}
    assert {k: defaults[k] for k in CLUSTER_CPU[name]} == CLUSTER_CPU[name]
    problems = []
    for rule in rules:
        rule_name, res = rule["name"], rule["resources"]
        gpu, override = res.get("gpu", 0), overrides.get(rule_name, {})
        if gpu is None:
            problems.append(f"{rule_name}: declare gpu as a number (a computed value cannot be checked)")
        elif gpu and override != CLUSTER_GPU[name](gpu):
            problems.append(f"{rule_name}: a GPU rule (gpu={gpu}) must be listed in {fix} {rule_name}: "
                            f"?{name}_resources(gpus={gpu})")
        elif not gpu and override:
            problems.append(f"{rule_name}: a CPU rule must not be listed in {fix} (it would ask for a GPU)")
        for resource in ("mem_mb", "runtime"):
            if resource not in res and resource not in defaults:
                problems.append(f"{rule_name}: no {resource}, neither in the rule nor in default-resources")
    stale = set(overrides) - {r["name"] for r in rules}
    problems += [f"set-resources names {r}, which is not a job rule of the workflow" for r in sorted(stale)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["slurm", "lsf"])
def test_cluster_profiles_use_the_scheduler_defaults_when_nothing_is_set(name):
    with mock.patch.dict("os.environ", {var: "" for var in CLUSTER_SITES[name]}):
        profile = _profile(name)
    assert profile["default-resources"] == {"mem_mb": 2000, "runtime": 120}
    if name == "slurm":
        assert all(res == {} for res in profile["set-resources"].values())
    else:  # LSF has no GPU resource: GPU rules still ask for their GPUs
        assert all(res == {"lsf_extra": repr('-gpu "num=1"')} for res in profile["set-resources"].values())


def test_cluster_names_stay_strings_when_snakemake_evaluates_them():
    # a partition called like a Python builtin must not become one
    res = slurm_resources(environ={"TESSERA_SLURM_PARTITION": "all", "TESSERA_SLURM_ACCOUNT": "123456"})
    assert _evaluated(res) == {"slurm_partition": "all", "slurm_account": "123456"}
