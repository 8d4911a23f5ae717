"""The NT tokenizer gives the ids transformers' EsmTokenizer gives on the same vocabulary file."""

from __future__ import annotations

import random
from itertools import product

import pytest
from transformers import EsmTokenizer

from tessera.genomics.tokenizer import NTTokenizer, vocabulary


@pytest.mark.parametrize("version", [1, 2])
def test_ids_equal_esm_tokenizer(tmp_path, version):
    ours = NTTokenizer(version)
    ours.write_vocab(tmp_path / "vocab.txt")
    esm = EsmTokenizer(str(tmp_path / "vocab.txt"), eos_token=None)  # the NT tokenizer config has no eos
    rng = random.Random(version)
    cases = ["", "A", "ACGTA", "ACGTAC", "ACGTACG", "NNNN", "ACGNTTTTTTGGN", "N" + "ACGT" * 40 + "NA"]
    cases += ["".join(rng.choice("ACGTACGTACGTN") for _ in range(rng.randint(0, 90))) for _ in range(300)]
    for seq in cases:
        assert ours.encode(seq).tolist() == esm(seq)["input_ids"], seq
    # lowercase and IUPAC letters are mapped first (EsmTokenizer would make <unk> of a whole run)
    raw = "acgtacGGTTAARYKMNswacg"
    assert ours.normalise(raw) == "ACGTACGGTTAANNNNNNNACG"
    assert ours.encode(raw).tolist() == esm(ours.normalise(raw))["input_ids"]
    assert esm(raw)["input_ids"].count(ours.unk_id) >= 1
    assert NTTokenizer(version, lowercase="N").normalise("ACgt") == "ACNN"


def test_vocabularies_follow_the_published_order():
    v2, v1 = vocabulary(2), vocabulary(1)
    kmers = ["".join(p) for p in product("ATCG", repeat=6)]
    assert len(v2) == len(v1) == 4107
    assert v2[:6] == ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"] and v2[6:4102] == kmers
    assert v2[4102:] == ["A", "T", "C", "G", "N"]
    assert v1[:4] == ["<unk>", "<pad>", "<mask>", "<cls>"] and v1[4:4100] == kmers
    assert v1[4100:] == ["A", "T", "C", "G", "N", "<eos>", "<bos>"]  # v1 models embed the first 4105
    t = NTTokenizer(2)
    assert t.encode("AAAAAATTTTTTN" + "GC").tolist() == [3, 6, 6 + 1365, 4106, 4105, 4104]
