"""Adapter for rule survival_summary: results/models/summary.{tsv,png} from every model's metrics.json."""

from pathlib import Path

from tessera.runlog import log_to
from tessera.survival.run import summarise

with log_to(snakemake.log[0]):
    summarise([Path(d) / "metrics.json" for d in snakemake.input], snakemake.output.tsv, snakemake.output.png)
