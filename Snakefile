"""tessera: slides, genomes and outcomes → features, survival models and reports.

Run:  snakemake --profile profiles/local            (demo cohort, config/config.yaml)
      snakemake --profile profiles/local --configfile my-cohort.yaml
"""

from snakemake.utils import min_version

from tessera.runsummary import StageIndex, failure_summary

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


# With --software-deployment-method apptainer every job's code runs in this image (README "SLURM");
# without it, or with no image configured, jobs run in the environment Snakemake runs in.
container: config.get("container_image")


include: "rules/common.smk"
include: "rules/slides.smk"
include: "rules/pathology.smk"
include: "rules/genomics.smk"
include: "rules/explain.smk"
include: "rules/survival.smk"


# The results a run makes (rule all); the manifest records them with their checksums.
RESULTS = [
    "results/qc/slides.tsv",
    *expand("results/features/{encoder}/index.tsv", encoder=PATHOLOGY_ENCODERS),
    *expand(
        "results/features/{encoder}/slide_embeddings.parquet",
        encoder=PATHOLOGY_ENCODERS,
    ),
    f"results/genomics/{NT_MODEL}/embeddings.parquet",
    *explain_targets(),
    *SURVIVAL_TARGETS,
]


include: "rules/provenance.smk"


rule all:
    default_target: True
    input:
        RESULTS,
        "results/manifest.json",


def report_failures(log):
    """At the end of a run: per stage, the slides or patients that failed, by reason, and the index."""
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


onsuccess:
    report_failures(log)


onerror:
    report_failures(log)
