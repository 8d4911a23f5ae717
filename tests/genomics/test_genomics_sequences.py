"""Per-patient haplotypes: byte-equal to bcftools consensus, strict where bcftools is silent, BAM calling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pysam
import pytest
from genomics_data import SyntheticCase, bcftools_consensus, make_synthetic_case, write_fasta, write_vcf

from tessera.demo import genome
from tessera.errors import InputError
from tessera.genomics.consensus import Haplotype, reverse_complement
from tessera.genomics.genes import Region
from tessera.genomics.inputs import vcf_samples
from tessera.genomics.sequences import (
    BamParams,
    SequenceParams,
    build_haplotypes,
    call_bam,
    patient_sequences_shard,
    read_shard_sequences,
    read_vcf_records,
)

MODES = {  # our policy -> the bcftools consensus options that should give the same haplotype h
    "as_phased": (SequenceParams(), lambda h: ["-H", str(h)]),
    "missing N": (SequenceParams(missing_genotype="N"), lambda h: ["-H", str(h), "--missing", "N"]),
    "iupac": (SequenceParams(unphased_het="iupac"), lambda h: ["-H", f"{h}pIu"]),
}


@pytest.fixture(scope="module")
def synthetic_case(tmp_path_factory) -> SyntheticCase:
    return make_synthetic_case(tmp_path_factory.mktemp("synthetic"))


@pytest.mark.parametrize("mode", list(MODES))
def test_haplotypes_byte_equal_to_bcftools_consensus(synthetic_case, tmp_path, mode):
    """Every sample, both haplotypes, the whole contig and a region whose edges cut through records."""
    params, bcftools_args = MODES[mode]
    case = synthetic_case
    compared = 0
    for start, end in case.regions:
        region = Region("T", "chrT", start, end, "+")
        bases = case.seq[start:end]
        records = read_vcf_records(str(case.vcf), case.samples, region, bases)
        for sample in case.samples:
            ours = build_haplotypes(bases, region, records, sample, params)
            for h, seq in ((1, ours.hap1), (2, ours.hap2)):
                theirs = bcftools_consensus(tmp_path, bases, "chrT", start, case.vcf, "-s", sample, *bcftools_args(h))
                assert seq == theirs, f"{mode}: {sample} hap{h} on {start}-{end} differs from bcftools"
                compared += 1
    assert compared == 2 * 2 * len(case.samples)


def test_overlapping_records_are_skipped_with_the_reason(synthetic_case):
    case = synthetic_case
    region = Region("T", "chrT", 0, len(case.seq), "+")
    records = read_vcf_records(str(case.vcf), case.samples, region, case.seq)
    events = [e for s in case.samples for e in build_haplotypes(case.seq, region, records, s, SequenceParams()).events]
    outcomes = {o for e in events for o in (e["hap1"], e["hap2"])}
    assert {"applied", "missing", "skipped:overlap"} <= outcomes
    # the SNV inside the 5-bp deletion at 861 is skipped on every haplotype that carries the deletion
    for s in case.samples:
        seqs = build_haplotypes(case.seq, region, records, s, SequenceParams())
        by_pos = {(e["pos"], e["ref"]): e for e in seqs.events}
        deletion, snv = by_pos.get((861, case.seq[860:866].upper())), by_pos.get((864, case.seq[863].upper()))
        for h in ("hap1", "hap2"):
            if deletion and deletion[h] == "applied" and snv and snv[h] not in ("reference", "missing"):
                assert snv[h] == "skipped:overlap"


def test_unphased_policies_match_bcftools_on_the_equivalent_vcf(synthetic_case, tmp_path):
    """'alt' / 'reference' equal bcftools -H 1/2 on a VCF whose unphased hets are rewritten to 1|1 / 0|0."""
    case = synthetic_case
    for policy, rewrite in (("alt", lambda a, b: f"{max(a, b)}|{max(a, b)}"), ("reference", lambda a, b: "0|0")):
        rows = []
        for c, p, ref, alts, info, gts in case.rows:
            new = []
            for gt in gts:
                a, sep, b = gt.partition("/") if "/" in gt else gt.partition("|")
                het = sep == "/" and "." not in (a, b) and a != b and "0" in (a, b)
                new.append(rewrite(int(a), int(b)) if het else gt)
            rows.append((c, p, ref, alts, info, new))
        vcf = write_vcf(tmp_path / f"{policy}.vcf.gz", {"chrT": len(case.seq)}, case.samples, rows)
        start, end = case.regions[1]
        region, bases = Region("T", "chrT", start, end), case.seq[start:end]
        records = read_vcf_records(str(case.vcf), case.samples, region, bases)
        for sample in case.samples[:5]:
            ours = build_haplotypes(bases, region, records, sample, SequenceParams(unphased_het=policy))
            for h, seq in ((1, ours.hap1), (2, ours.hap2)):
                assert seq == bcftools_consensus(tmp_path, bases, "chrT", start, vcf, "-s", sample, "-H", str(h))


def test_ref_mismatch_is_an_error_naming_the_position(tmp_path):
    seq = "ACGTACGTACGTACGTACGTACGTACGTACGT"
    write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    vcf = write_vcf(tmp_path / "v.vcf.gz", {"chr1": len(seq)}, ["S"], [("chr1", 9, "G", ["T"], ".", ["0/0"])])
    with pytest.raises(InputError, match=r"REF allele does not match .* at chr1:10: VCF REF G, FASTA C"):
        read_vcf_records(str(vcf), ["S"], Region("R", "chr1", 0, len(seq)), seq)


def test_contigs_are_harmonised_and_a_missing_contig_is_an_error(tmp_path):
    seq = "ACGTACGTACGTACGTACGTACGTACGTACGT"
    region = Region("R", "chr1", 0, len(seq))
    ensembl = write_vcf(tmp_path / "ensembl.vcf.gz", {"1": len(seq)}, ["S"], [("1", 4, "A", ["G"], ".", ["1|0"])])
    recs = read_vcf_records(str(ensembl), ["S"], region, seq)
    assert build_haplotypes(seq, region, recs, "S", SequenceParams()).hap1 == seq[:4] + "G" + seq[5:]
    other = write_vcf(tmp_path / "other.vcf.gz", {"chr2": len(seq)}, ["S"], [("chr2", 4, "A", ["G"], ".", ["1|0"])])
    with pytest.raises(InputError, match=r"VCF has no contig matching 'chr1' \(tried chr1, 1"):
        read_vcf_records(str(other), ["S"], region, seq)


def test_haploid_genotype_applies_to_both_haplotypes_and_minus_strand_is_reverse_complemented(tmp_path):
    seq = "AACCGGTTAACCGGTTAACC"
    write_fasta(tmp_path / "ref.fa", {"chrX": seq})
    vcf = write_vcf(tmp_path / "v.vcf.gz", {"chrX": len(seq)}, ["M"], [("chrX", 2, "C", ["T"], ".", ["1"])])
    plus, minus = Region("R", "chrX", 0, len(seq), "+"), Region("R", "chrX", 0, len(seq), "-")
    recs = read_vcf_records(str(vcf), ["M"], plus, seq)
    fwd = build_haplotypes(seq, plus, recs, "M", SequenceParams())
    assert fwd.hap1 == fwd.hap2 == "AATCGGTTAACCGGTTAACC"
    rev = build_haplotypes(seq, minus, recs, "M", SequenceParams())
    assert rev.hap1 == "GGTTAACCGGTTAACCGATT" == reverse_complement(fwd.hap1)
    assert build_haplotypes(seq, minus, recs, "M", SequenceParams(reverse_complement_minus=False)).hap1 == fwd.hap1
    assert reverse_complement("ACgtRYn") == "nRYacGT"


def test_shard_records_failures_and_goes_on(synthetic_case, tmp_path):
    case = synthetic_case
    patients = [
        {"patient_id": "P1", "vcf": str(case.vcf), "vcf_sample": "S1", "bam": ""},
        {"patient_id": "P2", "vcf": str(case.vcf), "vcf_sample": "S2", "bam": ""},
        {"patient_id": "P3", "vcf": "", "vcf_sample": "", "bam": str(tmp_path / "absent.bam")},
    ]
    region = Region("T", "chrT", *case.regions[1], "-")
    index = patient_sequences_shard(patients, region, str(case.reference), SequenceParams(), tmp_path / "shard")
    assert index.set_index("patient_id")["status"].to_dict() == {"P1": "ok", "P2": "ok", "P3": "failed"}
    assert "cannot read BAM" in index.set_index("patient_id").loc["P3", "reason"]
    table, seqs = read_shard_sequences(tmp_path / "shard")
    assert set(seqs) == {"P1", "P2"}
    variants = pd.read_csv(tmp_path / "shard" / "variants.tsv", sep="\t")
    assert set(variants["patient_id"]) == {"P1", "P2"} and {"hap1", "hap2", "gt"} <= set(variants.columns)
    # the FASTA holds the reverse complement of the bcftools haplotype (minus strand)
    bases = case.seq[region.start: region.end]
    records = read_vcf_records(str(case.vcf), ["S1"], region, bases)
    fwd = build_haplotypes(bases, Region("T", "chrT", region.start, region.end, "+"), records, "S1", SequenceParams())
    assert seqs["P1"] == (reverse_complement(fwd.hap1), reverse_complement(fwd.hap2))
    # a sample absent from the VCF fails that patient alone, with the reason; the VCF's others go on
    bad = [{"patient_id": "P9", "vcf": str(case.vcf), "vcf_sample": "NOPE", "bam": ""}, patients[0]]
    index = patient_sequences_shard(bad, region, str(case.reference), SequenceParams(), tmp_path / "shard2")
    by_patient = index.set_index("patient_id")
    assert by_patient["status"].to_dict() == {"P1": "ok", "P9": "failed"}
    assert "sample 'NOPE' is not in the VCF" in by_patient.loc["P9", "reason"]
    assert f"its samples: {', '.join(case.samples)}" in by_patient.loc["P9", "reason"]
    assert read_shard_sequences(tmp_path / "shard2")[1]["P1"] == seqs["P1"]


def test_bam_consensus_recovers_a_known_het_snv_and_hom_deletion(tmp_path, monkeypatch):
    """Reads simulated from two haplotypes (demo simulator); the BAM contig is '1', the FASTA's 'chr1'."""
    rng = np.random.default_rng(3)
    seq = "".join(rng.choice(list("ACGT"), 16_000))
    write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    snv = genome.Variant("1", 9_000, seq[9_000], "A" if seq[9_000] != "A" else "C")
    deletion = genome.Variant("1", 9_500, seq[9_500:9_504], seq[9_500])
    monkeypatch.setattr(genome, "GENES", (genome.Gene("G", "G1", "1", 8_000, 11_000, "+", ((8_000, 11_000),)),))
    genome.write_bam(tmp_path / "s.bam", rng, {"1": seq}, ([snv, deletion], [deletion]), "s", flank=1_000, coverage=30)
    region = Region("G", "chr1", 8_000, 11_000)
    records, masked = call_bam(str(tmp_path / "s.bam"), region, str(tmp_path / "ref.fa"), BamParams(), tmp_path)
    bases = seq[8_000:11_000]
    seqs = build_haplotypes(bases, region, records, "bam", SequenceParams(), masked=masked)
    with_del = bases[:1_501] + bases[1_504:]
    assert not masked.any()
    assert seqs.hap1 == with_del  # 0/1 unphased SNV: reference on hap1 (as_phased), ALT on hap2
    assert seqs.hap2 == with_del[:1_000] + snv.alt + with_del[1_001:]
    assert {(e["pos"], e["gt"]) for e in seqs.events} == {(9_001, "0/1"), (9_501, "1/1")}
    # where no read reaches, the sequence is N, not a silent reference copy
    edge = Region("E", "chr1", 6_500, 7_200)
    records, masked = call_bam(str(tmp_path / "s.bam"), edge, str(tmp_path / "ref.fa"), BamParams(), tmp_path)
    out = build_haplotypes(seq[6_500:7_200], edge, records, "bam", SequenceParams(), masked=masked)
    assert masked[:100].all() and out.hap1[:100] == "N" * 100 and out.masked_bases == masked.sum()
    with pysam.AlignmentFile(str(tmp_path / "s.bam")) as bam:
        assert bam.references == ("1",)


def test_haplotype_buffer_edits_follow_bcftools_rules():
    """Hand-checked cases: case of ALT follows the FASTA; anchored indel after a deletion is allowed."""
    h = Haplotype("acgtACGT", 100)
    assert h.apply(101, 1, "C", "T") is None and h.sequence == "atgtACGT"
    assert h.apply(101, 1, "C", "G") == "overlap"
    assert h.apply(101, 3, "CGT", "C") is None and h.sequence == "atACGT"  # anchored on the SNV's base
    assert h.apply(100, 1, "A", "G") == "overlap"  # starts before the end of the applied deletion
    h = Haplotype("ACGTACGT", 0)
    assert h.apply(2, 3, "GTA", "G") is None and h.apply(4, 1, "A", "AC") is None
    assert h.sequence == "ACGCCGT"  # bcftools places an insertion anchored on a deleted base after the gap


def test_vcf_and_bam_on_s3_are_staged_with_their_index(synthetic_case, tmp_path, monkeypatch):
    from moto import mock_aws

    case = synthetic_case
    region = Region("T", "chrT", *case.regions[1], "+")
    local = [{"patient_id": "P1", "vcf": str(case.vcf), "vcf_sample": "S3", "bam": ""}]
    patient_sequences_shard(local, region, str(case.reference), SequenceParams(), tmp_path / "local")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="cohort")
        for suffix in ("", ".tbi"):
            s3.upload_file(f"{case.vcf}{suffix}", "cohort", f"vcf/calls.vcf.gz{suffix}")
        remote = [{"patient_id": "P1", "vcf": "s3://cohort/vcf/calls.vcf.gz", "vcf_sample": "S3", "bam": ""},
                  {"patient_id": "P2", "vcf": "", "vcf_sample": "", "bam": "s3://cohort/absent.bam"}]
        index = patient_sequences_shard(remote, region, str(case.reference), SequenceParams(), tmp_path / "s3")
        assert vcf_samples("s3://cohort/vcf/calls.vcf.gz") == case.samples  # the planning check reads S3 headers
    assert index["status"].tolist() == ["ok", "failed"]
    assert (tmp_path / "s3" / "sequences.fa").read_text() == (tmp_path / "local" / "sequences.fa").read_text()


def test_filtered_records_and_unphased_hets_are_recorded_when_not_applied(tmp_path):
    seq = "AACCGGTTAACCGGTTAACC"
    rows = [("chr1", 2, "C", ["T"], ".", ["1|1"]), ("chr1", 6, "T", ["A"], ".", ["0/1"])]
    vcf = write_vcf(tmp_path / "v.vcf.gz", {"chr1": len(seq)}, ["S"], rows)
    text = pysam.VariantFile(str(vcf))
    header = text.header
    header.filters.add("LowQual", None, None, "low quality")
    with pysam.VariantFile(str(tmp_path / "f.vcf.gz"), "wz", header=header) as out:
        for i, rec in enumerate(text):
            if i == 0:
                rec.filter.clear()
                rec.filter.add("LowQual")
            out.write(rec)
    pysam.tabix_index(str(tmp_path / "f.vcf.gz"), preset="vcf", force=True)
    region = Region("R", "chr1", 0, len(seq))
    recs = read_vcf_records(str(tmp_path / "f.vcf.gz"), ["S"], region, seq)
    out = build_haplotypes(seq, region, recs, "S", SequenceParams(apply_filtered=False, unphased_het="reference"))
    assert out.hap1 == out.hap2 == seq
    assert [(e["pos"], e["hap1"], e["hap2"]) for e in out.events] == [
        (3, "skipped:filter LowQual", "skipped:filter LowQual"), (7, "skipped:unphased", "skipped:unphased")]
    assert out.counts()["skipped"] == 2


def test_missing_genotype_n_before_the_region_leaves_the_region_as_bcftools_does(tmp_path):
    """Under ``--missing N`` a record starting before the region puts its N before it: the region keeps its
    length (the old code inserted an N one base before the region's end), and the record still blocks the
    records overlapping it. Byte-equal to bcftools 1.24 ``consensus -M N`` for every genotype combination."""
    seq = "GATTACACCGTAGGCTTACGATCGGATCCATGCAAGTC" * 2
    r0, r1 = 20, 60
    gts = ["./.", ".|1", "1|.", "0|1", "./0", "1|1"]
    samples = [f"S{i}_{j}" for i in range(len(gts)) for j in range(len(gts))]
    rows = [  # an anchored deletion 3 bp before the region, a SNV at its start, a SNV inside it
        ("chrT", r0 - 3, seq[r0 - 3: r0 + 3], [seq[r0 - 3]], ".", [gts[int(s[1])] for s in samples]),
        ("chrT", r0 + 1, seq[r0 + 1], ["A" if seq[r0 + 1] != "A" else "C"], ".", [gts[int(s[3])] for s in samples]),
        ("chrT", r0 + 9, seq[r0 + 9: r0 + 11], [seq[r0 + 9]], ".", ["1|1"] * len(samples)),
    ]
    vcf = write_vcf(tmp_path / "v.vcf.gz", {"chrT": len(seq)}, samples, rows)
    region, bases = Region("T", "chrT", r0, r1), seq[r0:r1]
    records = read_vcf_records(str(vcf), samples, region, bases)
    params = SequenceParams(missing_genotype="N")
    for sample in samples:
        ours = build_haplotypes(bases, region, records, sample, params)
        for h, seq_h in ((1, ours.hap1), (2, ours.hap2)):
            theirs = bcftools_consensus(tmp_path, bases, "chrT", r0, vcf, "-s", sample, "-H", str(h), "-M", "N")
            assert seq_h == theirs, f"{sample} hap{h}: {seq_h} != bcftools {theirs}"
    ours = build_haplotypes(bases, region, records, "S0_5", params)
    assert len(ours.hap1) == len(bases) - 1 and "N" not in ours.hap1
    assert ours.events[0]["hap1"] == "skipped:before region"
