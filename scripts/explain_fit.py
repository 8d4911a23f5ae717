"""Adapter for rule explain_fit: MiniBatchKMeans centroids on the pooled per-shard samples."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from threadpoolctl import threadpool_limits

from tessera.explain.clusters import fit_centroids
from tessera.runlog import log_to

with log_to(snakemake.log[0]), threadpool_limits(snakemake.threads):
    p = snakemake.params
    fit_centroids(list(snakemake.input), snakemake.output[0], p.k, p.seed, p.max_sample)
