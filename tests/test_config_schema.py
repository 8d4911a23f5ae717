"""Config errors: every schema problem of the merged config on one short line with the file that set the
value, the key path, the bad value, what is allowed and the key meant; every sheet's problems in one go."""

from pathlib import Path

import pytest
import yaml

from tessera.config import check_config_schema, config_sources
from tessera.errors import InputError, InputErrors
from tessera.plan import plan_cohort

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config/schemas/config.schema.yaml").read_text())
BASE = yaml.safe_load((REPO / "config/config.yaml").read_text())


def merged(*layers):
    """The config as Snakemake merges it: nested mappings updated, everything else replaced."""
    def update(d, u):
        for k, v in u.items():
            d[k] = update(dict(d.get(k) or {}), v) if isinstance(v, dict) else v
        return d
    out = yaml.safe_load(yaml.safe_dump(BASE))
    for layer in layers:
        update(out, layer)
    return out


def problems(user, overrides=None):
    sources = [("config/config.yaml", BASE), ("my-cohort.yaml", user)] + ([("--config", overrides)] if overrides else [])
    with pytest.raises(InputErrors) as err:
        check_config_schema(merged(user, overrides or {}), SCHEMA, sources)
    return err.value


def test_misspelled_keys_name_the_file_the_path_and_the_key_meant():
    err = problems({"slide": "my/slides.tsv", "survival": {"cv": {"n_split": 3}}})
    lines = str(err).splitlines()
    assert len(err.errors) == 2 and len(lines) == 3, str(err)
    assert lines[0] == "2 problem(s) in the config (config/config.yaml, my-cohort.yaml):"
    assert lines[1].startswith("  my-cohort.yaml, field 'slide': unknown key 'slide' (value 'my/slides.tsv'). "
                               "Fix: did you mean 'slides'? allowed keys: slides, clinical,")
    assert lines[2] == ("  my-cohort.yaml, field 'survival.cv.n_split': unknown key 'n_split' (value 3). Fix: did you "
                        "mean 'n_splits'? allowed keys: n_splits, n_repeats, seed, inner_splits, n_jobs")
    assert all(len(line) < 400 for line in lines)


def test_bad_values_say_what_is_allowed_and_which_source_set_them():
    err = problems({"pathology": {"device": "cdua"}, "explain": {"k": 1}},
                   overrides={"patching": {"target_mpp": -1}})
    text = str(err)
    assert len(err.errors) == 3
    assert ("my-cohort.yaml, field 'pathology.device': 'cdua' is not allowed. Fix: did you mean 'cuda'? "
            "use one of 'auto', 'cpu', 'cuda'") in text
    assert "my-cohort.yaml, field 'explain.k': 1 is not allowed. Fix: use an integer >= 2 or 'auto'" in text
    assert "--config, field 'patching.target_mpp': -1 is not allowed. Fix: use a number > 0" in text


def test_problems_inside_lists_and_inherited_values():
    models = [{**m} for m in BASE["survival"]["models"][:2]]
    models[1] = {**models[1], "kind": "coxnett", "pca": {"genomic": 4}}
    del models[0]["kind"]
    err = problems({"survival": {"models": models}, "genomics_model": {"max_tokens": "2k"}})
    text = str(err)
    assert "my-cohort.yaml, field 'survival.models[cox_ridge].kind': required key 'kind' is missing" in text
    assert "field 'survival.models[coxnet].kind': 'coxnett' is not allowed. Fix: did you mean 'coxnet'?" in text
    assert "field 'survival.models[coxnet].pca.genomic': unknown key 'genomic'. Fix: did you mean 'genomics'?" in text
    assert "field 'genomics_model.max_tokens': '2k' is not allowed. Fix: use an integer >= 2" in text
    # A value the user did not touch is blamed on the file it came from.
    base_bad = yaml.safe_load(yaml.safe_dump(BASE))
    base_bad["n_shards"] = 0
    with pytest.raises(InputErrors, match=r"config/config.yaml, field 'n_shards': 0 is not allowed"):
        check_config_schema(base_bad, SCHEMA, [("config/config.yaml", base_bad), ("my-cohort.yaml", {})])


def test_config_sources_keep_the_merge_order(tmp_path):
    (tmp_path / "a.yaml").write_text("n_shards: 2\n")
    (tmp_path / "b.yaml").write_text("{}\n")
    sources = config_sources([tmp_path / "a.yaml", tmp_path / "b.yaml"], {"n_shards": 3})
    assert [s[1] for s in sources] == [{"n_shards": 2}, {}, {"n_shards": 3}] and sources[-1][0] == "--config"


def test_every_problem_of_every_sheet_in_one_go(tmp_path):
    (tmp_path / "s.tsv").write_text("slide_id\tpatient_id\tpath\nS 1\tP1\ta\nS2\tP9\tb\n")
    (tmp_path / "c.tsv").write_text("patient_id\ttime\tevent\nP1\t10\tyes\nP2\t5\t0\n")
    (tmp_path / "g.tsv").write_text("patient_id\tvcf\tvcf_sample\tbam\nP2\t\t\t\n")
    config = {"slides": str(tmp_path / "s.tsv"), "clinical": str(tmp_path / "c.tsv"), "genomics": str(tmp_path / "g.tsv")}
    with pytest.raises(InputError) as err:
        plan_cohort(config)
    text = str(err.value)
    assert "3 problem(s) in the sheets" in text
    assert f"{tmp_path / 's.tsv'}, line 2, field 'slide_id': 'S 1' is not a valid ID" in text
    assert f"{tmp_path / 'c.tsv'}, line 2, field 'event': 'yes' is not 0 or 1" in text
    assert f"{tmp_path / 'g.tsv'}, line 2, field 'vcf': neither a VCF nor a BAM is given" in text
    # With the sheets valid, unknown patients of both the slide and genomics sheets are listed together.
    (tmp_path / "s.tsv").write_text("slide_id\tpatient_id\tpath\nS1\tP1\ta\nS2\tP9\tb\n")
    (tmp_path / "c.tsv").write_text("patient_id\ttime\tevent\nP1\t10\t1\n")
    (tmp_path / "g.tsv").write_text("patient_id\tvcf\tvcf_sample\tbam\nP8\t\t\tx.bam\n")
    with pytest.raises(InputError) as err:
        plan_cohort(config)
    assert "2 problem(s)" in str(err.value) and "'P9' is not in" in str(err.value) and "'P8' is not in" in str(err.value)
