# Config and sheet validation, and the cohort's shard lookups, shared by every stage.
# Parse-time work stays cheap: remote jobs parse this file again.

from snakemake.utils import validate

from snakemake_interface_executor_plugins.settings import SharedFSUsage

from tessera.config import check_config
from tessera.plan import plan_cohort
from tessera.remote import check_remote_inputs, tracked_files

validate(config, "../config/schemas/config.schema.yaml")
check_config(
    config, file="config (merged from config/config.yaml and --configfile/--config)"
)
PLAN = plan_cohort(config)


# snakemake-storage-plugin-s3 (0.3.6) remembers "not a directory" forever: a shard directory that a
# remote job (AWS Batch, SageMaker) writes to S3 then stays "missing" in this process, which checked it
# before the job ran. Ask S3 again until the directory is there; a found directory stays found.
def _s3_is_dir_uncached(self):
    if not self._is_dir:
        self._is_dir = any(self.get_subkeys())
    return self._is_dir


try:
    from snakemake_storage_plugin_s3 import StorageObject as _S3Object
except ImportError:
    _S3Object = None
if _S3Object is not None and hasattr(_S3Object, "get_subkeys"):
    _S3Object.is_dir = _s3_is_dir_uncached

# Jobs without a shared file system (profiles aws-batch and sagemaker set shared-fs-usage: none) parse
# the sheets again and read slides, VCFs and BAMs from S3: check before anything is submitted.
if (
    workflow.is_main_process
    and SharedFSUsage.INPUT_OUTPUT not in workflow.storage_settings.shared_fs_usage
):
    check_remote_inputs(
        [config["slides"], config["clinical"], config["genomics"]],
        tracked_files(),
        [
            (PLAN.slides, "path", config["slides"]),
            (PLAN.genomics, "vcf", config["genomics"]),
            (PLAN.genomics, "bam", config["genomics"]),
        ],
    )


wildcard_constraints:
    shard=r"\d+",


def shard_dirs(pattern, shards):
    """Paths of a per-shard output for the given shards."""
    return [pattern.format(shard=shard) for shard in shards]


def explain_targets():
    """The report, when the workflow can make its inputs: the features of `explain.encoder` and the
    out-of-fold predictions of `explain.model` (a cohort too small for the survival folds has no
    survival jobs, so no report; `snakemake results/explain/<encoder>/report.html` still runs it
    on existing inputs).
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
