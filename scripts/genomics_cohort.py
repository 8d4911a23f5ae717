"""Adapter for rule genomics_cohort: one row per patient with every gene's embedding columns."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.genomics.embed import cohort_table
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    cohort_table(dict(zip(snakemake.params.genes, snakemake.input)), snakemake.output[0])
