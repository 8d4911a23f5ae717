"""The survival config section: schema and code agree, and bad entries stop the run with the key and the fix."""

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from tessera.errors import InputError
from tessera.survival.settings import (
    FAMILIES,
    KINDS,
    CVSettings,
    EvalSettings,
    HPOSettings,
    PorpoiseParams,
    cohort_inputs,
    cv_blocker,
    family_models,
    model_files,
    parse_survival_config,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "config" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _defaults(section: dict) -> dict:
    return {k: v["default"] for k, v in section["properties"].items() if "default" in v}


def test_schema_defaults_agree_with_the_code(config):
    validate(config, str(SCHEMA))
    survival = yaml.safe_load(SCHEMA.read_text())["properties"]["survival"]["properties"]
    assert CVSettings(**_defaults(survival["cv"])) == CVSettings()
    assert HPOSettings(**_defaults(survival["hpo"])) == HPOSettings()
    assert EvalSettings.from_config(_defaults(survival["evaluation"])) == EvalSettings()
    assert set(survival["models"]["items"]["properties"]["kind"]["enum"]) == set(KINDS)
    settings = parse_survival_config(config["survival"])
    # the demo config exercises every kind but hipt_lgp (fine-tuning the ViT-4K takes a GPU: config/README.md;
    # test_survival_workflow runs it through the workflow)
    assert {m.kind for m in settings.models} == set(KINDS) - {"hipt_lgp"}


@pytest.mark.parametrize("bad", [{"cv": {"n_splits": 1}}, {"cohort": {"missing": "guess"}},
                                 {"models": [{"name": "x", "kind": "deepsurv"}]},
                                 {"models": [{"name": "x", "kind": "rsf", "search": {"a": {"type": "beta"}}}]}])
def test_schema_rejects(config, bad):
    with pytest.raises(WorkflowError):
        validate({**config, "survival": {**config["survival"], **bad}}, str(SCHEMA))


@pytest.mark.parametrize("models, message", [
    ([{"name": "a", "kind": "rsf"}, {"name": "a", "kind": "gbsa"}], "model name 'a' is used twice"),
    ([{"name": "a", "kind": "rsf", "modalities": ["genomics"]}], "not in survival.cohort.modalities"),
    ([{"name": "a", "kind": "rsf", "encoder": "hipt256"}], "only the deep kinds"),
    ([{"name": "a", "kind": "porpoise", "params": {"learning_rate": 1}}], "unknown porpoise parameter"),
    ([{"name": "a", "kind": "hipt_gp", "params": {"heads": 4}, "encoder": "hipt4k"}], "unknown hipt_gp parameter"),
    ([{"name": "a", "kind": "hipt_gp"}], "hipt_gp model needs the encoder of its region features"),
    ([{"name": "a/b", "kind": "rsf"}], "model name 'a/b' is not valid"),
    ([{"name": "a", "kind": "rsf", "pca": {"radiology": 4}}], "PCA for unknown modality"),
    ([{"name": "a", "kind": "coxnet", "modalities": []}], "needs at least one modality"),
])
def test_bad_model_entries_are_named(models, message):
    with pytest.raises(InputError, match=message) as err:
        parse_survival_config({"cohort": {"modalities": ["clinical"]}, "models": models})
    assert "Fix:" in str(err.value)


def test_rule_families_cover_every_kind_and_inputs_follow_modalities(config):
    assert sorted(k for kinds in FAMILIES.values() for k in kinds) == sorted(KINDS)
    assert "model.safetensors" in model_files("porpoise") and "attention.parquet" in model_files("porpoise")
    assert "brier.png" in model_files("coxnet") and "brier.png" not in model_files("svm")
    inputs = cohort_inputs({**config, "survival": {"cohort": {"modalities": ["clinical", "pathology", "genomics"],
                                                              "pathology_encoder": "hipt4k", "genomics_model": None}}})
    assert inputs["slide_embeddings"] == "results/features/hipt4k/slide_embeddings.parquet"
    assert inputs["genomic_embeddings"] == f"results/genomics/{config['genomics_model']['name']}/embeddings.parquet"
    assert "slide_embeddings" in cohort_inputs(config)  # the demo uses every modality
    assert "slide_embeddings" not in cohort_inputs({**config, "survival": {"cohort": {"modalities": ["clinical"]}}})
    assert PorpoiseParams.from_dict({}).n_bins == 4


def test_a_cohort_too_small_for_the_folds_gets_no_survival_jobs():
    cv = CVSettings(n_splits=5)
    assert cv_blocker([1, 0] * 10, cv) is None
    assert "3 event(s), fewer than survival.cv.n_splits = 5" in cv_blocker([1, 1, 1, 0, 0, 0, 0, 0], cv)
    assert "2 censored patient(s)" in cv_blocker([1] * 8 + [0, 0], cv)
    assert cv_blocker([1] * 8, cv) is None  # no censoring at all is fine
    # one censored patient: no number of folds works, so the fix is not "at most 2" folds (2 already fail)
    one = cv_blocker([1] * 8 + [0], CVSettings(n_splits=2))
    assert one.endswith("Fix: use a larger cohort (cross-validation needs at least 2 of each)"), one


def test_inner_folds_are_checked_when_planning_and_named_by_their_key():
    """A tuned model needs cv.inner_splits folds, each with an event (and a censored patient when there
    are any), inside the smallest training part; the error named cv.n_splits, in the job, after the other
    stages had run."""
    from tessera.survival.cv import inner_folds
    from tessera.survival.data import make_y

    cv = CVSettings(n_splits=2, inner_splits=3)
    tuned = parse_survival_config({"models": [{"name": "c", "kind": "coxnet", "search": {
        "alpha": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}}]}).models
    fixed = parse_survival_config({"models": [{"name": "r", "kind": "cox_ridge"}]}).models
    event = [1] * 6 + [0] * 8  # a training part of 2 folds keeps 3 events and 4 censored patients
    assert cv_blocker(event, CVSettings(n_splits=2, inner_splits=4)) is None  # nothing is tuned
    assert cv_blocker(event, CVSettings(n_splits=2, inner_splits=4), fixed) is None
    assert cv_blocker(event, CVSettings(n_splits=2, inner_splits=3), tuned) is None
    blocked = cv_blocker(event, CVSettings(n_splits=2, inner_splits=4), tuned)
    assert "keeps as few as 3 of the clinical table's 6 event(s), fewer than survival.cv.inner_splits = 4" in blocked
    assert blocked.endswith("Fix: lower survival.cv.inner_splits (at most 3), or use a larger cohort")
    # 4 events, 2 censored: a training part keeps 1 censored patient, so no inner split can work
    blocked = cv_blocker([1, 1, 1, 1, 0, 0], cv, tuned)
    assert "1 of the clinical table's 2 censored patient(s)" in blocked and "survival.cv.inner_splits = 3" in blocked
    assert blocked.endswith("Fix: give c fixed params instead of a search space, or use a larger cohort")
    # the outer check names the class that limits the folds: 3 events but 2 censored patients
    assert "Fix: lower survival.cv.n_splits (at most 2)" in cv_blocker([1, 1, 1, 0, 0], CVSettings(n_splits=3))
    with pytest.raises(InputError, match="field 'survival.cv.inner_splits'"):  # the job names the same key
        next(inner_folds(make_y([5.0, 6, 7, 8], [1, 1, 0, 0]), 3, 0))
    settings = parse_survival_config({"models": [{"name": "a", "kind": "rsf"}, {"name": "b", "kind": "porpoise"}]})
    assert family_models(settings, "survival_tabular") == ["a"] and family_models(settings, "survival_deep") == ["b"]
    assert family_models(settings, "survival_tabular", active=False) == []
