"""Per-patient sequences of one gene region: both haplotypes, from a VCF or, failing that, a BAM.

**From a VCF** (the patient's ``vcf_sample`` column): records overlapping the region are applied per
haplotype with ``bcftools consensus -s SAMPLE -H 1|2`` semantics (see :mod:`tessera.genomics.consensus`;
the tests check byte-equality against ``pysam.bcftools.consensus``). Policies (config ``gene_sequences``):

- ``missing_genotype``: ``reference`` (default; bcftools' default: a missing allele keeps the
  reference) or ``N`` (bcftools ``--missing N``: the record's first reference base becomes ``N``).
- ``unphased_het``: how an unphased heterozygous genotype (``0/1``) is split over the two haplotypes:
  ``as_phased`` (default; GT order taken as the phase, bcftools ``-H 1``/``-H 2``), ``iupac`` (both
  haplotypes get the IUPAC ambiguity code, bcftools ``-H 1pIu``/``-H 2pIu``; the tokenizer reads it as
  ``N``), ``alt`` (the ALT allele on both haplotypes) or ``reference`` (left as reference, recorded as
  skipped). Phased and homozygous genotypes are never affected.
- ``apply_filtered``: ``true`` (default, as bcftools) applies records whatever their FILTER; ``false``
  applies only ``PASS``/``.`` records.

Where we are stricter than bcftools: every record's REF is checked against the FASTA, whatever the
genotype (a mismatch means the VCF belongs to another assembly: error naming the position); contigs are
harmonised (``chr1``/``1``) and a VCF with no matching contig is an error; symbolic ALTs other than
``<DEL>``/``<*>``/``<NON_REF>`` and the ``*`` allele are skipped with a recorded reason instead of
aborting. A haploid genotype (chrX/Y in males, chrM) is applied to both haplotypes: there is one copy,
and bcftools ``-H 2`` would leave it out of the second.

**From a BAM** (no VCF): variants are called over the region with ``bcftools mpileup | bcftools call
-m`` (the bcftools consensus how-to), positions covered by fewer than ``bam.min_depth`` reads (deletions
counted) become ``N``, calls below ``bam.min_qual`` or overlapping a masked base are skipped, and the
calls (unphased) are applied like a VCF's. A patient with more than ``bam.max_masked_fraction`` of the
region masked (e.g. a BAM without reads on the gene's contig) fails with that reason instead of an
all-``N`` haplotype.

Minus-strand regions are reverse-complemented after the variants are applied (``reverse_complement_minus``).
Each patient's variants applied, skipped (with the reason) and missing are recorded per haplotype.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from tessera.atomic import atomic_path
from tessera.errors import InputError, TesseraError
from tessera.genomics.consensus import GVCF_REF_ALTS, Haplotype, iupac_allele, reverse_complement
from tessera.genomics.contigs import match_contig
from tessera.genomics.genes import Region
from tessera.genomics.inputs import absent_sample_error, index_error, vcf_samples
from tessera.uri import download, is_s3, split_s3

log = logging.getLogger(__name__)

MISSING_POLICIES = ("reference", "N")
UNPHASED_POLICIES = ("as_phased", "iupac", "alt", "reference")
INDEX_COLUMNS = [
    "patient_id", "status", "reason", "source", "sample", "region", "hap1_length", "hap2_length",
    "hap1_applied", "hap2_applied", "skipped", "missing", "masked_bases",
]
VARIANT_COLUMNS = ["patient_id", "contig", "pos", "id", "ref", "alt", "gt", "hap1", "hap2"]
FASTA_NAME, INDEX_NAME, VARIANTS_NAME = "sequences.fa", "index.tsv", "variants.tsv"


@dataclass(frozen=True)
class BamParams:
    """Variant calling from reads (config ``gene_sequences.bam``)."""

    min_depth: int = 3  # positions with fewer reads (deletions counted) become N
    min_mapq: int = 20
    min_baseq: int = 13
    min_qual: float = 20.0  # calls with a lower QUAL are skipped
    max_masked_fraction: float = 0.5  # a patient with more of the region masked fails (no usable haplotype)


@dataclass(frozen=True)
class SequenceParams:
    """How per-patient sequences are built (config ``gene_sequences``, minus the region keys)."""

    missing_genotype: str = "reference"
    unphased_het: str = "as_phased"
    apply_filtered: bool = True
    reverse_complement_minus: bool = True
    bam: BamParams = field(default_factory=BamParams)

    def __post_init__(self) -> None:
        if self.missing_genotype not in MISSING_POLICIES:
            raise ValueError(f"missing_genotype must be one of {MISSING_POLICIES}, not {self.missing_genotype!r}")
        if self.unphased_het not in UNPHASED_POLICIES:
            raise ValueError(f"unphased_het must be one of {UNPHASED_POLICIES}, not {self.unphased_het!r}")

    @classmethod
    def from_config(cls, cfg: dict) -> "SequenceParams":
        names = {f.name for f in fields(cls)} - {"bam"}
        return cls(**{k: v for k, v in cfg.items() if k in names}, bam=BamParams(**cfg.get("bam", {})))


@dataclass
class PatientSequences:
    """Both haplotypes of one patient's region (strand-oriented) and what went into them."""

    hap1: str
    hap2: str
    events: list[dict]  # VARIANT_COLUMNS minus patient_id, one per record not plainly reference
    masked_bases: int = 0

    def counts(self) -> dict:
        applied = [sum(1 for e in self.events if e[h] in ("applied", "iupac")) for h in ("hap1", "hap2")]
        return {
            "hap1_applied": applied[0], "hap2_applied": applied[1],
            "skipped": sum(1 for e in self.events if any(e[h].startswith("skipped") for h in ("hap1", "hap2"))),
            "missing": sum(1 for e in self.events if "missing" in (e["hap1"], e["hap2"]) or "N" in (e["hap1"], e["hap2"])),
            "masked_bases": self.masked_bases,
        }


@dataclass(frozen=True)
class VariantRecord:
    """A VCF record as the consensus needs it, with the genotypes of the samples read."""

    pos: int  # 0-based
    rlen: int
    ref: str
    alts: tuple[str, ...]
    vid: str
    filters: str
    alleles_by_sample: dict[str, tuple]  # sample -> (GT tuple with None for '.', phased)

    @property
    def alleles(self) -> list[str]:
        return [self.ref, *self.alts]


def _allele_choice(gt: tuple, phased: bool, hap: int, policy: str) -> tuple[str, int | None]:
    """What a genotype puts on haplotype ``hap`` (0 or 1): ``(kind, allele index)``.

    kinds: ``allele`` (index, 0 = reference), ``missing``, ``iupac`` (index None: all present alleles),
    ``skipped:unphased`` (policy ``reference``).
    """
    if len(gt) == 0:  # no GT field: bcftools leaves the record out, even with --missing
        return "no genotype", None
    if len(gt) == 1:  # haploid: the one copy on both haplotypes
        return ("missing", None) if gt[0] is None else ("allele", gt[0])
    called = {a for a in gt if a is not None}
    unphased_het = not phased and len(called) > 1
    if policy == "iupac" and not phased:
        return ("iupac", None) if called else ("missing", None)
    if unphased_het and 0 in called and len(called) == 2:
        if policy == "alt":
            return "allele", max(called)
        if policy == "reference":
            return "skipped:unphased", None
    a = gt[hap] if hap < len(gt) else None
    return ("missing", None) if a is None else ("allele", a)


def _reference_only(rec: VariantRecord) -> bool:
    """Every ALT is the reference (none, ``<*>``/``<NON_REF>``, or equal to REF): htslib's VCF_REF-only record."""
    return all(a in GVCF_REF_ALTS or a.upper() == rec.ref.upper() for a in rec.alts)


def build_haplotypes(
    reference: str, region: Region, records: list[VariantRecord], sample: str, params: SequenceParams,
    masked: np.ndarray | None = None,
) -> PatientSequences:
    """Apply one sample's genotypes of ``records`` to ``reference`` (the region's bases, forward strand).

    ``masked``: optional boolean array over the region; masked bases become N and records overlapping
    them are skipped (low BAM coverage).
    """
    haps = [Haplotype(reference, region.start), Haplotype(reference, region.start)]
    masked_pos = np.flatnonzero(masked) + region.start if masked is not None else np.empty(0, np.int64)
    for h in haps:
        h.mask(masked_pos)
    events = []
    for rec in records:
        gt, phased = rec.alleles_by_sample[sample]
        outcome = [_apply_record(h, rec, gt, phased, i, params, masked_pos, region) for i, h in enumerate(haps)]
        if any(o != "reference" for o in outcome):
            events.append({
                "contig": region.contig, "pos": rec.pos + 1, "id": rec.vid, "ref": rec.ref, "alt": ",".join(rec.alts),
                "gt": _gt_string(gt, phased), "hap1": outcome[0], "hap2": outcome[1],
            })
    seqs = [h.sequence for h in haps]
    if region.strand == "-" and params.reverse_complement_minus:
        seqs = [reverse_complement(s) for s in seqs]
    return PatientSequences(seqs[0], seqs[1], events, int(len(masked_pos)))


def _apply_record(
    hap: Haplotype, rec: VariantRecord, gt: tuple, phased: bool, index: int, params: SequenceParams,
    masked_pos: np.ndarray, region: Region,
) -> str:
    """Apply ``rec`` to one haplotype; return what happened (``applied``, ``reference``, ``skipped:...``)."""
    kind, ialt = _allele_choice(gt, phased, index, params.unphased_het)
    if kind == "allele" and ialt == 0:
        return "reference"
    if kind.startswith("skipped"):
        return kind
    if kind == "no genotype":
        return "missing"
    if not params.apply_filtered and rec.filters not in ("PASS", "."):
        return f"skipped:filter {rec.filters}"
    if len(masked_pos) and np.any((masked_pos >= rec.pos) & (masked_pos < rec.pos + rec.rlen)):
        return "skipped:low coverage"
    ref, rlen, outcome = rec.ref, rec.rlen, "applied"
    if kind == "iupac":
        ialt, alt = iupac_allele(rec.alleles, {a for a in gt if a is not None})
        outcome = "iupac"
    elif kind == "allele":
        if ialt >= len(rec.alleles):
            raise InputError(f"genotype allele {ialt} but only {len(rec.alts)} ALT allele(s) at {region.contig}:"
                             f"{rec.pos + 1}", fix="repair the VCF (bcftools norm -m -any)")
        alt = rec.alleles[ialt]
    else:  # missing
        if params.missing_genotype == "reference":
            return "missing"
        if rec.rlen > 1 and _reference_only(rec):  # a missing gVCF block: all of it becomes N
            alt = "N" * rec.rlen
        else:
            ref, rlen, alt = rec.ref[0], 1, "N"
        ialt, outcome = 1, "N"
    if ialt == 0:
        return "reference"
    if alt in GVCF_REF_ALTS:
        hap.freeze(rec.pos, rec.rlen)
        return "reference"
    if alt == "*" or (alt.startswith("<") and alt.upper() != "<DEL>") or "[" in alt or "]" in alt:
        return f"skipped:unsupported allele {alt}"
    why = hap.apply(rec.pos, rlen, ref, alt)
    return outcome if why is None else f"skipped:{why}"


def _gt_string(gt: tuple, phased: bool) -> str:
    return ("|" if phased else "/").join("." if a is None else str(a) for a in gt)


def _check_ref(rec, region_bases: str, region: Region, vcf: str) -> None:
    """REF must equal the FASTA (case-insensitively) over the part of the record inside the region."""
    lo, hi = max(rec.start, region.start), min(rec.start + len(rec.ref), region.end)
    if hi <= lo:
        return
    fasta = region_bases[lo - region.start: hi - region.start]
    if fasta.upper() != rec.ref[lo - rec.start: hi - rec.start].upper():
        clipped = " (the part inside the region)" if (lo, hi) != (rec.start, rec.start + len(rec.ref)) else ""
        raise InputError(
            f"REF allele does not match the reference FASTA at {rec.chrom}:{rec.pos}: VCF REF {rec.ref}, "
            f"FASTA {fasta}{clipped}",
            file=vcf, fix="use the VCF called against this reference FASTA (or normalise it: bcftools norm -c e -f REF.fa)",
        )


def read_vcf_records(
    vcf: str, samples: list[str], region: Region, region_bases: str, shown: str | None = None,
) -> list[VariantRecord]:
    """Records of ``vcf`` overlapping ``region`` with the genotypes of ``samples``; REF checked against
    ``region_bases`` (the region's reference sequence). ``shown``: the VCF's name in errors (its S3 URI
    when ``vcf`` is a staged copy).

    Raises :class:`InputError` for a VCF whose regions cannot be read (see
    :func:`~tessera.genomics.inputs.index_error`), an absent sample, a contig the VCF does not have under
    any spelling, or a REF mismatch.
    """
    import pysam

    try:
        problem = index_error(vcf, "VCF", shown)
        vf = None if problem else pysam.VariantFile(vcf)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read VCF: {e}", file=shown or vcf, fix="give a bgzipped, indexed VCF or a BCF") from e
    if problem:
        raise problem
    with vf:
        absent = [s for s in samples if s not in vf.header.samples]
        if absent:
            raise InputError(f"sample(s) {', '.join(absent)} not in the VCF", file=vcf, field="vcf_sample",
                             fix="use the sample name of the VCF header (bcftools query -l)")
        if vf.index is None:
            raise InputError("VCF index cannot be read", file=shown or vcf, fix=f"index it again: bcftools index -f -t {vcf}")
        vf.subset_samples(samples)
        contigs = set(vf.header.contigs) | set(vf.index.keys())
        contig = match_contig(region.contig, contigs, what="VCF", file=vcf)
        records = []
        for rec in vf.fetch(contig, region.start, region.end):
            _check_ref(rec, region_bases, region, vcf)
            genotypes = {s: (tuple(rec.samples[s].get("GT") or ()), bool(rec.samples[s].phased)) for s in samples}
            records.append(VariantRecord(
                rec.start, rec.rlen, rec.ref, tuple(rec.alts or ()), rec.id or ".",
                ";".join(rec.filter.keys()) or ".", genotypes,
            ))
    return records


def _alias_fasta(reference: str, rename: dict[str, str], tmp: Path) -> str:
    """A view of ``reference`` whose contigs carry other names: a symlink plus a renamed ``.fai``."""
    if not rename:
        return reference
    link = tmp / Path(reference).name
    link.symlink_to(Path(reference).resolve())
    for suffix in (".gzi",):
        if Path(reference + suffix).exists():
            Path(str(link) + suffix).symlink_to(Path(reference + suffix).resolve())
    lines = Path(reference + ".fai").read_text().splitlines()
    out = []
    for line in lines:
        name, rest = line.split("\t", 1)
        out.append(f"{rename.get(name, name)}\t{rest}")
    Path(str(link) + ".fai").write_text("\n".join(out) + "\n")
    return str(link)


def call_bam(
    bam: str, region: Region, reference: str, params: BamParams, tmp: Path, shown: str | None = None,
) -> tuple[list[VariantRecord], np.ndarray]:
    """Variant calls over ``region`` from reads (genotypes under sample ``"bam"``) and the low-coverage mask
    (boolean over the region). ``tmp``: a scratch directory; ``shown``: the BAM's name in errors.

    Raises :class:`InputError` for an unreadable BAM, one whose regions cannot be read (see
    :func:`~tessera.genomics.inputs.index_error`) or one without the region's contig.
    """
    import pysam
    import pysam.bcftools
    import pysam.samtools

    try:
        problem = index_error(bam, "BAM", shown)
        if not problem:
            with pysam.AlignmentFile(bam, "rb") as af:
                bam_contigs = list(af.references)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read BAM: {e}", file=shown or bam, fix="give a coordinate-sorted, indexed BAM") from e
    if problem:
        raise problem
    contig = match_contig(region.contig, bam_contigs, what="BAM", file=bam)
    tmp = Path(tempfile.mkdtemp(prefix="call-", dir=tmp))
    fasta = _alias_fasta(reference, {region.contig: contig} if contig != region.contig else {}, tmp)
    where = f"{contig}:{region.start + 1}-{region.end}"
    pileup, calls = str(tmp / "pileup.bcf"), str(tmp / "calls.vcf")
    pysam.bcftools.mpileup(
        "-f", fasta, "-r", where, "-q", str(params.min_mapq), "-Q", str(params.min_baseq), "-a", "FORMAT/DP",
        "-Ou", "-o", pileup, bam, catch_stdout=False,
    )
    pysam.bcftools.call("-m", "-v", "-Ov", "-o", calls, pileup, catch_stdout=False)
    depth = np.zeros(region.length, np.int64)
    text = pysam.samtools.depth("-a", "-J", "-q", str(params.min_baseq), "-Q", str(params.min_mapq), "-r", where, bam)
    for line in text.splitlines():
        _, pos, d = line.split("\t")
        i = int(pos) - 1 - region.start
        if 0 <= i < region.length:
            depth[i] = int(d)
    records = []
    with pysam.VariantFile(calls) as vf:
        for rec in vf:
            if rec.qual is not None and rec.qual < params.min_qual:
                continue
            s = rec.samples[0]
            records.append(VariantRecord(rec.start, rec.rlen, rec.ref, tuple(rec.alts or ()), f"call_qual={rec.qual:.0f}",
                                   "PASS", {"bam": (tuple(s.get("GT") or ()), bool(s.phased))}))
    return records, depth < params.min_depth


VCF_INDEXES, BAM_INDEXES = (".tbi", ".csi"), (".bai", ".csi")


@contextlib.contextmanager
def staged(uri: str, index_suffixes: tuple[str, ...]) -> Iterator[str]:
    """A local path for ``uri`` and its index: the path itself, or an S3 object and its index (the first
    of ``{uri}{suffix}`` that exists) downloaded side by side into a temporary directory."""
    if not is_s3(uri):
        yield uri
        return
    from botocore.exceptions import ClientError

    with tempfile.TemporaryDirectory(prefix="tessera-stage-") as tmp:
        local = download(uri, Path(tmp) / Path(split_s3(uri)[1]).name)
        for suffix in index_suffixes:
            try:
                download(uri + suffix, Path(f"{local}{suffix}"))
                break
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
        yield str(local)


def region_reference(reference: str, region: Region) -> str:
    """The forward-strand bases of ``region`` (case as in the FASTA)."""
    import pysam

    with pysam.FastaFile(reference) as fa:
        return fa.fetch(region.contig, region.start, region.end)


def patient_sequences_shard(
    patients: list[dict], region: Region, reference: str, params: SequenceParams, out_dir: str | os.PathLike,
) -> pd.DataFrame:
    """Both haplotypes of ``region`` for every patient of a shard; write the shard directory; return its index.

    ``patients``: records with ``patient_id``, ``vcf``, ``vcf_sample``, ``bam`` (paths or s3:// URIs).
    Writes ``sequences.fa`` (``>{patient_id}|hap1 {gene} {region}``), ``variants.tsv`` and ``index.tsv``
    (one row per patient, status ``ok`` or ``failed`` with the reason). A patient that fails is recorded;
    the others go on.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_seq = region_reference(reference, region)
    results: dict[str, tuple[PatientSequences | None, str, str, str]] = {}

    by_vcf: dict[str, list[dict]] = {}
    for p in patients:
        if p.get("vcf"):
            by_vcf.setdefault(p["vcf"], []).append(p)
    for vcf, group in by_vcf.items():
        try:
            with staged(vcf, VCF_INDEXES) as local:
                header = vcf_samples(local)
                in_header = set(header)
                absent = [p for p in group if p["vcf_sample"] not in in_header]
                for p in absent:  # only these patients fail; the others of this VCF go on
                    reason = str(absent_sample_error(p["vcf_sample"], vcf, header))
                    results[p["patient_id"]] = (None, reason, "vcf", p["vcf_sample"])
                group = [p for p in group if p["vcf_sample"] in in_header]
                samples = sorted({p["vcf_sample"] for p in group})
                records = read_vcf_records(local, samples, region, ref_seq, shown=vcf) if samples else []
            for p in group:
                seqs = build_haplotypes(ref_seq, region, records, p["vcf_sample"], params)
                results[p["patient_id"]] = (seqs, "", "vcf", p["vcf_sample"])
        except Exception as e:  # one unreadable VCF must not stop the shard
            if not isinstance(e, TesseraError):
                log.exception("%s: reading the VCF failed", vcf)
            reason = str(e) if isinstance(e, TesseraError) else f"unexpected {type(e).__name__}: {e}"
            for p in group:
                results[p["patient_id"]] = (None, reason, "vcf", p["vcf_sample"])
    for p in patients:
        if p.get("vcf") or not p.get("bam"):
            continue
        try:
            with staged(p["bam"], BAM_INDEXES) as local, tempfile.TemporaryDirectory(prefix="tessera-bam-") as tmp:
                records, masked = call_bam(local, region, reference, params.bam, Path(tmp), shown=p["bam"])
            seqs = build_haplotypes(ref_seq, region, records, "bam", params, masked=masked)
            reason = _masked_reason(seqs.masked_bases, region.length, params.bam)
            results[p["patient_id"]] = (None if reason else seqs, reason, "bam", Path(p["bam"]).name)
        except TesseraError as e:
            results[p["patient_id"]] = (None, str(e), "bam", Path(p["bam"]).name)
        except Exception as e:  # a tool failure on one BAM must not stop the shard
            log.exception("%s: BAM consensus failed", p["patient_id"])
            results[p["patient_id"]] = (None, f"unexpected {type(e).__name__}: {e}", "bam", Path(p["bam"]).name)
    return _write_shard(patients, results, region, out_dir)


def _masked_reason(masked_bases: int, length: int, params: BamParams) -> str:
    """Why a haplotype with ``masked_bases`` of ``length`` masked (low coverage) is not used, or ``""``."""
    if masked_bases <= params.max_masked_fraction * length:
        return ""
    cause = "no read covers the region" if masked_bases == length else "low coverage"
    return (f"{masked_bases / length:.0%} of the region masked as N ({masked_bases} of {length} bases covered by "
            f"fewer than bam.min_depth={params.min_depth} reads; {cause}), more than "
            f"gene_sequences.bam.max_masked_fraction={params.max_masked_fraction}. Fix: check that the BAM covers "
            "the gene (a targeted or another sample's BAM?), or raise bam.max_masked_fraction to keep such haplotypes")


def _write_shard(patients: list[dict], results: dict, region: Region, out_dir: Path) -> pd.DataFrame:
    rows, variant_rows = [], []
    with atomic_path(out_dir / FASTA_NAME) as tmp, open(tmp, "w") as fa:
        for p in sorted(patients, key=lambda p: p["patient_id"]):
            pid = p["patient_id"]
            seqs, reason, source, sample = results.get(pid, (None, "no VCF or BAM given", "", ""))
            row = {**dict.fromkeys(INDEX_COLUMNS, ""), "patient_id": pid, "source": source, "sample": sample,
                   "region": str(region)}
            if seqs is None:
                log.error("%s %s failed: %s", pid, region.name, reason)
                rows.append({**row, "status": "failed", "reason": reason})
                continue
            for h, seq in (("hap1", seqs.hap1), ("hap2", seqs.hap2)):
                fa.write(f">{pid}|{h} {region.name} {region}\n")
                fa.writelines(seq[i: i + 60] + "\n" for i in range(0, len(seq), 60))
            variant_rows.extend({"patient_id": pid, **e} for e in seqs.events)
            rows.append({**row, "status": "ok", "hap1_length": len(seqs.hap1), "hap2_length": len(seqs.hap2),
                         **seqs.counts()})
            log.info("%s %s (%s): hap1 %d bp, hap2 %d bp, %s", pid, region.name, source, len(seqs.hap1),
                     len(seqs.hap2), seqs.counts())
    variants = pd.DataFrame(variant_rows, columns=VARIANT_COLUMNS)
    with atomic_path(out_dir / VARIANTS_NAME) as tmp:
        variants.to_csv(tmp, sep="\t", index=False)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    with atomic_path(out_dir / INDEX_NAME) as tmp:
        index.to_csv(tmp, sep="\t", index=False)
    return index


def read_shard_sequences(shard_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    """A shard directory's index and ``{patient_id: (hap1, hap2)}`` of its ``ok`` patients."""
    import pysam

    shard_dir = Path(shard_dir)
    index = pd.read_csv(shard_dir / INDEX_NAME, sep="\t", dtype=str, keep_default_na=False)
    seqs: dict[str, dict[str, str]] = {}
    with pysam.FastxFile(str(shard_dir / FASTA_NAME)) as fa:
        for entry in fa:
            pid, hap = entry.name.rsplit("|", 1)
            seqs.setdefault(pid, {})[hap] = entry.sequence
    ok = index[index["status"] == "ok"]
    missing = [p for p in ok["patient_id"] if p not in seqs or len(seqs[p]) != 2]
    if missing:
        raise TesseraError(f"{shard_dir}: {FASTA_NAME} lacks haplotypes of {', '.join(missing[:5])}; rerun the shard")
    return index, {p: (seqs[p]["hap1"], seqs[p]["hap2"]) for p in ok["patient_id"]}


def genomics_by_shard(genomics: pd.DataFrame) -> dict[str, list[dict]]:
    """Shard label → the shard's rows of the planned genomics sheet (``patient_id, vcf, vcf_sample, bam``).

    ``genomics`` is ``PLAN.genomics`` (it carries each patient's ``shard``).
    """
    cols = ["patient_id", "vcf", "vcf_sample", "bam"]
    out: dict[str, list[dict]] = {}
    for shard, group in genomics.groupby("shard", sort=True):
        out[shard] = group[cols].sort_values("patient_id").to_dict("records")
    return out
