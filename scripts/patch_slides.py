"""Adapter for rule patch_slides: the slide stage over one shard."""

import _workflow_src  # noqa: F401  (the checkout's src/ on sys.path; see that module)

from tessera.runlog import log_to
from tessera.slides.patching import PatchingParams, patch_shard

with log_to(snakemake.log[0]):
    patch_shard(
        snakemake.params.slides, PatchingParams.from_config(snakemake.params.patching), snakemake.output[0]
    )
