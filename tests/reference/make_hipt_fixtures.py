"""Write the golden fixtures of tests/survival/test_survival_hipt.py with the OFFICIAL HIPT modules.

Not part of tessera and never imported by it; the official code is never copied into this repository.
It builds mahmoodlab/HIPT's slide-level models (``2-Weakly-Supervised-Subtyping/models/
model_hierarchical_mil.py``: ``HIPT_GP_FC`` and ``HIPT_LGP_FC`` with its ``vit4k_xs``) at their published
sizes, fills every parameter with :func:`fill` (seeded by a checksum of the parameter's name: no weights
need storing, and a renamed or reshaped parameter gets other values), runs the
official forward in eval mode (fp32, CPU) on inputs made by :func:`pattern`, and writes
``tests/data/hipt/official.json``: per model, the official state dict's names and shapes, its parameter
count, the input shape, the logits and the region attention weights (softmax of ``global_attn_pool``).

How to run (any environment with torch, numpy; the official modules import torchvision, which they do
not use: a stub stands in for it):

    git clone https://github.com/mahmoodlab/HIPT /tmp/HIPT   # or the fetch tool's mirror, checked out
    .venv/bin/python tests/reference/make_hipt_fixtures.py --src /tmp/HIPT --out tests/data/hipt
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import torch

#: Regions per input bag; the LGP input is each region's 16 × 16 grid of 384-d ViT-256 tokens.
GP_REGIONS, LGP_REGIONS = 5, 3


def pattern(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    """A deterministic float32 tensor, uniform in [-scale, scale): NumPy's PCG64 seeded with ``seed``
    (``Generator.random`` draws the same doubles in every NumPy release)."""
    values = np.random.default_rng(seed).random(math.prod(shape)) * 2 - 1
    return torch.from_numpy((scale * values).astype(np.float32).reshape(shape))


def fill(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The value of parameter ``name``: weights ~ 1/√fan-in, biases small, norm scales near 1."""
    seed = zlib.crc32(name.encode()) % 1000
    if len(shape) >= 2 and "pos_embed" not in name and "cls_token" not in name:
        return pattern(shape, seed, 1.0 / math.sqrt(shape[-1]))
    if name.endswith("weight") and "norm" in name:
        return 1.0 + pattern(shape, seed, 0.1)
    return pattern(shape, seed, 0.05)


def filled_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: fill(k, tuple(v.shape)) for k, v in module.state_dict().items()}


def official_modules(src: Path):
    """HIPT_GP_FC, HIPT_LGP_FC from a checkout of mahmoodlab/HIPT (torchvision stubbed, pdb disarmed)."""
    stub = types.ModuleType("torchvision")
    for sub in ("datasets", "transforms", "models"):
        setattr(stub, sub, types.ModuleType(f"torchvision.{sub}"))
        sys.modules[f"torchvision.{sub}"] = getattr(stub, sub)
    sys.modules["torchvision"] = stub
    sys.path[:0] = [str(src / "HIPT_4K"), str(src / "2-Weakly-Supervised-Subtyping")]
    import pdb

    pdb.set_trace = lambda *a, **k: None  # HIPT_GP_FC.forward stops in the debugger otherwise
    from models.model_hierarchical_mil import HIPT_GP_FC, HIPT_LGP_FC

    return HIPT_GP_FC, HIPT_LGP_FC


def run(model: torch.nn.Module, x: torch.Tensor) -> dict:
    model.load_state_dict(filled_state(model), strict=True)
    model.eval()
    scores = {}
    model.global_attn_pool.register_forward_hook(lambda m, i, out: scores.update(a=out[0].detach()))
    with torch.no_grad():
        logits = model(x)[0]
    return {"names": {k: list(v.shape) for k, v in model.state_dict().items()},
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "input_shape": list(x.shape), "logits": logits[0].tolist(),
            "attention": torch.softmax(scores["a"][:, 0], dim=0).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="checkout of github.com/mahmoodlab/HIPT")
    ap.add_argument("--out", type=Path, default=Path("tests/data/hipt"))
    args = ap.parse_args()
    HIPT_GP_FC, HIPT_LGP_FC = official_modules(args.src.resolve())
    torch.set_num_threads(1)
    out = {
        "hipt_gp": run(HIPT_GP_FC(n_classes=4), pattern((GP_REGIONS, 192), 1, 2.0)),
        "hipt_lgp": run(HIPT_LGP_FC(n_classes=4), pattern((LGP_REGIONS, 256, 384), 2, 2.0)),
        "reference": {"repository": "github.com/mahmoodlab/HIPT", "torch": torch.__version__,
                      "calls": ["HIPT_GP_FC(n_classes=4)", "HIPT_LGP_FC(n_classes=4)"], "mode": "eval, fp32, CPU"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "official.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out / 'official.json'}")


if __name__ == "__main__":
    main()
