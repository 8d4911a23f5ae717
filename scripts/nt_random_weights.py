"""Adapter for rule nt_random_weights: a random-weight NT model in the real architecture (demo, tests)."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.genomics.nt import write_random_model
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    write_random_model(snakemake.output[0], snakemake.params.kind, snakemake.params.architecture, snakemake.params.seed)
