"""Apply one haplotype's alleles to a reference region exactly as ``bcftools consensus -H N`` does.

The rules (bcftools 1.24 ``consensus.c``, reproduced so that per-patient sequences are byte-equal to
``bcftools consensus -s SAMPLE -H 1|2`` on a ``samtools faidx`` region, which the tests check):

- Records are applied in file order to a buffer holding the region; coordinates shift by each indel.
- A record whose allele on this haplotype is the reference changes nothing (and blocks nothing).
- A record starting at or before the last reference base of the previous applied record overlaps it
  and is skipped, except an indel whose first ALT base equals its first REF base anchored exactly on
  that last base, when the previous record was not an insertion.
- ALT bases take the case (upper/lower) of the buffer base where the record starts; the shared first
  base of an indel keeps the buffer's base.
- A record starting before the region is clipped to it (one ending before it changes nothing but still
  blocks the records overlapping it); one running past its end is truncated.
- ``<DEL>`` deletes ``POS+1..END``; ``<*>``/``<NON_REF>`` blocks keep the reference and block overlaps.

Coordinates are 0-based.
"""

from __future__ import annotations

#: IUPAC code ↔ bitmask (A=1, C=2, G=4, T=8), as bcftools' ``iupac2bitmask``/``bitmask2iupac``.
_IUPAC_BITS = {"A": 1, "C": 2, "G": 4, "T": 8, "M": 3, "R": 5, "W": 9, "S": 6, "Y": 10, "K": 12,
               "V": 7, "H": 11, "D": 13, "B": 14, "N": 15}
_BITS_IUPAC = ".ACMGRSVTWYHKDBN"
GVCF_REF_ALTS = ("<*>", "<NON_REF>")


def is_indel(ref: str, alt: str) -> bool:
    """True when htslib's ``bcf_set_variant_type`` calls the REF→ALT pair an indel (VCF_INDEL)."""
    r, a = ref.upper(), alt.upper()
    i = 0
    while i < len(r) and i < len(a) and r[i] == a[i]:
        i += 1
    if i == len(r) or i == len(a):
        return len(r) != len(a)
    re_, ae = len(r) - 1, len(a) - 1
    while re_ > i and ae > i and r[re_] == a[ae]:
        re_, ae = re_ - 1, ae - 1
    if ae == i and re_ == i:
        return False
    if ae == i or re_ == i:
        return r[re_] == a[ae]
    return False


def iupac_allele(alleles: list[str], present: set[int]) -> tuple[int, str]:
    """bcftools' IUPAC allele for a genotype holding allele indices ``present`` (``-H NpIu``, ``-I``).

    Returns ``(index, sequence)``: the longest ALT among them with each position replaced by the IUPAC
    code of all present alleles' bases there, or ``(0, REF)`` when only the reference is present.
    """
    bits: list[int] = []
    alt_len, ialt, fallback = 0, -1, -1
    for i in sorted(present):
        if fallback <= 0:
            fallback = i
        seq = alleles[i]
        if any(c.upper() not in _IUPAC_BITS for c in seq):
            continue  # symbolic allele or breakend
        bits.extend([0] * (len(seq) - len(bits)))
        if i > 0 and len(seq) > alt_len:
            alt_len, ialt = len(seq), i
        for j, c in enumerate(seq):
            bits[j] |= _IUPAC_BITS[c.upper()]
    if alt_len:
        return ialt, "".join(_BITS_IUPAC[b] for b in bits[:alt_len])
    return fallback, alleles[fallback] if fallback >= 0 else ""


class Haplotype:
    """One haplotype of a region under construction (the bcftools consensus buffer)."""

    def __init__(self, reference: str, start: int) -> None:
        """``reference``: the region's reference bases (case kept); ``start``: its 0-based contig position."""
        self.buf = bytearray(reference.encode("ascii"))
        self.start = start
        self.mod_off = 0  # length change so far (insertions positive)
        self.frozen = -1  # last reference position touched by an applied record
        self.prev_base_pos = -1
        self.prev_is_insert = False

    @property
    def sequence(self) -> str:
        return self.buf.decode("ascii")

    def overlaps(self, pos: int, trim_beg: bool) -> bool:
        """Whether a record starting at ``pos`` overlaps the records applied so far (and is skipped)."""
        return pos <= self.frozen and (pos < self.frozen or not trim_beg or self.prev_is_insert)

    def freeze(self, pos: int, rlen: int) -> None:
        """Mark ``[pos, pos+rlen)`` as confirmed reference (a gVCF ``<*>`` block)."""
        self.frozen = max(self.frozen, pos + rlen - 1)

    def mask(self, positions, char: str = "N") -> None:
        """Replace the bases at 0-based contig ``positions`` with ``char`` (before any record is applied)."""
        code = ord(char)
        for p in positions:
            self.buf[p - self.start] = code

    def apply(self, pos: int, rlen: int, ref: str, alt: str) -> str | None:
        """Apply REF→ALT at ``pos`` (``rlen`` reference bases; ``alt`` may be ``<DEL>``).

        Returns ``None`` when applied, else why not (``overlap``; ``before region``, ``beyond region``).
        """
        deletion_symbol = alt.upper() == "<DEL>"
        trim_beg = deletion_symbol or (is_indel(ref, alt) and ref[0] == alt[0])
        if self.overlaps(pos, trim_beg):
            return "overlap"
        idx = pos - self.start + self.mod_off
        if idx + rlen <= 0:  # ends before the region (a missing genotype's first base under --missing N):
            # bcftools writes it before its buffer, so no base of the region changes, but it still blocks
            # the records that overlap it
            insertion = len(alt) > rlen
            self.prev_base_pos, self.prev_is_insert = (pos, True) if insertion else (pos + rlen - 1, False)
            self.frozen = pos + rlen - 1
            return "before region"
        if idx < 0:  # starts before the region: clip to it as bcftools does
            if deletion_symbol:
                pos, rlen, idx = pos - idx - 1, rlen + idx + 1, -1
            elif len(alt) > -idx:
                pos, rlen, ref, alt, idx = pos - idx, rlen + idx, ref[-idx:], alt[-idx:], 0
            else:
                pos, rlen, ref, alt, idx = pos - idx - 1, rlen + idx + 1, ref[-idx - 1:], alt[-1:], -1
        n = len(self.buf)
        if rlen > n - idx:  # runs past the region's end: truncate
            rlen = n - idx
            if not deletion_symbol and len(alt) > rlen:
                alt = alt[:rlen]
        if idx > 0 and idx >= n:
            return "beyond region"
        if deletion_symbol:
            alt = ref[:1]
        first = chr(self.buf[max(idx, 0)])
        alt = alt.upper() if first.upper() == first else alt.lower()
        len_diff = len(alt) - rlen
        if len_diff <= 0:
            self.prev_base_pos, self.prev_is_insert = pos + rlen - 1, False
            lo, src = idx + int(trim_beg), alt[int(trim_beg):]
            if lo < 0:  # bcftools writes this base before its buffer: it never reaches the output
                lo, src = 0, src[-lo:]
            self.buf[lo: idx + rlen] = src.encode("ascii")
        else:
            self.prev_base_pos, self.prev_is_insert = pos, True
            keep = 0
            while keep < min(len(alt), len(ref)) and ref[keep] == alt[keep] and pos + keep <= self.prev_base_pos:
                keep += 1
            self.buf[idx + keep: idx + rlen] = alt[keep:].encode("ascii")
        self.mod_off += len_diff
        self.frozen = pos + rlen - 1
        return None


_COMPLEMENT = str.maketrans("ACGTMRWSYKVHDBNacgtmrwsykvhdbn", "TGCAKYWSRMBDHVNtgcakywsrmbdhvn")


def reverse_complement(seq: str) -> str:
    """Reverse complement, IUPAC codes and case kept (``R``↔``Y``, ``a``↔``t`` ...)."""
    return seq.translate(_COMPLEMENT)[::-1]
