"""Genomic embeddings: gene regions → per-patient haplotype sequences (VCF/BAM) → Nucleotide Transformer.

Modules, in data-flow order: :mod:`~tessera.genomics.genes` (GTF/GFF3 lookup, flanks, explicit regions),
:mod:`~tessera.genomics.contigs` (``chr1``/``1`` harmonisation), :mod:`~tessera.genomics.consensus`
(bcftools-consensus semantics for one haplotype), :mod:`~tessera.genomics.sequences` (per-patient
haplotypes from VCF or BAM, shard files), :mod:`~tessera.genomics.tokenizer` (NT 6-mer tokenizer),
:mod:`~tessera.genomics.nt` (NT v1/v2 models without remote code), :mod:`~tessera.genomics.embed`
(windows, pooling, per-gene and cohort tables).
"""
