"""Adapter for rule explain_sample: a seeded per-slide sample of one feature shard's patch embeddings."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.explain.clusters import sample_shard
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    sample_shard(snakemake.input[0], snakemake.output[0], snakemake.params.per_slide_cap, snakemake.params.seed)
