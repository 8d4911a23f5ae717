"""Adapter for rule collect_features: an encoder's cohort index and slide embeddings."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.pathology.collect import collect_encoder
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    collect_encoder(
        snakemake.wildcards.encoder,
        snakemake.params.shard_dirs,
        list(snakemake.input),
        snakemake.output.index,
        snakemake.output.embeddings,
    )
