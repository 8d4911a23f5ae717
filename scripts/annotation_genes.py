"""Adapter for rule annotation_genes: the gene records of the GTF/GFF3 as a small Parquet table."""

from tessera.genomics.embed import write_parquet
from tessera.genomics.genes import read_annotation
from tessera.runlog import log_to

with log_to(snakemake.log[0]) as log:
    genes = read_annotation(snakemake.input[0])
    log.info("%d gene records in %s", len(genes), snakemake.input[0])
    write_parquet(genes, snakemake.output[0])
