"""Pathology embeddings: HIPT ViT-256 patch and ViT-4K region features from slides, fed by a fast tile reader.

Modules: :mod:`~tessera.pathology.hipt` (architectures), :mod:`~tessera.pathology.registry` (encoders),
:mod:`~tessera.pathology.checkpoints` (weights), :mod:`~tessera.pathology.reader` (pixels),
:mod:`~tessera.pathology.extract` (a shard of slides → feature files), :mod:`~tessera.pathology.collect`
(cohort index and slide embeddings).
"""
