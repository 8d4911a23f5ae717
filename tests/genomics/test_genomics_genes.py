"""Gene regions: GTF/GFF3 lookup, strand-aware flanks, explicit regions, clear errors."""

from __future__ import annotations

import gzip

import pytest
from genomics_data import write_fasta

from tessera.errors import InputError
from tessera.genomics.contigs import match_contig
from tessera.genomics.genes import (
    fasta_contigs,
    parse_region,
    read_annotation,
    resolve_explicit,
    resolve_gene,
)

GTF = """\
#!genome-build test
chr1\tt\tgene\t1001\t2000\t.\t+\t.\tgene_id "G1.3"; gene_name "ALPHA"; gene_biotype "protein_coding";
chr1\tt\ttranscript\t1001\t2000\t.\t+\t.\tgene_id "G1.3"; gene_name "ALPHA"; transcript_id "T1";
chr1\tt\texon\t1001\t1200\t.\t+\t.\tgene_id "G1.3"; gene_name "ALPHA"; transcript_id "T1";
chr2\tt\tgene\t3001\t3500\t.\t-\t.\tgene_id "G2"; gene_name "BETA";
chr1\tt\ttranscript\t5001\t5600\t.\t-\t.\tgene_id "G3"; gene_name "GAMMA"; transcript_id "T3";
chr1\tt\ttranscript\t5401\t6000\t.\t-\t.\tgene_id "G3"; gene_name "GAMMA"; transcript_id "T4";
chr1\tt\tgene\t7001\t7100\t.\t+\t.\tgene_id "G4"; gene_name "TWIN";
chr2\tt\tgene\t7001\t7100\t.\t+\t.\tgene_id "G5"; gene_name "TWIN";
"""

GFF3 = """\
##gff-version 3
1\tensembl\tgene\t1001\t2000\t.\t+\t.\tID=gene:ENSG01;Name=ALPHA;biotype=protein_coding
1\tensembl\tmRNA\t1001\t2000\t.\t+\t.\tID=transcript:ENST01;Parent=gene:ENSG01
2\tensembl\tncRNA_gene\t3001\t3500\t.\t-\t.\tID=gene:ENSG02;Name=BETA%3B2
"""


@pytest.fixture
def files(tmp_path):
    ref = write_fasta(tmp_path / "ref.fa", {"chr1": "A" * 8000, "chr2": "C" * 8000})
    gtf = tmp_path / "genes.gtf.gz"
    with gzip.open(gtf, "wt") as f:
        f.write(GTF)
    gff = tmp_path / "genes.gff3"
    gff.write_text(GFF3)
    return ref, gtf, gff


def test_gtf_genes_with_strand_aware_flanks(files):
    ref, gtf, _ = files
    genes, contigs = read_annotation(gtf), fasta_contigs(ref)
    alpha = resolve_gene("ALPHA", genes, str(gtf), contigs, str(ref), flank_upstream=100, flank_downstream=10)
    assert (alpha.contig, alpha.start, alpha.end, alpha.strand) == ("chr1", 900, 2010, "+")
    beta = resolve_gene("BETA", genes, str(gtf), contigs, str(ref), flank_upstream=100, flank_downstream=10)
    assert (beta.start, beta.end, beta.strand) == (2990, 3600, "-")  # upstream of a minus-strand gene is 3'
    assert str(beta) == "chr2:2991-3600:-"
    # by gene_id, with or without the version; flanks clipped at the contig start
    for name in ("G1.3", "G1"):
        assert resolve_gene(name, genes, str(gtf), contigs, str(ref), 5000, 0).start == 0
    # a gene without a gene line spans its transcripts
    gamma = resolve_gene("GAMMA", genes, str(gtf), contigs, str(ref))
    assert (gamma.start, gamma.end, gamma.strand) == (5000, 6000, "-")


def test_gff3_names_ids_and_contig_harmonisation(files):
    ref, _, gff = files
    genes, contigs = read_annotation(gff), fasta_contigs(ref)
    assert set(genes["name"]) == {"ALPHA", "BETA;2"}  # percent-decoded
    alpha = resolve_gene("ENSG01", genes, str(gff), contigs, str(ref))
    assert (alpha.contig, alpha.start, alpha.end) == ("chr1", 1000, 2000)  # GFF3 '1' -> FASTA 'chr1'
    assert resolve_gene("BETA;2", genes, str(gff), contigs, str(ref)).contig == "chr2"


def test_unknown_and_ambiguous_genes_are_errors_naming_gene_and_file(files):
    ref, gtf, _ = files
    genes, contigs = read_annotation(gtf), fasta_contigs(ref)
    with pytest.raises(InputError, match=r"genes\.gtf\.gz.*gene 'alpha' is not in the annotation \(did you mean ALPHA"):
        resolve_gene("alpha", genes, str(gtf), contigs, str(ref))
    with pytest.raises(InputError, match=r"gene 'TWIN' matches 2 annotation records"):
        resolve_gene("TWIN", genes, str(gtf), contigs, str(ref))


def test_explicit_regions(files):
    ref, _, _ = files
    contigs = fasta_contigs(ref)
    region = resolve_explicit("P1", "1:1,001-2,000:-", contigs, str(ref))
    assert (region.contig, region.start, region.end, region.strand) == ("chr1", 1000, 2000, "-")
    assert parse_region("chrX:5-9", "R").strand == "+"
    with pytest.raises(InputError, match="not contig:start-end"):
        parse_region("chr1:10", "R")
    with pytest.raises(InputError, match="ends beyond chr1"):
        resolve_explicit("P2", "chr1:7000-9000", contigs, str(ref))
    with pytest.raises(InputError, match="reference FASTA has no contig matching 'chr9'"):
        resolve_explicit("P3", "chr9:1-10", contigs, str(ref))


def test_contig_matching_rules():
    assert match_contig("chr1", {"1", "2"}, what="VCF", file="v") == "1"
    assert match_contig("1", {"chr1"}, what="VCF", file="v") == "chr1"
    assert match_contig("chrM", {"MT"}, what="VCF", file="v") == "MT"
    assert match_contig("chr1", {"chr1", "1"}, what="VCF", file="v") == "chr1"  # exact wins
    with pytest.raises(InputError, match="no contig matching"):
        match_contig("chr3", {"1", "2"}, what="BAM", file="b.bam")
