"""Embeddings: windows, model-card pooling, determinism, sensitivity, per-gene and cohort tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from genomics_data import SyntheticCase, make_synthetic_case

from tessera.errors import InputError
from tessera.genomics.embed import EmbedParams, SequenceEmbedder, cohort_table, embed_gene, windows
from tessera.genomics.genes import Region
from tessera.genomics.nt import load_nt, write_random_model
from tessera.genomics.sequences import SequenceParams, patient_sequences_shard

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48}


@pytest.fixture(scope="module")
def synthetic_case(tmp_path_factory) -> SyntheticCase:
    return make_synthetic_case(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def nt(tmp_path_factory):
    return load_nt(write_random_model(tmp_path_factory.mktemp("nt") / "m", "nt-v2", SMALL, seed=7), "nt-v2")


def random_dna(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("ACGT"), n))


def test_windows_cover_the_sequence_with_overlap():
    ids = np.arange(100, 123)
    wins = windows(ids, max_tokens=10, overlap=3, cls_id=3)
    assert all(w[0] == 3 and len(w) <= 10 for w in wins)
    bodies = [w[1:] for w in wins]
    assert bodies[0].tolist() == list(range(100, 109)) and bodies[1][:3].tolist() == bodies[0][-3:].tolist()
    assert bodies[-1][-1] == 122 and set(np.concatenate(bodies)) == set(ids)
    assert [w.tolist() for w in windows(np.arange(0), 10, 3, 3)] == [[3]]
    with pytest.raises(InputError, match="no room"):
        windows(ids, max_tokens=4, overlap=3, cls_id=3)


def test_single_window_embedding_is_the_model_card_mean(nt):
    seq = random_dna(np.random.default_rng(0), 300)
    emb, n_tokens, n_windows = SequenceEmbedder(nt, EmbedParams()).embed([seq])
    ids = torch.from_numpy(nt.tokenizer.encode(seq))[None]
    with torch.no_grad():
        hidden = nt.hidden_state(ids, torch.ones_like(ids), -1)
    np.testing.assert_allclose(emb[0], hidden[0].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert n_tokens[0] == 50 and n_windows[0] == 1


def test_same_sequence_same_embedding_different_sequence_different(nt):
    rng = np.random.default_rng(1)
    a = random_dna(rng, 2000)
    b = a[:1000] + ("G" if a[1000] != "G" else "T") + a[1001:]  # one SNV
    c = random_dna(rng, 5000)
    embedder = SequenceEmbedder(nt, EmbedParams(max_tokens=128, overlap_tokens=16, batch_size=3))
    emb, _, n_windows = embedder.embed([a, b, a, c])
    assert np.array_equal(emb[0], emb[2])  # identical sequences are embedded once
    assert n_windows[0] > 1 and n_windows[3] > n_windows[0]
    assert np.abs(emb[0] - emb[1]).max() > 1e-4  # one base changes the embedding
    alone, _, _ = SequenceEmbedder(nt, EmbedParams(max_tokens=128, overlap_tokens=16, batch_size=1)).embed([a])
    np.testing.assert_allclose(alone[0], emb[0], rtol=1e-5, atol=1e-6)  # other batch mates and padding
    with_n = a[:500] + "N" * 7 + a[507:]
    assert np.abs(embedder.embed([with_n])[0][0] - emb[0]).max() > 1e-4


def test_gene_tables_from_shards_and_cohort_join(nt, synthetic_case, tmp_path):
    case = synthetic_case
    region = Region("T", "chrT", *case.regions[1], "+")
    shards = []
    for k, samples in enumerate((case.samples[:4], case.samples[4:6])):
        patients = [{"patient_id": f"P{s}", "vcf": str(case.vcf), "vcf_sample": s, "bam": ""} for s in samples]
        shards.append(tmp_path / f"shard-{k}")
        patient_sequences_shard(patients, region, str(case.reference), SequenceParams(), shards[-1])
    mean = embed_gene("T", shards, nt, EmbedParams(max_tokens=64, overlap_tokens=8), "m", tmp_path / "T.parquet")
    sep = embed_gene("T", shards, nt, EmbedParams(max_tokens=64, overlap_tokens=8, haplotypes="separate"), "m",
                     tmp_path / "T-sep.parquet")
    assert mean["patient_id"].tolist() == [f"P{s}" for s in case.samples[:6]]
    emb = [f"e{i:04d}" for i in range(32)]
    assert mean[emb].dtypes.eq(np.float32).all()
    h1, h2 = sep[[f"h1_{c}" for c in emb]].to_numpy(), sep[[f"h2_{c}" for c in emb]].to_numpy()
    np.testing.assert_allclose(mean[emb].to_numpy(), (h1 + h2) / 2, rtol=1e-6, atol=1e-7)
    assert (np.abs(h1 - h2).max(axis=1) > 0).any()  # heterozygous patients have two different haplotypes
    row = mean.iloc[0]
    assert row["weights_random"] and row["weights_sha256"] == nt.sha256 and row["region"] == str(region)
    assert row["n_windows"] >= 2 and row["model_kind"] == "nt-v2" and row["layer"] == -1

    other = mean[mean["patient_id"] != "PS0"]
    other.to_parquet(tmp_path / "U.parquet")
    cohort = cohort_table({"T": tmp_path / "T.parquet", "U": tmp_path / "U.parquet"}, tmp_path / "cohort.parquet")
    assert cohort.columns[0] == "patient_id" and cohort.shape[1] == 1 + 2 * 32
    assert cohort.columns[1] == "T_e0000" and cohort.columns[-1] == "U_e0031"
    assert "PS0" not in set(cohort["patient_id"]) and len(cohort) == 5
    assert pd.read_parquet(tmp_path / "cohort.parquet").equals(cohort)
