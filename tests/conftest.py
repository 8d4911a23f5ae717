"""Shared fixtures: the real CMU slide, small demo cohorts, and a runner for the workflow."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CMU_SLIDE = REPO / "src" / "tessera" / "demo" / "data" / "CMU-1-Small-Region.svs"
# The workflow tests run the two HIPT encoders (a patch encoder and a region encoder over it, one grid
# group, two feature outputs). The demo config's further encoder (kaiko-vits16, same grid group) adds no
# workflow path, only ~40 % more extraction time in every run: one workflow run extracts it beside hipt256
# (tests/test_workflow_modalities.py). Several foundation encoders in one read are tested in
# tests/test_pathology_extract.py, each encoder's network in tests/test_pathology_encoders.py.
TEST_ENCODERS = ["hipt256", "hipt4k"]


DEMO_TESTED_MODELS = ("coxnet", "porpoise", "hipt_gp")  # and explain.model (coxnet), explain.attention_model (hipt_gp)
DEMO_HEATMAP_SLIDES = 4  # per deep model in the tests' demo run (the demo config's 8 draw the same way)


# Runs that test scheduling or storage, not features (SLURM, S3), extract the patch encoder alone: on the
# tiny cohort hipt4k sends every 4096-px region's 256 patches through the ViT-256 (~1,500 forwards), most
# of those runs' compute. hipt4k runs in the feature, reproducibility and demo runs.
PATCH_ENCODER_ONLY = ["hipt256"]


def with_test_encoders(config: dict, encoders: list[str] = TEST_ENCODERS) -> dict:
    """``config`` with pathology restricted to ``encoders`` (and their weights); survival models that read
    another encoder are left out, and so is an attention heatmap model among them."""
    pathology = config["pathology"]
    pathology["encoders"] = list(encoders)
    pathology["weights"] = {name: pathology["weights"][name] for name in encoders}
    models = config["survival"]["models"]
    config["survival"]["models"] = [m for m in models if m.get("encoder", encoders[0]) in encoders]
    kept = {m["name"] for m in config["survival"]["models"]}
    if config["explain"].get("attention_model") not in kept:
        config["explain"]["attention_model"] = None
    return config


def pytest_configure(config) -> None:
    """Give Ctrl-C its default meaning in every process the tests start. A suite started in the background
    (`make test &`, `nohup`) inherits SIGINT *ignored*, and so would each snakemake it runs: the tests that
    press Ctrl-C on a run (cancel on AWS Batch, SageMaker, SLURM) would then wait forever. A Python handler
    here is reset to the default in children when they exec."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    return CMU_SLIDE


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A 6-patient demo cohort (7 slides incl. the CMU slide, VCF, a BAM, clinical table). Read-only."""
    from tessera.demo import make_demo_cohort

    return make_demo_cohort(tmp_path_factory.mktemp("tiny-cohort"), seed=3, n_patients=6)


def snakemake_cmd(*args: str) -> list[str]:
    """The workflow's snakemake, run from the repository's virtual environment."""
    return [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile"), *args]


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir`` (with the repo's config dir available); return the finished process."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        snakemake_cmd("--directory", str(workdir), *args), capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def cohort_config(cohort: Path, workdir: Path, encoders: list[str] = TEST_ENCODERS, **overrides) -> Path:
    """Write a config file for ``cohort`` into ``workdir`` (repo defaults with ``encoders``, plus
    ``overrides``); return it."""
    config = with_test_encoders(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), encoders)
    config.update(
        slides=str(cohort / "slides.tsv"), clinical=str(cohort / "clinical.tsv"), genomics=str(cohort / "genomics.tsv"),
        reference=str(cohort / "reference.fa"), annotation=str(cohort / "genes.gtf"), n_shards=3,
    )
    config.update(overrides)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def job_stats(output: str) -> dict[str, int]:
    """Rule → job count from the 'Job stats' table in Snakemake's output (a dry run prints it to stdout, a
    real run logs it to stderr), without its 'total' row."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule → job count of a dry run."""
    return job_stats(proc.stdout)


def demo_slides_sheet(cohort: Path, dest: Path) -> Path:
    """Write ``cohort``'s slide sheet without the CMU slide (40 % of the tiny cohort's tiles: runs that test
    scheduling, storage or stages, not reading, leave it out) to ``dest``; paths as the cohort's sheet
    gives them, made absolute when ``dest`` is outside the cohort. Returns ``dest``."""
    slides = pd.read_csv(cohort / "slides.tsv", sep="\t", keep_default_na=False)
    slides = slides[~slides["path"].str.endswith(".svs")]
    if dest.parent != cohort:
        slides = slides.assign(path=[str(cohort / p) for p in slides["path"]])
    slides.to_csv(dest, sep="\t", index=False)
    return dest


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> Path:
    """The demo cohort exactly as `make demo` writes it (seed 7, 48 patients, with the slides' true
    tissue maps), once per test session. Read-only."""
    from tessera.demo import make_demo_cohort

    return make_demo_cohort(tmp_path_factory.mktemp("demo-cohort") / "demo", seed=7)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_cohort) -> tuple[Path, Path]:
    """The demo cohort through the workflow's whole default target, once per test session, for the
    known-answer tests on the demo (it takes minutes on 2 cores: share it rather than running the demo
    again). Returns (working directory, cohort directory)."""
    work = tmp_path_factory.mktemp("demo-run") / "work"
    work.mkdir()
    config = cohort_config(demo_cohort, work, n_shards=4)
    # only the models the demo tests read: every kind also runs in tests/survival/ and the tiny-cohort runs
    cfg = yaml.safe_load(config.read_text())
    cfg["survival"]["models"] = [m for m in cfg["survival"]["models"] if m["name"] in DEMO_TESTED_MODELS]
    cfg["survival"]["cv"]["n_repeats"] = 1  # the demo's second repeat tightens its figures, not the tests' answers
    cfg["survival"]["explain"]["heatmap_slides"] = DEMO_HEATMAP_SLIDES
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_snakemake(work, "--configfile", str(config), "--cores", "2", timeout=3000)
    return work, demo_cohort


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM cluster on 127.0.0.1 with accounting (tests/slurm_cluster.py), started once for
    every cluster test and stopped, with every job it ran, when the session ends. SKIPPED, with the
    reason, where SLURM is not installed (`make test` installs it as root) or does not start."""
    from slurm_cluster import ClusterUnavailable, slurm_cluster

    try:
        with slurm_cluster() as cluster:
            yield cluster
            return
    except ClusterUnavailable as e:
        reason = str(e)
    pytest.skip(f"SLURM TEST CLUSTER UNAVAILABLE, cluster tests SKIPPED: {reason}")
