"""The genomic stage of the workflow on a small demo cohort: every patient with genomic data embedded."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import cohort_config, run_snakemake

TARGET = "results/genomics/nt-v2-random-demo/embeddings.parquet"


@pytest.mark.workflow
def test_demo_genomics_embeds_every_patient_with_genomic_data(tiny_cohort, tmp_path):
    """Also README's "genomes + clinical" config (`slides: null`): the default target runs the genomic and
    survival stages (one Cox model, folds the 6 patients fill) and the manifest, and no slide stage."""
    cohort = tiny_cohort
    config = cohort_config(cohort, tmp_path, n_shards=2, slides=None)
    settings = yaml.safe_load(config.read_text())
    settings["survival"]["cv"].update(n_splits=2, n_repeats=1, inner_splits=2)
    settings["survival"]["models"] = [m for m in settings["survival"]["models"] if m["name"] == "cox_ridge"]
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    table = pd.read_parquet(tmp_path / "results/cohort/table.parquet")
    assert {c.split("__")[0] for c in table.columns if "__" in c} == {"clinical", "genomics"}
    assert (tmp_path / "results/models/cox_ridge/metrics.json").is_file()
    assert not (tmp_path / "results/slides").exists() and not (tmp_path / "results/features").exists()
    manifest = json.loads((tmp_path / "results/manifest.json").read_text())
    assert "slides" not in manifest["inputs"] and {"clinical", "genomics", "reference"} <= set(manifest["inputs"])

    truth = pd.read_csv(cohort / "truth.tsv", sep="\t")
    with_data = sorted(truth.loc[truth["genomics"] != "none", "patient_id"])
    table = pd.read_parquet(tmp_path / TARGET)
    assert table["patient_id"].tolist() == with_data
    assert table.shape[1] == 1 + 2 * 64 and table.drop(columns="patient_id").notna().all().all()
    gene_a = pd.read_parquet(tmp_path / "results/genomics/nt-v2-random-demo/GENEA.parquet")
    assert set(gene_a["source"]) == {"vcf", "bam"} and gene_a["weights_random"].all()

    # the planted 7-bp deletion (VCF chr1:11501) is on as many haplotypes as the truth's dosage, for VCF
    # patients and for BAM patients (whose caller may write it with other flanking bases)
    shards = sorted((tmp_path / "results/genomics/sequences/GENEA").glob("shard-*"))
    variants = pd.concat(pd.read_csv(s / "variants.tsv", sep="\t") for s in shards)
    near = variants["pos"].between(11_490, 11_510) & ~variants["alt"].str.contains(",")
    planted = variants[near & (variants["ref"].str.len() - variants["alt"].str.len() == 7)]
    carried = {p: int((g[["hap1", "hap2"]] == "applied").to_numpy().sum()) for p, g in planted.groupby("patient_id")}
    for row in truth[truth["genomics"] != "none"].itertuples():
        assert carried.get(row.patient_id, 0) == row.variant_dosage, row.patient_id


@pytest.mark.workflow
def test_a_vcf_sample_absent_from_its_vcf_stops_planning_before_any_job(tiny_cohort, tmp_path):
    sheet = pd.read_csv(tiny_cohort / "genomics.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = sheet.index[sheet["vcf"] != ""][0]
    sheet.loc[row, "vcf_sample"] = "NOT_IN_VCF"
    for col in ("vcf", "bam"):
        sheet[col] = [str(tiny_cohort / v) if v else "" for v in sheet[col]]
    sheet.to_csv(tmp_path / "genomics.tsv", sep="\t", index=False)
    config = cohort_config(tiny_cohort, tmp_path, genomics=str(tmp_path / "genomics.tsv"))
    proc = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"line {row + 2}, field 'vcf_sample': sample 'NOT_IN_VCF' is not in the VCF" in out
    assert "its samples: " in out and not (tmp_path / "results").exists()
