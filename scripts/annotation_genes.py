"""Adapter for rule annotation_genes: the gene records of the GTF/GFF3 as a small Parquet table."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.atomic import atomic_path
from tessera.genomics.genes import read_annotation
from tessera.runlog import log_to

with log_to(snakemake.log[0]) as log:
    genes = read_annotation(snakemake.input[0])
    log.info("%d gene records in %s", len(genes), snakemake.input[0])
    with atomic_path(snakemake.output[0]) as tmp:
        genes.to_parquet(tmp, index=False)
