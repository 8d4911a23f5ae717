"""NT models: the exact v2 checkpoint layout, strict loading from every supported form, architecture checks."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import EsmConfig, EsmForMaskedLM

from tessera.errors import InputError
from tessera.genomics.nt import (
    V2_50M,
    NTv2Config,
    NTv2ForMaskedLM,
    check_state_dict,
    count_parameters,
    expected_layout,
    load_nt,
    write_random_model,
)

H, I, V, L = 512, 2048, 4107, 12
V2_50M_GLOBAL = {
    "esm.embeddings.word_embeddings.weight": (V, H),
    "esm.embeddings.position_embeddings.weight": (2050, H),
    "esm.encoder.emb_layer_norm_after.weight": (H,),
    "esm.encoder.emb_layer_norm_after.bias": (H,),
    "esm.contact_head.regression.weight": (1, L * 16),
    "esm.contact_head.regression.bias": (1,),
    "lm_head.bias": (V,),
    "lm_head.dense.weight": (H, H),
    "lm_head.dense.bias": (H,),
    "lm_head.layer_norm.weight": (H,),
    "lm_head.layer_norm.bias": (H,),
    "lm_head.decoder.weight": (V, H),
}
V2_50M_PER_LAYER = {
    "attention.self.query.weight": (H, H),
    "attention.self.query.bias": (H,),
    "attention.self.key.weight": (H, H),
    "attention.self.key.bias": (H,),
    "attention.self.value.weight": (H, H),
    "attention.self.value.bias": (H,),
    "attention.self.rotary_embeddings.inv_freq": (16,),
    "attention.output.dense.weight": (H, H),
    "attention.output.dense.bias": (H,),
    "attention.LayerNorm.weight": (H,),
    "attention.LayerNorm.bias": (H,),
    "intermediate.dense.weight": (2 * I, H),
    "output.dense.weight": (H, I),
    "LayerNorm.weight": (H,),
    "LayerNorm.bias": (H,),
}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48}


def v2_50m_layout() -> dict[str, tuple[int, ...]]:
    per_layer = {f"esm.encoder.layer.{i}.{k}": s for i in range(L) for k, s in V2_50M_PER_LAYER.items()}
    return {**V2_50M_GLOBAL, **per_layer}


def test_v2_50m_has_the_published_state_dict_layout():
    with torch.device("meta"):
        model = NTv2ForMaskedLM(NTv2Config.from_dict(V2_50M))
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == v2_50m_layout()
    assert len(state) == 192
    assert count_parameters(model) == 55_904_972
    # float32 payload of the published 223,642,688-byte model.safetensors (the rest is its JSON header)
    assert 4 * sum(v.numel() for v in state.values()) == 223_620_656


def test_v2_50m_state_dict_loads_strictly_and_mismatches_are_refused():
    expected = v2_50m_layout()
    state = {k: torch.empty(s) for k, s in expected.items()}
    check_state_dict(state, expected_layout("nt-v2", V2_50M), "model.safetensors")
    with torch.device("meta"):
        model = NTv2ForMaskedLM(NTv2Config.from_dict(V2_50M))
    model.load_state_dict(state, strict=True, assign=True)
    assert model.esm.encoder.layer[11].intermediate.dense.weight.shape == (2 * I, H)
    broken = dict(state)
    del broken["esm.encoder.layer.3.output.dense.weight"]
    broken["esm.encoder.layer.3.output.dense.bias"] = torch.empty(H)
    broken["lm_head.decoder.weight"] = torch.empty(V - 2, H)
    with pytest.raises(InputError) as err:
        check_state_dict(broken, expected, "model.safetensors")
    message = str(err.value)
    assert "missing: esm.encoder.layer.3.output.dense.weight" in message
    assert "unexpected: esm.encoder.layer.3.output.dense.bias" in message
    assert "wrong shape: lm_head.decoder.weight (4105, 512) (expected (4107, 512))" in message


def test_random_model_round_trip_records_sha_and_randomness(tmp_path):
    path = write_random_model(tmp_path / "m", "nt-v2", SMALL, seed=1)
    nt = load_nt(path, "nt-v2")
    assert nt.random and nt.kind == "nt-v2" and nt.max_tokens == 2048 and nt.num_layers == 2
    assert nt.sha256 == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    again = write_random_model(tmp_path / "m2", "nt-v2", SMALL, seed=1)
    assert load_nt(again, "nt-v2").sha256 == nt.sha256  # deterministic from the seed
    # a staged copy (S3 storage's local cache) is recorded under the workflow's name for the directory
    staged = load_nt(again, "nt-v2", shown="results/genomics/m/random-weights")
    assert staged.source == "results/genomics/m/random-weights/model.safetensors" and nt.source == f"{path}/model.safetensors"


def _ids(nt, seqs):
    rows = [nt.tokenizer.encode(s) for s in seqs]
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), nt.tokenizer.pad_id)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.from_numpy(r)
    return ids, (ids != nt.tokenizer.pad_id).long()


def test_weights_from_bin_sharded_index_and_s3_give_the_same_model(tmp_path, monkeypatch):
    src = write_random_model(tmp_path / "st", "nt-v2", SMALL, seed=2)
    ref = load_nt(src, "nt-v2")
    state = ref.model.state_dict()
    config = (src / "config.json").read_text()
    ids, mask = _ids(ref, ["ACGTTGCAAGGCTTAACCGGTA", "GGGCCCAAATTT"])
    expected = ref.hidden_state(ids, mask, -1)

    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text(config)
    torch.save(state, binary / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(config)
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: state[k].contiguous() for k in part}, str(sharded / name))
    weight_map = {k: name for name, part in halves.items() for k in part}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for directory in (binary, sharded):
        assert torch.equal(load_nt(directory, "nt-v2").hidden_state(ids, mask, -1), expected)

    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="weights")
        for f in ("config.json", "model.safetensors"):
            s3.upload_file(str(src / f), "weights", f"nt/v2/{f}")
        remote = load_nt("s3://weights/nt/v2", "nt-v2")
    assert remote.sha256 == ref.sha256 and remote.source == "s3://weights/nt/v2/model.safetensors"
    assert torch.equal(remote.hidden_state(ids, mask, -1), expected)


def test_pickled_objects_in_weights_are_refused(tmp_path):
    src = write_random_model(tmp_path / "st", "nt-v2", SMALL)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((src / "config.json").read_text())
    torch.save({"weights": torch.zeros(1), "payload": InputError("not a tensor")}, bad / "pytorch_model.bin")
    with pytest.raises(InputError, match="cannot read weights safely"):
        load_nt(bad, "nt-v2")


def test_v1_loads_into_transformers_esm_and_kind_mismatch_is_refused(tmp_path):
    v1 = load_nt(write_random_model(tmp_path / "v1", "nt-v1", SMALL), "nt-v1")
    assert isinstance(v1.model, EsmForMaskedLM) and v1.model.config.token_dropout and v1.max_tokens == 1000
    ids, mask = _ids(v1, ["ACGTTGCAAGGCTTAACCGGTA"])
    out = v1.model.esm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert torch.equal(v1.hidden_state(ids, mask, 1), out[1]) and torch.equal(v1.hidden_state(ids, mask, -1), out[-1])
    with pytest.raises(InputError, match="position_embedding_type is 'absolute'"):
        load_nt(tmp_path / "v1", "nt-v2")
    write_random_model(tmp_path / "v2", "nt-v2", SMALL)
    with pytest.raises(InputError, match="not a stock ESM"):
        load_nt(tmp_path / "v2", "nt-v1")


def test_attention_and_rotary_match_transformers_esm_when_the_feed_forward_is_zero(tmp_path):
    """With FFN output weights zeroed, NT v2 and stock ESM (rotary, pre-LN) are the same network."""
    nt = load_nt(write_random_model(tmp_path / "m", "nt-v2", SMALL, seed=3), "nt-v2")
    ours = nt.model
    cfg = EsmConfig(vocab_size=4107, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                    max_position_embeddings=2050, position_embedding_type="rotary", token_dropout=False, pad_token_id=1,
                    mask_token_id=2, emb_layer_norm_before=False, layer_norm_eps=1e-12, tie_word_embeddings=False)
    esm = EsmForMaskedLM(cfg).eval()
    with torch.no_grad():
        for layer in ours.esm.encoder.layer:
            layer.output.dense.weight.zero_()
        theirs = esm.state_dict()
        for k, v in ours.state_dict().items():
            if k in theirs and theirs[k].shape == v.shape:
                theirs[k] = v
        esm.load_state_dict(theirs)
        for layer in esm.esm.encoder.layer:
            layer.output.dense.weight.zero_()
            layer.output.dense.bias.zero_()
        ids, mask = _ids(nt, ["ACGTTGCAAGGCTTAACCGGTAACGTTTGACA", "GGGCCCAAATTTNAC"])
        ref = esm.esm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for k in range(3):
            got = ours.hidden_state(ids, mask, k)
            real = mask.bool()
            torch.testing.assert_close(got[real], ref[k][real], atol=2e-5, rtol=1e-4)


def test_feed_forward_is_prenorm_swiglu_silu_on_the_first_half(tmp_path):
    nt = load_nt(write_random_model(tmp_path / "m", "nt-v2", SMALL, seed=4), "nt-v2")
    layer = nt.model.esm.encoder.layer[0]
    with torch.no_grad():
        layer.attention.output.dense.weight.zero_()
        layer.attention.output.dense.bias.zero_()  # the attention branch adds nothing
        x = torch.randn(2, 5, 32)
        keep = torch.ones(2, 1, 1, 5, dtype=torch.bool)
        w = layer.intermediate.dense.weight
        h = F.layer_norm(x, (32,), layer.LayerNorm.weight, layer.LayerNorm.bias, 1e-12)
        manual = x + (F.silu(h @ w[:48].T) * (h @ w[48:].T)) @ layer.output.dense.weight.T
        torch.testing.assert_close(layer(x, keep), manual)


def test_layer_indices_and_padding(tmp_path):
    nt = load_nt(write_random_model(tmp_path / "m", "nt-v2", SMALL, seed=5), "nt-v2")
    ids, mask = _ids(nt, ["ACGTTGCAAGGCTTAACCGGTA", "GGG"])
    with torch.no_grad():
        assert torch.equal(nt.hidden_state(ids, mask, -1), nt.hidden_state(ids, mask, 2))
        emb = nt.model.esm.embeddings.word_embeddings(ids) * mask.unsqueeze(-1)
        assert torch.equal(nt.hidden_state(ids, mask, 0), emb)
        alone_ids, alone_mask = _ids(nt, ["GGG"])
        torch.testing.assert_close(nt.hidden_state(ids, mask, -1)[1, :4], nt.hidden_state(alone_ids, alone_mask, -1)[0])
    with pytest.raises(InputError, match="layer 3 is out of range"):
        nt.hidden_state(ids, mask, 3)
