"""Adapter for rule gene_sequences: both haplotypes of one gene for every patient of one shard."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.genomics.genes import Region
from tessera.genomics.sequences import SequenceParams, patient_sequences_shard
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    patient_sequences_shard(
        snakemake.params.patients,
        Region.from_tsv(snakemake.input.region),
        snakemake.input.reference,
        SequenceParams.from_config(snakemake.params.sequences),
        snakemake.output[0],
    )
