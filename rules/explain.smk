# Explain stage (GUIDE §4, cluster explanations): which tissue patterns drive the model's risk.
# Per feature shard a seeded sample of patch embeddings; k-means centroids on the pooled sample; per
# shard every patch assigned to its nearest centroid (plus gallery patches read from the slides); then
# the cohort report: prevalence, association with the out-of-fold risk, galleries, cluster maps.
# Memory of every job is bounded by the sample or by one slide, never by the cohort.

from tessera.pathology.encoders import registry as encoder_registry

EXPLAIN = config["explain"]
# The report's inputs besides the clusters: the slide sheet (cluster maps) and, unless explain.model is
# null (no survival stage, or asked for), the model's out-of-fold risk and the clinical covariates.
EXPLAIN_INPUTS = {"slides": config["slides"]} if SLIDES_ON else {}
if EXPLAIN["model"] is not None:
    EXPLAIN_INPUTS.update(
        oof=f"results/models/{EXPLAIN['model']}/oof_predictions.tsv",
        clinical=config["clinical"],
    )
# explain.attention_model: that deep model's attention heatmaps beside the cluster maps, when it runs
# (HEATMAP_MODELS, rules/survival.smk: not when the cohort is too small for the survival folds)
if EXPLAIN.get("attention_model") in HEATMAP_MODELS:
    EXPLAIN_INPUTS.update(
        heatmaps=f"results/models/{EXPLAIN['attention_model']}/heatmaps.tsv",
        heatmap_dir=f"results/models/{EXPLAIN['attention_model']}/heatmaps",
    )

# The pseudonym salt is a secret: it travels as an environment variable (checked at parse time by
# tessera.config), which remote executors pass on to their jobs, never in a config or params.
if EXPLAIN.get("pseudonymise"):

    envvars:
        EXPLAIN["pseudonym_salt_env"],


rule explain_sample:
    input:
        "results/features/{encoder}/shard-{shard}",
    output:
        "results/explain/{encoder}/sample/shard-{shard}.h5",
    log:
        "logs/explain/{encoder}/sample/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/explain/{encoder}/sample/shard-{shard}.tsv"
    conda:
        "../envs/explain.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        per_slide_cap=EXPLAIN["per_slide_cap"],
        seed=EXPLAIN["seed"],
    script:
        "../scripts/explain_sample.py"


rule explain_fit:
    input:
        shard_dirs(
            "results/explain/{{encoder}}/sample/shard-{shard}.h5", PLAN.slide_shards
        ),
    output:
        "results/explain/{encoder}/centroids.h5",
    log:
        "logs/explain/{encoder}/fit.log",
    benchmark:
        "logs/benchmarks/explain/{encoder}/fit.tsv"
    conda:
        "../envs/explain.yaml"
    threads: 4
    resources:
        # the pooled sample (max_sample x the encoder's dim, float32) about three times over
        mem_mb=lambda wc: 2000
        + 3 * EXPLAIN["max_sample"] * encoder_registry.get(wc.encoder).dim * 4 // 2**20,
        runtime=120,
    params:
        k=EXPLAIN["k"],
        seed=EXPLAIN["seed"],
        max_sample=EXPLAIN["max_sample"],
    script:
        "../scripts/explain_fit.py"


rule explain_assign:
    input:
        features="results/features/{encoder}/shard-{shard}",
        centroids="results/explain/{encoder}/centroids.h5",
    output:
        directory("results/explain/{encoder}/assign/shard-{shard}"),
    log:
        "logs/explain/{encoder}/assign/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/explain/{encoder}/assign/shard-{shard}.tsv"
    conda:
        "../envs/explain.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        slides=lambda wc: PLAN.slides_by_shard[wc.shard],
        gallery_size=EXPLAIN["gallery_size"],
        gallery_px=EXPLAIN["gallery_px"],
    script:
        "../scripts/explain_assign.py"


rule explain_report:
    input:
        **EXPLAIN_INPUTS,
        assign=shard_dirs(
            "results/explain/{{encoder}}/assign/shard-{shard}", PLAN.slide_shards
        ),
        centroids="results/explain/{encoder}/centroids.h5",
    output:
        report=explain_report_item("report.html", "report.rst", "report"),
        clusters=explain_report_item("clusters.tsv", "clusters.rst", "clusters"),
        fractions=explain_report_item(
            "patient_fractions.tsv", "patient_fractions.rst", "patient fractions"
        ),
        patients=explain_report_item("patients.tsv", "patients.rst", "patients"),
        variance=explain_report_item(
            "variance_explained.tsv", "variance.rst", "variance explained"
        ),
        gallery=explain_report_item("gallery.tsv", "gallery.rst", "gallery"),
    log:
        "logs/explain/{encoder}/report.log",
    benchmark:
        "logs/benchmarks/explain/{encoder}/report.tsv"
    conda:
        "../envs/explain.yaml"
    resources:
        # per-slide cluster counts of the whole cohort (~10 M rows at 200,000 slides)
        mem_mb=8000,
        runtime=60,
    params:
        settings=canonical(EXPLAIN),
    script:
        "../scripts/explain_report.py"
