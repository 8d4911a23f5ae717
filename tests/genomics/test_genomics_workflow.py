"""The genomic stage of the workflow on a small demo cohort: every patient with genomic data embedded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tessera.demo import make_demo_cohort

REPO = Path(__file__).resolve().parents[2]
TARGET = "results/genomics/nt-v2-random-demo/embeddings.parquet"


@pytest.mark.workflow
def test_demo_genomics_embeds_every_patient_with_genomic_data(tmp_path):
    cohort = make_demo_cohort(tmp_path / "demo", n_patients=10)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(slides=str(cohort / "slides.tsv"), clinical=str(cohort / "clinical.tsv"),
                  genomics=str(cohort / "genomics.tsv"), reference=str(cohort / "reference.fa"),
                  annotation=str(cohort / "genes.gtf"), n_shards=2)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile"), "--directory",
         str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", TARGET],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]

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
