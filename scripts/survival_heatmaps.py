"""Adapter for rule survival_heatmaps: a deep model's attention over slide thumbnails → heatmaps/ + heatmaps.tsv."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.explain.heatmaps import write_heatmaps
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    write_heatmaps(
        snakemake.input.attention,
        snakemake.input.oof,
        snakemake.input.slides,
        snakemake.output.heatmaps,
        snakemake.output.index,
        model=snakemake.wildcards.model,
        n_slides=snakemake.params.n_slides,
        thumbnail_px=snakemake.params.thumbnail_px,
    )
