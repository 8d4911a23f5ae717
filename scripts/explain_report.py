"""Adapter for rule explain_report: prevalence, association, galleries and maps → report.html + TSVs."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from pathlib import Path

from tessera.explain.report import ExplainSettings, build_report
from tessera.runlog import log_to

with log_to(snakemake.log[0]):
    i = snakemake.input
    build_report(list(i.assign), i.centroids, getattr(i, "oof", None), getattr(i, "clinical", None), i.slides,
                 Path(snakemake.output.report).parent, ExplainSettings.from_config(snakemake.params.settings),
                 heatmaps_tsv=getattr(i, "heatmaps", None))
