"""Adapter for rule manifest: results/manifest.json (tessera.manifest)."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

import json
import os

from tessera.manifest import CONTEXT_ENV, build_manifest, write_manifest
from tessera.runlog import log_to

with log_to(snakemake.log[0]) as log:
    i, p = snakemake.input, snakemake.params
    manifest = build_manifest(
        config=p.config,
        config_files=p.config_files,
        inputs={role: (p.inputs[role], i[role]) for role in p.inputs},
        feature_indexes=dict(zip(p.encoders, i.feature_indexes)),
        gene_tables=list(i.gene_tables),
        outputs=dict(zip(p.results, i.results)),
        source_dir=p.source,
        context=json.loads(os.environ.get(CONTEXT_ENV, "{}")),
        storage_prefix=p.storage_prefix,
    )
    write_manifest(manifest, snakemake.output[0])
    log.info("manifest: tessera %s, commit %s, %d packages, %d outputs checksummed", manifest["tessera"]["version"],
             manifest["tessera"]["git"].get("commit"), len(manifest["packages"].get("installed", {})),
             len(manifest["outputs"]))
