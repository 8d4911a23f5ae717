# Pathology stage: per shard, the features of every ok slide for every encoder in pathology.encoders
# (HIPT ViT-256 per 256-px patch and ViT-4K per 4096-px region; foundation models per tile). Encoders
# reading the same tile size at the same resolution share one grid and one read; another tile geometry
# gets its own grid from the same tissue mask. Then, per encoder, the cohort index and slide embeddings.
# A slide the slide stage failed, or whose pixels cannot be read, is recorded in the shard's
# index.tsv with the reason; the shard and the cohort go on.

from tessera.pathology.params import check_pathology_config, uses_random_weights

PATHOLOGY = config["pathology"]
PATHOLOGY_ENCODERS = list(
    check_pathology_config(config, file="config (pathology section)").outputs
)

if workflow.is_main_process and SLIDES_ON and uses_random_weights(config):
    logger.warning(
        "WARNING: pathology encoders with RANDOM weights: "
        + ", ".join(uses_random_weights(config))
        + ". Their features carry no pretrained knowledge (fine for the demo and tests); "
        "set pathology.weights to the checkpoints for real use."
    )


wildcard_constraints:
    encoder="|".join(PATHOLOGY_ENCODERS),


rule extract_features:
    input:
        slides="results/slides/shard-{shard}",
    output:
        **{
            encoder: directory(f"results/features/{encoder}/shard-{{shard}}")
            for encoder in PATHOLOGY_ENCODERS
        },
    log:
        "logs/features/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/features/shard-{shard}.tsv"
    conda:
        "../envs/pathology.yaml"
    threads: PATHOLOGY["threads"]
    resources:
        gpu=0 if PATHOLOGY["device"] == "cpu" else 1,
        mem_mb=PATHOLOGY["mem_mb"],
        runtime=PATHOLOGY["runtime_min"],
    params:
        slides=lambda wc: PLAN.slides_by_shard[wc.shard],
        pathology=canonical(PATHOLOGY),
        min_tissue_fraction=config["patching"]["min_tissue_fraction"],
    script:
        "../scripts/extract_features.py"


rule collect_features:
    input:
        lambda wc: shard_dirs(
            f"results/features/{wc.encoder}/shard-{{shard}}", PLAN.slide_shards
        ),
    output:
        index=report(
            "results/features/{encoder}/index.tsv",
            caption="../report/pathology/features_index.rst",
            category="Pathology",
            subcategory="{encoder}",
            labels={"encoder": "{encoder}", "table": "feature index"},
        ),
        embeddings="results/features/{encoder}/slide_embeddings.parquet",
    log:
        "logs/features/collect-{encoder}.log",
    conda:
        "../envs/pathology.yaml"
    resources:
        mem_mb=2000,
    params:
        shard_dirs=lambda wc: shard_dirs(
            f"results/features/{wc.encoder}/shard-{{shard}}", PLAN.slide_shards
        ),
    script:
        "../scripts/collect_features.py"
