"""The genomics sheet's VCFs and BAMs: their samples, and whether their regions can be read.

:func:`check_vcf_samples` runs once, in the process that plans the run (not in remote jobs), before any
job: a ``vcf_sample`` the VCF's header lacks is a sheet error listing the VCF's samples. The job checks
again (:func:`absent_sample_error`, a file replaced in between) and fails only that patient.
Only the header is read: the first BGZF blocks of a ``.vcf.gz`` or ``.bcf`` (or the first lines of a
plain-text VCF), streamed from disk or S3, never the whole file.

:func:`index_error` says why a VCF or BAM cannot be read by region (plain text or plain gzip, unsorted,
no index, an index older than the file) with a fix that works; the job fails that patient with it.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from tessera.errors import InputError, InputErrors
from tessera.uri import is_s3, s3_client, split_s3

_CHUNK = 1 << 16
_FIX = "give a bgzipped VCF or a BCF, readable at this path or S3 URI"
_SAMPLES_SHOWN = 12
_MAX_HEADER = 64 << 20  # bytes read at most before deciding a file has no VCF header


def _decompressed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The bytes of a (multi-member) gzip/BGZF stream, or of a plain one, as they arrive."""
    gz, inflate = None, zlib.decompressobj(31)
    for data in chunks:
        if gz is None:
            gz = data[:2] == b"\x1f\x8b"
        if not gz:
            yield data
            continue
        while data:
            yield inflate.decompress(data)
            if not inflate.eof:
                break
            data, inflate = inflate.unused_data, zlib.decompressobj(31)


def header_samples(chunks: Iterable[bytes]) -> list[str]:
    """Sample names on the ``#CHROM`` line of a VCF or BCF header given as raw file bytes in chunks.

    Raises :class:`ValueError` when the stream ends before a ``#CHROM`` line (not a VCF/BCF).
    """
    text = b"\n"  # so that a #CHROM line at the very start is found like any other
    for data in _decompressed(chunks):
        text += data
        start = text.find(b"\n#CHROM\t")
        end = text.find(b"\n", start + 1) if start >= 0 else -1
        if end >= 0:
            return text[start + 1: end].rstrip(b"\r").decode().split("\t")[9:]
        if len(text) > _MAX_HEADER:
            break
    raise ValueError("no #CHROM header line")


def vcf_samples(vcf: str, s3=None) -> list[str]:
    """The sample names of ``vcf`` (local path or ``s3://`` URI; ``.vcf.gz``, ``.bcf`` or plain text).

    ``s3``: the boto3 S3 client to use (clients are thread-safe; creating them is not).
    Raises :class:`InputError` when the file cannot be read or holds no VCF header.
    """
    if is_s3(vcf):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(vcf)
        try:
            body = (s3 or s3_client()).get_object(Bucket=bucket, Key=key)["Body"]
            with contextlib.closing(body):
                return header_samples(body.iter_chunks(_CHUNK))
        except (BotoCoreError, ClientError, ValueError, zlib.error) as e:
            raise InputError(f"cannot read the VCF header: {e}", file=vcf, fix=_FIX) from e
    try:
        with open(vcf, "rb") as f:
            return header_samples(iter(lambda: f.read(_CHUNK), b""))
    except (OSError, ValueError, zlib.error) as e:
        raise InputError(f"cannot read the VCF header: {e}", file=vcf, fix=_FIX) from e


def absent_sample_error(sample: str, vcf: str, samples: list[str], **where) -> InputError:
    """The error for a ``vcf_sample`` that ``vcf`` (whose samples are ``samples``) lacks."""
    shown = ", ".join(samples[:_SAMPLES_SHOWN]) + (f" ... ({len(samples)} in all)" if len(samples) > _SAMPLES_SHOWN else "")
    return InputError(
        f"sample '{sample}' is not in the VCF {vcf} (its samples: {shown or 'none'})", field="vcf_sample",
        fix=f"set vcf_sample to the patient's sample column of the VCF header (bcftools query -l {vcf})", **where,
    )


def check_vcf_samples(genomics: pd.DataFrame, sheet: str, threads: int = 16) -> None:
    """Every ``vcf_sample`` of the genomics sheet must be a sample of its row's VCF.

    ``genomics``: the sheet as read (``line``, ``patient_id``, ``vcf``, ``vcf_sample``). Each distinct VCF's
    header is read once (S3 headers ``threads`` at a time). A VCF that cannot be read is left to the job,
    which fails its patients with the reason. Raises :class:`InputErrors` listing every absent sample.
    """
    rows = genomics[genomics["vcf"] != ""]
    vcfs = sorted(rows["vcf"].unique())

    s3 = s3_client() if any(is_s3(v) for v in vcfs) else None

    def samples_of(vcf: str) -> list[str] | None:
        try:
            return vcf_samples(vcf, s3)
        except InputError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(vcfs)))) as pool:
        found = dict(zip(vcfs, pool.map(samples_of, vcfs)))
    known = {vcf: set(samples) for vcf, samples in found.items() if samples is not None}
    problems = []
    for row in rows.itertuples(index=False):
        if row.vcf in known and row.vcf_sample not in known[row.vcf]:
            samples = found[row.vcf]
            problems.append(absent_sample_error(row.vcf_sample, row.vcf, samples, file=sheet,
                                                line=int(row.line)))
    if problems:
        raise InputErrors(sheet, problems)


#: Index files htslib looks for beside a VCF/BCF or a BAM.
_INDEX_NAMES = {"VCF": lambda p: [f"{p}.tbi", f"{p}.csi"],
                "BAM": lambda p: [f"{p}.bai", f"{p}.csi", f"{p.removesuffix('.bam')}.bai"]}
#: Records read at most to find out whether an unindexed file is sorted.
SORT_SCAN_RECORDS = 2_000_000


def compression(path: str) -> str:
    """``bgzf`` (bgzip/BAM/BCF blocks: indexable), ``gzip`` (plain gzip: not indexable) or ``plain``."""
    with open(path, "rb") as f:
        head = f.read(14)
    if head[:2] != b"\x1f\x8b":
        return "plain"
    return "bgzf" if len(head) == 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


def first_unsorted(path: str, kind: str, limit: int = SORT_SCAN_RECORDS) -> str | None:
    """Where the records of ``path`` (a VCF/BCF or SAM/BAM, read from the start) first go out of
    position order, as ``"chr1:200 after chr1:900"``; ``None`` when the first ``limit`` records are sorted."""
    import pysam

    seen, last = set(), None
    opener = pysam.VariantFile if kind == "VCF" else pysam.AlignmentFile
    with opener(path) as f:
        it = f.fetch(until_eof=True) if kind == "BAM" else f
        for n, rec in enumerate(it):
            if n >= limit:
                break
            contig = rec.contig if kind == "VCF" else rec.reference_name
            if contig is None:  # unmapped reads come last in a sorted BAM
                continue
            pos = rec.start if kind == "VCF" else rec.reference_start
            if last is not None and (contig == last[0] and pos < last[1] or contig != last[0] and contig in seen):
                return f"{contig}:{pos + 1} after {last[0]}:{last[1] + 1}"
            seen.add(contig)
            last = (contig, pos)
    return None


def _sorted_copy(shown: str, kind: str) -> tuple[str, str]:
    """A name for the sorted, compressed copy of ``shown`` and the commands that write and index it."""
    base = shown
    for suffix in (".gz", ".vcf", ".bcf", ".bam", ".sam"):
        base = base.removesuffix(suffix)
    if kind == "VCF":
        out = f"{base}.sorted.vcf.gz"
        return out, f"bcftools sort -Oz -o {out} {shown} && bcftools index -t {out}"
    out = f"{base}.sorted.bam"
    return out, f"samtools sort -o {out} {shown} && samtools index {out}"


def index_error(path: str, kind: str, shown: str | None = None) -> InputError | None:
    """Why regions of ``path`` (``kind`` ``VCF`` or ``BAM``) cannot be read through an index, or ``None``.

    Names the real cause and a fix that works: not bgzip-compressed (plain text or plain gzip: no index can
    be built), records out of position order (indexing fails), no index, or an index older than the file
    (the file was replaced after indexing: regions read through it can be silently wrong; the same test as
    htslib's warning). ``shown``: how the file is named to the user (its sheet path or S3 URI).
    """
    shown = shown or path
    indexes = [i for i in _INDEX_NAMES[kind](path) if os.path.exists(i)]
    packed = compression(path)
    if packed != "bgzf":
        what = "plain text" if packed == "plain" else "gzip-compressed, not bgzip (BGZF)"
        out, commands = _sorted_copy(shown, kind)
        return InputError(f"{kind} is {what}: no index can be built for it, so its regions cannot be read",
                          file=shown, fix=f"write a sorted, compressed, indexed copy ({commands}) and name {out} "
                          "in the genomics sheet")
    stale = [i for i in indexes if int(os.stat(i).st_mtime) < int(os.stat(path).st_mtime)]
    if indexes and len(stale) < len(indexes):
        return None
    disorder = first_unsorted(path, kind)
    if disorder:
        out, commands = _sorted_copy(shown, kind)
        return InputError(f"{kind} is not sorted by position (record at {disorder}), so it cannot be indexed",
                          file=shown, fix=f"write a sorted, indexed copy ({commands}) and name {out} in the genomics sheet")
    index_cmd = f"bcftools index -f -t {shown}" if kind == "VCF" else f"samtools index {shown}"
    if stale:
        return InputError(f"the index {os.path.basename(stale[0])} is older than the {kind}: the file changed after "
                          "it was indexed, and regions read through the old index can be wrong", file=shown,
                          fix=f"index it again: {index_cmd}")
    return InputError(f"{kind} has no index", file=shown, fix=f"index it: {index_cmd}")
