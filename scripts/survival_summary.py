"""Adapter for rule survival_summary: results/models/summary.{tsv,png} from every model's metrics.json."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.runlog import log_to
from tessera.survival.run import summarise

with log_to(snakemake.log[0]):
    summarise(list(snakemake.input), snakemake.output.tsv, snakemake.output.png)
