"""The run manifest, ``results/manifest.json``: what a paper needs to cite and rerun these results.

It records the tessera version and git commit (with a dirty flag), the versions of the pinned packages,
the resolved config and the SHA-256 of every config file, sheet, reference and annotation, the model
weights (SHA-256, or ``random`` with its seed) as the feature and embedding outputs recorded them, every
seed, the Snakemake profile, and the SHA-256 of the cohort-level results. It holds no timestamp, host
or user name, so two runs of the same inputs write the same bytes, and never a credential: config keys
that look like secrets are redacted and URLs lose their user-info.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import pandas as pd

from tessera import __version__
from tessera.atomic import write_text
from tessera.checksum import sha256_file
from tessera.uri import is_s3, local_file

log = logging.getLogger(__name__)

#: Environment variable through which the workflow hands its command line's profile and container
#: image (:func:`run_context`) to the manifest job.
CONTEXT_ENV = "TESSERA_RUN_CONTEXT"
#: Config keys whose values are never written (matched case-insensitively anywhere in the key).
SECRET_KEY = re.compile(r"secret|passw|token|credential|access_key|api_key|private_key|session|salt", re.I)
_URL_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@\s]*@", re.I)
REDACTED = "<redacted>"


def redact(value: object) -> object:
    """``value`` with secret-looking keys replaced by ``<redacted>`` and user-info stripped from URLs."""
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if SECRET_KEY.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\1", value)
    return value


def _option_values(argv: Sequence[str], flag: str) -> list[str]:
    """Values of ``flag X`` / ``flag=X`` on a command line (each may list several, space-separated)."""
    values = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values += shlex.split(argv[i + 1])
        elif arg.startswith(flag + "="):
            values += shlex.split(arg.split("=", 1)[1])
    return values


def run_context(argv: Sequence[str], environ: Mapping[str, str]) -> dict:
    """What the manifest records of the command line, and nothing else of it (it may hold secrets):
    ``profiles`` — every ``--profile`` (Snakemake merges several; else ``$SNAKEMAKE_PROFILE``), then
    ``workflow-profile:X`` for ``--workflow-profile X``; ``container_image`` — ``--container-image``."""
    profiles = [p for p in _option_values(argv, "--profile") if p != "none"]
    if not profiles and environ.get("SNAKEMAKE_PROFILE"):
        profiles.append(environ["SNAKEMAKE_PROFILE"])
    profiles += [f"workflow-profile:{p}" for p in _option_values(argv, "--workflow-profile") if p != "none"]
    images = _option_values(argv, "--container-image")
    return {"profiles": profiles, "container_image": images[-1] if images else None}


def git_state(source_dir: str | os.PathLike) -> dict:
    """Commit, tag and dirty flag of the workflow's checkout (``commit`` null outside a git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(source_dir), *args], capture_output=True, text=True,
                              check=True, timeout=60).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "note": f"{source_dir} is not a git checkout (or git is missing)"}
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    try:
        tag = git("describe", "--tags", "--exact-match", "HEAD").strip()
    except subprocess.SubprocessError:
        tag = None
    return {"commit": commit, "tag": tag, "dirty": bool(changed), "changed_files": changed[:100]}


def package_versions(constraints: str | os.PathLike) -> dict:
    """Installed version of every package pinned in ``constraints`` (null when not installed), and
    which differ from the pin (e.g. torch's CUDA build ``2.13.0+cu128`` against ``2.13.0``)."""
    pins = {}
    for line in Path(constraints).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (s.strip() for s in line.split("==", 1))
            pins[name] = version
    installed, differ = {}, {}
    for name, pinned in sorted(pins.items(), key=lambda kv: kv[0].lower()):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        installed[name] = version
        if version != pinned:
            differ[name] = {"pinned": pinned, "installed": version}
    return {"python": platform.python_version(), "installed": installed, "differ_from_constraints": differ}


def collect_seeds(config: Mapping, prefix: str = "") -> dict[str, object]:
    """Every config value whose key is ``seed`` or ends in ``_seed``, by dotted path (lists by index,
    or by ``name`` where the items have one)."""
    seeds: dict[str, object] = {}
    items: Iterable = config.items() if isinstance(config, Mapping) else ()
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            seeds.update(collect_seeds(value, path + "."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    seeds.update(collect_seeds(item, f"{path}.{item.get('name', i)}."))
        elif key == "seed" or str(key).endswith("_seed"):
            seeds[path] = value
    return seeds


def _plain(value: object) -> object:
    """HDF5/NumPy scalars and arrays as JSON values."""
    return value.tolist() if hasattr(value, "tolist") else value  # arrays (e.g. mean, std) become lists


def pathology_weights(feature_index: str | os.PathLike, workdir: str | os.PathLike = ".",
                      storage_prefix: str | None = None) -> dict:
    """Weights provenance of one encoder, from the attributes of the first feature file its cohort
    index lists (every file of a run carries the same; the resume key includes them).

    ``storage_prefix``: the run's default storage prefix (``s3://bucket/prefix``), under which the file is
    read when it is not in ``workdir`` (outputs in S3 storage are not kept on this machine).
    """
    index = pd.read_csv(feature_index, sep="\t", dtype=str, keep_default_na=False)
    if index.empty:
        return {"note": "no slide has features"}
    name = index["path"].iloc[0]
    path = Path(workdir) / name
    if path.is_file():
        return _feature_file_provenance(path)
    if storage_prefix and is_s3(storage_prefix):
        with local_file(f"{storage_prefix.rstrip('/')}/{name}") as local:
            return _feature_file_provenance(local)
    return {"note": f"{name} is not on this machine (remote storage): weights not read"}


def _feature_file_provenance(path: Path) -> dict:
    """The weights, precision, device and torch version a feature file's attributes record."""
    with h5py.File(path, "r") as f:
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
    out = {}
    for prefix in ("weights", "patch_weights"):
        if prefix in attrs:
            entry = {"source": attrs[prefix], "random": bool(attrs[f"{prefix}_random"])}
            if entry["random"]:
                entry["seed"] = attrs.get(f"{prefix}_seed")
            else:
                entry["sha256"] = attrs[f"{prefix}_sha256"]
            out[prefix] = entry
    out.update(precision=attrs.get("precision"), device=attrs.get("device"), torch=attrs.get("torch_version"))
    return out


def genomic_weights(gene_tables: Sequence[str | os.PathLike]) -> dict:
    """Weights provenance of the Nucleotide Transformer, from the per-gene embedding tables' columns."""
    columns = ["model", "model_kind", "weights", "weights_sha256", "weights_random"]
    rows = pd.concat([pd.read_parquet(p, columns=columns) for p in gene_tables], ignore_index=True)
    distinct = rows.drop_duplicates()
    if distinct.empty:
        return {"note": "no patient has genomic embeddings"}
    if len(distinct) > 1:
        log.warning("genomic embeddings come from %d different weights: %s", len(distinct), distinct.to_dict("records"))
    return {"weights": [{k: _plain(v) for k, v in rec.items()} for rec in distinct.to_dict("records")]}


def build_manifest(*, config: Mapping, config_files: Sequence[str], inputs: Mapping[str, tuple[str, str]],
                   feature_indexes: Mapping[str, str], gene_tables: Sequence[str], outputs: Mapping[str, str],
                   source_dir: str | os.PathLike, context: Mapping, storage_prefix: str | None = None) -> dict:
    """The manifest as a JSON-ready dict. ``inputs``: role → (path as configured, file to read) for the
    sheets, reference and annotation; ``feature_indexes``: encoder → its cohort ``index.tsv``;
    ``gene_tables``: per-gene embedding tables; ``outputs``: cohort-level results, path as the workflow
    names it → file to read (the two differ where a storage plugin staged the file);
    ``context``: :func:`run_context`; ``storage_prefix``: the run's default storage prefix, if any."""
    source_dir = Path(source_dir)
    constraints = source_dir / "constraints.txt"
    config = redact(dict(config))
    survival_models = {m.get("name"): m.get("seed", config.get("survival", {}).get("cv", {}).get("seed", 0))
                       for m in config.get("survival", {}).get("models", [])}
    return {
        "manifest_version": 1,
        "tessera": {"version": __version__, "git": git_state(source_dir)},
        "packages": package_versions(constraints) if constraints.is_file() else {"note": "constraints.txt not found"},
        "profile": list(context.get("profiles", [])) or None,
        "container_image": context.get("container_image"),
        "config": config,
        "config_files": [{"path": str(p), "sha256": sha256_file(p)} for p in config_files],
        "conda_envs": {p.name: sha256_file(p) for p in sorted((source_dir / "envs").glob("*.yaml"))},
        "inputs": {role: {"path": str(name), "sha256": sha256_file(local)} for role, (name, local) in inputs.items()},
        "weights": {
            "pathology": {enc: pathology_weights(index, storage_prefix=storage_prefix)
                          for enc, index in feature_indexes.items()},
            "genomics": genomic_weights(gene_tables) if gene_tables else None,
        },
        "seeds": {**collect_seeds(config), **{f"survival.models.{n}.seed (effective)": s
                                              for n, s in survival_models.items()}},
        "outputs": {str(name): sha256_file(outputs[name]) for name in sorted(outputs, key=str)},
    }


def write_manifest(manifest: Mapping, path: str | os.PathLike) -> None:
    """Write the manifest as indented JSON with sorted keys (stable bytes), atomically."""
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
