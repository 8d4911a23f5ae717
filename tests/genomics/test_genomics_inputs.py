"""The genomics sheet's VCFs and BAMs: samples checked when planning; files that cannot be read by region
fail their patient with the real cause and a fix that works."""

from __future__ import annotations

import gzip
import os
import random
import shutil

import pysam
import pysam.samtools
import pytest
from genomics_data import write_fasta, write_vcf

from tessera.errors import InputErrors
from tessera.genomics.genes import Region
from tessera.genomics.inputs import check_vcf_samples, vcf_samples
from tessera.genomics.sequences import SequenceParams, patient_sequences_shard, read_shard_sequences
from tessera.sheets import read_genomics_sheet


def test_every_absent_vcf_sample_is_a_sheet_error_listing_the_vcfs_samples(tmp_path):
    contigs = {f"chr{i}_with_a_long_name_to_fill_the_header": 1000 for i in range(3000)}  # header > 64 KiB
    rows = [("chr0_with_a_long_name_to_fill_the_header", 4, "A", ["G"], ".", ["0|1", "1|1"])]
    multi = write_vcf(tmp_path / "multi.vcf.gz", contigs, ["TUMOR_1", "NORMAL_1"], rows)
    bcf = tmp_path / "one.bcf"
    with pysam.VariantFile(str(multi)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as out:
        for rec in src:
            out.write(rec)
    plain = tmp_path / "plain.vcf"
    plain.write_text(pysam.BGZFile(str(multi), "rb").read().decode())
    assert vcf_samples(str(multi)) == vcf_samples(str(bcf)) == vcf_samples(str(plain)) == ["TUMOR_1", "NORMAL_1"]

    sheet = tmp_path / "genomics.tsv"
    sheet.write_text("patient_id\tvcf\tvcf_sample\tbam\n"
                     "P1\tmulti.vcf.gz\tTUMOR_1\t\n"
                     "P2\tmulti.vcf.gz\tTUMOR_2\t\n"   # absent
                     "P3\tone.bcf\tNORMAL_1\t\n"
                     "P4\tplain.vcf\ttumor_1\t\n"      # absent (names are case-sensitive)
                     "P5\tabsent.vcf.gz\tX\t\n")       # unreadable: left to the job, which fails P5 alone
    with pytest.raises(InputErrors) as err:
        check_vcf_samples(read_genomics_sheet(sheet), str(sheet))
    text = str(err.value)
    assert [(e.line, e.field) for e in err.value.errors] == [(3, "vcf_sample"), (5, "vcf_sample")]
    assert "sample 'TUMOR_2' is not in the VCF" in text and "(its samples: TUMOR_1, NORMAL_1)" in text
    assert "bcftools query -l" in text and "P5" not in text and "absent.vcf.gz" not in text
    good = read_genomics_sheet(sheet).query("patient_id in ['P1', 'P3']")
    check_vcf_samples(good, str(sheet))


def _run_fix(fix: str) -> None:
    """Run the ``samtools``/``bcftools`` commands quoted in an error's fix (``cmd && cmd``), with pysam's tools."""
    import pysam.bcftools
    import pysam.samtools

    commands = fix[fix.index("(") + 1: fix.index(")")] if "(" in fix else fix.split(": ", 1)[1]
    for command in commands.split(" && "):
        tool, sub, *args = command.split()
        getattr({"bcftools": pysam.bcftools, "samtools": pysam.samtools}[tool], sub)(*args, catch_stdout=False)


def test_unindexable_vcf_and_bam_fail_with_the_real_cause_and_a_fix_that_works(tmp_path):
    """Plain text, plain gzip, unsorted and stale-indexed files: each patient fails with its cause; the fix
    the message gives, run as given, makes the patient's sequences those of the well-formed file."""
    rng = random.Random(5)
    seq = "".join(rng.choice("ACGT") for _ in range(3000))
    reference = write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    rows = [("chr1", p, seq[p], ["A" if seq[p] != "A" else "C"], ".", ["0|1"]) for p in range(100, 2900, 97)]
    good = write_vcf(tmp_path / "good.vcf.gz", {"chr1": 3000}, ["S"], rows)
    text = pysam.BGZFile(str(good), "rb").read().decode()
    lines = text.splitlines()
    header, body = [x for x in lines if x.startswith("#")], [x for x in lines if not x.startswith("#")]
    (tmp_path / "plain.vcf").write_text(text)
    with gzip.open(tmp_path / "gzip.vcf.gz", "wt") as f:
        f.write(text)
    (tmp_path / "unsorted.vcf").write_text("\n".join(header + body[3:] + body[:3]) + "\n")
    pysam.tabix_compress(str(tmp_path / "unsorted.vcf"), str(tmp_path / "unsorted.vcf.gz"))
    shutil.copy(good, tmp_path / "stale.vcf.gz")
    shutil.copy(f"{good}.tbi", tmp_path / "stale.vcf.gz.tbi")
    os.utime(tmp_path / "stale.vcf.gz.tbi", (1e9, 1e9))  # indexed long before the file was last written

    bam_header = {"HD": {"VN": "1.6", "SO": "unsorted"}, "SQ": [{"SN": "chr1", "LN": 3000}]}
    starts = [rng.randrange(0, 2900) for _ in range(400)]
    with pysam.AlignmentFile(str(tmp_path / "unsorted.bam"), "wb", header=bam_header) as out:
        for i, s in enumerate(starts):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.reference_id, read.reference_start, read.mapping_quality = f"r{i}", 0, s, 60
            read.cigarstring, read.query_sequence = "100M", seq[s: s + 100]
            read.query_qualities = pysam.qualitystring_to_array("I" * 100)
            out.write(read)
    pysam.samtools.sort("-o", str(tmp_path / "good.bam"), str(tmp_path / "unsorted.bam"), catch_stdout=False)
    pysam.samtools.index(str(tmp_path / "good.bam"))
    pysam.samtools.view("-h", "-o", str(tmp_path / "plain.sam"), str(tmp_path / "good.bam"), catch_stdout=False)
    shutil.copy(tmp_path / "good.bam", tmp_path / "stale.bam")
    shutil.copy(tmp_path / "good.bam.bai", tmp_path / "stale.bam.bai")
    os.utime(tmp_path / "stale.bam.bai", (1e9, 1e9))

    causes = {
        "plain.vcf": "VCF is plain text", "gzip.vcf.gz": "VCF is gzip-compressed, not bgzip",
        "unsorted.vcf.gz": "VCF is not sorted by position (record at chr1:101 after chr1:2817)",
        "stale.vcf.gz": "the index stale.vcf.gz.tbi is older than the VCF",
        "plain.sam": "BAM is plain text", "unsorted.bam": "BAM is not sorted by position (record at chr1:",
        "stale.bam": "the index stale.bam.bai is older than the BAM",
    }
    patients = [{"patient_id": name.replace(".", "_"), "vcf": str(tmp_path / name) if "vcf" in name else "",
                 "vcf_sample": "S" if "vcf" in name else "", "bam": "" if "vcf" in name else str(tmp_path / name)}
                for name in ["good.vcf.gz", "good.bam", *causes]]
    region = Region("G", "chr1", 500, 2500)
    index = patient_sequences_shard(patients, region, str(reference), SequenceParams(), tmp_path / "before")
    reasons = index.set_index("patient_id")["reason"]
    for name, cause in causes.items():
        assert reasons[name.replace(".", "_")].startswith(f"{tmp_path / name}: {cause}"), reasons[name.replace(".", "_")]

    for p in patients[2:]:  # run each fix as the message gives it; name the file it writes in the sheet
        reason = reasons[p["patient_id"]]
        _run_fix(reason.split("Fix: ", 1)[1])
        key = "vcf" if p["vcf"] else "bam"
        p[key] = reason.split(" and name ")[1].split(" in the genomics sheet")[0] if " and name " in reason else p[key]
    index = patient_sequences_shard(patients, region, str(reference), SequenceParams(), tmp_path / "after")
    assert (index["status"] == "ok").all(), index[["patient_id", "reason"]]
    _, seqs = read_shard_sequences(tmp_path / "after")
    for p in patients[2:]:
        assert seqs[p["patient_id"]] == seqs["good_vcf_gz" if p["vcf"] else "good_bam"], p["patient_id"]


def test_a_bam_without_reads_on_the_genes_contig_fails_with_the_masked_fraction(tmp_path):
    """No read on chr1 (all on chr2): the haplotype would be all N. The patient fails with the reason unless
    bam.max_masked_fraction allows it; a BAM covering 70 % of the region passes the default 0.5."""
    rng = random.Random(2)
    seqs = {c: "".join(rng.choice("ACGT") for _ in range(2000)) for c in ("chr1", "chr2")}
    reference = write_fasta(tmp_path / "ref.fa", seqs)
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": c, "LN": 2000} for c in seqs]}
    for name, contig, span in (("other_contig", "chr2", (0, 1900)), ("partial", "chr1", (600, 1900))):
        with pysam.AlignmentFile(str(tmp_path / f"{name}.bam"), "wb", header=header) as out:
            for i, s in enumerate(range(span[0], span[1] - 100, 10)):
                read = pysam.AlignedSegment(out.header)
                read.query_name, read.reference_name, read.reference_start = f"r{i}", contig, s
                read.mapping_quality, read.cigarstring = 60, "100M"
                read.query_sequence = seqs[contig][s: s + 100]
                read.query_qualities = pysam.qualitystring_to_array("I" * 100)
                out.write(read)
        pysam.samtools.index(str(tmp_path / f"{name}.bam"))
    patients = [{"patient_id": n, "vcf": "", "vcf_sample": "", "bam": str(tmp_path / f"{n}.bam")}
                for n in ("other_contig", "partial")]
    region = Region("G", "chr1", 500, 1500)
    index = patient_sequences_shard(patients, region, str(reference), SequenceParams(), tmp_path / "default")
    rows = index.set_index("patient_id")
    assert rows["status"].to_dict() == {"other_contig": "failed", "partial": "ok"}
    assert rows.loc["other_contig", "reason"].startswith(
        "100% of the region masked as N (1000 of 1000 bases covered by fewer than bam.min_depth=3 reads; "
        "no read covers the region), more than gene_sequences.bam.max_masked_fraction=0.5")
    assert 0 < int(rows.loc["partial", "masked_bases"]) < 500
    keep_all = SequenceParams.from_config({"bam": {"max_masked_fraction": 1.0}})
    index = patient_sequences_shard(patients, region, str(reference), keep_all, tmp_path / "keep")
    assert (index["status"] == "ok").all()
    assert read_shard_sequences(tmp_path / "keep")[1]["other_contig"] == ("N" * 1000, "N" * 1000)
