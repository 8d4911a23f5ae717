"""Adapter for rule slides_qc: the cohort's slide index, results/qc/slides.tsv."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.runlog import log_to
from tessera.slides.patching import write_cohort_index

with log_to(snakemake.log[0]):
    write_cohort_index(snakemake.params.shard_dirs, snakemake.input, snakemake.output[0])
