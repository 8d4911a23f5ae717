# Provenance: results/manifest.json, what a paper cites to rerun these results (README "Reproducing
# a paper's results"). A local job: it runs where `snakemake` was started, so it sees the command line's
# profile and the config files, even when every other job runs on AWS Batch or SageMaker.

import json
import os
import sys

from tessera.manifest import CONTEXT_ENV, run_context

# Snakemake does not tell a workflow which profile it was started with: read it (and the container
# image) from this process's command line (or $SNAKEMAKE_PROFILE) and hand it to the manifest job
# through its environment, which is not a rerun trigger (the manifest records the run that wrote it).
if workflow.is_main_process:
    os.environ[CONTEXT_ENV] = json.dumps(run_context(sys.argv[1:], os.environ))

# The inputs the manifest checksums: the sheets given (not null), the reference and annotation with
# the genomic stage; the feature indexes and gene tables of the stages that run.
MANIFEST_INPUTS = {
    role: path
    for role, path in {
        "slides": config["slides"],
        "clinical": config["clinical"],
        "genomics": config["genomics"],
    }.items()
    if path is not None
}
if GENOMICS_ON:
    MANIFEST_INPUTS.update(
        reference=config["reference"],
        reference_fai=config["reference"] + ".fai",
        annotation=config["annotation"],
    )
MANIFEST_ENCODERS = PATHOLOGY_ENCODERS if SLIDES_ON else []


rule manifest:
    input:
        **MANIFEST_INPUTS,
        results=RESULTS,
        feature_indexes=expand(
            "results/features/{encoder}/index.tsv", encoder=MANIFEST_ENCODERS
        ),
        gene_tables=expand(
            f"results/genomics/{NT_MODEL}/{{gene}}.parquet",
            gene=GENES if GENOMICS_ON else [],
        ),
    output:
        report(
            "results/manifest.json",
            caption="../report/provenance/manifest.rst",
            category="Provenance",
            labels={"result": "run manifest"},
        ),
    log:
        "logs/manifest.log",
    localrule: True
    conda:
        "../envs/provenance.yaml"
    resources:
        mem_mb=1000,
    params:
        config=canonical(config),
        # the paths as the workflow names them (under S3 storage the job reads staged copies)
        results=RESULTS,
        inputs=MANIFEST_INPUTS,
        config_files=[str(f) for f in workflow.configfiles],
        encoders=MANIFEST_ENCODERS,
        source=workflow.basedir,
        # where the feature files are when outputs go to storage (they are not kept here)
        storage_prefix=(
            workflow.storage_settings.default_storage_prefix
            if workflow.storage_settings.default_storage_provider
            else None
        ),
    script:
        "../scripts/manifest.py"
