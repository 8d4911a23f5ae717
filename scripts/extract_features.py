"""Adapter for rule extract_features: one shard of slides → a feature directory per encoder."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.pathology.extract import extract_shard
from tessera.pathology.params import ExtractParams
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    extract_shard(
        snakemake.params.slides,
        snakemake.input.slides,
        dict(snakemake.output.items()),
        ExtractParams.from_config(snakemake.params.pathology),
        threads=snakemake.threads,
        min_tissue_fraction=snakemake.params.min_tissue_fraction,
    )
