"""The demo cohort: real formats, deterministic given the seed, planted truth consistent."""

import hashlib

import openslide
import pandas as pd
import pysam

from tessera.cli import main
from tessera.demo import make_demo_cohort
from tessera.plan import plan_cohort


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path, tiny_cohort):
    again = make_demo_cohort(tmp_path / "again", seed=3, n_patients=6)
    assert digest(again) == digest(tiny_cohort)
    other = make_demo_cohort(tmp_path / "other", seed=4, n_patients=6)
    assert digest(other)["clinical.tsv"] != digest(tiny_cohort)["clinical.tsv"]


def test_formats_and_sheets(tiny_cohort):
    plan = plan_cohort({"slides": tiny_cohort / "slides.tsv", "clinical": tiny_cohort / "clinical.tsv",
                        "genomics": tiny_cohort / "genomics.tsv", "n_shards": 2})
    synthetic = plan.slides[plan.slides["path"].str.endswith(".tiff")]
    assert len(synthetic) >= 5 and plan.slides["patient_id"].value_counts().max() == 2
    for path in synthetic["path"]:
        s = openslide.OpenSlide(path)
        assert s.properties["openslide.vendor"] == "aperio" and s.level_count >= 2
        assert float(s.properties["openslide.mpp-x"]) == 0.25 and s.properties["openslide.objective-power"] == "40"
    cmu = plan.slides.set_index("slide_id").loc["P001-S1", "path"]
    assert openslide.OpenSlide(cmu).properties["openslide.vendor"] == "aperio"

    vcf = pysam.VariantFile(str(tiny_cohort / "variants.vcf.gz"))
    records = list(vcf.fetch("chr1"))
    assert any(r.id == "planted_del7" for r in records)
    phased = {s.phased for r in records for s in r.samples.values() if None not in s["GT"]}
    assert phased == {True, False}
    assert any(len(r.ref) != len(r.alts[0]) for r in records)  # indels present
    bams = plan.genomics.loc[plan.genomics["bam"] != "", "bam"]
    assert len(bams) >= 1 and all(pysam.AlignmentFile(b).check_index() for b in bams)


def test_truth_matches_the_slides_and_genotypes(tiny_cohort):
    truth = pd.read_csv(tiny_cohort / "truth.tsv", sep="\t").set_index("patient_id")
    assert truth.loc["P001", "planted_fraction"] == 0  # the real CMU slide carries no synthetic texture
    assert truth["planted_fraction"].between(0, 0.95).all() and truth["planted_fraction"].std() > 0.05
    vcf = pysam.VariantFile(str(tiny_cohort / "variants.vcf.gz"))
    planted = next(r for r in vcf.fetch("chr1") if r.id == "planted_del7")
    genomics = pd.read_csv(tiny_cohort / "genomics.tsv", sep="\t", keep_default_na=False)
    for row in genomics[genomics["vcf"] != ""].itertuples():
        assert sum(planted.samples[row.vcf_sample]["GT"]) == truth.loc[row.patient_id, "variant_dosage"]
    assert "necrosis" in (tiny_cohort / "README.md").read_text()


def test_cli_writes_a_cohort(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "d"), "--patients", "4", "--seed", "1"]) == 0
    assert (tmp_path / "d" / "slides.tsv").is_file() and "demo cohort written" in capsys.readouterr().out
