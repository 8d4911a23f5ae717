"""Demo genomics: a small reference with two genes, a GTF, a multi-sample VCF and simulated BAMs.

- ``reference.fa`` (+ ``.fai``): contigs ``chr1`` (30 kb) and ``chr2`` (20 kb) of random sequence,
  with a soft-masked (lowercase) stretch inside GENEB and a run of N upstream of GENEA, as real
  references have.
- ``genes.gtf``: GENEA on ``chr1`` (+ strand) and GENEB on ``chr2`` (− strand), gene / transcript /
  exon lines.
- ``variants.vcf.gz`` (+ ``.tbi``): bgzipped, tabix-indexed, one sample column per patient with a
  VCF; SNVs and small indels around both genes, phased (``|``) and unphased (``/``) genotypes,
  a few missing (``./.``) genotypes, one pair of overlapping records (a deletion spanning an SNV),
  and the planted variant (see :data:`PLANTED_VARIANT`).
- ``bam/{patient}.bam`` (+ ``.bai``): coordinate-sorted reads simulated from the two haplotypes of
  the patients that have no VCF, with CIGARs that encode their indels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam

CONTIGS = {"chr1": 30_000, "chr2": 20_000}


@dataclass(frozen=True)
class Gene:
    name: str
    gene_id: str
    contig: str
    start: int  # 0-based, inclusive
    end: int  # 0-based, exclusive
    strand: str
    exons: tuple[tuple[int, int], ...]  # 0-based half-open


GENES = (
    Gene("GENEA", "DEMO0000001", "chr1", 10_000, 13_000, "+", ((10_000, 10_600), (11_200, 11_900), (12_400, 13_000))),
    Gene("GENEB", "DEMO0000002", "chr2", 5_000, 7_400, "-", ((5_000, 5_800), (6_300, 7_400))),
)


@dataclass(frozen=True)
class Variant:
    contig: str
    pos: int  # 0-based position of the first REF base
    ref: str
    alt: str
    vid: str = "."


#: The planted variant: a 7-bp deletion in GENEA's second exon. It shifts the 6-mer frame of every
#: token after it, so it changes the gene's embedding clearly. Carriers have a higher hazard.
PLANTED_VARIANT_POS = 11_500  # 0-based anchor base; VCF POS = 11,501


def _random_bases(rng: np.random.Generator, n: int, gc: float = 0.42) -> str:
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(rng.choice(list("ACGT"), size=n, p=p))


def make_reference(rng: np.random.Generator) -> dict[str, str]:
    """Contig name → sequence (uppercase, with one lowercase stretch and one N run)."""
    seqs = {name: _random_bases(rng, length) for name, length in CONTIGS.items()}
    chr1, chr2 = seqs["chr1"], seqs["chr2"]
    seqs["chr1"] = chr1[:9_650] + "N" * 25 + chr1[9_675:]  # N run 325 bp upstream of GENEA
    seqs["chr2"] = chr2[:6_000] + chr2[6_000:6_180].lower() + chr2[6_180:]  # soft-masked repeat in GENEB
    return seqs


def write_fasta(path: Path, seqs: dict[str, str], width: int = 60) -> None:
    with open(path, "w") as f:
        for name, seq in seqs.items():
            f.write(f">{name}\n")
            f.writelines(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
    pysam.faidx(str(path))


def write_gtf(path: Path) -> None:
    lines = []
    for g in GENES:
        attrs = f'gene_id "{g.gene_id}"; gene_name "{g.name}"; gene_biotype "protein_coding";'
        tx = f'{attrs} transcript_id "{g.gene_id}.T1";'
        lines.append(f"{g.contig}\tdemo\tgene\t{g.start + 1}\t{g.end}\t.\t{g.strand}\t.\t{attrs}")
        lines.append(f"{g.contig}\tdemo\ttranscript\t{g.start + 1}\t{g.end}\t.\t{g.strand}\t.\t{tx}")
        for i, (s, e) in enumerate(g.exons, 1):
            lines.append(f'{g.contig}\tdemo\texon\t{s + 1}\t{e}\t.\t{g.strand}\t.\t{tx} exon_number "{i}";')
    path.write_text("\n".join(lines) + "\n")


def draw_variants(rng: np.random.Generator, seqs: dict[str, str]) -> list[Variant]:
    """Background SNVs and indels around each gene, one overlapping pair, and the planted deletion."""
    variants: list[Variant] = []
    for g in GENES:
        seq = seqs[g.contig]
        pair = g.start + 1_800  # anchor of the overlapping pair below, clear of the planted deletion
        assert abs(pair - PLANTED_VARIANT_POS) > 100
        positions = sorted(rng.choice(np.arange(g.start - 200, g.end + 200, 40), size=30, replace=False))
        for k, pos in enumerate(positions):
            pos = int(pos) + int(rng.integers(0, 20))
            if min(abs(pos - PLANTED_VARIANT_POS), abs(pos - pair)) < 30 or seq[pos].upper() == "N":
                continue
            ref = seq[pos].upper()
            kind = k % 8
            if kind == 3:  # insertion of 1-4 bases after the anchor
                variants.append(Variant(g.contig, pos, ref, ref + _random_bases(rng, int(rng.integers(1, 5)))))
            elif kind == 6:  # deletion of 1-5 bases after the anchor
                n = int(rng.integers(1, 6))
                variants.append(Variant(g.contig, pos, seq[pos : pos + n + 1].upper(), ref))
            else:
                variants.append(Variant(g.contig, pos, ref, str(rng.choice([b for b in "ACGT" if b != ref]))))
        # An overlapping pair: a 4-bp deletion and an SNV inside it (bcftools consensus skips the SNV).
        variants.append(Variant(g.contig, pair, seq[pair : pair + 5].upper(), seq[pair].upper()))
        variants.append(Variant(g.contig, pair + 2, seq[pair + 2].upper(), "A" if seq[pair + 2].upper() != "A" else "C"))
    p = PLANTED_VARIANT_POS
    variants.append(Variant("chr1", p, seqs["chr1"][p : p + 8].upper(), seqs["chr1"][p].upper(), "planted_del7"))
    return sorted(variants, key=lambda v: (v.contig, v.pos, len(v.ref)))


def draw_genotypes(
    rng: np.random.Generator, variants: list[Variant], planted_dosage: dict[str, int]
) -> dict[str, list[tuple[int | None, int | None, bool]]]:
    """Per patient, per variant: (allele on hap1, allele on hap2, phased). None = missing call."""
    freqs = rng.uniform(0.05, 0.5, len(variants))
    genotypes = {}
    for patient, dosage in planted_dosage.items():
        calls = []
        for v, af in zip(variants, freqs):
            if v.vid == "planted_del7":
                alleles = [1] * dosage + [0] * (2 - dosage)
                calls.append((alleles[0], alleles[1], True))
            elif rng.random() < 0.03:
                calls.append((None, None, False))
            else:
                a, b = (int(x) for x in rng.random(2) < af)
                calls.append((a, b, bool(rng.random() < 0.7)))
        genotypes[patient] = calls
    return genotypes


def write_vcf(
    path: Path, seqs: dict[str, str], variants: list[Variant],
    genotypes: dict[str, list[tuple[int | None, int | None, bool]]], sample_of: dict[str, str],
) -> Path:
    """Write a bgzipped, tabix-indexed multi-sample VCF; returns the ``.vcf.gz`` path."""
    patients = sorted(sample_of)
    header = ["##fileformat=VCFv4.2", "##source=tessera-demo", "##reference=reference.fa"]
    header += [f"##contig=<ID={c},length={len(s)}>" for c, s in seqs.items()]
    header.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    header.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                             *(sample_of[p] for p in patients)]))
    lines = []
    for i, v in enumerate(variants):
        calls = []
        for p in patients:
            a, b, phased = genotypes[p][i]
            calls.append("./." if a is None else f"{a}{'|' if phased else '/'}{b}")
        lines.append("\t".join([v.contig, str(v.pos + 1), v.vid, v.ref, v.alt, "60", "PASS", ".", "GT", *calls]))
    plain = path.with_suffix("")  # variants.vcf
    plain.write_text("\n".join(header + lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)  # writes variants.vcf.gz + .tbi, removes plain
    return path


def haplotype(ref: str, offset: int, variants: list[Variant]) -> tuple[str, np.ndarray]:
    """Apply non-overlapping ``variants`` to ``ref`` (which starts at contig position ``offset``).

    Returns the haplotype and, per haplotype base, its 0-based reference position (-1 = inserted).
    """
    seq, pos_map, cursor = [], [], 0
    for v in sorted(variants, key=lambda v: v.pos):
        start = v.pos - offset
        if start < cursor:  # overlaps an applied variant
            continue
        seq.append(ref[cursor:start])
        pos_map.extend(range(offset + cursor, offset + start))
        seq.append(v.alt)
        if len(v.ref) == len(v.alt):
            pos_map.extend(range(v.pos, v.pos + len(v.alt)))
        else:  # anchor base, then inserted bases (-1) or nothing for deleted ones
            pos_map.append(v.pos)
            pos_map.extend([-1] * max(0, len(v.alt) - 1))
        cursor = start + len(v.ref)
    seq.append(ref[cursor:])
    pos_map.extend(range(offset + cursor, offset + len(ref)))
    return "".join(seq), np.asarray(pos_map, np.int64)


def _cigar(pos_map: np.ndarray) -> list[tuple[int, int]] | None:
    """CIGAR ops (pysam codes: 0 M, 1 I, 2 D) of a read whose bases map to ``pos_map``."""
    if pos_map[0] < 0 or pos_map[-1] < 0:
        return None
    ops: list[tuple[int, int]] = []
    prev = None
    for p in pos_map:
        if p < 0:
            op = (1, 1)
        else:
            if prev is not None and p > prev + 1:
                ops.append((2, int(p - prev - 1)))
            op, prev = (0, 1), p
        if ops and ops[-1][0] == op[0]:
            ops[-1] = (op[0], ops[-1][1] + 1)
        else:
            ops.append(op)
    return ops


def write_bam(
    path: Path, rng: np.random.Generator, seqs: dict[str, str], haplotype_variants: tuple[list[Variant], list[Variant]],
    sample: str, flank: int = 1_000, read_length: int = 100, coverage: int = 30, error_rate: float = 0.002,
) -> None:
    """Simulate reads over each gene ± ``flank`` from two haplotypes; write a sorted, indexed BAM."""
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}, "SQ": [{"SN": c, "LN": len(s)} for c, s in seqs.items()],
              "RG": [{"ID": sample, "SM": sample}]}
    unsorted = path.with_suffix(".unsorted.bam")
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        n = 0
        for g in GENES:
            lo, hi = g.start - flank, g.end + flank
            ref = seqs[g.contig][lo:hi].upper()
            tid = list(seqs).index(g.contig)
            for hap_vars in haplotype_variants:
                hap, pos_map = haplotype(ref, lo, [v for v in hap_vars if v.contig == g.contig])
                for _ in range(coverage * len(hap) // (2 * read_length)):
                    s = int(rng.integers(0, len(hap) - read_length))
                    cigar = _cigar(pos_map[s : s + read_length])
                    if cigar is None:
                        continue
                    bases = np.array(list(hap[s : s + read_length]))
                    errors = rng.random(read_length) < error_rate
                    bases[errors] = rng.choice(list("ACGT"), errors.sum())
                    read = pysam.AlignedSegment()
                    read.query_name, read.reference_id = f"r{n}", tid
                    read.reference_start, read.mapping_quality = int(pos_map[s]), 60
                    read.cigartuples, read.query_sequence = cigar, "".join(bases)
                    read.flag = 16 if rng.random() < 0.5 else 0
                    read.query_qualities = pysam.qualitystring_to_array("I" * read_length)
                    read.set_tag("RG", sample)
                    out.write(read)
                    n += 1
    pysam.sort("--no-PG", "-o", str(path), str(unsorted))  # no @PG line: it would hold this run's paths
    unsorted.unlink()
    pysam.index(str(path))
