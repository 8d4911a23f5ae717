"""Checks of the config that a JSON Schema cannot express (relations between keys)."""

from __future__ import annotations

from tessera.errors import InputError
from tessera.explain import pseudonyms
from tessera.survival.settings import DEEP_KINDS


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
    deep = [m.get("name") for m in config.get("survival", {}).get("models", []) if m.get("kind") in DEEP_KINDS]
    if e.get("attention_model") and e["attention_model"] not in deep:
        raise InputError(
            f"explain.attention_model {e['attention_model']!r} is not a deep model of survival.models "
            f"({', '.join(map(str, deep)) or 'none'})", file=file, field="explain.attention_model",
            fix=f"name a model of kind {' or '.join(DEEP_KINDS)} (its attention is drawn), or null",
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
