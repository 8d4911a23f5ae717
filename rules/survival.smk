# Survival stage: the cohort table (chosen modalities, missing-modality policy), one job per
# configured model, and a summary comparing them. Rule families by what a model predicts: tabular
# models with survival functions, ranking/classification models, and the multimodal deep model (a GPU
# job that falls back to CPU). Each model's config entry is passed as params, so changing one model's
# settings reruns that model only.

from snakemake.logging import logger

from tessera.survival.cohort_table import check_cohort_columns
from tessera.survival.settings import (
    DEEP_KINDS,
    cohort_inputs,
    cv_blocker,
    family_models,
    family_outputs,
    model_inputs,
    name_constraint,
    parse_survival_config,
)

SURVIVAL = parse_survival_config(
    config.get("survival", {}),
    file="config (merged from config/config.yaml and --configfile/--config)",
)
# Without a clinical table (clinical: null) there is no survival stage, so no columns to check.
if config["clinical"] is not None:
    check_cohort_columns(SURVIVAL.cohort, PLAN.clinical, config["clinical"])
SURVIVAL_ENTRIES = {m["name"]: m for m in config.get("survival", {}).get("models", [])}
# (the heatmap keys are read by survival_heatmaps alone: changing them redraws, never retrains)
SURVIVAL_SHARED = {
    k: v
    for k, v in config.get("survival", {}).items()
    if k not in ("models", "explain")
}
SURVIVAL_SHARED["explain"] = {
    k: v for k, v in SURVIVAL.explain.items() if not k.startswith("heatmap_")
}
# A cohort too small for the configured folds gets no survival jobs (the rest of the workflow runs).
SURVIVAL_BLOCKED = cv_blocker(PLAN.clinical["event"], SURVIVAL.cv, SURVIVAL.models)
SURVIVAL_ACTIVE = bool(SURVIVAL.models) and SURVIVAL_BLOCKED is None
# Attention heatmaps: every deep model that reads slides (none when the slide stage is off)
HEATMAP_MODELS = [
    m.name
    for m in SURVIVAL.models
    if m.kind in DEEP_KINDS and m.encoder and SLIDES_ON and SURVIVAL_ACTIVE
]
SURVIVAL_TARGETS = (
    [
        "results/models/summary.tsv",
        *expand("results/models/{model}/heatmaps.tsv", model=HEATMAP_MODELS),
    ]
    if SURVIVAL_ACTIVE
    else []
)
if SURVIVAL.models and SURVIVAL_BLOCKED:
    logger.warning(f"tessera: no survival models in this run: {SURVIVAL_BLOCKED}.")


rule survival_cohort:
    input:
        unpack(lambda wc: cohort_inputs(config)),
    output:
        table="results/cohort/table.parquet",
        excluded=survival_item(
            "results/cohort/excluded.tsv", "cohort_excluded.rst", "Cohort", "excluded"
        ),
        summary=survival_item(
            "results/cohort/summary.json", "cohort_summary.rst", "Cohort", "summary"
        ),
    log:
        "logs/survival/cohort.log",
    conda:
        "../envs/survival.yaml"
    resources:
        mem_mb=4096,
    params:
        cohort=SURVIVAL.cohort,
    script:
        "../scripts/survival_cohort.py"


rule survival_tabular:
    input:
        unpack(lambda wc: model_inputs(SURVIVAL, wc.model)),
    output:
        survival_outputs("survival_tabular"),
    log:
        "logs/survival/{model}.log",
    benchmark:
        "logs/benchmarks/survival/{model}.tsv"
    wildcard_constraints:
        model=name_constraint(
            family_models(SURVIVAL, "survival_tabular", SURVIVAL_ACTIVE)
        ),
    conda:
        "../envs/survival.yaml"
    threads: 2
    resources:
        mem_mb=8192,
        runtime=240,
    params:
        model=lambda wc: SURVIVAL_ENTRIES[wc.model],
        survival=SURVIVAL_SHARED,
    script:
        "../scripts/survival_model.py"


rule survival_ranking:
    input:
        unpack(lambda wc: model_inputs(SURVIVAL, wc.model)),
    output:
        survival_outputs("survival_ranking"),
    log:
        "logs/survival/{model}.log",
    benchmark:
        "logs/benchmarks/survival/{model}.tsv"
    wildcard_constraints:
        model=name_constraint(
            family_models(SURVIVAL, "survival_ranking", SURVIVAL_ACTIVE)
        ),
    conda:
        "../envs/survival.yaml"
    threads: 2
    resources:
        mem_mb=8192,
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
        survival_outputs("survival_deep"),
    log:
        "logs/survival/{model}.log",
    benchmark:
        "logs/benchmarks/survival/{model}.tsv"
    wildcard_constraints:
        model=name_constraint(family_models(SURVIVAL, "survival_deep", SURVIVAL_ACTIVE)),
    conda:
        "../envs/survival.yaml"
    threads: 2
    resources:
        gpu=1,
        # bags cached up to 4 GiB (BagStore) plus the network; fits a 16 GiB GPU instance
        mem_mb=12288,
        runtime=480,
    params:
        model=lambda wc: SURVIVAL_ENTRIES[wc.model],
        survival=SURVIVAL_SHARED,
        # hipt_lgp starts from the pathology stage's ViT-4K (None for the other deep kinds)
        vit4k=lambda wc: (
            {
                "weights": config["pathology"]["weights"].get("hipt4k"),
                "seed": config["pathology"].get("random_seed", 0),
            }
            if SURVIVAL_ENTRIES[wc.model]["kind"] == "hipt_lgp"
            else None
        ),
    script:
        "../scripts/survival_model.py"


rule survival_summary:
    input:
        expand("results/models/{model}/metrics.json", model=SURVIVAL_ENTRIES),
    output:
        tsv=survival_item(
            "results/models/summary.tsv",
            "summary_table.rst",
            "Models compared",
            "table",
        ),
        png=survival_item(
            "results/models/summary.png",
            "summary_figure.rst",
            "Models compared",
            "figure",
        ),
    log:
        "logs/survival/summary.log",
    conda:
        "../envs/survival.yaml"
    resources:
        mem_mb=2048,
    script:
        "../scripts/survival_summary.py"


rule survival_heatmaps:
    input:
        attention="results/models/{model}/attention.parquet",
        oof="results/models/{model}/oof_predictions.tsv",
        slides=config["slides"] or [],
    output:
        heatmaps=report(
            directory("results/models/{model}/heatmaps"),
            patterns=["{slide_id}.png"],
            caption="../report/survival/heatmap.rst",
            category="Survival",
            subcategory="{model} attention heatmaps",
            labels={"model": "{model}", "slide": "{slide_id}"},
        ),
        index=report(
            "results/models/{model}/heatmaps.tsv",
            caption="../report/survival/heatmaps_index.rst",
            category="Survival",
            subcategory="{model}",
            labels={"model": "{model}", "result": "attention heatmaps (index)"},
        ),
    log:
        "logs/survival/{model}-heatmaps.log",
    benchmark:
        "logs/benchmarks/survival/{model}-heatmaps.tsv"
    wildcard_constraints:
        model=name_constraint(HEATMAP_MODELS),
    conda:
        "../envs/explain.yaml"
    resources:
        mem_mb=2048,
        runtime=30,
    params:
        n_slides=SURVIVAL.explain.get("heatmap_slides", 8),
        thumbnail_px=SURVIVAL.explain.get("heatmap_px", 1024),
    script:
        "../scripts/survival_heatmaps.py"
