"""Resume across reruns: finished slides are kept outside Snakemake's output directories.

Snakemake deletes a job's ``directory()`` output before running the job again, so a shard job killed
after 180 of its 200 slides would start from nothing, and adding one slide to a shard (which reruns
the shard) would recompute the other 199. Each finished slide's feature files are therefore also
hard-linked (copied where a link is impossible) to ``{resume_dir}/{slide_id}/{key}.{encoder}.h5``.
``key`` is a SHA-256 of everything the features depend on (:func:`slide_key`): the slide file (path,
size, modification time or S3 ETag), its patch grid, each model's weights (SHA-256, or random + seed),
the encoders of its grid group, batch size, precision, device type and the torch and tessera versions.
Keys are per (slide, grid group): adding an encoder with another tile geometry to a run leaves the other
groups' keys unchanged. A rerun links a slide's files back into the new output when its key matches and
computes only the others.

Files are complete before they are linked (written atomically), so an interrupted slide is simply
computed again, and no truncated file is ever visible. One key per slide and encoder is kept: storing a
new one removes the slide's older entries for the same encoders; links cost no space while the outputs
exist. The directory (default ``.tessera/resume/features`` in the working directory, outside ``results/``
so it never lands in S3 default storage) can be deleted at any time; with remote executors whose disks do
not outlive a job it is simply empty.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tessera.errors import SlideError
from tessera.uri import is_s3, s3_client, split_s3

log = logging.getLogger(__name__)


def slide_fingerprint(path: str) -> str:
    """Identity of a slide file without reading it: path, size and mtime (local) or ETag (S3)."""
    if is_s3(path):
        bucket, key = split_s3(path)
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as e:
            raise SlideError(f"cannot find slide {path}: {e}. Fix: correct the path in the slide sheet") from e
        return f"{path}|{head['ContentLength']}|{head.get('ETag', '')}"
    try:
        st = os.stat(path)
    except OSError as e:
        raise SlideError(f"slide file not found: {path}. Fix: correct the path in the slide sheet") from e
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def slide_key(**parts: object) -> str:
    """SHA-256 of the JSON of ``parts`` (sorted keys): equal inputs give equal keys."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def link_or_copy(src: Path, dest: Path) -> None:
    """Make ``dest`` the same file as ``src`` (hard link, else copy), appearing atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResumeCache:
    """Finished slides' files by key; ``root`` None or '' disables it."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root) if root else None

    def _path(self, slide_id: str, key: str, encoder: str) -> Path:
        return self.root / slide_id / f"{key}.{encoder}.h5"

    def restore(self, slide_id: str, key: str, targets: dict[str, Path]) -> bool:
        """Link the slide's cached files to ``targets`` (encoder → path) if all exist; True if done."""
        if self.root is None:
            return False
        sources = {enc: self._path(slide_id, key, enc) for enc in targets}
        if not all(p.is_file() for p in sources.values()):
            return False
        for enc, target in targets.items():
            link_or_copy(sources[enc], target)
        return True

    def store(self, slide_id: str, key: str, files: dict[str, Path]) -> None:
        """Keep the slide's finished ``files`` (encoder → path) under ``key``; drop its older keys."""
        if self.root is None:
            return
        try:
            for enc, path in files.items():
                link_or_copy(path, self._path(slide_id, key, enc))
            for old in (self.root / slide_id).iterdir():  # {key}.{encoder}.h5 of these encoders, other keys
                old_key, _, rest = old.name.partition(".")
                if old_key != key and rest.removesuffix(".h5") in files:
                    old.unlink(missing_ok=True)
        except OSError as e:  # a full or read-only resume disk must not fail the slide
            log.warning("could not keep %s in the resume directory %s: %s", slide_id, self.root, e)
