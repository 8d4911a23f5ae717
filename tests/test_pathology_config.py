"""The pathology config section is checked before any job runs, with errors that name the key and the fix."""

import pytest

from tessera.errors import InputError
from tessera.pathology.params import ExtractParams, check_pathology_config, uses_random_weights


def config(**pathology):
    return {"patching": {"patch_size": 256}, "pathology": {"weights": {"hipt256": "random", "hipt4k": "random"},
                                                         **pathology}}


def test_valid_configs():
    assert check_pathology_config(config()).outputs == ("hipt256", "hipt4k")
    only_regions = check_pathology_config(config(encoders=["hipt4k"]))
    assert only_regions.outputs == ("hipt4k",) and only_regions.groups[0].patches[0].name == "hipt256"
    assert uses_random_weights(config()) == ["hipt256", "hipt4k"]
    p = ExtractParams.from_config({**config()["pathology"], "encoders": ["hipt256"], "threads": 3, "mem_mb": 1})
    assert p.encoders == ("hipt256",) and p.weights["hipt256"] == "random"


@pytest.mark.parametrize("cfg, field, text", [
    (config(encoders=["hipt512"]), "pathology.encoders", "unknown encoder 'hipt512'. Fix: use one of conch_v1, conch_v15, gigapath, hipt256, hipt4k"),
    ({"pathology": {"encoders": ["hipt4k"], "weights": {"hipt4k": "random"}}}, "pathology.weights.hipt256",
     "no weights for encoder 'hipt256' (needed by hipt4k)"),
    ({"pathology": {}}, "pathology.weights.hipt256", "or 'random' for a demo or test run"),
    (config(weights={"hipt256": "/no/such/vit256_small_dino.pth", "hipt4k": "random"}), "pathology.weights.hipt256",
     "weights file '/no/such/vit256_small_dino.pth' not found"),
    ({**config(), "patching": {"patch_size": 224}}, "patching.patch_size", "reads 256-px patches"),
])
def test_invalid_configs_name_the_key_and_the_fix(cfg, field, text):
    with pytest.raises(InputError) as err:
        check_pathology_config(cfg)
    assert err.value.field == field and text in str(err.value) and "Fix:" in str(err.value)


def test_schema_defaults_agree_with_the_code():
    from dataclasses import fields
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "config/schemas/config.schema.yaml").read_text())
    keys = schema["properties"]["pathology"]["properties"]
    defaults = ExtractParams()
    for f in fields(ExtractParams):
        expected = getattr(defaults, f.name)
        assert keys[f.name]["default"] == (list(expected) if isinstance(expected, tuple) else expected), f.name
        assert keys[f.name].get("description"), f.name
    assert {"threads", "mem_mb", "runtime_min"} <= set(keys)  # rule settings, not library ones


@pytest.mark.parametrize("survival, field", [
    ({"cohort": {"modalities": ["pathology"], "pathology_encoder": "uni_v1"}, "models": []},
     "survival.cohort.pathology_encoder"),
    ({"cohort": {"modalities": ["clinical"]}, "models": [{"name": "p", "kind": "porpoise", "encoder": "vit"}]},
     "survival.models[p].encoder"),
])
def test_survival_reads_only_extracted_encoders(survival, field):
    """Any registered encoder can feed survival (any dim), but only one the pathology stage extracts."""
    from tessera.config import check_config

    with pytest.raises(InputError) as err:
        check_config({**config(encoders=["hipt256", "hipt4k"]), "survival": survival})
    assert err.value.field == field and "is not one of pathology.encoders (hipt256, hipt4k)" in str(err.value)
    check_config({**config(encoders=["hipt256", "uni_v1", "vit"]), "survival": survival})  # extracted: fine


def test_hipt_lgp_needs_the_region_token_grids_and_heatmaps_a_deep_model():
    from tessera.config import check_config

    lgp = {"name": "lgp", "kind": "hipt_lgp", "encoder": "hipt4k"}
    base = config(encoders=["hipt256", "hipt4k"])
    with pytest.raises(InputError, match="needs each region's grid of patch tokens") as err:
        check_config({**base, "survival": {"models": [lgp]}})
    assert err.value.field == "pathology.region_tokens" and "region_tokens: true" in str(err.value)
    tokens = {**base, "pathology": {**base["pathology"], "region_tokens": True}}
    check_config({**tokens, "survival": {"models": [lgp]}})
    with pytest.raises(InputError, match="set encoder: hipt4k"):
        check_config({**tokens, "survival": {"models": [{**lgp, "encoder": "hipt256"}]}})
    models = {"models": [lgp, {"name": "cox", "kind": "coxnet"}]}
    check_config({**tokens, "survival": models, "explain": {"attention_model": "lgp"}})
    with pytest.raises(InputError, match="explain.attention_model 'cox' is not a deep model with an encoder") as err:
        check_config({**tokens, "survival": models, "explain": {"attention_model": "cox"}})
    assert err.value.field == "explain.attention_model"
