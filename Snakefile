"""tessera: slides, genomes and outcomes → features, survival models and reports.

Run:  snakemake --profile profiles/local            (demo cohort, config/config.yaml)
      snakemake --profile profiles/local --configfile my-cohort.yaml
"""

from snakemake.utils import min_version

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
include: "rules/survival.smk"
include: "rules/explain.smk"


# The results a run makes (rule all) of the stages switched on (config/README.md "Cohort inputs");
# the manifest records them with their checksums.
SLIDE_RESULTS = [
    "results/qc/slides.tsv",
    *expand("results/features/{encoder}/index.tsv", encoder=PATHOLOGY_ENCODERS),
    *expand(
        "results/features/{encoder}/slide_embeddings.parquet",
        encoder=PATHOLOGY_ENCODERS,
    ),
]
RESULTS = [
    *(SLIDE_RESULTS if SLIDES_ON else []),
    *([f"results/genomics/{NT_MODEL}/embeddings.parquet"] if GENOMICS_ON else []),
    *explain_targets(),
    *SURVIVAL_TARGETS,
]


include: "rules/provenance.smk"


rule all:
    default_target: True
    input:
        RESULTS,
        "results/manifest.json",


onsuccess:
    report_failures()


onerror:
    report_failures()
