"""Snakemake runs of the survival stage: fabricated upstream outputs, then the demo cohort's planted signal.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors import safe_open

from conftest import DEMO_HEATMAP_SLIDES
from survival_fabricate import ENCODER, GENOMIC_MODEL, fabricate_cohort

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SURVIVAL_RULES = ["survival_cohort", "survival_tabular", "survival_ranking", "survival_deep", "survival_summary"]

pytestmark = pytest.mark.workflow


def _snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def _config(files: dict, models: list[dict]) -> dict:
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base.update(slides=str(files["slides"]), clinical=str(files["clinical"]), genomics=str(files["genomics"]),
                reference="unused.fa", annotation="unused.gtf")
    base["survival"]["cohort"].update(modalities=["clinical", "pathology", "genomics"], pathology_encoder=ENCODER,
                                      genomics_model=GENOMIC_MODEL)
    base["survival"]["cv"].update(n_splits=3, n_repeats=1)
    base["survival"]["evaluation"]["n_bootstrap"] = 30
    base["survival"]["models"] = models
    base["explain"]["model"] = models[0]["name"]
    base["explain"]["attention_model"] = next((m["name"] for m in models if m["kind"] == "porpoise"
                                               and m.get("encoder")), None)
    return base


MODELS = [
    {"name": "coxnet", "kind": "coxnet", "params": {"l1_ratio": 0.5},
     "search": {"alpha": {"type": "float", "low": 0.005, "high": 1.0, "log": True}}, "n_trials": 3},
    {"name": "gbsa", "kind": "gbsa", "params": {"n_estimators": 20, "max_depth": 2}},
    {"name": "svm", "kind": "svm"},
    {"name": "deep", "kind": "porpoise", "encoder": ENCODER, "modalities": ["clinical", "genomics"],
     "params": {"epochs": 3, "lr": 0.001, "max_instances": 16, "device": "auto"}},
    # HIPT's local-global model on the regions' token grids, starting from the pathology stage's ViT-4K
    {"name": "lgp", "kind": "hipt_lgp", "encoder": "hipt4k", "modalities": [],
     "params": {"epochs": 2, "lr": 0.001, "device": "auto"}},
]


def test_survival_stage_on_fabricated_upstream_outputs(tmp_path):
    files = fabricate_cohort(tmp_path, n=48, seed=3, strength=1.5, region_tokens=True)
    (tmp_path / "config").mkdir()
    cfg = _config(files, MODELS)
    cfg["pathology"]["region_tokens"] = True
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    # upstream outputs exist as files; only the survival rules may run (the slide stage would need slides)
    run = _snakemake(tmp_path, "--allowed-rules", *SURVIVAL_RULES, "--", "results/models/summary.tsv")
    assert run.returncode == 0, run.stderr[-3000:]

    summary = pd.read_csv(tmp_path / "results" / "models" / "summary.tsv", sep="\t").set_index("model")
    assert list(summary.index) == ["coxnet", "gbsa", "svm", "deep", "lgp"]
    coxnet = json.loads((tmp_path / "results" / "models" / "coxnet" / "metrics.json").read_text())
    assert summary.loc["coxnet", "c_harrell"] == pytest.approx(coxnet["pooled"]["c_harrell"]["mean"])
    assert (summary.loc[["coxnet", "gbsa"], "c_harrell_lower"] > 0.5).all()  # the planted signal is found
    # (the multimodal model trains for 3 epochs only here; its signal recovery is tested in test_survival_experiment)
    excluded = pd.read_csv(tmp_path / "results" / "cohort" / "excluded.tsv", sep="\t")
    assert set(excluded["patient_id"]) == {"P003", "P048"}  # failed QC; no genomic data
    deep = tmp_path / "results" / "models" / "deep"
    assert (deep / "attention.parquet").is_file() and (deep / "model.safetensors").is_file()
    assert (tmp_path / "logs" / "benchmarks" / "survival" / "deep.tsv").is_file()
    assert "computes on cpu" in (tmp_path / "logs" / "survival" / "deep.log").read_text()
    lgp = tmp_path / "results" / "models" / "lgp"
    with safe_open(str(lgp / "model.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["tessera"])
        assert "net.local_vit.blocks.5.mlp.fc2.weight" in f.keys()
    assert meta["kind"] == "hipt_lgp" and (meta["params"]["vit4k_weights"], meta["params"]["vit4k_seed"]) == ("random", 0)
    regions = pd.read_parquet(lgp / "attention.parquet")
    per_patient = regions.groupby("patient_id").size()  # two regions per slide, a patient's slides in one bag
    assert set(regions["size_level0"]) == {8192} and set(per_patient) == {2, 4}

    # changing one model's parameters reruns that model (and the summary) only
    cfg["survival"]["models"][1]["params"]["n_estimators"] = 31
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = _snakemake(tmp_path, "-n", "--allowed-rules", *SURVIVAL_RULES, "--", "results/models/summary.tsv")
    assert dry.returncode == 0, dry.stderr[-2000:]
    lines = [line.strip() for line in dry.stdout.splitlines()]
    rules = {line.removeprefix("rule ").rstrip(":") for line in lines if line.startswith("rule ")}
    models = {line.removeprefix("wildcards: model=") for line in lines if line.startswith("wildcards: model=")}
    assert rules == {"survival_tabular", "survival_summary"} and models == {"gbsa"}


def test_bad_model_config_stops_before_any_job(tmp_path):
    files = fabricate_cohort(tmp_path, n=20, seed=1)
    (tmp_path / "config").mkdir()
    cfg = _config(files, [{"name": "deep", "kind": "porpoise", "params": {"fusion": "sum"}}])
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = _snakemake(tmp_path, "-n", "results/models/summary.tsv")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "unknown fusion 'sum'" in out and "Fix: use bilinear or concat" in out
    # an ordinal covariate the clinical table lacks (it was ignored silently) stops planning too
    cfg = _config(files, MODELS[1:2])
    cfg["survival"]["cohort"]["ordinal"] = {"stage": ["I", "II", "III", "IV"], "grade": ["G1", "G2", "G3"]}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = _snakemake(tmp_path, "-n", "results/models/summary.tsv")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and f"{files['clinical']}, field 'survival.cohort.ordinal.grade'" in out
    assert "ordinal column(s) grade not in the clinical table" in out and "{grade: null}" in out


def _demo_metrics(demo_run) -> dict:
    work, _ = demo_run
    return {m: json.loads((work / "results" / "models" / m / "metrics.json").read_text())
            for m in ("coxnet", "porpoise")}


def test_demo_multimodal_model_is_clearly_above_chance(demo_run):
    """The demo's planted truth (demo/truth.tsv: necrosis fraction + planted variant) through the whole
    workflow: the multimodal model's out-of-fold C-index has its bootstrap 95 % interval above 0.5."""
    metrics = _demo_metrics(demo_run)["porpoise"]
    assert metrics["modalities"] == ["clinical", "pathology", "genomics"] and metrics["n_patients"] >= 40
    assert metrics["pooled"]["c_harrell"]["ci95"][0] > 0.5


def test_demo_coxnet_reaches_the_target_c_index(demo_run):
    """Coxnet on clinical covariates and the slide and genomic embeddings (8 and 4 principal components,
    fitted in each training fold) finds the planted truth: pooled out-of-fold C-index at least 0.7 (the
    truth's own C-index is 0.84)."""
    metrics = _demo_metrics(demo_run)["coxnet"]
    assert metrics["modalities"] == ["clinical", "pathology", "genomics"]
    assert metrics["pooled"]["c_harrell"]["mean"] >= 0.7


def test_demo_hipt_gp_trains_on_the_region_bags_and_draws_heatmaps(demo_run):
    """HIPT's slide-level model in the demo config (no known-answer threshold: the demo's slides hold few
    4096-px regions each): its bags are the patients' hipt4k regions, its attention is drawn per slide and
    shown in the explain report beside the cluster maps."""
    work, _ = demo_run
    out = work / "results" / "models" / "hipt_gp"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "hipt_gp" and metrics["modalities"] == [] and metrics["n_patients"] >= 40
    index = pd.read_csv(work / "results" / "features" / "hipt4k" / "index.tsv", sep="\t")
    regions = pd.read_parquet(out / "attention.parquet")
    ok = index[index["n"] > 0].groupby("patient_id")["n"].sum()
    assert regions.groupby("patient_id").size().to_dict() == ok[ok.index.isin(regions["patient_id"])].to_dict()
    heatmaps = pd.read_csv(out / "heatmaps.tsv", sep="\t")
    assert len(heatmaps) == DEMO_HEATMAP_SLIDES and set(heatmaps["risk_group"]) == {"highest", "lowest"}
    assert all((out / "heatmaps" / f).stat().st_size > 10_000 for f in heatmaps["file"])
    report = (work / "results" / "explain" / "hipt256" / "report.html").read_text()
    assert 'id="attention-heatmaps"' in report and report.count('alt="attention heatmap of slide') == DEMO_HEATMAP_SLIDES
