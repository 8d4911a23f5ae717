"""Checkpoints: the official DINO layout loads unchanged (built here with random weights and an
argparse.Namespace), safetensors and s3:// load, loading is strict with a listing error, unpickling
runs nothing outside the allow-list, and random weights are explicit and reproducible."""

import argparse
import hashlib

import boto3
import pytest
import torch
from moto import mock_aws
from safetensors.torch import save_file

from tessera.errors import InputError
from tessera.pathology.encoders import registry
from tessera.pathology.encoders.checkpoints import build_encoder

HIPT256, HIPT4K = registry.get("hipt256"), registry.get("hipt4k")


def dino_checkpoint(model: torch.nn.Module, path, head_dim: int = 65536) -> None:
    """A checkpoint shaped like DINO's main_dino.py output (what HIPT released): student under DDP
    ('module.backbone.'), teacher ('backbone.'), DINO heads, optimizer state, epoch and args."""
    backbone = model.state_dict()
    head = {"head.mlp.0.weight": torch.randn(32, model.embed_dim), "head.mlp.0.bias": torch.zeros(32),
            "head.last_layer.weight_g": torch.ones(head_dim, 1), "head.last_layer.weight_v": torch.randn(head_dim, 32)}
    teacher = {**{f"backbone.{k}": v.clone() for k, v in backbone.items()}, **head}
    student = {f"module.{k}": torch.randn_like(v) for k, v in teacher.items()}
    torch.save({
        "student": student, "teacher": teacher, "epoch": 100,
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 5e-4, "params": [0]}]},
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=head_dim, lr=0.0005, data_path="/data"),
        "dino_loss": {"center": torch.zeros(1, head_dim)},
    }, path)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def source_4k():
    torch.manual_seed(5)
    return HIPT4K.build().eval()


def test_official_dino_layout_loads_strictly_and_records_sha256(tmp_path, source_4k):
    path = tmp_path / "vit4k_xs_dino.pth"
    dino_checkpoint(source_4k, path, head_dim=1024)
    model, info = build_encoder(HIPT4K, str(path))
    assert same_weights(model, source_4k)  # the teacher, not the student
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and not info.random
    assert info.attrs() == {"weights": str(path), "weights_sha256": info.sha256, "weights_random": False}
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_official_vit256_layout_loads(tmp_path):
    torch.manual_seed(6)
    source = HIPT256.build()
    path = tmp_path / "vit256_small_dino.pth"
    dino_checkpoint(source, path, head_dim=256)
    model, _ = build_encoder(HIPT256, str(path))
    assert same_weights(model, source)


def test_safetensors_with_and_without_prefixes(tmp_path, source_4k):
    for name, prefix in (("plain.safetensors", ""), ("prefixed.safetensors", "backbone.")):
        save_file({f"{prefix}{k}": v.contiguous() for k, v in source_4k.state_dict().items()}, str(tmp_path / name))
        model, info = build_encoder(HIPT4K, str(tmp_path / name))
        assert same_weights(model, source_4k) and len(info.sha256) == 64


def test_strict_loading_lists_missing_unexpected_and_mismatched_keys(tmp_path, source_4k):
    state = {f"backbone.{k}": v for k, v in source_4k.state_dict().items()}
    del state["backbone.blocks.3.attn.proj.weight"]
    state["backbone.pos_embed"] = torch.zeros(1, 257, 192)  # e.g. a checkpoint trained at another grid size
    state["backbone.blocks.6.norm1.weight"] = torch.ones(192)  # a deeper model
    path = tmp_path / "wrong.pth"
    torch.save({"teacher": state}, path)
    with pytest.raises(InputError) as err:
        build_encoder(HIPT4K, str(path))
    message = str(err.value)
    assert str(path) in message
    assert "1 missing: blocks.3.attn.proj.weight" in message
    assert "1 unexpected: blocks.6.norm1.weight" in message
    assert "pos_embed (1, 257, 192) vs model (1, 197, 192)" in message
    assert "vit4k_xs_dino.pth" in message  # the fix names the right file
    # the ViT-256 checkpoint given for the ViT-4K: every key reported, nothing loaded
    torch.save({"teacher": {f"backbone.{k}": v for k, v in HIPT256.build().state_dict().items()}}, path)
    with pytest.raises(InputError, match="missing: .*phi.0.weight"):
        build_encoder(HIPT4K, str(path))


class Payload:
    """Unpickling this would create a file: proof that nothing outside the allow-list runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_unpickling_runs_nothing_outside_the_allow_list(tmp_path, source_4k):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in source_4k.state_dict().items()},
                "args": argparse.Namespace(hook=Payload(str(marker)))}, path)
    with pytest.raises(InputError, match="outside the allow-list"):
        build_encoder(HIPT4K, str(path))
    assert not marker.exists()
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="cannot read the checkpoint safely"):
        build_encoder(HIPT4K, str(tmp_path / "garbage.pth"))


def test_weights_from_s3(tmp_path, source_4k, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    path = tmp_path / "vit4k_xs_dino.pth"
    dino_checkpoint(source_4k, path, head_dim=64)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="models")
        boto3.client("s3").upload_file(str(path), "models", "hipt/vit4k_xs_dino.pth")
        model, info = build_encoder(HIPT4K, "s3://models/hipt/vit4k_xs_dino.pth")
    assert same_weights(model, source_4k)
    assert info.source == "s3://models/hipt/vit4k_xs_dino.pth"
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_random_weights_only_when_asked_and_reproducible(caplog):
    a, info = build_encoder(HIPT4K, "random", seed=3)
    b, _ = build_encoder(HIPT4K, "random", seed=3)
    c, _ = build_encoder(HIPT4K, "random", seed=4)
    assert same_weights(a, b) and not same_weights(a, c)
    assert info.random and info.sha256 == "" and info.attrs()["weights_seed"] == 3
    assert "RANDOM weights" in caplog.text
    with pytest.raises(InputError, match="no weights given for encoder 'hipt4k'.*'random'"):
        build_encoder(HIPT4K, "")
    with pytest.raises(InputError, match="not found"):
        build_encoder(HIPT4K, "/nowhere/vit4k_xs_dino.pth")
