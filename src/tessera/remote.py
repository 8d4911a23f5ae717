"""Checks for runs whose jobs do not share this machine's file system (AWS Batch, SageMaker).

Such a job starts in an empty directory with the workflow's git-tracked files and config files
(Snakemake ships those to S3, each up to 10 MB) and reaches everything else through S3. Every job
parses the workflow again, so it reads the sheets: they must be among the shipped files. Slides
reach jobs as parameters (one job per shard, not one tracked file per slide), so the sheet must name
them by ``s3://`` URI. Both are checked before anything is submitted; otherwise every slide of every
shard would fail remotely, one job at a time.
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


def check_remote_inputs(slides: pd.DataFrame, slide_sheet: str, sheets: Iterable[str],
                        tracked: set[str] | None) -> None:
    """Raise :class:`InputError` unless remote jobs can read the sheets and every slide.

    ``slides``: the validated slide sheet (``path``, ``line``); ``sheets``: every sheet path of the
    config; ``tracked``: git-tracked paths of the working directory (see :func:`tracked_files`).
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
    local = slides.loc[~slides["path"].map(is_s3)]
    for row in local.head(5).itertuples():
        errors.append(InputError(f"'{row.path}' is not an s3:// URI; remote jobs cannot read this machine's files",
                                 file=slide_sheet, line=int(row.line), field="path",
                                 fix="upload the slides to S3 and name them s3://bucket/key in the sheet"))
    if len(local) > 5:
        errors.append(InputError(f"... and {len(local) - 5} more local slide paths", file=slide_sheet))
    if errors:
        raise InputErrors("the cohort, for jobs without a shared file system", errors)
