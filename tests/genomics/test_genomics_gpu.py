"""The embedding pipeline on CUDA gives the CPU's embeddings (float32) and runs in bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.devices import torch_device
from tessera.genomics.embed import EmbedParams, SequenceEmbedder
from tessera.genomics.nt import load_nt, write_random_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_embeddings_match_cpu(tmp_path):
    path = write_random_model(tmp_path / "m", "nt-v2", {"num_hidden_layers": 2}, seed=0)
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (700, 3000, 12_500)]
    params = EmbedParams(max_tokens=1024, overlap_tokens=64, batch_size=4)
    cpu = SequenceEmbedder(load_nt(path, "nt-v2", "cpu"), params).embed(seqs)[0]
    device = torch_device("cuda")
    gpu = SequenceEmbedder(load_nt(path, "nt-v2", device), params).embed(seqs)[0]
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)
    half = SequenceEmbedder(load_nt(path, "nt-v2", device, torch.bfloat16), params).embed(seqs)[0]
    assert np.isfinite(half).all() and np.corrcoef(half.ravel(), cpu.ravel())[0, 1] > 0.99
