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
