"""Adapter for rule survival_summary: results/models/summary.{tsv,png} from every model's metrics.json."""

from tessera.runlog import log_to
from tessera.survival.run import summarise

with log_to(snakemake.log[0]):
    summarise(list(snakemake.input), snakemake.output.tsv, snakemake.output.png)
