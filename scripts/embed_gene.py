"""Adapter for rule embed_gene: Nucleotide Transformer embeddings of one gene for the whole cohort."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.devices import torch_device, use_cpu_threads
from tessera.genomics.embed import DTYPES, EmbedParams, embed_gene
from tessera.genomics.nt import load_nt
from tessera.runlog import log_to

with log_to(snakemake.log[0]) as log:
    cfg = snakemake.params.model
    params = EmbedParams.from_config(cfg)
    device = torch_device(params.device)
    use_cpu_threads(snakemake.threads)
    log.info("device %s, %d CPU threads", device, snakemake.threads)
    local = snakemake.input.weights[0] if snakemake.input.weights else snakemake.params.weights
    nt = load_nt(local, cfg["kind"], device, DTYPES[params.dtype], params.lowercase, shown=snakemake.params.weights)
    embed_gene(snakemake.wildcards.gene, snakemake.input.shards, nt, params, cfg["name"], snakemake.output[0])
