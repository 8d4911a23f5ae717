"""Adapter for rules survival_tabular, survival_ranking and survival_deep: one model → results/models/{model}/."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from pathlib import Path

from tessera.runlog import log_to
from tessera.survival.run import run_model_job

with log_to(snakemake.log[0]):
    run_model_job(
        snakemake.params.model,
        snakemake.params.survival,
        snakemake.input.table,
        Path(snakemake.output[0]).parent,
        threads=snakemake.threads,
        feature_index=getattr(snakemake.input, "feature_index", None),
        qc=getattr(snakemake.input, "qc", None),
        vit4k=snakemake.params.get("vit4k"),
    )
