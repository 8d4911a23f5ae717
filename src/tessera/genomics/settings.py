"""The genomic stage's configuration (``genes``, ``gene_sequences``, ``genomics_model``), checked at parse time.

The JSON schema validates types and defaults; :func:`check_genomics_config` adds what it cannot express:
names that would collide in output paths and windowing that leaves no room for tokens.
"""

from __future__ import annotations

from tessera.errors import InputError
from tessera.genomics.genes import parse_region

#: Names a gene or region may not take: they are file or directory names beside the per-gene tables.
RESERVED_GENE_NAMES = ("embeddings", "random-weights")
#: Names the model may not take: directories beside the per-model ones under results/genomics/.
RESERVED_MODEL_NAMES = ("sequences", "regions", "annotation_genes")


def gene_names(config: dict) -> list[str]:
    """Configured gene names then explicit region names (the ``{gene}`` wildcard's values)."""
    return [*config["genes"], *config.get("gene_sequences", {}).get("regions", {})]


def check_genomics_config(config: dict, file: str = "config") -> None:
    """Raise :class:`InputError` naming the key when genomic settings contradict each other."""
    seq = config.get("gene_sequences", {})
    names = gene_names(config)
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise InputError(f"{', '.join(clash)} named both as a gene and as a region", file=file,
                         field="gene_sequences.regions", fix="give each region its own name")
    reserved = [n for n in names if n in RESERVED_GENE_NAMES]
    if reserved:
        raise InputError(f"gene/region name(s) {', '.join(reserved)} are reserved", file=file, field="genes",
                         fix="rename the region")
    for name, text in seq.get("regions", {}).items():
        parse_region(text, name)
    model = config.get("genomics_model", {})
    if model.get("name") in RESERVED_MODEL_NAMES:
        raise InputError(f"model name '{model['name']}' is reserved", file=file, field="genomics_model.name",
                         fix=f"use another name than {', '.join(RESERVED_MODEL_NAMES)}")
    max_tokens, overlap = model.get("max_tokens"), model.get("overlap_tokens", 0)
    if max_tokens is not None and overlap >= max_tokens - 1:
        raise InputError(f"overlap_tokens {overlap} leaves no new tokens in windows of {max_tokens}", file=file,
                         field="genomics_model.overlap_tokens", fix="use overlap_tokens < max_tokens - 1")


def region_spec(config: dict, name: str) -> dict:
    """What the ``gene_region`` job resolves for ``name``: an explicit region or a gene with flanks."""
    seq = config.get("gene_sequences", {})
    regions = seq.get("regions", {})
    if name in regions:
        return {"name": name, "region": regions[name]}
    return {"name": name, "flank_upstream": seq.get("flank_upstream", 0),
            "flank_downstream": seq.get("flank_downstream", 0)}
