"""Patch and region encoders: architectures, the registry of specs, transforms and strict weight loading.

:mod:`~tessera.pathology.encoders.vit` (one configurable timm-named ViT), :mod:`~.hipt` (HIPT ViT-256 and
ViT-4K), :mod:`~.conch` (CONCH v1 / v1.5 image towers), :mod:`~.hf` (Phikon models through transformers),
:mod:`~.transforms` (tile → network input), :mod:`~.registry` (specs, grid groups),
:mod:`~.catalog` (the registered encoders), :mod:`~.checkpoints` (weights: strict, allow-listed, recorded).
"""
