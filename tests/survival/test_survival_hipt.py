"""HIPT's slide-level survival models: parameter names, counts and outputs equal to the official modules
(golden fixture from tests/reference/make_hipt_fixtures.py), padded bags, training through the porpoise loop,
hipt_lgp on token-grid bags."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tessera.h5 import write_h5
from tessera.pathology.encoders.hipt import hipt_vit4k
from tessera.survival.bags import Bag, BagStore
from tessera.survival.cv import outer_folds
from tessera.survival.data import SurvivalData, make_y
from tessera.survival.evaluation import time_frame
from tessera.survival.experiment import run_fold
from tessera.survival.hipt import HIPTGlobalNet, HIPTGPModel, HIPTLGPModel, HIPTLocalGlobalNet
from tessera.survival.metrics import harrell_c
from tessera.survival.settings import CVSettings, EvalSettings, HPOSettings, ModelSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from make_hipt_fixtures import GP_REGIONS, fill, pattern  # noqa: E402

from survival_fabricate import one_thread  # noqa: E402,F401 - pytest fixture

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
OFFICIAL = json.loads((Path(__file__).resolve().parents[1] / "data" / "hipt" / "official.json").read_text())


def _load_official_weights(net: torch.nn.Module, names: dict) -> None:
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == names  # same names, same shapes
    net.load_state_dict({k: fill(k, tuple(shape)) for k, shape in names.items()}, strict=True)


def test_hipt_gp_has_the_official_parameters_and_forward():
    ref = OFFICIAL["hipt_gp"]
    net = HIPTGlobalNet(192, tab_dim=0, n_bins=4).eval()
    assert sum(p.numel() for p in net.parameters()) == ref["n_parameters"] == 595_397
    _load_official_weights(net, ref["names"])
    x = pattern(tuple(ref["input_shape"]), 1, 2.0).unsqueeze(0)
    with torch.no_grad():
        logits, attention = net(x, torch.ones(1, GP_REGIONS, dtype=torch.bool), torch.zeros(1, 0))
    torch.testing.assert_close(logits[0], torch.tensor(ref["logits"]), rtol=0, atol=2e-6)
    torch.testing.assert_close(attention[0], torch.tensor(ref["attention"]), rtol=0, atol=2e-7)


def test_padded_bags_give_each_patient_its_own_output():
    """Padding (mask False) changes nothing: not in the transformer, not in the pooling; a patient's
    logits do not depend on who shares the batch; an empty bag pools to zeros."""
    torch.manual_seed(0)
    net = HIPTGlobalNet(8, tab_dim=0, n_bins=3, dim=12, heads=2).eval()
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        logits, w = net(x, mask, None)
        x2 = x.clone()
        x2[0, 3:] = 50.0  # other padding content
        x2[2] = -7.0
        logits2, w2 = net(x2, mask, None)
        alone, w_alone = net(x[:1, :3], mask[:1, :3], None)
        h_empty = net.global_rho(torch.zeros(1, 12))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone[0], logits[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(w_alone[0], w[0, :3], rtol=0, atol=1e-7)
    assert torch.allclose(w.sum(1), torch.tensor([1.0, 1.0, 0.0])) and (w[0, 3:] == 0).all()
    torch.testing.assert_close(logits[2], net.classifier(h_empty)[0])


class RegionBags:
    """Bags of 4-8 16-d regions; a share ``frac`` of a patient's regions is a fixed prototype (+ noise)."""

    dim = 16

    def __init__(self, frac: np.ndarray, seed: int = 0) -> None:
        self.frac, self.proto = frac, np.random.default_rng(seed).normal(0, 1, 16)

    def get(self, patient_id: str) -> Bag:
        i = int(patient_id[1:])
        m = 4 + i % 5
        planted = (np.arange(m) < round(self.frac[i] * m))[:, None]
        f = np.where(planted, self.proto, 0.0) + np.random.default_rng(100 + i).normal(0, 0.3, (m, 16))
        return Bag(f.astype(np.float32), np.full(m, "s"), np.arange(m), np.zeros((m, 2), np.int64), np.zeros(m, int))


def test_hipt_gp_fuses_with_the_snn_and_finds_a_region_signal():
    """With tabular inputs the classifier reads the bilinear fusion (25 x 33 Kronecker product of the
    192-d slide and 256-d SNN embeddings); trained by the porpoise loop, the model finds planted regions."""
    net = HIPTGlobalNet(192, tab_dim=5, fusion="bilinear")
    assert net.fusion.encode[0].in_features == 25 * 33 and net.classifier.in_features == 256
    assert HIPTGlobalNet(192, tab_dim=5, fusion="concat").fusion.net[0].in_features == 192 + 256

    rng = np.random.default_rng(1)
    n = 64
    ids = np.array([f"P{i:03d}" for i in range(n)])
    frac = rng.uniform(0, 1, n)
    t = rng.exponential(1000 * np.exp(-2.0 * frac))
    y = make_y(np.maximum(t, 1), rng.random(n) < 0.9)
    X = pd.DataFrame(index=range(n))
    model = HIPTGPModel({"epochs": 15, "lr": 1e-3, "batch_size": 16}, bags=RegionBags(frac), device=CPU)
    model.fit(X, y, ids)
    assert harrell_c(y, model.predict_risk(X, ids)) > 0.75


def test_hipt_lgp_has_the_official_parameters_and_forward():
    """local_vit (HIPT's ViT-4K) + the global level: names, count and eval outputs of HIPT_LGP_FC. The official
    input is each region's 256 row-major ViT-256 tokens; ours the same tokens as a 16 x 16 grid."""
    ref = OFFICIAL["hipt_lgp"]
    net = HIPTLocalGlobalNet(hipt_vit4k(), tab_dim=0, n_bins=4).eval()
    assert sum(p.numel() for p in net.parameters()) == ref["n_parameters"] == 3_376_901
    _load_official_weights(net, ref["names"])
    x256 = pattern(tuple(ref["input_shape"]), 2, 2.0)  # (M, 256, 384)
    m = len(x256)
    tokens, grid = x256.reshape(1, m, 16, 16, 384), torch.full((1, m, 2), 16)
    with torch.no_grad():
        logits, attention = net((tokens, grid), torch.ones(1, m, dtype=torch.bool), None)
    torch.testing.assert_close(logits[0], torch.tensor(ref["logits"]), rtol=0, atol=2e-6)
    torch.testing.assert_close(attention[0], torch.tensor(ref["attention"]), rtol=0, atol=2e-7)


def _token_cohort(root: Path, n: int = 16, seed: int = 0) -> tuple[BagStore, SurvivalData]:
    """Feature files with token grids as the pathology stage writes them (pathology.region_tokens): 1-3
    border regions of 4 x 4 or 3 x 4 patches per patient (the rest of the 16 x 16 grid zero), 384-d tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        m = 1 + i % 3
        shape = np.array([[4, 4] if r % 2 == 0 else [3, 4] for r in range(m)])
        tokens = np.zeros((m, 16, 16, 384), np.float16)
        for r, (h, w) in enumerate(shape):
            tokens[r, :h, :w] = rng.normal(0, 1, (h, w, 384))
        rel = f"feats/P{i:02d}.h5"
        write_h5(root / rel, {"coords": np.stack([np.arange(m) * 8192, np.zeros(m)], 1).astype(np.int64),
                              "features": np.zeros((m, 192), np.float32), "tokens": tokens, "token_grid": shape},
                 {"patch_size_level0": 8192})
        rows.append({"slide_id": f"S{i:02d}", "patient_id": f"P{i:02d}", "path": rel, "n": m, "dim": 192})
    pd.DataFrame(rows).to_csv(root / "index.tsv", sep="\t", index=False)
    y = make_y(rng.uniform(100, 3000, n), np.arange(n) % 4 != 0)
    return (BagStore(root / "index.tsv", workdir=root, dataset="tokens"),
            SurvivalData(np.array([r["patient_id"] for r in rows]), pd.DataFrame(index=range(n)), y))


def test_hipt_lgp_fine_tunes_the_vit4k_on_token_bags_reproducibly_and_without_the_test_outcomes(tmp_path):
    bags, data = _token_cohort(tmp_path)
    bag = bags.get("P02")
    assert bags.dim == 384 and bag.features.shape == (3, 16, 16, 384) and bag.grid[1].tolist() == [3, 4]
    params = {"epochs": 2, "lr": 1e-3, "batch_size": 8, "n_bins": 2, "vit4k_seed": 3}
    start = HIPTLGPModel(params, bags=bags, device=CPU)._local_vit().state_dict()
    fits = [HIPTLGPModel(params, bags=bags, seed=s, device=CPU).fit(data.X, data.y, data.patient_id) for s in (1, 1)]
    a, b = (f.net_.state_dict() for f in fits)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical CPU reruns
    assert not torch.equal(a["local_vit.blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])  # fine-tuned
    frozen = HIPTLGPModel({**params, "freeze_4k": True}, bags=bags, device=CPU).fit(data.X, data.y, data.patient_id)
    assert all(torch.equal(frozen.net_.state_dict()[f"local_vit.{k}"], v) for k, v in start.items())
    att = fits[0].attention(data.X, data.patient_id)
    assert len(att) == sum(len(bags.get(p)) for p in data.patient_id) and (att["size_level0"] == 8192).all()

    # the scrambled-test-outcome test (as for porpoise and hipt_gp in test_survival_porpoise.py)
    spec = ModelSpec("lgp", "hipt_lgp", params={**params, "early_stopping": {"validation_fraction": 0.25,
                                                                              "patience": 1}}, encoder="hipt4k")
    fold = outer_folds(data.y, 2, 1, 0)[0]
    y2 = data.y.copy()
    y2["time"][fold.test] = y2["time"][fold.test][::-1] * 1.7
    y2["event"][fold.test] = ~y2["event"][fold.test]
    frame = time_frame(data.y, [fold], EvalSettings())
    risks = [run_fold(spec, d, fold, frame, CVSettings(), HPOSettings(str(tmp_path / "hpo")), "k", 2, bags=bags,
                      device=CPU).risk for d in (data, SurvivalData(data.patient_id, data.X, y2))]
    assert np.array_equal(risks[0], risks[1])
