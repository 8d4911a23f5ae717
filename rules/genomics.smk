# Genomic stage: gene regions (GTF/GFF3 or explicit) -> per-patient haplotype sequences from the
# VCF or BAM (per gene, per shard) -> Nucleotide Transformer embeddings per gene -> cohort table.
# A patient whose sequence fails is recorded in its shard's index.tsv with the reason; the shard,
# the gene and the cohort go on without it.

import re

from tessera.genomics.sequences import genomics_by_shard
from tessera.genomics.settings import check_genomics_config, gene_names, region_spec

check_genomics_config(
    config, file="config (merged from config/config.yaml and --configfile/--config)"
)
GENES = gene_names(config)
NT_MODEL = config["genomics_model"]["name"]
GENOMICS_BY_SHARD = genomics_by_shard(PLAN.genomics)
RANDOM_WEIGHTS = config["genomics_model"]["weights"] == "random"
# The model directory: written by nt_random_weights, or the configured path / s3:// prefix.
NT_WEIGHTS = (
    f"results/genomics/{NT_MODEL}/random-weights"
    if RANDOM_WEIGHTS
    else config["genomics_model"]["weights"]
)


wildcard_constraints:
    gene="|".join(re.escape(g) for g in GENES),
    model=re.escape(NT_MODEL),


rule annotation_genes:
    input:
        config["annotation"],
    output:
        "results/genomics/annotation_genes.parquet",
    log:
        "logs/genomics/annotation_genes.log",
    benchmark:
        "logs/benchmarks/genomics/annotation_genes.tsv"
    conda:
        "../envs/genomics.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/annotation_genes.py"


rule gene_region:
    input:
        genes="results/genomics/annotation_genes.parquet",
        reference=config["reference"],
        fai=config["reference"] + ".fai",
    output:
        report(
            "results/genomics/regions/{gene}.tsv",
            caption="../report/genomics/region.rst",
            category="Genomics",
            subcategory="Gene regions",
            labels={"gene": "{gene}"},
        ),
    log:
        "logs/genomics/regions/{gene}.log",
    conda:
        "../envs/genomics.yaml"
    resources:
        mem_mb=2000,
    params:
        spec=lambda wc: canonical(region_spec(config, wc.gene)),
        annotation=config["annotation"],
    script:
        "../scripts/gene_region.py"


rule gene_sequences:
    input:
        region="results/genomics/regions/{gene}.tsv",
        reference=config["reference"],
        fai=config["reference"] + ".fai",
    output:
        directory("results/genomics/sequences/{gene}/shard-{shard}"),
    log:
        "logs/genomics/sequences/{gene}/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/genomics/sequences/{gene}/shard-{shard}.tsv"
    conda:
        "../envs/genomics.yaml"
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        patients=lambda wc: GENOMICS_BY_SHARD[wc.shard],
        sequences=canonical(config["gene_sequences"]),
    script:
        "../scripts/gene_sequences.py"


rule nt_random_weights:
    output:
        directory("results/genomics/{model}/random-weights"),
    log:
        "logs/genomics/{model}/random-weights.log",
    conda:
        "../envs/nt.yaml"
    resources:
        mem_mb=4000,
    params:
        kind=config["genomics_model"]["kind"],
        architecture=canonical(config["genomics_model"]["random_architecture"]),
        seed=config["genomics_model"]["random_seed"],
    script:
        "../scripts/nt_random_weights.py"


rule embed_gene:
    input:
        shards=lambda wc: shard_dirs(
            f"results/genomics/sequences/{wc.gene}/shard-{{shard}}",
            PLAN.genomics_shards,
        ),
        weights=[NT_WEIGHTS] if RANDOM_WEIGHTS else [],
    output:
        "results/genomics/{model}/{gene}.parquet",
    log:
        "logs/genomics/{model}/{gene}.log",
    benchmark:
        "logs/benchmarks/genomics/{model}/{gene}.tsv"
    conda:
        "../envs/nt.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        # as the workflow names them (recorded in the outputs); the job reads input.weights when given
        # (random weights: a staged copy under S3 storage). A function: the name, not a file to stage.
        weights=lambda wildcards: NT_WEIGHTS,
        model=canonical(config["genomics_model"]),
    script:
        "../scripts/embed_gene.py"


rule genomics_cohort:
    input:
        expand("results/genomics/{{model}}/{gene}.parquet", gene=GENES),
    output:
        "results/genomics/{model}/embeddings.parquet",
    log:
        "logs/genomics/{model}/embeddings.log",
    conda:
        "../envs/nt.yaml"
    resources:
        mem_mb=4000,
    params:
        genes=GENES,
    script:
        "../scripts/genomics_cohort.py"
