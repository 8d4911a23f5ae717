"""`slides: null`, `genomics: null`, `clinical: null` switch stages off; survival and explain follow."""

import copy
from pathlib import Path

import pytest
import yaml

from tessera.config import check_config, switch_stages
from tessera.errors import InputError
from tessera.plan import plan_cohort

BASE = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/config.yaml").read_text())


def config(**sheets):
    out = copy.deepcopy(BASE)
    out.update(sheets)
    return out


def models(cfg):
    return {m["name"]: m for m in cfg["survival"]["models"]}


def test_without_genomes_survival_uses_slides_and_clinical():
    cfg = config(genomics=None)
    notes = switch_stages(cfg)
    assert notes == ["genomics: null switches off the genomic stage"]
    assert cfg["survival"]["cohort"]["modalities"] == ["clinical", "pathology"]
    assert all("genomics" not in m.get("pca", {}) for m in cfg["survival"]["models"])  # hipt_gp has no PCA
    assert len(cfg["survival"]["models"]) == 9 and cfg["explain"]["model"] == "coxnet"
    check_config(cfg)
    typo = config(genomics=None)
    typo["explain"]["model"] = "coxnett"  # a wrong name is still an error, not silently no risk
    switch_stages(typo)
    with pytest.raises(InputError, match="explain.model 'coxnett' is not one of survival.models"):
        check_config(typo)


def test_without_slides_the_models_that_need_them_are_left_out():
    cfg = config(slides=None)
    cfg["survival"]["models"].append({"name": "path_only", "kind": "cox_ridge", "modalities": ["pathology"]})
    notes = switch_stages(cfg)
    assert cfg["survival"]["cohort"]["modalities"] == ["clinical", "genomics"]
    assert "porpoise" not in models(cfg) and "path_only" not in models(cfg) and "coxnet" in models(cfg)
    assert "survival.models[porpoise] left out: it needs the slides" in notes
    assert "survival.models[path_only] left out: it needs pathology, switched off" in notes
    assert models(cfg)["cox_ridge"]["pca"] == {"genomics": 4}
    assert cfg["explain"]["model"] is None  # no explain stage: its model need not run
    assert cfg["explain"]["attention_model"] is None  # nor its heatmaps' (hipt_gp reads slides: left out)
    check_config(cfg)


def test_slides_alone_have_no_survival_stage_and_explain_without_a_risk():
    cfg = config(genomics=None, clinical=None)
    notes = switch_stages(cfg)
    assert cfg["survival"]["models"] == [] and cfg["explain"]["model"] is None
    assert any(n.startswith("survival.models (cox_ridge, coxnet,") for n in notes)
    assert "explain.model 'coxnet' does not run: the report shows the clusters without a risk" in notes
    check_config(cfg)


def test_what_cannot_run_is_an_error_naming_the_key():
    with pytest.raises(InputError, match="both slides and genomics are null"):
        switch_stages(config(slides=None, genomics=None))
    cfg = config(slides=None)
    cfg["survival"]["cohort"]["modalities"] = ["pathology"]
    with pytest.raises(InputError) as err:
        switch_stages(cfg)
    assert err.value.field == "survival.cohort.modalities"
    assert switch_stages(config()) == []  # every sheet given: nothing changes


def test_a_null_sheet_plans_as_an_empty_one(tiny_cohort):
    sheets = {k: str(tiny_cohort / f"{k}.tsv") for k in ("slides", "clinical", "genomics")}
    plan = plan_cohort({**sheets, "genomics": None, "clinical": None, "n_shards": 3})
    assert plan.genomics.empty and plan.clinical.empty and plan.patients_by_shard == {}
    assert sum(len(v) for v in plan.slides_by_shard.values()) == len(plan.slides) > 0
    plan = plan_cohort({**sheets, "slides": None, "n_shards": 3})
    assert plan.slides_by_shard == {} and len(plan.genomics) > 0
