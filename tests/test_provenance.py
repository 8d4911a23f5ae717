"""The run manifest's parts, the pinned-image guard of the remote profiles and the run comparison
(fast unit tests; tests/test_reproducibility.py runs them through the workflow)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from tessera.cli import main as cli
from tessera.errors import InputError
from tessera.checksum import sha256_file
from tessera.manifest import build_manifest, redact, run_context, write_manifest
from tessera.profiles import require_pinned_image
from tessera.rundiff import compare_runs

DIGEST = "ab" * 32


def test_redact_hides_secret_keys_and_url_credentials_and_keeps_the_rest():
    config = {"explain": {"pseudonym_salt": "pepper-1234567890ab", "seed": 3},
              "storage": {"AWS_Secret_Access_Key": "s3cr3t", "session_token": "tok", "region": "eu-west-2"},
              "weights": "https://alice:pw@models.example.org/vit.pth", "list": [{"api_key": "k"}, 1]}
    out = redact(config)
    assert out["explain"] == {"pseudonym_salt": "<redacted>", "seed": 3}
    assert out["storage"] == {"AWS_Secret_Access_Key": "<redacted>", "session_token": "<redacted>",
                              "region": "eu-west-2"}
    assert out["weights"] == "https://models.example.org/vit.pth"
    assert out["list"] == [{"api_key": "<redacted>"}, 1]


def test_run_context_reads_profiles_and_image_and_nothing_else():
    argv = ["--profile", "profiles/aws-batch", "--storage-s3-secret-key", "s3cr3t", "--workflow-profile=wp",
            f"--container-image=r/tessera@sha256:{DIGEST}", "--cores", "4"]
    assert run_context(argv, {}) == {"profiles": ["profiles/aws-batch", "workflow-profile:wp"],
                                     "container_image": f"r/tessera@sha256:{DIGEST}"}
    assert run_context(["--cores", "2"], {"SNAKEMAKE_PROFILE": "profiles/local"}) == {
        "profiles": ["profiles/local"], "container_image": None}
    assert run_context(["--profile", "none"], {}) == {"profiles": [], "container_image": None}


def test_remote_profiles_accept_only_an_image_pinned_by_digest():
    require_pinned_image(["snakemake", "--container-image", f"1.dkr.ecr.eu-west-2.amazonaws.com/tessera@sha256:{DIGEST}"])
    for argv in (["snakemake"], ["snakemake", "--container-image", "r/tessera:v1.0"],
                 ["snakemake", "--container-image=r/tessera@sha256:abc"]):
        with pytest.raises(InputError, match="pinned by digest") as err:
            require_pinned_image(argv)
        assert "aws ecr describe-images" in str(err.value)


def test_manifest_from_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shard = tmp_path / "results/features/hipt256/shard-0"
    shard.mkdir(parents=True)
    with h5py.File(shard / "S1.h5", "w") as f:
        f["features"] = np.zeros((2, 3), np.float32)
        f.attrs.update(weights="/models/vit256.pth", weights_sha256="f" * 64, weights_random=False,
                       precision="fp32", device="cpu", torch_version="2.13.0")
    index = tmp_path / "results/features/hipt256/index.tsv"
    pd.DataFrame({"slide_id": ["S1"], "patient_id": ["P1"], "path": [str(shard.relative_to(tmp_path) / "S1.h5")],
                  "n": [2], "dim": [3]}).to_csv(index, sep="\t", index=False)
    genes = tmp_path / "GENEA.parquet"
    pd.DataFrame({"patient_id": ["P1", "P2"], "model": "nt", "model_kind": "nt-v2", "weights": "/m",
                  "weights_sha256": "e" * 64, "weights_random": False}).to_parquet(genes)
    sheet, config_file = tmp_path / "slides.tsv", tmp_path / "config.yaml"
    sheet.write_text("slide_id\tpatient_id\tpath\nS1\tP1\ts1.svs\n")
    config_file.write_text("n_shards: 1\n")
    config = {"slides": str(sheet), "explain": {"seed": 5, "pseudonym_salt": "pepper-1234567890ab"},
              "survival": {"cv": {"seed": 2}, "models": [{"name": "cox", "kind": "cox_ridge"},
                                                          {"name": "rsf", "kind": "rsf", "seed": 9}]}}
    m = build_manifest(config=config, config_files=[str(config_file)], inputs={"slides": ("slides.tsv", str(sheet))},
                       feature_indexes={"hipt256": str(index)}, gene_tables=[str(genes)],
                       outputs={"results/features/hipt256/index.tsv": str(index)},
                       source_dir=REPO, context={"profiles": ["profiles/local"], "container_image": None})
    write_manifest(m, tmp_path / "manifest.json")
    text = (tmp_path / "manifest.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(m, default=str))
    assert "pepper" not in text
    assert m["weights"]["pathology"]["hipt256"]["weights"] == {"source": "/models/vit256.pth", "random": False,
                                                               "sha256": "f" * 64}
    assert m["weights"]["genomics"]["weights"][0]["weights_sha256"] == "e" * 64
    assert m["seeds"] == {"explain.seed": 5, "survival.cv.seed": 2, "survival.models.rsf.seed": 9,
                          "survival.models.cox.seed (effective)": 2, "survival.models.rsf.seed (effective)": 9}
    assert m["inputs"]["slides"] == {"path": "slides.tsv", "sha256": sha256_file(sheet)}
    assert m["config_files"] == [{"path": str(config_file), "sha256": sha256_file(config_file)}]
    assert m["outputs"] == {"results/features/hipt256/index.tsv": sha256_file(index)}
    assert m["profile"] == ["profiles/local"] and m["tessera"]["git"]["commit"]
    # written twice, the same bytes (no timestamp, sorted keys)
    write_manifest(m, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == text.encode()


def test_compare_runs_ignores_only_the_allow_list(tmp_path, capsys):
    for run in ("a", "b"):
        (tmp_path / run / "results/models/cox").mkdir(parents=True)
        (tmp_path / run / "results/models/cox/metrics.json").write_text('{"c": 0.7}')
        (tmp_path / run / "results/models/cox/timings.json").write_text(f'{{"s": {len(run) * 1.5 + (run == "b")}}}')
    assert compare_runs(tmp_path / "a", tmp_path / "b").identical
    assert cli(["compare-runs", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    (tmp_path / "b/results/models/cox/metrics.json").write_text('{"c": 0.71}')
    (tmp_path / "b/results/extra.tsv").write_text("x\n")
    diff = compare_runs(tmp_path / "a", tmp_path / "b")
    assert diff.differ == ["results/models/cox/metrics.json"] and diff.only_b == ["results/extra.tsv"]
    assert cli(["compare-runs", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "differ: results/models/cox/metrics.json" in capsys.readouterr().out


def test_pathology_weights_are_read_from_the_storage_prefix_when_outputs_are_in_s3(tmp_path, monkeypatch):
    """With S3 as default storage the feature files are not on this machine: read one from the bucket
    (the manifest said 'weights not read' in a local run with S3 storage)."""
    from moto import mock_aws

    from tessera.manifest import pathology_weights

    with h5py.File(tmp_path / "S1.h5", "w") as f:
        f.attrs.update(weights="random", weights_random=True, weights_seed=4, precision="fp32")
    index = tmp_path / "index.tsv"
    pd.DataFrame({"slide_id": ["S1"], "path": ["results/features/e/shard-0/S1.h5"]}).to_csv(index, sep="\t", index=False)
    for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="runs-bucket")
        boto3.client("s3").upload_file(str(tmp_path / "S1.h5"), "runs-bucket", "runs/x/results/features/e/shard-0/S1.h5")
        entry = pathology_weights(index, workdir=tmp_path / "elsewhere", storage_prefix="s3://runs-bucket/runs/x")
    assert entry["weights"] == {"source": "random", "random": True, "seed": 4} and entry["precision"] == "fp32"
    assert "weights not read" in pathology_weights(index, workdir=tmp_path / "elsewhere")["note"]
