"""Survival stage: the cohort table, tabular and multimodal survival models, honest evaluation.

Modules, in the order data flows through them:

``cohort_table``  clinical + pathology + genomic features → one row per patient (missing-modality policy)
``data``          validated structured outcome and feature table (``SurvivalData``)
``cv``            repeated event-stratified outer folds; inner splits inside a training fold
``tabular``       scikit-survival / scikit-learn learners with in-fold preprocessing (``boosting``: fast Cox loss)
``porpoise``      PORPOISE-style attention-MIL + SNN fusion model (torch); ``bags``: its instance embeddings
``hipt``          HIPT's slide-level models (``hipt_gp``, ``hipt_lgp``) over region bags, trained by ``porpoise``'s loop
``hpo``           Optuna studies (SQLite, resumable) nested in training folds
``experiment``    one model cross-validated: tuning, fitting, out-of-fold predictions, final model
``metrics``       C-indices, td-AUC, Brier, KM, log-rank, calibration on guarded time grids (sksurv)
``evaluation``    out-of-fold predictions → metrics.json numbers (per fold, pooled, bootstrap CIs)
``explain``       attention per instance and Integrated Gradients of the multimodal model
``plots``, ``run`` figures, and the jobs that write ``results/models/{model}/`` and the summary
"""
