"""Adapter for rule survival_cohort: results/cohort/{table.parquet, excluded.tsv, summary.json}."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.runlog import log_to
from tessera.sheets import read_genomics_sheet, read_slide_sheet
from tessera.survival.cohort_table import build_cohort_table, write_cohort_table

with log_to(snakemake.log[0]):
    cfg, inp = snakemake.params.cohort, snakemake.input
    cohort = build_cohort_table(
        inp.clinical,
        modalities=cfg.get("modalities", ["clinical"]),
        missing=cfg.get("missing", "drop"),
        covariates=cfg.get("covariates"),
        ordinal=cfg.get("ordinal"),
        slides=read_slide_sheet(inp.slides) if hasattr(inp, "slides") else None,
        qc_tsv=getattr(inp, "qc", None),
        slide_embeddings=getattr(inp, "slide_embeddings", None),
        genomics=read_genomics_sheet(inp.genomics) if hasattr(inp, "genomics") else None,
        genomic_embeddings=getattr(inp, "genomic_embeddings", None),
    )
    write_cohort_table(cohort, snakemake.output.table, snakemake.output.excluded, snakemake.output.summary)
