"""Checks for runs whose jobs do not share this machine's file system (AWS Batch, SageMaker).

Such a job starts in an empty directory with the workflow's git-tracked files and config files
(Snakemake ships those to S3, each up to 10 MB) and reaches everything else through S3. Every job
parses the workflow again, so it reads the sheets: they must be among the shipped files. Slides, VCFs
and BAMs reach jobs as parameters (one job per shard, not one tracked file per item), so the sheets
must name Both are checked before anything is submitted; otherwise every item of every shard would fail
remotely, one job at a time.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

import pandas as pd

from tessera.errors import InputError, InputErrors
from tessera.uri import is_s3

MAX_SHIPPED_BYTES = 10_000_000  # Snakemake skips larger source files


def tracked_files(root: str | os.PathLike = ".") -> set[str] | None:
    """Paths (relative to ``root``) that git tracks there; ``None`` outside a git work tree."""
    try:
        out = subprocess.run(["git", "ls-files", "--recurse-submodules", "."], cwd=root, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {os.path.normpath(line) for line in out.splitlines() if line}


def check_remote_inputs(sheets: Iterable[str], tracked: set[str] | None,
                        job_paths: Iterable[tuple[pd.DataFrame, str, str]]) -> None:
    """Raise :class:`InputError` unless remote jobs can read the sheets and the files they name.

    ``sheets``: every sheet path of the config; ``tracked``: git-tracked paths of the working
    directory (:func:`tracked_files`); ``job_paths``: ``(frame, column, sheet)`` for each sheet column
    whose files jobs open themselves (slides, VCFs, BAMs: parameters, not Snakemake inputs), from the
    validated frames (with their ``line`` column). Empty cells are skipped.
    """
    errors = []
    for sheet in sheets:
        rel = os.path.normpath(os.path.relpath(sheet))
        if rel.startswith(".."):
            errors.append(InputError("the sheet is outside the working directory, so remote jobs never get it",
                                     file=sheet, fix="keep the cohort's sheets in the working directory"))
        elif tracked is None or rel not in tracked:
            errors.append(InputError("the sheet is not tracked by git, so Snakemake does not ship it to remote jobs",
                                     file=sheet, fix=f"git add {rel} && git commit (jobs parse the sheets again)"))
        elif os.path.getsize(sheet) > MAX_SHIPPED_BYTES:
            errors.append(InputError("the sheet is over 10 MB, which Snakemake does not ship to remote jobs",
                                     file=sheet, fix="split the cohort into several runs"))
    for frame, column, sheet in job_paths:
        values = frame[column].fillna("").astype(str)
        local = frame.loc[(values != "") & ~values.map(is_s3).astype(bool)]
        for row in local.head(5).itertuples():
            errors.append(InputError(
                f"'{getattr(row, column)}' is not an s3:// URI; remote jobs cannot read this machine's files",
                file=sheet, line=int(row.line), field=column,
                fix="upload the files to S3 and name them s3://bucket/key in the sheet",
            ))
        if len(local) > 5:
            errors.append(InputError(f"... and {len(local) - 5} more local paths", file=sheet, field=column))
    if errors:
        raise InputErrors("the cohort, for jobs without a shared file system", errors)
