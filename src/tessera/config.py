"""Checks of the config: the JSON Schema, reported one short line per problem, and the relations
between keys that a schema cannot express."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping

import yaml

from tessera.errors import InputError, InputErrors
from tessera.explain import pseudonyms
from tessera.survival.settings import DEEP_KINDS

#: Source name of values given with ``snakemake --config KEY=VALUE``.
COMMAND_LINE = "--config"


def config_sources(files: Iterable[str | os.PathLike], overrides: Mapping | None = None) -> list[tuple[str, dict]]:
    """The config files in the order Snakemake merges them (later wins), then ``--config`` overrides,
    as ``(name, content)`` pairs; names are relative to the working directory where they lie under it."""
    sources = []
    for f in files:
        name = os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(f)
        with open(f) as fh:
            sources.append((name, yaml.safe_load(fh) or {}))
    if overrides:
        sources.append((COMMAND_LINE, dict(overrides)))
    return sources


def _lookup(data, path: tuple) -> bool:
    """Whether ``data`` (nested mappings and lists) holds a value at ``path``."""
    for key in path:
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and key < len(data):
            data = data[key]
        else:
            return False
    return True


def _source(path: tuple, sources: list[tuple[str, dict]]) -> str:
    """The last source that sets ``path`` (the one whose value the merged config holds)."""
    for name, data in reversed(sources):
        if _lookup(data, path):
            return name
    return "config"


def _key_path(config: dict, path: Iterable) -> str:
    """``survival.models[coxnet].kind``: list items named by their ``name`` where they have one."""
    out, node = "", config
    for key in path:
        if isinstance(key, int):
            item = node[key] if isinstance(node, list) and key < len(node) else None
            name = item.get("name") if isinstance(item, Mapping) else None
            out += f"[{name}]" if isinstance(name, str) and name else f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
        node = node[key] if isinstance(node, (Mapping, list)) and _lookup(node, (key,)) else None
    return out


def _value(value) -> str:
    """A short rendering of a config value (one line, at most ~60 characters)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


_TYPES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
          "array": "a list", "object": "a mapping of keys", "null": "null"}


def allowed(schema: dict) -> str:
    """What a schema admits, in words: 'an integer >= 16', 'one of auto, cpu, cuda', ..."""
    if "enum" in schema:
        return "one of " + ", ".join(_value(v) for v in schema["enum"])
    if "const" in schema:
        return _value(schema["const"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(allowed(s) for s in schema[key])
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    words = " or ".join(_TYPES.get(t, t) for t in types) or "a value"
    limits = [f"{op} {schema[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                                                 ("exclusiveMaximum", "<")) if k in schema]
    if "pattern" in schema:
        limits.append(f"matching {schema['pattern']}")
    if "minItems" in schema:
        limits.append(f"with at least {schema['minItems']} item(s)")
    if "maxItems" in schema:
        limits.append(f"with at most {schema['maxItems']} item(s)")
    if schema.get("uniqueItems"):
        limits.append("without repeats")
    if "array" in types and isinstance(schema.get("items"), dict):
        words += f" (items: {allowed(schema['items'])})"
    return f"{words} {' '.join(limits)}" if limits else words


def _meant(word, choices: Iterable) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def schema_problems(config: dict, schema: dict, sources: list[tuple[str, dict]]) -> list[InputError]:
    """Every place where the merged ``config`` breaks ``schema``, one :class:`InputError` each: the
    source file that set the value, the key path, the bad value, what is allowed and, for a misspelled
    key or value, the one meant (difflib)."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for e in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        path = tuple(e.absolute_path)
        if e.validator == "additionalProperties":
            known = list(e.schema.get("properties", {}))
            for key in sorted(set(e.instance) - set(known)):
                where = _key_path(config, (*path, key))
                value = e.instance[key]
                shown = "" if isinstance(value, (Mapping, list)) else f" (value {_value(value)})"
                problems.append(InputError(
                    f"unknown key '{key}'{shown}", file=_source((*path, key), sources), field=where,
                    fix=f"{_meant(key, known)}allowed keys: {', '.join(known)}"))
        elif "propertyNames" in e.schema_path:
            where = _key_path(config, (*path, e.instance))
            names = e.schema.get("enum", [])
            problems.append(InputError(
                f"unknown key '{e.instance}'", file=_source((*path, e.instance), sources), field=where,
                fix=f"{_meant(e.instance, names)}allowed: {allowed(e.schema)}"))
        elif e.validator == "required":
            key = e.message.split("'")[1]
            problems.append(InputError(
                f"required key '{key}' is missing", file=_source(path, sources) if path else "config",
                field=_key_path(config, (*path, key)),
                fix=f"add it ({allowed(e.schema['properties'][key])})" if key in e.schema.get("properties", {})
                else "add it"))
        else:
            meant = _meant(e.instance, e.schema["enum"]) if e.validator == "enum" else ""
            problems.append(InputError(
                f"{_value(e.instance)} is not allowed", file=_source(path, sources),
                field=_key_path(config, path), fix=f"{meant}use {allowed(e.schema)}"))
    return problems


def check_config_schema(config: dict, schema: Mapping | str | os.PathLike, sources: list[tuple[str, dict]]) -> None:
    """Raise :class:`InputErrors` listing every schema problem of the merged config (see
    :func:`schema_problems`); ``schema``: the schema or its YAML file."""
    if not isinstance(schema, Mapping):
        with open(schema) as fh:
            schema = yaml.safe_load(fh)
    problems = schema_problems(config, schema, sources)
    if problems:
        names = ", ".join(name for name, _ in sources)
        raise InputErrors(f"the config ({names})", problems, limit=50)


def check_config(config: dict, file: str = "config") -> None:
    """Raise :class:`InputError` naming the key and the fix when keys contradict each other."""
    p = config.get("patching", {})
    patch, region, overlap = p.get("patch_size", 256), p.get("region_size", 4096), p.get("overlap", 0)
    if region % patch:
        raise InputError(
            f"region_size {region} is not a multiple of patch_size {patch}", file=file, field="patching.region_size",
            fix="make the region a whole number of patches (HIPT: 4096 = 16 x 256)",
        )
    if overlap >= patch:
        raise InputError(
            f"overlap {overlap} is not smaller than patch_size {patch}", file=file, field="patching.overlap",
            fix="use an overlap below the patch size (0 keeps patches aligned with regions)",
        )
    mask_mpp = p.get("tissue", {}).get("mask_mpp", 8.0)
    patch_um = patch * p.get("target_mpp", 0.5)
    if mask_mpp > patch_um / 4:
        raise InputError(
            f"mask_mpp {mask_mpp} µm/px is too coarse for {patch_um:g} µm patches", file=file,
            field="patching.tissue.mask_mpp", fix=f"use at most {patch_um / 4:g} µm/px (4 mask pixels per patch)",
        )
    e = config.get("explain", {})
    salt_problem = pseudonyms.salt_problem(e.get("pseudonym_salt_env", "TESSERA_PSEUDONYM_SALT"))
    if e.get("pseudonymise") and salt_problem:
        raise InputError(f"explain.pseudonymise is on but {salt_problem}", file=file,
                         field="explain.pseudonym_salt_env", fix=pseudonyms.SALT_FIX)
    models = [m.get("name") for m in config.get("survival", {}).get("models", [])]
    if e.get("model") and e["model"] not in models:
        raise InputError(
            f"explain.model {e['model']!r} is not one of survival.models ({', '.join(map(str, models)) or 'none'})",
            file=file, field="explain.model", fix="name the survival model whose out-of-fold risk the report explains",
        )
    for m in config.get("survival", {}).get("models", []):
        if m.get("kind") != "hipt_lgp":
            continue
        where = f"survival.models[{m.get('name')}]"
        if m.get("encoder") != "hipt4k":
            raise InputError(f"{where} (hipt_lgp) reads encoder {m.get('encoder')!r}", file=file, field=f"{where}.encoder",
                             fix="set encoder: hipt4k (hipt_lgp fine-tunes HIPT's ViT-4K on its regions' token grids)")
        if not config.get("pathology", {}).get("region_tokens", False):
            raise InputError(f"{where} (hipt_lgp) needs each region's grid of patch tokens, which the pathology stage "
                             "does not store", file=file, field="pathology.region_tokens",
                             fix="set pathology.region_tokens: true (192 KiB per region; see config/README.md)")
    deep = [m.get("name") for m in config.get("survival", {}).get("models", [])
            if m.get("kind") in DEEP_KINDS and m.get("encoder")]
    if e.get("attention_model") and e["attention_model"] not in deep:
        raise InputError(
            f"explain.attention_model {e['attention_model']!r} is not a deep model with an encoder in "
            f"survival.models ({', '.join(map(str, deep)) or 'none'})", file=file, field="explain.attention_model",
            fix=f"name a model of kind {' or '.join(DEEP_KINDS)} that reads slides (its attention is drawn), or null",
        )
    encoders = config.get("pathology", {}).get("encoders", [])
    survival = config.get("survival", {})
    cohort = survival.get("cohort", {})
    uses = [(f"survival.models[{m.get('name')}].encoder", m.get("encoder")) for m in survival.get("models", [])]
    if "pathology" in cohort.get("modalities", []):
        uses.append(("survival.cohort.pathology_encoder", cohort.get("pathology_encoder")))
    for field, name in uses:
        if name and name not in encoders:
            raise InputError(f"{field} {name!r} is not one of pathology.encoders ({', '.join(encoders) or 'none'})",
                             file=file, field=field, fix="add it to pathology.encoders or choose an extracted encoder")
    if e.get("encoder") and e["encoder"] not in encoders:
        raise InputError(
            f"explain.encoder {e['encoder']!r} is not one of pathology.encoders ({', '.join(encoders) or 'none'})",
            file=file, field="explain.encoder", fix="add it to pathology.encoders or choose an extracted encoder",
        )


#: The stages a sheet feeds: ``slides: null`` in a config switches off the slide, feature and explain
#: stages, ``genomics: null`` the genomic stage, ``clinical: null`` the survival stage.
SHEET_MODALITY = {"slides": "pathology", "genomics": "genomics", "clinical": "clinical"}


def switch_stages(config: dict, file: str = "config") -> list[str]:
    """Make the config follow the sheets switched off with ``null`` (in place); return what was left out.

    Survival follows: ``survival.cohort.modalities``, each model's ``modalities`` and ``pca`` lose the
    modalities whose sheet is null; a model left without its data (porpoise without slides, a model of
    only switched-off modalities) is dropped; without a clinical table there is no survival stage, and
    ``explain.model`` becomes null when its model does not run (the report then shows the clusters
    without a risk) or there is no explain stage (no slides); so does ``explain.attention_model``. Raises :class:`InputError` when nothing is left to run.
    """
    off = [key for key in SHEET_MODALITY if config.get(key) is None]
    if not off:
        return []
    if config.get("slides") is None and config.get("genomics") is None:
        raise InputError("both slides and genomics are null: no stage is left to run", file=file, field="slides",
                         fix="give a slide sheet, a genomics sheet, or both")
    gone = {SHEET_MODALITY[key] for key in off}
    stages = {"slides": "slide, feature and explain stages", "genomics": "genomic stage", "clinical": "survival stage"}
    notes = [f"{key}: null switches off the {stages[key]}" for key in off]
    survival = config.setdefault("survival", {})
    cohort = survival.setdefault("cohort", {})
    models = survival.get("models") or []
    if "clinical" in gone:
        if models:
            notes.append(f"survival.models ({', '.join(str(m.get('name')) for m in models)}) left out: "
                         "no clinical table, so no outcomes")
        survival["models"] = []
    else:
        modalities = [m for m in cohort.get("modalities", ["clinical"]) if m not in gone]
        if not modalities:
            raise InputError(f"survival.cohort.modalities {cohort.get('modalities')} are all switched off "
                             f"({', '.join(off)}: null)", file=file, field="survival.cohort.modalities",
                             fix="add clinical (or a modality whose sheet is given) to the modalities")
        cohort["modalities"] = modalities
        kept = []
        for m in models:
            own = m.get("modalities")
            if own is not None:
                m["modalities"] = [x for x in own if x not in gone]
            if m.get("pca"):
                m["pca"] = {k: v for k, v in m["pca"].items() if k not in gone}
            if (m.get("encoder") and "pathology" in gone) or (own and not m["modalities"]):
                notes.append(f"survival.models[{m.get('name')}] left out: it needs "
                             + ("the slides" if m.get("encoder") else f"{', '.join(own)}, switched off"))
                continue
            kept.append(m)
        survival["models"] = kept
    explain = config.setdefault("explain", {})
    dropped = {m.get("name") for m in models} - {m.get("name") for m in survival["models"]}
    if "pathology" in gone:
        explain["model"] = None  # no explain stage without slides
    elif explain.get("model") and ("clinical" in gone or explain["model"] in dropped):
        notes.append(f"explain.model {explain['model']!r} does not run: the report shows the clusters without a risk")
        explain["model"] = None
    if explain.get("attention_model") and ("pathology" in gone or explain["attention_model"] in dropped):
        if "pathology" not in gone:
            notes.append(f"explain.attention_model {explain['attention_model']!r} does not run: the report has no "
                         "heatmaps")
        explain["attention_model"] = None
    return notes
