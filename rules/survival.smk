# Survival stage: the cohort table (chosen modalities, missing-modality policy), one job per
# configured model (tabular models on CPU; the multimodal model as a GPU job that falls back to
# CPU), and a summary comparing them. Each model's config entry is passed as params, so changing
# one model's settings reruns that model only.

from tessera.survival.settings import (
    DEEP_KINDS,
    cohort_inputs,
    model_inputs,
    name_constraint,
    parse_survival_config,
)

SURVIVAL = parse_survival_config(
    config.get("survival", {}),
    file="config (merged from config/config.yaml and --configfile/--config)",
)
SURVIVAL_ENTRIES = {m["name"]: m for m in config.get("survival", {}).get("models", [])}
SURVIVAL_SHARED = {k: v for k, v in config.get("survival", {}).items() if k != "models"}
SURVIVAL_DEEP = [m.name for m in SURVIVAL.models if m.kind in DEEP_KINDS]
SURVIVAL_TABULAR = [m.name for m in SURVIVAL.models if m.kind not in DEEP_KINDS]
SURVIVAL_TARGETS = ["results/models/summary.tsv"] if SURVIVAL.models else []


rule survival_cohort:
    input:
        unpack(lambda wc: cohort_inputs(config)),
    output:
        table="results/cohort/table.parquet",
        excluded="results/cohort/excluded.tsv",
        summary="results/cohort/summary.json",
    log:
        "logs/survival/cohort.log",
    conda:
        "../envs/survival.yaml"
    resources:
        mem_mb=4000,
    params:
        cohort=SURVIVAL.cohort,
    script:
        "../scripts/survival_cohort.py"


rule survival_tabular:
    input:
        unpack(lambda wc: model_inputs(SURVIVAL, wc.model)),
    output:
        directory("results/models/{model}"),
    log:
        "logs/survival/{model}.log",
    benchmark:
        "logs/benchmarks/survival/{model}.tsv"
    wildcard_constraints:
        model=name_constraint(SURVIVAL_TABULAR),
    conda:
        "../envs/survival.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        model=lambda wc: SURVIVAL_ENTRIES[wc.model],
        survival=SURVIVAL_SHARED,
    script:
        "../scripts/survival_model.py"


rule survival_deep:
    input:
        unpack(lambda wc: model_inputs(SURVIVAL, wc.model)),
    output:
        directory("results/models/{model}"),
    log:
        "logs/survival/{model}.log",
    benchmark:
        "logs/benchmarks/survival/{model}.tsv"
    wildcard_constraints:
        model=name_constraint(SURVIVAL_DEEP),
    conda:
        "../envs/survival.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=480,
    params:
        model=lambda wc: SURVIVAL_ENTRIES[wc.model],
        survival=SURVIVAL_SHARED,
    script:
        "../scripts/survival_model.py"


rule survival_summary:
    input:
        expand("results/models/{model}", model=SURVIVAL_ENTRIES),
    output:
        tsv="results/models/summary.tsv",
        png="results/models/summary.png",
    log:
        "logs/survival/summary.log",
    conda:
        "../envs/survival.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/survival_summary.py"
