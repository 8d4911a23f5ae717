"""Reproducible reruns (issue 8) on one tiny cohort run twice through the whole workflow.

Run A is a clean run. Run B is killed with SIGKILL (its whole process group) while a feature-extraction
job is half-way through its shard, then started again with the same command; it must complete, leave
no truncated file, and write the same bytes as run A (except the allow-list of tessera.rundiff). All of
B is computed in B (the resume cache is per working directory: the slides its restart restores were
finished by its killed part). Run A then serves the report, manifest and rerun (dry-run) checks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO, cohort_config, planned_jobs, run_snakemake, snakemake_cmd
from tessera.demo import make_demo_cohort
from tessera.checksum import sha256_file
from tessera.rundiff import allowed_reason, checksums, compare_runs

pytestmark = pytest.mark.workflow

PROFILE = str(REPO / "profiles" / "local")
SECRET = "AKIA-not-a-real-secret-7f3a9c"
GENOMIC_RULES = {"annotation_genes", "gene_region", "gene_sequences", "nt_random_weights", "embed_gene",
                 "genomics_cohort"}


def planned_work(proc) -> dict[str, int]:
    """Rule → job count of a dry run, without the default target's rule ``all``."""
    return {rule: n for rule, n in planned_jobs(proc).items() if rule != "all"}


def tiny_cohort_for_survival(root: Path) -> Path:
    """8 demo patients, every one with a small demo slide (the CMU slide's row points at P002's file, so
    no shard takes minutes) and three censored patients among those with genomic data, so that 2-fold
    CV with two time bins can run however the demo draws its outcomes."""
    cohort = make_demo_cohort(root / "cohort", seed=3, n_patients=8)
    slides = pd.read_csv(cohort / "slides.tsv", sep="\t", keep_default_na=False)
    slides.loc[slides["path"].str.endswith(".svs"), "path"] = "slides/P002-S1.tiff"
    slides.to_csv(cohort / "slides.tsv", sep="\t", index=False)
    clinical = pd.read_csv(cohort / "clinical.tsv", sep="\t")
    genomic = pd.read_csv(cohort / "genomics.tsv", sep="\t", keep_default_na=False)
    censored = set(genomic["patient_id"][:3])
    clinical["event"] = [0 if p in censored else 1 for p in clinical["patient_id"]]
    clinical.to_csv(cohort / "clinical.tsv", sep="\t", index=False)
    return cohort


def write_config(cohort: Path, workdir: Path, **changes) -> Path:
    """The repo's config on the tiny cohort with a small survival stage (CV 2 folds x 1, four
    models of the rule families that can run on 7 patients) and a small explain stage (with the
    porpoise model's attention heatmaps)."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    survival = base["survival"]
    survival["cv"].update(n_splits=2, n_repeats=1, inner_splits=2)
    survival["evaluation"]["n_bootstrap"] = 10
    survival["models"] = [
        {"name": "cox_ridge", "kind": "cox_ridge", "params": {"alpha": 1.0}},
        {"name": "gbsa", "kind": "gbsa", "params": {"n_estimators": 10, "max_depth": 2, "subsample": 0.8}},
        # a forest on 2 threads: its predictions once depended on the threads' order
        {"name": "rsf", "kind": "rsf", "params": {"n_estimators": 20, "min_samples_split": 2, "min_samples_leaf": 1}},
        {"name": "porpoise", "kind": "porpoise", "encoder": "hipt256", "pca": {"pathology": 2, "genomics": 2},
         "params": {"n_bins": 2, "epochs": 2, "batch_size": 4, "micro_batch": 4, "device": "cpu",
                    "max_instances": 32}},
    ]
    explain = dict(base["explain"], model="cox_ridge", attention_model="porpoise", k=3, cv_folds=2, gallery_size=2,
                   n_maps=1)
    survival["explain"].update(heatmap_slides=2, heatmap_px=256)
    config = dict(survival=survival, explain=explain, report={"slide_thumbnails": True})
    for key, value in changes.items():
        config[key] = value
    return cohort_config(cohort, workdir, **config)


def run_env() -> dict[str, str]:
    # a credential in the environment must not reach the manifest
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "AWS_SECRET_ACCESS_KEY": SECRET}


def start_run(workdir: Path, config: Path) -> subprocess.Popen:
    """The workflow's default target in ``workdir``, started (its output in ``workdir/run.log``)."""
    with open(workdir / "run.log", "w") as log:
        return subprocess.Popen(snakemake_cmd("--directory", str(workdir), "--profile", PROFILE, "--cores", "2",
                                              "--configfile", str(config)),
                                stdout=log, stderr=subprocess.STDOUT, env=run_env())


def finish_run(proc: subprocess.Popen, workdir: Path, timeout: float = 900) -> str:
    """Wait for a started run (killed if it outlasts ``timeout``); it must succeed. Returns its output."""
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    output = (workdir / "run.log").read_text()
    assert returncode == 0, f"snakemake failed:\n{output[-8000:]}"
    return output


def encoders_of(config: Path) -> list[str]:
    return yaml.safe_load(config.read_text())["pathology"]["encoders"]


def half_done_shard(workdir: Path, n_encoders: int) -> tuple[Path, str] | None:
    """(feature shard directory, a finished slide) of an extraction job that has finished and kept in
    its resume cache at least one slide (every encoder of the config) but not yet written its index (still working)."""
    resume = workdir / ".tessera/resume/features"
    for shard in sorted((workdir / "results/features/hipt256").glob("shard-*")):
        if (shard / "index.tsv").exists():
            continue
        for done in sorted(shard.glob("*.h5")):
            if len(list((resume / done.stem).glob("*.h5"))) == n_encoders:
                return shard, done.stem
    return None


def run_killed_mid_extraction(workdir: Path, config: Path, timeout: float = 900) -> tuple[Path, str]:
    """Start the workflow in its own process group; SIGKILL the group once a feature-extraction job has
    finished part of its shard. Returns (that shard's directory, a slide it had finished)."""
    log = open(workdir / "killed-run.log", "w")
    proc = subprocess.Popen(snakemake_cmd("--directory", str(workdir), "--profile", PROFILE, "--cores", "2",
                                          "--configfile", str(config)),
                            stdout=log, stderr=subprocess.STDOUT, env=run_env(), start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while (caught := half_done_shard(workdir, len(encoders_of(config)))) is None:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended ({proc.returncode}) before any extraction job was caught "
                                     f"half-way: see {workdir / 'killed-run.log'}")
            if time.monotonic() > deadline:
                raise AssertionError("no extraction job was caught half-way in time")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    return caught


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(run A, run B, config, (the shard B was killed in, a slide it had finished), the output of B's restart)."""
    root = tmp_path_factory.mktemp("repro")
    cohort = tiny_cohort_for_survival(root)
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    config = write_config(cohort, root)
    # A and B at once: each run's chain of short jobs leaves the cores idle between jobs, which the other
    # fills (their outputs cannot depend on it: thread counts are fixed and every result is seeded)
    run_a = start_run(a, config)
    try:
        killed = run_killed_mid_extraction(b, config)
        # Snakemake knows the killed job's outputs are incomplete (the profile's rerun-incomplete redoes them)
        dry = run_snakemake(b, "--configfile", str(config), "-n", check=False)
        assert f"Incomplete files:\nresults/features/hipt256/{killed[0].name}" in dry.stdout + dry.stderr
        # a SIGKILLed Snakemake leaves its lock behind: the documented restart is --unlock, then the same command
        run_snakemake(b, "--configfile", str(config), "--unlock")
        restart = finish_run(start_run(b, config), b)
        finish_run(run_a, a)
    finally:
        if run_a.poll() is None:
            run_a.kill()
            run_a.wait()
    return a, b, config, killed, restart


def test_two_runs_write_identical_results_except_the_allow_list(runs):
    a, b, *_ = runs
    diff = compare_runs(a, b)
    assert diff.identical, f"only in A: {diff.only_a}\nonly in B: {diff.only_b}\ndiffer: {diff.differ}"
    assert len(checksums(a)) > 150  # every stage's outputs were compared, not an empty directory
    allowed = {p.relative_to(a).as_posix() for p in (a / "results").rglob("*")
               if allowed_reason(p.relative_to(a).as_posix())}
    assert {p for p in allowed if not p.endswith(("/timings.json", "/.snakemake_timestamp"))} == set()


def test_a_run_killed_mid_extraction_resumes_and_leaves_no_corrupt_file(runs):
    _, b, _, (killed_shard, finished_slide), restart = runs
    log = (b / "logs/features" / f"{killed_shard.name}.log").read_text()
    encoders = ", ".join(encoders_of(runs[2]))
    assert f"{finished_slide}: {encoders} resumed from" in log, \
        "the restarted job recomputed a slide the killed one had finished"
    assert "Nothing to be done" not in restart
    leftovers = [p for p in (b / "results").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    checked = {suffix: 0 for suffix in (".h5", ".parquet", ".png", ".tsv", ".json", ".safetensors")}
    for path in (b / "results").rglob("*"):
        if path.suffix not in checked or not path.is_file():
            continue
        checked[path.suffix] += 1
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
        elif path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".png":
            with Image.open(path) as im:
                im.load()
        elif path.suffix == ".tsv":
            pd.read_csv(path, sep="\t")
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            from safetensors.numpy import load_file
            assert all(np.isfinite(t).all() for t in load_file(path).values())
    assert all(n > 0 for n in checked.values()), checked


def registered_report_files(report_zip: Path) -> dict[str, list[str]]:
    """Category → files of a `snakemake --report` zip (from the report's own index)."""
    with zipfile.ZipFile(report_zip) as z:
        html = z.read("report/report.html").decode()
        names = z.namelist()
    start = html.index("categories = ") + len("categories = ")
    categories, _ = json.JSONDecoder().raw_decode(html[start:])
    files = {cat: sorted(f for sub in subs.values() for f in sub) for cat, subs in categories.items()}
    for cat_files in files.values():
        for f in cat_files:
            assert any(n.startswith("report/data/raw/") and n.endswith("/" + Path(f).name) for n in names), f
    assert "rulegraph_spec" in html and "runtimes_spec" in html  # Snakemake's rule graph and runtimes
    return files


def shown_results(workdir: Path) -> set[str]:
    """What the report must show: every figure (PNG) the run made, and every cohort-level table or JSON
    (per-shard intermediates, model weights, HPO caches and timings.json excluded: the report's runtime
    statistics cover timings)."""
    shown = set()
    for path in (workdir / "results").rglob("*"):
        rel = path.relative_to(workdir).as_posix()
        if not path.is_file():
            continue
        if path.suffix == ".png":
            shown.add(rel)
        elif path.suffix in (".tsv", ".json", ".md", ".html") and not re.search(
                r"/(shard-\d+|random-weights|hpo)/|/(assign|sample)/", rel) and path.name != "timings.json":
            shown.add(rel)
    return shown


def test_report_shows_every_figure_and_table_with_captions(runs):
    a, _, config, *_ = runs
    run_snakemake(a, "--configfile", str(config), "--report", str(a / "report.zip"))
    files = registered_report_files(a / "report.zip")
    assert set(files) == {"Slides QC", "Pathology", "Genomics", "Survival", "Explain", "Provenance"}
    registered = {f for cat in files.values() for f in cat}
    assert shown_results(a) == registered
    qc = pd.read_csv(a / "results/qc/slides.tsv", sep="\t")
    assert set(qc["thumbnail"]) == {f for f in files["Slides QC"] if f.endswith(".png")}
    with zipfile.ZipFile(a / "report.zip") as z:
        html = z.read("report/report.html").decode()
    # captions rendered from report/*.rst (the report holds them JSON-escaped: ASCII snippets)
    for caption in ("out-of-fold risk groups of model", "The run manifest", "QC thumbnail of slide",
                    "Every model side by side", "The cluster-explanation report of"):
        assert caption in html, caption


def test_manifest_records_versions_checksums_weights_seeds_and_profile(runs):
    a, _, config, *_ = runs
    text = (a / "results/manifest.json").read_text()
    m = json.loads(text)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert m["tessera"]["git"]["commit"] == head and isinstance(m["tessera"]["git"]["dirty"], bool)
    import importlib.metadata as md
    assert m["packages"]["installed"]["snakemake"] == md.version("snakemake")
    assert m["profile"] == [PROFILE]
    assert {f["path"]: f["sha256"] for f in m["config_files"]}[str(config)] == sha256_file(config)
    cfg = yaml.safe_load(config.read_text())
    for role in ("slides", "clinical", "genomics", "reference", "annotation"):
        assert m["inputs"][role] == {"path": cfg[role], "sha256": sha256_file(cfg[role])}
    assert m["config"]["survival"]["models"][1]["params"]["n_estimators"] == 10
    assert m["weights"]["pathology"]["hipt256"]["weights"] == {"source": "random", "random": True, "seed": 0}
    assert m["weights"]["pathology"]["hipt4k"]["patch_weights"]["random"] is True
    (nt,) = m["weights"]["genomics"]["weights"]
    weights_file = a / "results/genomics/nt-v2-random-demo/random-weights/model.safetensors"
    assert nt["weights_random"] is True and nt["weights_sha256"] == sha256_file(weights_file)
    assert m["seeds"]["pathology.random_seed"] == 0 and m["seeds"]["survival.models.gbsa.seed (effective)"] == 0
    assert m["outputs"]["results/models/summary.tsv"] == sha256_file(a / "results/models/summary.tsv")
    assert set(m["conda_envs"]) >= {"slides.yaml", "pathology.yaml", "survival.yaml", "provenance.yaml"}
    assert SECRET not in text and "AWS_SECRET_ACCESS_KEY" not in text


def test_changing_a_patching_parameter_reruns_patching_and_everything_downstream(runs):
    a, _, config, *_ = runs
    cfg = yaml.safe_load(config.read_text())
    cfg["patching"]["min_tissue_fraction"] = 0.3
    changed = a / "patching-changed.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_work(run_snakemake(a, "--configfile", str(changed), "-n"))
    slide_shards = len(list((a / "results/slides").glob("shard-*")))
    assert jobs == {"patch_slides": slide_shards, "extract_features": slide_shards, "slides_qc": 1,
                    "collect_features": len(cfg["pathology"]["encoders"]), "explain_sample": slide_shards,
                    "explain_fit": 1, "explain_assign": slide_shards, "explain_report": 1, "survival_cohort": 1,
                    "survival_tabular": 3, "survival_deep": 1, "survival_heatmaps": 1, "survival_summary": 1,
                    "manifest": 1}
    assert not GENOMIC_RULES & set(jobs)


def test_reordering_the_keys_of_config_sections_reruns_only_the_manifest(runs):
    a, _, config, *_ = runs
    cfg = yaml.safe_load(config.read_text())
    for section in ("patching", "pathology", "gene_sequences", "genomics_model", "explain"):
        cfg[section] = dict(reversed(list(cfg[section].items())))
    reordered = a / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # only the manifest, which records the config file's path and checksum
    assert planned_work(run_snakemake(a, "--configfile", str(reordered), "-n")) == {"manifest": 1}


def test_changing_one_survival_model_reruns_only_that_model_and_the_aggregates(runs):
    a, _, config, *_ = runs
    cfg = yaml.safe_load(config.read_text())
    cfg["survival"]["models"][1]["params"]["n_estimators"] = 11  # gbsa
    changed = a / "model-changed.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = run_snakemake(a, "--configfile", str(changed), "-n")
    assert planned_work(dry) == {"survival_tabular": 1, "survival_summary": 1, "manifest": 1}
    assert re.findall(r"wildcards: model=(\S+)", dry.stdout) == ["gbsa"]


def test_adding_a_slide_recomputes_its_shard_and_the_cohort_aggregates_only(runs, tmp_path):
    a, _, config, *_ = runs
    cfg = yaml.safe_load(config.read_text())
    slides = pd.read_csv(cfg["slides"], sep="\t", keep_default_na=False)
    slides["path"] = [str(Path(cfg["slides"]).parent / p) for p in slides["path"]]
    extra = {"slide_id": "P004-S2", "patient_id": "P004", "path": slides.set_index("slide_id").loc["P004-S1", "path"],
             "mpp": ""}
    sheet = tmp_path / "slides.tsv"
    pd.concat([slides, pd.DataFrame([extra])]).to_csv(sheet, sep="\t", index=False)
    cfg["slides"] = str(sheet)
    changed = tmp_path / "slide-added.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_work(run_snakemake(a, "--configfile", str(changed), "-n"))
    slide_shards = len(list((a / "results/slides").glob("shard-*")))
    # the new slide's shard: patching, features, the explain sample; cohort level: QC index, feature
    # tables, k-means (so every shard's cluster assignment), the explain report, the survival cohort
    # table, every model (and the deep one's heatmaps: the slide sheet changed) and the summary, the manifest
    assert jobs == {"patch_slides": 1, "extract_features": 1, "slides_qc": 1,
                    "collect_features": len(cfg["pathology"]["encoders"]),
                    "explain_sample": 1, "explain_fit": 1, "explain_assign": slide_shards, "explain_report": 1,
                    "survival_cohort": 1, "survival_tabular": 3, "survival_deep": 1, "survival_heatmaps": 1,
                    "survival_summary": 1, "manifest": 1}
