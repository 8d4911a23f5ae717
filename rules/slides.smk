# Slide stage: per shard, tissue masks, patch/region grids, GeoJSON and QC thumbnails;
# then the cohort's QC index. A slide that fails is recorded in its shard's index.tsv with the
# reason; the shard and the cohort go on, and later stages skip it.


rule patch_slides:
    output:
        slide_shard_output(),
    log:
        "logs/slides/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/slides/shard-{shard}.tsv"
    conda:
        "../envs/slides.yaml"
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        slides=lambda wc: PLAN.slides_by_shard[wc.shard],
        patching=canonical(config["patching"]),
    script:
        "../scripts/patch_slides.py"


rule slides_qc:
    input:
        shard_dirs("results/slides/shard-{shard}", PLAN.slide_shards),
    output:
        report(
            "results/qc/slides.tsv",
            caption="../report/slides/qc_table.rst",
            category="Slides QC",
            subcategory="Cohort",
            labels={"table": "slide index"},
        ),
    log:
        "logs/slides/qc.log",
    conda:
        "../envs/slides.yaml"
    resources:
        mem_mb=2000,
    params:
        shard_dirs=shard_dirs("results/slides/shard-{shard}", PLAN.slide_shards),
    script:
        "../scripts/collect_slides_qc.py"
