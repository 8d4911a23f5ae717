"""The ``survival`` config section as objects, with the checks a JSON Schema cannot express.

Parsed when the Snakefile is parsed (and again by every remote job), so this module imports nothing
heavy (no scikit-learn, no torch) and reads no data: a bad model entry stops the run before any job
starts, with the key and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tessera.errors import InputError

MODALITIES = ("clinical", "pathology", "genomics")
SEP = "__"  # feature columns are named {modality}__{feature}
SURVIVAL_KINDS = ("cox_ridge", "coxnet", "rsf", "gbsa", "svm")
CLASSIFIER_KINDS = ("logistic", "rf_classifier")
TABULAR_KINDS = SURVIVAL_KINDS + CLASSIFIER_KINDS
#: Attention-MIL survival networks over instance bags (one training loop: tessera.survival.porpoise);
#: the HIPT kinds read region bags and need an encoder.
DEEP_KINDS = ("porpoise", "hipt_gp", "hipt_lgp")
HIPT_KINDS = ("hipt_gp", "hipt_lgp")
KINDS = TABULAR_KINDS + DEEP_KINDS
SURVIVAL_FUNCTION_KINDS = ("cox_ridge", "coxnet", "rsf", "gbsa", *DEEP_KINDS)  # predict S(t), not only a risk

#: Files of results/models/{model}/ by what the model can do (see tessera.survival.run). A file
#: that does not apply to one run (e.g. calibration with a horizon beyond follow-up) holds a note.
COMMON_FILES = ("metrics.json", "oof_predictions.tsv", "timings.json", "km_risk_groups.png", "td_auc.tsv",
                "td_auc.png", "MODEL.md")
SURVIVAL_FUNCTION_FILES = ("oof_survival.tsv", "brier.tsv", "brier.png", "calibration.tsv", "calibration.png")
DEEP_FILES = ("attention.parquet", "attributions.tsv", "attribution_summary.tsv", "training.png")
#: Rule families of rules/survival.smk: each has one fixed set of output files.
FAMILIES = {
    "survival_tabular": ("cox_ridge", "coxnet", "rsf", "gbsa"),
    "survival_ranking": ("svm", "logistic", "rf_classifier"),
    "survival_deep": DEEP_KINDS,
}


def model_files(kind: str) -> list[str]:
    """File names a model of ``kind`` writes into ``results/models/{model}/``."""
    files = list(COMMON_FILES)
    if kind in SURVIVAL_FUNCTION_KINDS:
        files += SURVIVAL_FUNCTION_FILES
    if kind in DEEP_KINDS:
        files += [*DEEP_FILES, "model.safetensors"]
    else:
        files.append("model.joblib")
    return files
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def check_space(space: dict, where: str) -> None:
    """Raise :class:`InputError` for a malformed search-space spec (see :mod:`tessera.survival.hpo`)."""
    for name, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        ok = (kind in ("float", "int") and "low" in spec and "high" in spec and spec["low"] <= spec["high"]
              and not (spec.get("log") and spec["low"] <= 0)) or (kind == "categorical" and spec.get("choices"))
        if not ok:
            raise InputError(
                f"search space of '{name}' is invalid: {spec}", field=f"{where}.search.{name}",
                fix="use {type: float|int, low, high[, log: true (low > 0)][, step]} or "
                    "{type: categorical, choices: [...]}",
            )


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``survival.models``."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    n_trials: int = 20
    modalities: list[str] | None = None
    pca: dict = field(default_factory=dict)
    seed: int = 0
    encoder: str | None = None  # deep kinds: encoder whose instance embeddings form the MIL bags

    @classmethod
    def from_config(cls, entry: dict, default_seed: int = 0, default_trials: int = 20) -> "ModelSpec":
        name = str(entry.get("name", ""))
        where = f"survival.models[{name or '?'}]"
        if not re.fullmatch(NAME_PATTERN, name):
            raise InputError(f"model name '{name}' is not valid", field=f"{where}.name",
                             fix="use letters, digits, '_' or '-' (it names results/models/{name}/)")
        if entry.get("kind") not in KINDS:
            raise InputError(f"unknown model kind '{entry.get('kind')}'", field=f"{where}.kind",
                             fix=f"use one of {', '.join(KINDS)}")
        search = dict(entry.get("search") or {})
        check_space(search, where)
        return cls(name=name, kind=entry["kind"], params=dict(entry.get("params") or {}), search=search,
                   n_trials=int(entry.get("n_trials", default_trials)), modalities=entry.get("modalities"),
                   pca=dict(entry.get("pca") or {}), seed=int(entry.get("seed", default_seed)),
                   encoder=entry.get("encoder"))

    @property
    def is_classifier(self) -> bool:
        return self.kind in CLASSIFIER_KINDS


@dataclass
class CVSettings:
    """Config ``survival.cv``: outer folds × repeats, inner folds for tuning, folds run in parallel."""

    n_splits: int = 5
    n_repeats: int = 2
    seed: int = 0
    inner_splits: int = 3
    n_jobs: int = 1

    @classmethod
    def from_config(cls, cfg: dict | None) -> "CVSettings":
        return cls(**dict(cfg or {}))


@dataclass
class HPOSettings:
    """Config ``survival.hpo``: where studies live (resume cache, not a tracked output), time cap per study."""

    storage_dir: str = "results/hpo"
    timeout_s: float | None = None

    @classmethod
    def from_config(cls, cfg: dict | None) -> "HPOSettings":
        return cls(**dict(cfg or {}))


@dataclass
class EvalSettings:
    """Config ``survival.evaluation``."""

    horizon_days: float | None = None
    n_bootstrap: int = 200
    grid_points: int = 20
    grid_quantiles: tuple[float, float] = (0.1, 0.9)
    n_risk_groups: int = 2
    calibration_groups: int = 4
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: dict | None) -> "EvalSettings":
        cfg = dict(cfg or {})
        if "grid_quantiles" in cfg:
            cfg["grid_quantiles"] = tuple(cfg["grid_quantiles"])
        return cls(**cfg)


@dataclass
class PorpoiseParams:
    """``survival.models[].params`` of the deep kinds (defaults = PORPOISE's; ``hipt_lgp`` adds :class:`HIPTLGPParams`)."""

    fusion: str = "bilinear"
    n_bins: int = 4
    alpha: float = 0.0
    lr: float = 2e-4
    weight_decay: float = 1e-5
    epochs: int = 20
    batch_size: int = 32
    micro_batch: int = 8
    dropout: float = 0.25
    early_stopping: dict | None = None  # {validation_fraction: 0.2, patience: 5}
    max_instances: int | None = None
    device: str = "auto"
    pca: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, params: dict, kind: str = "porpoise") -> "PorpoiseParams":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"unknown {kind} parameter(s) {', '.join(unknown)}", field="survival.models[].params",
                             fix=f"use only {', '.join(sorted(known))}")
        p = cls(**params)
        if p.fusion not in ("bilinear", "concat"):
            raise InputError(f"unknown fusion '{p.fusion}'", field="survival.models[].params.fusion",
                             fix="use bilinear or concat")
        if p.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"unknown device '{p.device}'", field="survival.models[].params.device",
                             fix="use auto, cpu or cuda")
        return p


@dataclass
class HIPTLGPParams(PorpoiseParams):
    """``params`` of kind ``hipt_lgp``: the deep kinds' and the ViT-4K's start and whether it trains."""

    freeze_4k: bool = False
    vit4k_weights: str = "random"  # the workflow fills in pathology.weights.hipt4k
    vit4k_seed: int = 0  # random weights' seed; the workflow fills in pathology.random_seed


def params_class(kind: str) -> type[PorpoiseParams]:
    """The parameter class of a deep kind."""
    return HIPTLGPParams if kind == "hipt_lgp" else PorpoiseParams


@dataclass
class SurvivalSettings:
    """The parsed ``survival`` section."""

    cohort: dict
    cv: CVSettings
    hpo: HPOSettings
    evaluation: EvalSettings
    explain: dict
    models: list[ModelSpec]

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)


def parse_survival_config(cfg: dict, file: str = "config") -> SurvivalSettings:
    """Parse and check ``config['survival']``; raise :class:`InputError` naming the key and the fix."""
    cohort = dict(cfg.get("cohort", {}))
    modalities = cohort.get("modalities", ["clinical"])
    if not modalities or any(m not in MODALITIES for m in modalities):
        raise InputError(f"modalities {modalities} must be a non-empty subset of {list(MODALITIES)}", file=file,
                         field="survival.cohort.modalities", fix=f"choose among {', '.join(MODALITIES)}")
    cv = CVSettings.from_config(cfg.get("cv"))
    if cv.inner_splits < 2 or cv.n_splits < 2:
        raise InputError("n_splits and inner_splits must be at least 2", file=file, field="survival.cv",
                         fix="use 2 or more outer and inner folds")
    models, names = [], set()
    for entry in cfg.get("models", []):
        spec = ModelSpec.from_config(entry, default_seed=cv.seed)
        where = f"survival.models[{spec.name}]"
        if spec.name in names:
            raise InputError(f"model name '{spec.name}' is used twice", file=file, field=f"{where}.name",
                             fix="give every model its own name (it names results/models/{name}/)")
        names.add(spec.name)
        unknown = [m for m in (spec.modalities or []) if m not in modalities]
        if unknown:
            raise InputError(f"modalities {unknown} are not in survival.cohort.modalities {modalities}", file=file,
                             field=f"{where}.modalities", fix="add them to the cohort or remove them from the model")
        if spec.modalities is not None and not spec.modalities and spec.kind not in DEEP_KINDS:
            raise InputError("a tabular model needs at least one modality", file=file, field=f"{where}.modalities",
                             fix="list modalities, or leave the key out to use all of the cohort's")
        bad_pca = [m for m in spec.pca if m not in MODALITIES]
        if bad_pca:
            raise InputError(f"PCA for unknown modality {bad_pca}", file=file, field=f"{where}.pca",
                             fix=f"key the PCA components by modality: {', '.join(MODALITIES)}")
        if spec.kind in DEEP_KINDS:
            params_class(spec.kind).from_dict(spec.params, spec.kind)  # unknown parameters fail here, not in a job
        elif spec.encoder is not None:
            raise InputError(f"only the deep kinds ({', '.join(DEEP_KINDS)}) read instance embeddings", file=file,
                             field=f"{where}.encoder",
                             fix="remove encoder from this tabular model (it uses slide embeddings via the cohort)")
        if spec.kind in HIPT_KINDS and spec.encoder is None:
            raise InputError(f"a {spec.kind} model needs the encoder of its region features", file=file,
                             field=f"{where}.encoder", fix="set encoder: hipt4k (one 192-d row per 4096-px region)")
        models.append(spec)
    return SurvivalSettings(cohort=cohort, cv=cv, hpo=HPOSettings.from_config(cfg.get("hpo")),
                            evaluation=EvalSettings.from_config(cfg.get("evaluation")),
                            explain=dict(cfg.get("explain", {})), models=models)


# ------------------------------------------------------------------ workflow inputs (rules/survival.smk)
def cohort_inputs(config: dict) -> dict[str, str]:
    """Input files of the cohort-table job: the sheets (those not switched off with null), plus the
    chosen modalities' upstream tables."""
    cohort = config.get("survival", {}).get("cohort", {})
    modalities = cohort.get("modalities", ["clinical"])
    inputs = {k: config[k] for k in ("clinical", "slides", "genomics") if config.get(k) is not None}
    if "pathology" in modalities:
        inputs["qc"] = "results/qc/slides.tsv"
        inputs["slide_embeddings"] = f"results/features/{cohort.get('pathology_encoder', 'hipt256')}/slide_embeddings.parquet"
    if "genomics" in modalities:
        model = cohort.get("genomics_model") or config.get("genomics_model", {}).get("name")
        if not model:
            raise InputError("the genomics modality needs a genomic model name", field="survival.cohort.genomics_model",
                             fix="name the model whose results/genomics/{model}/embeddings.parquet to use, or "
                                 "configure genomics_model.name")
        inputs["genomic_embeddings"] = f"results/genomics/{model}/embeddings.parquet"
    return inputs


def model_inputs(settings: SurvivalSettings, name: str) -> dict[str, str]:
    """Input files of a model job: the cohort table, and the MIL bags' feature index for a deep model."""
    inputs = {"table": "results/cohort/table.parquet"}
    encoder = settings.model(name).encoder
    if encoder is not None:
        inputs["feature_index"] = f"results/features/{encoder}/index.tsv"
        inputs["qc"] = "results/qc/slides.tsv"
    return inputs


def _fewest_in_training(n: int, n_splits: int) -> int:
    """Fewest of ``n`` patients of one class left in a training part of a stratified ``n_splits``-fold
    split (scikit-learn spreads each class over the folds as evenly as possible)."""
    return n - -(-n // n_splits)


def cv_blocker(event, cv: CVSettings, models: list[ModelSpec] = ()) -> str | None:
    """Why the configured cross-validation cannot run on a clinical table's ``event`` column (None if it can).

    Checks the outer folds (``cv.n_splits``) and, when a model has a search space, the inner folds
    that tune it inside each training part (``cv.inner_splits``): every fold needs an event and, if
    the cohort has any, a censored patient. The message names the key and ends with the fix. Cheap
    (parse time); the same conditions stop a model job with an error naming the same key. The workflow
    uses this to leave the survival models out of a cohort too small for them instead of failing the
    whole run after the other stages.
    """
    n_events = int(sum(int(e) for e in event))
    n_censored = len(event) - n_events
    if n_events == 0:
        return ("the clinical table has no events (every patient is censored). "
                "Fix: check the event column (1 = event)")
    counts = {"event(s)": n_events, **({"censored patient(s)": n_censored} if n_censored else {})}
    what, n = min(counts.items(), key=lambda kv: kv[1])
    if n < cv.n_splits:
        fix = (f"lower survival.cv.n_splits (at most {n}), or use a larger cohort" if n >= 2 else
               "use a larger cohort (cross-validation needs at least 2 of each)")
        return f"the clinical table has {n} {what}, fewer than survival.cv.n_splits = {cv.n_splits}. Fix: {fix}"
    tuned = [m.name for m in models if m.search]
    if not tuned:
        return None
    kept = {k: _fewest_in_training(v, cv.n_splits) for k, v in counts.items()}
    what, fewest = min(kept.items(), key=lambda kv: kv[1])
    if fewest >= cv.inner_splits:
        return None
    fix = (f"lower survival.cv.inner_splits (at most {fewest})" if fewest >= 2 else
           f"give {', '.join(tuned)} fixed params instead of a search space")
    return (f"a training part of the {cv.n_splits} outer folds keeps as few as {fewest} of the clinical table's "
            f"{counts[what]} {what}, fewer than survival.cv.inner_splits = {cv.inner_splits} (inner folds that "
            f"tune {', '.join(tuned)}). Fix: {fix}, or use a larger cohort")


def family_models(settings: SurvivalSettings, family: str, active: bool = True) -> list[str]:
    """Names of the configured models a rule family runs (none when not ``active``)."""
    return [m.name for m in settings.models if m.kind in FAMILIES[family]] if active else []


def family_outputs(family: str) -> list[str]:
    """Output paths (with the ``{model}`` wildcard) of a rule family."""
    return [f"results/models/{{model}}/{f}" for f in model_files(FAMILIES[family][0])]


def name_constraint(names: list[str]) -> str:
    """Wildcard constraint matching exactly these model names (never matching when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"
