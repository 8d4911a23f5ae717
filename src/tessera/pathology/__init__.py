"""Pathology embeddings: patch, tile and region features from slides, several encoders per read.

Subpackage :mod:`~tessera.pathology.encoders` (architectures, registry, transforms, weights); modules
:mod:`~tessera.pathology.params` (the stage's settings), :mod:`~tessera.pathology.grids` (grids of other
tile geometries), :mod:`~tessera.pathology.reader` (pixels), :mod:`~tessera.pathology.patches` (plans and the
DataLoader side), :mod:`~tessera.pathology.extract` (a shard of slides → feature files),
:mod:`~tessera.pathology.collect` (cohort index and slide embeddings).
"""
