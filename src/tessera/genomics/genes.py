"""Which stretch of the genome each configured gene is: GTF/GFF3 lookup, flanks, explicit regions.

Annotation parsing (:func:`read_annotation`) reads the nine tab-separated GTF/GFF3 columns with pandas
and parses the attribute column with these documented rules:

- GTF (``.gtf``): ``key "value";`` pairs (unquoted ``key value;`` also accepted); keys used:
  ``gene_id``, ``gene_name``.
- GFF3 (``.gff3``/``.gff``): ``key=value`` pairs separated by ``;`` with percent-encoded values
  (``%3B`` = ``;``) decoded; keys used: ``ID`` (an Ensembl ``gene:`` prefix dropped), ``Name``,
  ``gene_id``, ``gene_name``.

Gene records are the rows whose feature type ends in ``gene`` (``gene``, ``ncRNA_gene``,
``pseudogene``). A gene without such a row (some UCSC GTFs) spans its ``transcript``/``mRNA`` rows.
Files may be gzipped. Coordinates become 0-based half-open (GTF/GFF3 are 1-based inclusive).

A configured name is looked up as, in this order: ``gene_id`` (with or without its ``.version``),
``gene_name``, GFF3 ``Name``, GFF3 ``ID``; the first kind of key that matches decides, and several
genes matching it is an error (e.g. pseudo-autosomal copies), as is no gene at all.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd

from tessera.errors import InputError
from tessera.genomics.contigs import match_contig

ANNOTATION_COLUMNS = ["contig", "start", "end", "strand", "feature", "gene_id", "gene_name", "name", "id"]
_REGION = re.compile(r"^(?P<contig>[^:\s]+):(?P<start>[\d,]+)-(?P<end>[\d,]+)(?::(?P<strand>[+-]))?$")
_GTF_KEYS = ("gene_id", "gene_name")
_GFF3_KEYS = {"id": "ID", "name": "Name", "gene_id": "gene_id", "gene_name": "gene_name"}


@dataclass(frozen=True)
class Region:
    """A named stretch of one reference contig: 0-based half-open ``[start, end)`` on ``strand``."""

    name: str
    contig: str
    start: int
    end: int
    strand: str = "+"
    source: str = ""  # how it was found, e.g. "genes.gtf gene DEMO0000001, flanks 500/100"

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"region {self.name}: need 0 <= start < end, got {self.start}, {self.end}")
        if self.strand not in "+-" or len(self.strand) != 1:
            raise ValueError(f"region {self.name}: strand must be '+' or '-', not {self.strand!r}")

    @property
    def length(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        """``contig:start-end:strand`` with 1-based inclusive coordinates (samtools convention)."""
        return f"{self.contig}:{self.start + 1}-{self.end}:{self.strand}"

    def to_tsv(self, path: str | os.PathLike) -> None:
        from tessera.atomic import write_text

        rec = asdict(self)
        write_text(path, "\t".join(rec) + "\n" + "\t".join(str(v) for v in rec.values()) + "\n")

    @classmethod
    def from_tsv(cls, path: str | os.PathLike) -> "Region":
        row = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).iloc[0]
        return cls(row["name"], row["contig"], int(row["start"]), int(row["end"]), row["strand"], row["source"])


def parse_region(text: str, name: str) -> Region:
    """``chr1:10,001-13,000[:+|-]`` (1-based inclusive, samtools style) → :class:`Region` (strand default +)."""
    m = _REGION.match(text.strip())
    if not m:
        raise InputError(
            f"region '{text}' of '{name}' is not contig:start-end[:strand]", field=f"gene_sequences.regions.{name}",
            fix="write it like chr1:10001-13000 or chr1:10001-13000:- (1-based, inclusive)",
        )
    start, end = int(m["start"].replace(",", "")), int(m["end"].replace(",", ""))
    if not 1 <= start <= end:
        raise InputError(
            f"region '{text}' of '{name}' has start {start} after end {end} or below 1",
            field=f"gene_sequences.regions.{name}", fix="give 1 <= start <= end",
        )
    return Region(name, m["contig"], start - 1, end, m["strand"] or "+", f"explicit {text}")


def annotation_format(path: str | os.PathLike) -> str:
    """``gtf`` or ``gff3``, from the file name (``.gz`` ignored), else from the first record's attributes."""
    name = str(path).lower().removesuffix(".gz")
    if name.endswith(".gtf"):
        return "gtf"
    if name.endswith((".gff3", ".gff")):
        return "gff3"
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        for line in f:
            if line.startswith("##gff-version 3"):
                return "gff3"
            if not line.startswith("#") and line.count("\t") >= 8:
                return "gff3" if re.search(r"(^|;)\s*\w+=", line.split("\t")[8]) else "gtf"
    raise InputError("annotation has no records", file=str(path), fix="give a GTF or GFF3 file with gene records")


def _attribute(attrs: pd.Series, key: str, fmt: str) -> pd.Series:
    if fmt == "gtf":
        quoted = attrs.str.extract(rf'(?:^|;)\s*{key}\s+"([^"]*)"', expand=False)
        bare = attrs.str.extract(rf'(?:^|;)\s*{key}\s+([^";\s]+)', expand=False)
        return quoted.fillna(bare).fillna("")
    values = attrs.str.extract(rf"(?:^|;)\s*{key}=([^;]*)", expand=False).fillna("")
    encoded = values.str.contains("%", regex=False)
    values[encoded] = values[encoded].map(unquote)
    return values


def read_annotation(path: str | os.PathLike, chunksize: int = 500_000) -> pd.DataFrame:
    """Gene records of a GTF/GFF3 file: columns :data:`ANNOTATION_COLUMNS`, 0-based half-open coordinates.

    Reads in chunks and keeps only gene and transcript rows, so a whole GENCODE GTF fits in little memory.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("annotation not found", file=str(path), fix="check the 'annotation' path in the config")
    fmt = annotation_format(path)
    kept = []
    try:
        reader = pd.read_csv(
            path, sep="\t", header=None, usecols=[0, 2, 3, 4, 6, 8], names=range(9), dtype=str,
            quoting=csv.QUOTE_NONE, chunksize=chunksize, keep_default_na=False, na_values=[],
        )
        for chunk in reader:
            chunk = chunk.fillna("")
            chunk.columns = ["contig", "feature", "start", "end", "strand", "attributes"]
            genes = chunk["feature"].str.endswith("gene")
            transcripts = chunk["feature"].isin(["transcript", "mRNA"])
            kept.append(chunk[(genes | transcripts) & ~chunk["contig"].str.startswith("#")])
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"malformed annotation: {e}", file=str(path), fix="give a tab-separated GTF or GFF3 file") from e
    df = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()
    if df.empty:
        raise InputError("annotation has no gene or transcript records", file=str(path),
                         fix="give a GTF/GFF3 with 'gene' (or 'transcript') feature lines")
    start, end = pd.to_numeric(df["start"], errors="coerce"), pd.to_numeric(df["end"], errors="coerce")
    bad = start.isna() | end.isna() | (start < 1) | (end < start)
    if bad.any():
        row = df[bad].iloc[0]
        raise InputError(
            f"annotation record {row['contig']} {row['feature']} has invalid coordinates {row['start']}-{row['end']}",
            file=str(path), fix="GTF/GFF3 start and end are 1-based integers with start <= end",
        )
    out = pd.DataFrame({
        "contig": df["contig"], "start": start.astype(np.int64) - 1, "end": end.astype(np.int64),
        "strand": df["strand"], "feature": df["feature"],
    })
    attrs = df["attributes"]
    if fmt == "gtf":
        for key in _GTF_KEYS:
            out[key] = _attribute(attrs, key, fmt)
        out["name"], out["id"] = "", ""
    else:
        for col, key in _GFF3_KEYS.items():
            out[col] = _attribute(attrs, key, fmt)
        out["id"] = out["id"].str.replace(r"^gene:", "", regex=True)
        missing_id = out["gene_id"] == ""
        out.loc[missing_id & out["feature"].str.endswith("gene"), "gene_id"] = out["id"]
    return _genes_with_fallback(out)[ANNOTATION_COLUMNS].reset_index(drop=True)


def _genes_with_fallback(records: pd.DataFrame) -> pd.DataFrame:
    """Gene rows, plus one span over its transcripts for each gene_id that has no gene row."""
    is_gene = records["feature"].str.endswith("gene")
    genes = records[is_gene]
    tx = records[~is_gene & (records["gene_id"] != "") & ~records["gene_id"].isin(set(genes["gene_id"]))]
    if tx.empty:
        return genes
    spans = tx.groupby(["gene_id", "contig", "strand"], sort=False).agg(
        start=("start", "min"), end=("end", "max"), gene_name=("gene_name", "first"), name=("name", "first"),
    ).reset_index()
    spans["feature"], spans["id"] = "transcripts", ""
    return pd.concat([genes, spans], ignore_index=True)


def find_gene(name: str, genes: pd.DataFrame, annotation_file: str) -> pd.Series:
    """The one annotation record ``name`` refers to (see module docstring for the lookup order)."""
    versionless = genes["gene_id"].str.replace(r"\.\d+$", "", regex=True)
    for key in (genes["gene_id"], versionless, genes["gene_name"], genes["name"], genes["id"]):
        hits = genes[key == name]
        if len(hits) == 1:
            return hits.iloc[0]
        if len(hits) > 1:
            loci = "; ".join(f"{r.gene_id} {r.contig}:{r.start + 1}-{r.end}" for r in hits.head(5).itertuples())
            raise InputError(
                f"gene '{name}' matches {len(hits)} annotation records ({loci})", file=annotation_file, field="genes",
                fix="name the gene by its gene_id, or give an explicit region under gene_sequences.regions",
            )
    known = pd.unique(pd.concat([genes["gene_name"], genes["gene_id"]]))
    same_case = [k for k in known if isinstance(k, str) and k.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, [k for k in known if k], n=3, cutoff=0.8)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise InputError(
        f"gene '{name}' is not in the annotation{hint}", file=annotation_file, field="genes",
        fix="use the gene_name or gene_id as the annotation writes it, an annotation that has the gene, "
        "or an explicit region under gene_sequences.regions",
    )


def resolve_gene(
    name: str, genes: pd.DataFrame, annotation_file: str, contig_lengths: dict[str, int], reference_file: str,
    flank_upstream: int = 0, flank_downstream: int = 0,
) -> Region:
    """The region of gene ``name`` on the reference, widened by strand-aware flanks and clipped to its contig.

    ``contig_lengths``: the reference FASTA's contigs; the annotation's contig name is harmonised to them.
    """
    rec = find_gene(name, genes, annotation_file)
    contig = match_contig(rec["contig"], contig_lengths, what="reference FASTA", file=reference_file)
    strand = rec["strand"] if rec["strand"] in ("+", "-") else "+"
    up, down = (flank_upstream, flank_downstream) if strand == "+" else (flank_downstream, flank_upstream)
    start, end = max(0, int(rec["start"]) - up), min(contig_lengths[contig], int(rec["end"]) + down)
    if int(rec["end"]) > contig_lengths[contig]:
        raise InputError(
            f"gene '{name}' ends at {rec['end']}, beyond {contig} ({contig_lengths[contig]} bp) of the reference",
            file=annotation_file, fix="use the annotation that belongs to the reference assembly",
        )
    source = f"{Path(annotation_file).name} {rec['feature']} {rec['gene_id']}, flanks {flank_upstream}/{flank_downstream}"
    return Region(name, contig, start, end, strand, source)


def resolve_explicit(name: str, text: str, contig_lengths: dict[str, int], reference_file: str) -> Region:
    """An explicit ``contig:start-end[:strand]`` region, harmonised to the reference and checked against it."""
    region = parse_region(text, name)
    contig = match_contig(region.contig, contig_lengths, what="reference FASTA", file=reference_file)
    if region.end > contig_lengths[contig]:
        raise InputError(
            f"region '{text}' of '{name}' ends beyond {contig} ({contig_lengths[contig]} bp)",
            field=f"gene_sequences.regions.{name}", fix="give coordinates inside the contig",
        )
    return Region(name, contig, region.start, region.end, region.strand, region.source)


def fasta_contigs(reference: str | os.PathLike) -> dict[str, int]:
    """Contig name → length of a FASTA with a ``.fai`` index."""
    import pysam

    if not Path(f"{reference}.fai").is_file():
        raise InputError("reference FASTA has no .fai index", file=str(reference),
                         fix=f"run: samtools faidx {reference}")
    with pysam.FastaFile(str(reference)) as fa:
        return dict(zip(fa.references, fa.lengths))
