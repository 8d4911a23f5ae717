# Config and sheet validation, and the cohort's shard lookups, shared by every stage.
# Parse-time work stays cheap: remote jobs parse this file again.

from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

from snakemake_interface_executor_plugins.settings import SharedFSUsage

from tessera.config import (
    check_config,
    check_config_schema,
    config_sources,
    switch_stages,
)
from tessera.genomics.inputs import check_vcf_samples
from tessera.plan import plan_cohort
from tessera.remote import check_remote_inputs, tracked_files
from tessera.runsummary import StageIndex, failure_summary
from tessera.survival.settings import family_outputs

# Every schema problem of the merged config, one line each with the file that set it, before
# Snakemake's own validation (which prints the whole schema and config for the first problem only)
# fills in the defaults. Merge order: the configfile directive's file, --configfile files, --config.
_CLI_CONFIGFILES = [str(f) for f in workflow.config_settings.configfiles]
check_config_schema(
    config,
    Path(workflow.basedir) / "config" / "schemas" / "config.schema.yaml",
    config_sources(
        [str(f) for f in workflow.configfiles if str(f) not in _CLI_CONFIGFILES]
        + _CLI_CONFIGFILES,
        workflow.config_settings.config,
    ),
)
validate(config, "../config/schemas/config.schema.yaml")
# `slides: null`, `genomics: null`, `clinical: null` switch stages off; survival and explain follow.
for _note in switch_stages(
    config, file="config (merged from config/config.yaml and --configfile/--config)"
):
    if workflow.is_main_process:
        logger.info(f"tessera: {_note}")
SLIDES_ON = config["slides"] is not None
GENOMICS_ON = config["genomics"] is not None
check_config(
    config, file="config (merged from config/config.yaml and --configfile/--config)"
)
PLAN = plan_cohort(config)
# Every vcf_sample against its VCF's header, once, before any job (remote jobs skip it: headers in S3).
if workflow.is_main_process and config.get("genomics"):
    check_vcf_samples(PLAN.genomics, config["genomics"])


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
        [
            config[k]
            for k in ("slides", "clinical", "genomics")
            if config[k] is not None
        ],
        tracked_files(),
        [
            (PLAN.slides, "path", config["slides"]),
            (PLAN.genomics, "vcf", config["genomics"]),
            (PLAN.genomics, "bam", config["genomics"]),
        ],
    )


wildcard_constraints:
    shard=r"\d+",


def canonical(value):
    """``value`` with the keys of every dict in sorted order, for dict params of rules whose code reads
    them by key. Snakemake's params rerun trigger compares params key order included: a config section
    saved again with its keys in another order would otherwise rerun every job that takes it.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def shard_dirs(pattern, shards):
    """Paths of a per-shard output for the given shards."""
    return [pattern.format(shard=shard) for shard in shards]


def explain_targets():
    """The report explaining `explain.model`'s out-of-fold risk (config checks name a configured model
    and encoder), or with `explain.model` null the clusters without a risk; none without slides, or
    when the cohort is too small for the survival folds, so the model does not run.
    `snakemake results/explain/<encoder>/report.html` still runs it on existing inputs.
    """
    if not SLIDES_ON or (
        config["explain"]["model"] is not None and not SURVIVAL_ACTIVE
    ):
        return []
    return [f"results/explain/{config['explain']['encoder']}/report.html"]


# --- `snakemake --report`: outputs registered with their captions (report/), by category ---


def slide_shard_output():
    """The slide stage's shard directory; its QC thumbnails go into the report if config asks."""
    shard_dir = directory("results/slides/shard-{shard}")
    if not config.get("report", {}).get("slide_thumbnails", False):
        return shard_dir
    return report(
        shard_dir,
        patterns=["thumbnails/{slide_id}.png"],
        caption="../report/slides/thumbnail.rst",
        category="Slides QC",
        subcategory="Thumbnails, shard {shard}",
        labels={"slide": "{slide_id}", "shard": "{shard}"},
    )


def explain_report_item(name, caption, label):
    """results/explain/{encoder}/<name>, registered for `snakemake --report` under Explain."""
    return report(
        f"results/explain/{{encoder}}/{name}",
        caption=f"../report/explain/{caption}",
        category="Explain",
        subcategory="{encoder}",
        labels={"encoder": "{encoder}", "result": label},
    )


# What each model file shows in `snakemake --report` (caption under report/survival/, label).
SURVIVAL_REPORT = {
    "metrics.json": ("metrics.rst", "metrics"),
    "oof_predictions.tsv": ("oof_predictions.rst", "out-of-fold risk"),
    "km_risk_groups.png": ("km.rst", "Kaplan-Meier risk groups"),
    "td_auc.png": ("td_auc.rst", "time-dependent AUC"),
    "td_auc.tsv": ("td_auc.rst", "time-dependent AUC (table)"),
    "MODEL.md": ("model_card.rst", "model card"),
    "oof_survival.tsv": ("oof_survival.rst", "out-of-fold survival functions"),
    "brier.png": ("brier.rst", "Brier score"),
    "brier.tsv": ("brier.rst", "Brier score (table)"),
    "calibration.png": ("calibration.rst", "calibration"),
    "calibration.tsv": ("calibration.rst", "calibration (table)"),
    "attributions.tsv": ("attributions.rst", "attributions"),
    "attribution_summary.tsv": ("attribution_summary.rst", "attribution summary"),
    "training.png": ("training.rst", "training curves"),
}


def survival_outputs(family):
    """A rule family's output files, those listed in SURVIVAL_REPORT registered for the report."""
    outputs = []
    for path in family_outputs(family):
        caption, label = SURVIVAL_REPORT.get(path.rsplit("/", 1)[1], (None, None))
        if caption is not None:
            path = report(
                path,
                caption=f"../report/survival/{caption}",
                category="Survival",
                subcategory="{model}",
                labels={"model": "{model}", "result": label},
            )
        outputs.append(path)
    return outputs


def survival_item(path, caption, subcategory, label):
    """A cohort-level survival output registered for the report."""
    return report(
        path,
        caption=f"../report/survival/{caption}",
        category="Survival",
        subcategory=subcategory,
        labels={"result": label},
    )


def report_failures():
    """At the end of a run (Snakefile onsuccess/onerror): per stage, the slides or patients
    that failed, by reason, and where the index is."""
    stages = [
        StageIndex(
            "slides", "slides", ("results/qc/slides.tsv",), "results/qc/slides.tsv"
        )
    ]
    for encoder in PATHOLOGY_ENCODERS:
        pattern = f"results/features/{encoder}/shard-{{shard}}/index.tsv"
        stages.append(
            StageIndex(
                f"features {encoder}",
                "slides",
                tuple(shard_dirs(pattern, PLAN.slide_shards)),
                pattern.replace("{shard}", "*"),
            )
        )
    for gene in GENES:
        pattern = f"results/genomics/sequences/{gene}/shard-{{shard}}/index.tsv"
        stages.append(
            StageIndex(
                f"sequences {gene}",
                "patients",
                tuple(shard_dirs(pattern, PLAN.genomics_shards)),
                pattern.replace("{shard}", "*"),
            )
        )
    lines, failed = failure_summary(stages)
    for line in ["Failed slides and patients (later stages skip them):", *lines]:
        (logger.warning if failed else logger.info)(line)
