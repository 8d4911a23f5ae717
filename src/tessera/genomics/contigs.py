"""Contig names across files: ``chr1`` in one file is ``1`` in another (UCSC vs Ensembl naming).

:func:`match_contig` finds the name a file uses for a reference contig. An exact match wins; otherwise
the ``chr`` prefix is added or removed (and ``chrM`` ↔ ``MT``), but only when that gives exactly one
candidate. A file with no matching contig is an error, never a silent reference copy (GUIDE §4:
``bcftools consensus`` leaves absent contigs as reference without a word).
"""

from __future__ import annotations

from collections.abc import Collection

from tessera.errors import InputError

_MITO = {"chrM": "MT", "MT": "chrM", "chrMT": "MT", "M": "chrM"}


def alternative_names(name: str) -> list[str]:
    """Other spellings of a contig name under UCSC/Ensembl conventions, most likely first."""
    alts = []
    if name in _MITO:
        alts.append(_MITO[name])
    alts.append(name[3:] if name.startswith("chr") else f"chr{name}")
    return [a for a in alts if a and a != name]


def match_contig(name: str, available: Collection[str], *, what: str, file: str) -> str:
    """The contig of ``available`` (a file's contig names) that means ``name``.

    Raises :class:`InputError` naming the file when no spelling of ``name`` is present, or when
    several alternative spellings are (ambiguous).
    """
    if name in available:
        return name
    found = [alt for alt in alternative_names(name) if alt in available]
    if len(found) == 1:
        return found[0]
    shown = ", ".join(sorted(available)[:12]) + (" ..." if len(available) > 12 else "")
    if found:
        raise InputError(
            f"{what} has several contigs that could mean '{name}': {', '.join(found)}",
            file=file, fix="rename the contigs so each reference contig has one name in this file",
        )
    raise InputError(
        f"{what} has no contig matching '{name}' (tried {', '.join([name, *alternative_names(name)])}; "
        f"its contigs: {shown or 'none'})",
        file=file,
        fix="use a file called against the same reference assembly as the FASTA (check the contig header "
        "lines, e.g. ##contig=<ID=chr1> in a VCF or @SQ SN:chr1 in a BAM)",
    )
