"""Adapter for rule explain_assign: every patch of one feature shard assigned to its nearest centroid."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from threadpoolctl import threadpool_limits

from tessera.explain.clusters import assign_shard
from tessera.runlog import log_to

with log_to(snakemake.log[0]), threadpool_limits(snakemake.threads):
    p = snakemake.params
    assign_shard(snakemake.input.features, snakemake.input.centroids, p.slides, snakemake.output[0],
                 gallery_size=p.gallery_size, gallery_px=p.gallery_px)
