# Config and sheet validation, and the cohort's shard lookups, shared by every stage.
# Parse-time work stays cheap: remote jobs parse this file again.

from snakemake.utils import validate

from tessera.config import check_config
from tessera.plan import plan_cohort

validate(config, "../config/schemas/config.schema.yaml")
check_config(
    config, file="config (merged from config/config.yaml and --configfile/--config)"
)
PLAN = plan_cohort(config)


wildcard_constraints:
    shard=r"\d+",


def shard_dirs(pattern, shards):
    """Paths of a per-shard output for the given shards."""
    return [pattern.format(shard=shard) for shard in shards]


def explain_targets():
    """The report, once this workflow has rules that produce its inputs (pathology features, survival models).

    Until those stages are part of the workflow, `rule all` leaves the report out so the workflow
    stays runnable; `snakemake results/explain/<encoder>/report.html` still runs it on existing inputs.
    """
    enc, model = config["explain"]["encoder"], config["explain"]["model"]
    needs = [
        f"results/features/{enc}/index.tsv",
        f"results/models/{model}/oof_predictions.tsv",
    ]
    upstream = [r for r in workflow.rules if not r.name.startswith("explain_")]
    if all(any(r.is_producer(f) for r in upstream) for f in needs):
        return [f"results/explain/{enc}/report.html"]
    return []
