"""The Nucleotide Transformer 6-mer tokenizer, built from its deterministic vocabulary (no download).

Vocabularies (InstaDeep ``nucleotide_transformer/tokenizers.py``):

- v2: ``<unk> <pad> <mask> <cls> <eos> <bos>``, the 4,096 6-mers in ``product("ATCG", repeat=6)``
  order, then ``A T C G N`` (4,107 tokens).
- v1: ``<unk> <pad> <mask> <cls>``, the 6-mers, ``A T C G N``, then ``<eos> <bos>`` (4,107 tokens; the
  v1 models embed only the first 4,105, the tokenizer never emits the last two).

Tokenizing (as the NT tokenizer and transformers' ``EsmTokenizer`` on the same vocabulary do):
``<cls>`` first, no end token; 6-mers left to right, restarting after every ``N``; a remainder shorter
than 6 becomes single-base tokens.

Input mapping, applied first (the model knows only ``ACGTN``; ``EsmTokenizer`` would turn a run of
other letters into a single ``<unk>``): soft-masked lowercase bases are upper-cased (``lowercase="upper"``,
default: soft-masking marks repeats, the bases are real) or read as ``N`` (``lowercase="N"``);
every other letter (IUPAC ambiguity codes ``RYKMSWBDHV``, ``*``, ...) becomes ``N``.
"""

from __future__ import annotations

from itertools import product

import numpy as np

SPECIAL_V2 = ("<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>")
KMER = 6
_CODE = {"A": 0, "T": 1, "C": 2, "G": 3}  # product("ATCG") order
_BASES = np.array(list("ATCGN"))


def vocabulary(version: int) -> list[str]:
    """The NT token list of model version 1 or 2 (ids are list positions)."""
    kmers = ["".join(p) for p in product("ATCG", repeat=KMER)]
    if version == 2:
        return [*SPECIAL_V2, *kmers, *"ATCGN"]
    if version == 1:
        return ["<unk>", "<pad>", "<mask>", "<cls>", *kmers, *"ATCGN", "<eos>", "<bos>"]
    raise ValueError(f"NT vocabulary version must be 1 or 2, not {version}")


class NTTokenizer:
    """Sequence → token ids (int64 numpy), vectorised over the sequence."""

    def __init__(self, version: int = 2, lowercase: str = "upper") -> None:
        if lowercase not in ("upper", "N"):
            raise ValueError(f"lowercase must be 'upper' or 'N', not {lowercase!r}")
        self.version, self.lowercase = version, lowercase
        self.tokens = vocabulary(version)
        ids = {t: i for i, t in enumerate(self.tokens)}
        self.pad_id, self.cls_id, self.unk_id = ids["<pad>"], ids["<cls>"], ids["<unk>"]
        self.kmer_offset = ids["A" * KMER]
        self.single_ids = np.array([ids[b] for b in "ATCGN"], np.int64)  # by base code 0..4
        table = np.full(256, 4, np.uint8)  # every other byte: N
        for base, code in _CODE.items():
            table[ord(base)] = code
            if lowercase == "upper":
                table[ord(base.lower())] = code
        self._table = table

    def __len__(self) -> int:
        return len(self.tokens)

    def normalise(self, seq: str) -> str:
        """The sequence as the model reads it: ``ACGTN`` only (see module docstring)."""
        return "".join(_BASES[self._table[np.frombuffer(seq.encode("ascii"), np.uint8)]])

    def encode(self, seq: str, add_cls: bool = True) -> np.ndarray:
        """Token ids of ``seq`` (int64), ``<cls>`` first unless ``add_cls`` is False."""
        codes = self._table[np.frombuffer(seq.encode("ascii"), np.uint8)]
        ids: list[np.ndarray] = [np.array([self.cls_id], np.int64)] if add_cls else []
        n_pos = np.flatnonzero(codes == 4)
        bounds = np.concatenate([[-1], n_pos, [len(codes)]])
        for k in range(len(bounds) - 1):
            seg = codes[bounds[k] + 1: bounds[k + 1]].astype(np.int64)
            whole = len(seg) // KMER * KMER
            if whole:
                kmers = seg[:whole].reshape(-1, KMER) @ (4 ** np.arange(KMER - 1, -1, -1))
                ids.append(kmers + self.kmer_offset)
            if whole < len(seg):
                ids.append(self.single_ids[seg[whole:]])
            if k < len(bounds) - 2:
                ids.append(self.single_ids[4:5])  # the N that ended this segment
        return np.concatenate(ids) if ids else np.empty(0, np.int64)

    def write_vocab(self, path) -> None:
        """Write ``vocab.txt`` (one token per line), the file ``EsmTokenizer`` reads."""
        with open(path, "w") as f:
            f.write("\n".join(self.tokens) + "\n")
