"""The survival stage's jobs: one model → ``results/models/{model}/``; all models → ``summary.tsv``.

Files of a model directory (the set depends only on the model's kind:
:func:`tessera.survival.settings.model_files`; a curve that does not apply to a run, e.g. calibration
with a horizon beyond follow-up, is a header-only table and a figure saying why):

==========================  ============================================================================
``metrics.json``            settings, pooled and per-fold metrics with bootstrap CIs, log-rank, calibration
``oof_predictions.tsv``     patient_id, fold, repeat, risk, time, event, risk_group (1 = lowest risk)
``km_risk_groups.png``      Kaplan–Meier curves of the out-of-fold risk groups with the log-rank p
``td_auc.tsv``/``.png``     time-dependent AUC on the guarded grid
``MODEL.md``, ``model.joblib`` / ``model.safetensors``   the final model fitted on all patients
``timings.json``            wall time per fold (varies between runs; everything else is deterministic)
with a survival function:   ``oof_survival.tsv`` (S at the evaluation times), ``brier.tsv``/``.png``,
                            ``calibration.tsv``/``.png``
multimodal model:           ``attention.parquet`` (per instance, with slide and level-0 coordinates),
                            ``attributions.tsv`` and ``attribution_summary.tsv`` (Integrated Gradients of
                            the tabular inputs), ``training.png`` (first repeat explained)
==========================  ============================================================================
"""

from __future__ import annotations

import json
import logging
import os
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from tessera.atomic import atomic_path, write_text
from tessera.survival import explain as E
from tessera.survival import plots
from tessera.survival.data import SurvivalData
from tessera.survival.evaluation import evaluate, oof_table
from tessera.survival.experiment import fit_final, run_cv
from tessera.survival.settings import (
    DEEP_KINDS,
    SURVIVAL_FUNCTION_KINDS,
    CVSettings,
    EvalSettings,
    HPOSettings,
    ModelSpec,
    model_files,
)

log = logging.getLogger(__name__)

MODEL_NOTE = """# Final model of `{name}` ({kind})

Fitted on all {n} patients of the cohort table with parameters {params}.
Cross-validated performance is in `metrics.json`; this file is for applying the model to new patients.

{how}
"""
MODEL_NOTE_NONE = """# Final model of `{name}`

Not fitted in this run (final_model=False): only cross-validated results are here.
"""
JOBLIB_HOW = """`model.joblib` holds a dict (kind, params, pca, horizon, columns, pipeline): the scikit-learn
pipeline (imputation, scaling, PCA, estimator). joblib files are pickles: load them only if this
workflow wrote them (`tessera.survival.tabular.load_tabular`). Inputs: the cohort-table columns listed
under `columns`."""
SAFETENSORS_HOW = """`model.safetensors` holds the network weights (`net.*`), the fitted preprocessing arrays
(`preprocess.*`: imputer medians, scaler mean and scale, PCA components) and, as JSON metadata under
`tessera`, the parameters, time-bin edges (days), input columns and instance-embedding dimension.
safetensors files hold tensors only: nothing is executed when they are loaded."""


ATTENTION_COLUMNS = {"patient_id": "str", "repeat": "int64", "fold": "int64", "slide_id": "str", "instance": "int64",
                     "x": "int64", "y": "int64", "size_level0": "int64", "attention": "float32"}
ATTRIBUTION_COLUMNS = ["patient_id", "repeat", "fold", "feature", "value", "attribution"]


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def _not_available(out: Path, stem: str, title: str, reason: str, columns: list[str]) -> None:
    """Header-only table and an explanatory figure for a curve that does not apply to this run."""
    _write_tsv(pd.DataFrame(columns=columns), out / f"{stem}.tsv")
    plots.not_available(title, reason, out / f"{stem}.png")


def _versions() -> dict:
    out = {}
    for pkg in ("tessera", "scikit-survival", "scikit-learn", "optuna", "numpy", "torch"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing optional package is simply not listed
            pass
    return out


def run_model(spec: ModelSpec, data: SurvivalData, out_dir: str | os.PathLike, cv: CVSettings, ev: EvalSettings,
              hpo: HPOSettings, *, threads: int = 1, bags=None, device=None, explain: dict | None = None,
              final_model: bool = True) -> dict:
    """Cross-validate ``spec`` on ``data`` and write ``out_dir`` (see the module docstring). Returns the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = data.select(spec.modalities)
    explainer = None
    if spec.kind in DEEP_KINDS:
        explain = explain or {}
        explainer = E.FoldExplainer(attention=explain.get("attention", True),
                                    integrated_gradients=explain.get("integrated_gradients", True),
                                    ig_steps=explain.get("ig_steps", 32))
    log.info("%s (%s): %d patients, %d events, %d features (%s)", spec.name, spec.kind, len(data),
             int(data.y["event"].sum()), data.X.shape[1], ", ".join(data.modalities) or "no tabular features")
    run = run_cv(spec, data, cv, ev, hpo, threads=threads, bags=bags, device=device, explain=explainer)
    metrics, curves = evaluate(data.y, run.results, run.frame, ev, spec.is_classifier)
    title = f"{spec.name} ({spec.kind})"

    oof = oof_table(data.patient_id, data.y, run.results)
    _write_tsv(oof, out / "oof_predictions.tsv")
    if run.results[0].surv is not None:
        surv = []
        for r in run.results:
            cols = {f"S_{t:g}": r.surv[:, j] for j, t in enumerate(run.frame.surv_times)}
            surv.append(pd.DataFrame({"patient_id": data.patient_id[r.fold.test], "repeat": r.fold.repeat, **cols}))
        _write_tsv(pd.concat(surv).sort_values(["repeat", "patient_id"], kind="stable"), out / "oof_survival.tsv")

    p_first = metrics["logrank"]["per_repeat"][0]["p"]
    plots.km_groups(curves["km"], p_first, f"{title}: out-of-fold risk groups (repeat 0)", out / "km_risk_groups.png")
    no_grid = "no evaluation time inside the guarded follow-up"
    if curves["td_auc"] is not None:
        _write_tsv(pd.DataFrame(curves["td_auc"]), out / "td_auc.tsv")
        plots.td_auc(curves["td_auc"], title, out / "td_auc.png")
    else:
        _not_available(out, "td_auc", title, no_grid, ["time", "auc"])
    if spec.kind in SURVIVAL_FUNCTION_KINDS:
        if curves["brier"] is not None:
            _write_tsv(pd.DataFrame(curves["brier"]), out / "brier.tsv")
            plots.brier(curves["brier"], title, out / "brier.png")
        else:
            _not_available(out, "brier", title, "fewer than 2 evaluation times inside the guarded follow-up",
                           ["time", "brier"])
        if curves["calibration"] is not None:
            _write_tsv(pd.DataFrame(curves["calibration"]), out / "calibration.tsv")
            plots.calibration(curves["calibration"], run.frame.horizon, title, out / "calibration.png")
        else:
            _not_available(out, "calibration", title, f"horizon {run.frame.horizon:g} d beyond the guarded follow-up",
                           ["group", "n", "predicted", "observed", "observed_lower", "observed_upper"])

    if spec.kind in DEEP_KINDS:
        histories = [(f"r{r.fold.repeat} f{r.fold.fold}", r.history) for r in run.results if r.history]
        plots.training(histories, title, out / "training.png")
        attention = E.collect(run.results, "attention")
        if attention.empty:
            attention = pd.DataFrame({c: pd.Series(dtype=t) for c, t in ATTENTION_COLUMNS.items()})
        with atomic_path(out / "attention.parquet") as tmp:
            attention.to_parquet(tmp, index=False)
        attributions = E.collect(run.results, "attributions")
        _write_tsv(attributions if len(attributions) else pd.DataFrame(columns=ATTRIBUTION_COLUMNS),
                   out / "attributions.tsv")
        _write_tsv(E.attribution_summary(attributions) if len(attributions) else
                   pd.DataFrame(columns=["feature", "modality", "mean_abs_attribution", "mean_attribution",
                                         "value_attribution_corr"]), out / "attribution_summary.tsv")
        if len(attributions):
            metrics["ig_max_completeness_error"] = max(
                r.extras["ig_max_completeness_error"] for r in run.results if r.extras and "attributions" in r.extras)

    final = None
    write_text(out / "MODEL.md", MODEL_NOTE_NONE.format(name=spec.name))
    if final_model:
        learner, params, summary = fit_final(spec, data, cv, ev, hpo, threads=threads, bags=bags, device=device)
        if spec.kind in DEEP_KINDS:
            learner.save(out / "model.safetensors")
            how, file = SAFETENSORS_HOW, "model.safetensors"
        else:
            learner.save(out / "model.joblib")
            how, file = JOBLIB_HOW, "model.joblib"
        write_text(out / "MODEL.md", MODEL_NOTE.format(name=spec.name, kind=spec.kind, n=len(data),
                                                       params=json.dumps(params, sort_keys=True), how=how))
        final = {"file": file, "params": params, "hpo": summary}

    record = {
        "model": spec.name, "kind": spec.kind, "modalities": data.modalities, "n_features": int(data.X.shape[1]),
        "params": spec.params, "search": spec.search, "n_trials": spec.n_trials if spec.search else 0,
        "pca": spec.pca, "seed": spec.seed,
        "cv": {"n_splits": cv.n_splits, "n_repeats": cv.n_repeats, "seed": cv.seed, "inner_splits": cv.inner_splits},
        "evaluation": {"n_bootstrap": ev.n_bootstrap, "grid_points": ev.grid_points,
                       "grid_quantiles": list(ev.grid_quantiles), "n_risk_groups": ev.n_risk_groups,
                       "calibration_groups": ev.calibration_groups},
        **metrics, "final_model": final, "versions": _versions(),
    }
    record = json.loads(json.dumps(record, default=_json_default))
    write_text(out / "metrics.json", json.dumps(record, indent=2, sort_keys=False) + "\n")
    write_text(out / "timings.json", json.dumps({
        "total_seconds": round(time.perf_counter() - start, 3),
        "folds": [{"repeat": r.fold.repeat, "fold": r.fold.fold, "seconds": round(r.seconds, 3)} for r in run.results],
    }, indent=2) + "\n")
    expected = [f for f in model_files(spec.kind) if final_model or not f.startswith("model.")]
    missing = [f for f in expected if not (out / f).is_file()]
    if missing:
        raise RuntimeError(f"{spec.name}: files not written: {', '.join(missing)}")
    pooled = metrics["pooled"]["c_harrell"]
    log.info("%s: pooled out-of-fold Harrell C %.3f (95%% CI %s)", spec.name, pooled["mean"], pooled["ci95"])
    return record


def _json_default(obj):
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


SUMMARY_COLUMNS = ["model", "kind", "modalities", "n_patients", "n_events", "c_harrell", "c_harrell_lower",
                   "c_harrell_upper", "c_uno", "c_uno_lower", "c_uno_upper", "td_auc_mean", "ibs", "auroc",
                   "c_harrell_fold_mean", "c_harrell_fold_sd", "logrank_p_median"]


def summarise(metrics_files: list[str | os.PathLike], out_tsv: str | os.PathLike,
              out_png: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per model from their ``metrics.json``: pooled out-of-fold metrics with 95 % CIs."""
    rows = []
    for path in metrics_files:
        m = json.loads(Path(path).read_text())

        def pooled(name, key="mean", m=m):
            v = m["pooled"].get(name)
            return None if v is None else v[key]

        def ci(name, i, m=m):
            v = m["pooled"].get(name)
            return None if v is None else v["ci95"][i]

        rows.append({
            "model": m["model"], "kind": m["kind"], "modalities": ",".join(m["modalities"]),
            "n_patients": m["n_patients"], "n_events": m["n_events"],
            "c_harrell": pooled("c_harrell"), "c_harrell_lower": ci("c_harrell", 0), "c_harrell_upper": ci("c_harrell", 1),
            "c_uno": pooled("c_uno"), "c_uno_lower": ci("c_uno", 0), "c_uno_upper": ci("c_uno", 1),
            "td_auc_mean": pooled("td_auc_mean"), "ibs": pooled("ibs"), "auroc": pooled("auroc"),
            "c_harrell_fold_mean": m["folds"]["c_harrell"]["mean"], "c_harrell_fold_sd": m["folds"]["c_harrell"]["sd"],
            "logrank_p_median": m["logrank"]["p_median"],
        })
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    _write_tsv(table, Path(out_tsv))
    if out_png is not None and len(table):
        plots.summary(table, out_png)
    return table


def run_model_job(model: dict, survival: dict, table: str | os.PathLike, out_dir: str | os.PathLike, *,
                  threads: int = 1, feature_index: str | os.PathLike | None = None,
                  qc: str | os.PathLike | None = None, workdir: str | os.PathLike = ".",
                  vit4k: dict | None = None) -> dict:
    """The workflow job of one model: ``model`` is its ``survival.models`` entry, ``survival`` the whole section.

    The deep model reads its instance bags through ``feature_index`` (and ``qc``) when it has an
    encoder, and computes on ``params.device`` (``auto``: a locked GPU if there is one, else CPU).
    ``vit4k`` (``hipt_lgp``): ``{"weights": ..., "seed": ...}`` of the pathology stage's ViT-4K, the
    model's start unless its params name ``vit4k_weights`` themselves.
    """
    from tessera.survival.data import load_cohort_table
    from tessera.survival.settings import parse_survival_config

    if model.get("kind") == "hipt_lgp" and vit4k is not None and "vit4k_weights" not in (model.get("params") or {}):
        model = {**model, "params": {**(model.get("params") or {}), "vit4k_weights": vit4k["weights"],
                                     "vit4k_seed": vit4k["seed"]}}
    settings = parse_survival_config({**survival, "models": [model]})
    spec = settings.models[0]
    bags = device = None
    if spec.kind in DEEP_KINDS:
        from tessera.devices import torch_device, use_cpu_threads
        from tessera.survival.bags import BagStore
        from tessera.survival.settings import params_class

        use_cpu_threads(threads)
        device = torch_device(params_class(spec.kind).from_dict(spec.params, spec.kind).device)
        log.info("%s computes on %s with %d CPU thread(s)", spec.name, device, threads)
        if spec.encoder is not None:
            bags = BagStore(feature_index, qc, workdir=workdir,
                            dataset="tokens" if spec.kind == "hipt_lgp" else "features")
    return run_model(spec, load_cohort_table(table), out_dir, settings.cv, settings.evaluation, settings.hpo,
                     threads=threads, bags=bags, device=device, explain=settings.explain)
