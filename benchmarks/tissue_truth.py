"""The slide stage on the demo cohort against the slides' truth maps, for each tissue method.

Prints per method: the tissue masks' IoU with the true tissue (median, minimum; GeoJSON rasterised at
the truth's 1 µm/px), the share of each texture kept (recall), of adipose enclosed by other tissue,
the slides keeping under half their necrosis, and the planted texture's (necrosis) share measured
from the patch grids per patient against the truth (mean and largest absolute error, Spearman's rho,
and the mean ratio measured / true).

Usage: python benchmarks/tissue_truth.py DEMO_DIR [--methods background otsu]
       python benchmarks/tissue_truth.py DEMO_DIR --run WORKDIR
(DEMO_DIR written by `tessera demo`; "otsu" runs with the previous defaults, 20,000 µm² areas. With
--run, the slide outputs of a finished workflow run in WORKDIR are measured instead, e.g. `make demo`'s.)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from scipy.stats import spearmanr

from tessera.demo.slides import TRUTH_CODES
from tessera.demo.truth import measure_slide_stage
from tessera.slides.patching import PatchingParams, patch_shard

REPO = Path(__file__).resolve().parents[1]
#: tessera's tissue settings before the "background" method.
PREVIOUS = {"method": "otsu", "min_tissue_area_um2": 20_000.0, "min_hole_area_um2": 20_000.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--methods", nargs="+", default=["background", "otsu"])
    ap.add_argument("--run", type=Path, help="measure this workflow run's results/qc/slides.tsv instead")
    args = ap.parse_args()
    if args.run:
        index = pd.read_csv(args.run / "results" / "qc" / "slides.tsv", sep="\t", keep_default_na=False)
        report(f"the run in {args.run}", *measure_slide_stage(args.cohort, index, args.run))
        return
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["patching"]
    sheet = pd.read_csv(args.cohort / "slides.tsv", sep="\t", keep_default_na=False)
    records = [{"slide_id": r.slide_id, "patient_id": r.patient_id, "path": str(args.cohort / r.path), "mpp": None}
               for r in sheet.itertuples()]
    for method in args.methods:
        tissue = {**config["tissue"], **(PREVIOUS if method == "otsu" else {"method": method})}
        with tempfile.TemporaryDirectory() as shard:
            index = patch_shard(records, PatchingParams.from_config({**config, "tissue": tissue}), shard)
            slides, patients = measure_slide_stage(args.cohort, index, shard)
        report(f"{method} ({', '.join(f'{k}={v}' for k, v in tissue.items() if k != 'method')})", slides, patients)


def report(title: str, slides: pd.DataFrame, patients: pd.DataFrame) -> None:
    """Print the figures of one run of the slide stage."""
    recall = {n: slides[f"{n}_kept"].sum() / slides[f"{n}_px"].sum() for n in (*TRUTH_CODES[1:], "enclosed_adipose")}
    necrosis = (slides["necrosis_kept"] / slides["necrosis_px"]).dropna()
    error = (patients["patch_share"] - patients["planted_fraction"]).abs()
    print(title)
    print(f"  IoU with the true tissue: median {slides['iou'].median():.3f}, min {slides['iou'].min():.3f} "
          f"({slides['iou'].idxmin()}) over {len(slides)} slides")
    print("  kept: " + ", ".join(f"{n} {r:.3f}" for n, r in recall.items()))
    print(f"  slides keeping < 1/2 of their necrosis: {(necrosis < 0.5).sum()} of {len(necrosis)} "
          f"(median necrosis kept {necrosis.median():.3f})")
    print(f"  necrosis share from the patch grids vs truth, {len(patients)} patients: mean |error| "
          f"{error.mean():.4f}, max {error.max():.4f} ({error.idxmax()}), Spearman "
          f"{spearmanr(patients['patch_share'], patients['planted_fraction'])[0]:.4f}, mean ratio "
          f"{(patients['patch_share'].sum() / patients['planted_fraction'].sum()):.3f}")


if __name__ == "__main__":
    main()
