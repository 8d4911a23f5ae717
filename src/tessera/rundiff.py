"""Compare the result files of two runs: byte-identical except the documented allow-list.

Two clean CPU runs of the same inputs, config and code write the same bytes into ``results/``
(README "Determinism"). The files that cannot be identical are listed in :data:`ALLOWED`, each with
the reason; ``tessera compare-runs A B`` and the reproducibility test use this module.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from tessera.checksum import sha256_file

#: Result files allowed to differ between two runs (glob on the path relative to the working
#: directory) → why. Logs and benchmark TSVs live outside results/ and are never compared.
ALLOWED: dict[str, str] = {
    "results/models/*/timings.json": "wall-clock seconds per fold: a measurement, not a result",
    "results/hpo/*": "Optuna study databases (resume caches of the tuning): trials carry start and end times",
    "results/*/.snakemake_timestamp": "Snakemake's marker in directory outputs (empty; its mtime is the point)",
}


def allowed_reason(relpath: str) -> str | None:
    """The allow-list's reason for ``relpath`` (POSIX, relative to the working directory), or None."""
    for pattern, reason in ALLOWED.items():
        if fnmatch.fnmatch(relpath, pattern):  # fnmatch's '*' also matches '/' 
            return reason
    return None


def checksums(workdir: str | os.PathLike, subdir: str = "results") -> dict[str, str]:
    """SHA-256 of every file under ``workdir/subdir`` not on the allow-list, by relative POSIX path."""
    root = Path(workdir)
    out = {}
    for path in sorted((root / subdir).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and allowed_reason(rel) is None:
            out[rel] = sha256_file(path)
    return out


@dataclass(frozen=True)
class RunDiff:
    """Files only in run A, only in run B, and in both with different bytes (allow-list excluded)."""

    only_a: list[str]
    only_b: list[str]
    differ: list[str]

    @property
    def identical(self) -> bool:
        return not (self.only_a or self.only_b or self.differ)


def compare_runs(a: str | os.PathLike, b: str | os.PathLike) -> RunDiff:
    """Compare ``results/`` of two working directories."""
    sa, sb = checksums(a), checksums(b)
    return RunDiff(only_a=sorted(set(sa) - set(sb)), only_b=sorted(set(sb) - set(sa)),
                   differ=sorted(p for p in set(sa) & set(sb) if sa[p] != sb[p]))
