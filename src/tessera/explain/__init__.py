"""Cluster explanations: which tissue patterns drive a survival model's risk (GUIDE §4, Wulczyn et al. 2021).

The stage, as the workflow runs it (``rules/explain.smk``):

1. per feature shard, a seeded sample of at most ``per_slide_cap`` patch embeddings per slide
   (:func:`tessera.explain.clusters.sample_shard`);
2. MiniBatchKMeans on the pooled sample → centroids (:func:`~tessera.explain.clusters.fit_centroids`);
3. per feature shard, every patch assigned to its nearest centroid in a streaming pass, with per-patient
   cluster counts and gallery candidates read from the slides (:func:`~tessera.explain.clusters.assign_shard`);
4. per patient, the fraction of its patches per cluster (:mod:`~tessera.explain.prevalence`); per cluster,
   association with the model's out-of-fold risk and with survival (:mod:`~tessera.explain.association`);
   an HTML report with galleries and cluster maps (:mod:`~tessera.explain.report`).
"""
