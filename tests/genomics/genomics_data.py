"""Synthetic genomes, VCFs and bcftools reference runs for the genomics tests (imported by them)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pysam
import pysam.bcftools

from tessera.genomics.consensus import is_indel


def write_fasta(path: Path, seqs: dict[str, str]) -> Path:
    with open(path, "w") as f:
        for name, seq in seqs.items():
            f.write(f">{name}\n" + "".join(seq[i: i + 60] + "\n" for i in range(0, len(seq), 60)))
    pysam.faidx(str(path))
    return path


def write_vcf(path: Path, contigs: dict[str, int], samples: list[str], rows: list[tuple]) -> Path:
    """``rows``: (contig, pos0, ref, alts list, info, gts list). Writes ``path`` (.vcf.gz) + .tbi."""
    header = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={n}>" for c, n in contigs.items()),
              '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
              '##INFO=<ID=END,Number=1,Type=Integer,Description="End position">',
              '##ALT=<ID=DEL,Description="Deletion">',
              "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples])]
    lines = [
        "\t".join([c, str(p + 1), f"r{i}", ref, ",".join(alts), "50", "PASS", info, "GT", *gts])
        for i, (c, p, ref, alts, info, gts) in enumerate(sorted(rows, key=lambda r: (r[0], r[1])))
    ]
    plain = Path(str(path).removesuffix(".gz"))
    plain.write_text("\n".join(header + lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    return path


def bcftools_consensus(tmp: Path, region_seq: str, contig: str, start: int, vcf: Path, *args: str) -> str:
    """``bcftools consensus`` of one region (FASTA header ``contig:start+1-end``), as one string."""
    fa, out = tmp / "bcftools_region.fa", tmp / "bcftools_out.fa"
    fa.write_text(f">{contig}:{start + 1}-{start + len(region_seq)}\n"
                  + "".join(region_seq[i: i + 60] + "\n" for i in range(0, len(region_seq), 60)))
    pysam.bcftools.consensus("-f", str(fa), *args, "-o", str(out), str(vcf), catch_stdout=False)
    return "".join(out.read_text().split("\n")[1:])


@dataclass
class SyntheticCase:
    """A reference contig ``chrT`` and a multi-sample VCF full of the cases bcftools treats specially."""

    reference: Path
    vcf: Path
    seq: str
    samples: list[str]
    regions: list[tuple[int, int]]  # (start, end) 0-based half-open windows to compare on
    rows: list[tuple] = field(default_factory=list)


def make_synthetic_case(tmp: Path, seed: int = 11, n_samples: int = 10) -> SyntheticCase:
    """SNVs, deletions, insertions, MNPs, multi-allelic sites, <DEL>, a REF==ALT record, clustered
    overlapping records, records crossing the region edges, a soft-masked stretch and an N run;
    phased, unphased, missing and half-missing genotypes.

    bcftools writes before its buffer (and can crash) when a record crossing the region start is not
    an anchored deletion, so none is generated there; missing genotypes there are (under ``--missing N``
    the ``N`` lands before the region).
    """
    rng = random.Random(seed)
    n = 2400
    seq = "".join(rng.choice("ACGT") for _ in range(n))
    seq = seq[:400] + seq[400:700].lower() + seq[700:1000] + "N" * 20 + seq[1020:]
    r0, r1 = 300, 2100
    samples = [f"S{i}" for i in range(n_samples)]

    def gts(allow_missing: bool = True, n_alts: int = 1) -> list[str]:
        out = []
        for _ in samples:
            x = rng.random()
            if allow_missing and x < 0.06:
                out.append("./.")
            elif allow_missing and x < 0.09:
                out.append(rng.choice(["./1", "1/.", ".|1", "0|."]))
            else:
                a = [rng.randint(0, n_alts) if rng.random() < 0.55 else 0 for _ in range(2)]
                out.append(f"{a[0]}{'|' if rng.random() < 0.6 else '/'}{a[1]}")
        return out

    up = str.upper
    rows = [
        # a deletion crossing the region start, one crossing its end, an insertion at its last base
        ("chrT", r0 - 3, up(seq[r0 - 3: r0 + 3]), [up(seq[r0 - 3])], ".", gts()),
        ("chrT", r1 - 2, up(seq[r1 - 2: r1 + 3]), [up(seq[r1 - 2])], ".", gts()),
        ("chrT", r1 - 1, up(seq[r1 - 1]), [up(seq[r1 - 1]) + "GA"], ".", gts()),
    ]
    fixed = {r0 - 3, r1 - 2, r1 - 1}
    crafted = [
        (520, lambda p: [(p, up(seq[p]), [next(b for b in "ACGT" if b != up(seq[p]))]),  # SNV, then deletion on its base
                         (p, up(seq[p: p + 4]), [up(seq[p])])]),
        (800, lambda p: [(p, up(seq[p: p + 4]), [up(seq[p])]),  # deletion, then insertion on its last base
                         (p + 3, up(seq[p + 3]), [up(seq[p + 3]) + "TT"])]),
        (830, lambda p: [(p, up(seq[p]), [up(seq[p]) + "C"]),  # insertion, then deletion at the same base
                         (p, up(seq[p: p + 3]), [up(seq[p])])]),
        (860, lambda p: [(p, up(seq[p: p + 6]), [up(seq[p])]),  # deletion spanning a later SNV
                         (p + 3, up(seq[p + 3]), [next(b for b in "ACGT" if b != up(seq[p + 3]))])]),
        (900, lambda p: [(p, up(seq[p]), [next(b for b in "ACGT" if b != up(seq[p])), up(seq[p]) + "GG"])]),
        (940, lambda p: [(p, up(seq[p: p + 3]), ["".join(rng.choice("ACGT") for _ in range(3))])]),  # MNP
        (1200, lambda p: [(p, up(seq[p]), ["<DEL>"], f"END={p + 6}")]),
        (1300, lambda p: [(p, up(seq[p: p + 4]), [up(seq[p: p + 4])])]),  # REF == ALT (reference block)
        (450, lambda p: [(p, up(seq[p]), [up(seq[p]) + "ACG"])]),  # insertion in the soft-masked stretch
    ]
    for p, make in crafted:
        for rec in make(p):
            pos, ref, alts, info = (*rec, ".") if len(rec) == 3 else rec
            rows.append(("chrT", pos, ref, alts, info, gts(allow_missing=alts[0] != "<DEL>", n_alts=len(alts))))
            fixed.add(pos)
    busy = {q for p in fixed for q in range(p - 8, p + 10)}
    pos = 5
    while pos < n - 12:
        if pos in busy or "N" in seq[pos: pos + 8]:
            pos += 3
            continue
        kind, ref = rng.random(), up(seq[pos])
        if kind < 0.45:
            r, alts = ref, [rng.choice([b for b in "ACGT" if b != ref])]
        elif kind < 0.7:
            r = up(seq[pos: pos + rng.randint(2, 6)])
            alts = [r[0]]
        elif kind < 0.9:
            r, alts = ref, [ref + "".join(rng.choice("ACGT") for _ in range(rng.randint(1, 4)))]
        else:
            r, alts = up(seq[pos: pos + 2]), ["".join(rng.choice("ACGT") for _ in range(2))]
        crosses = pos < r0 < pos + len(r) or pos < r1 < pos + len(r)
        if crosses and not (is_indel(r, alts[0]) and r[0] == alts[0][0]):
            pos += 1
            continue
        rows.append(("chrT", pos, r, alts, ".", gts()))
        pos += rng.choice([1, 2, 3, 5, 8, 20, 40])
    reference = write_fasta(tmp / "ref.fa", {"chrT": seq})
    vcf = write_vcf(tmp / "calls.vcf.gz", {"chrT": n}, samples, rows)
    return SyntheticCase(reference, vcf, seq, samples, [(0, n), (r0, r1)], rows)
