"""Adapter for rule gene_region: one gene (with flanks) or explicit region, on the reference's contigs."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

import pandas as pd

from tessera.genomics.genes import fasta_contigs, resolve_explicit, resolve_gene
from tessera.runlog import log_to

with log_to(snakemake.log[0]) as log:
    spec, reference = snakemake.params.spec, snakemake.input.reference
    contigs = fasta_contigs(reference)
    if "region" in spec:
        region = resolve_explicit(spec["name"], spec["region"], contigs, reference)
    else:
        genes = pd.read_parquet(snakemake.input.genes)
        region = resolve_gene(spec["name"], genes, snakemake.params.annotation, contigs, reference,
                              spec["flank_upstream"], spec["flank_downstream"])
    log.info("%s: %s (%d bp; %s)", region.name, region, region.length, region.source)
    region.to_tsv(snakemake.output[0])
