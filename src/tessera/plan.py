"""The cohort as the workflow plans it: validated sheets grouped into patient-aligned shards.

Built once when the Snakefile is parsed (and again by every remote job), so it does only cheap,
vectorised work: three TSV reads, checks and dict building. Input functions then use plain dict
lookups (GUIDE §4: indexed ``.loc`` per job costs seconds at 200,000 slides).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tessera.errors import InputError, InputErrors
from tessera.sheets import (
    CLINICAL_COLUMNS,
    GENOMICS_COLUMNS,
    check_patients_known,
    read_clinical,
    read_genomics_sheet,
    read_slide_sheet,
)
from tessera.shards import shard_label


@dataclass(frozen=True)
class CohortPlan:
    """Sheets and shard membership.

    ``slides_by_shard[shard]``: list of ``{slide_id, patient_id, path, mpp}`` (mpp None = from the slide);
    ``patients_by_shard[shard]``: sorted patient IDs of the genomics sheet in that shard.
    """

    n_shards: int
    slides: pd.DataFrame
    clinical: pd.DataFrame
    genomics: pd.DataFrame
    slides_by_shard: dict[str, list[dict]]
    patients_by_shard: dict[str, list[str]]

    @property
    def slide_shards(self) -> list[str]:
        return sorted(self.slides_by_shard)

    @property
    def genomics_shards(self) -> list[str]:
        return sorted(self.patients_by_shard)


def _by_shard(patient_ids: pd.Series, n_shards: int) -> pd.Series:
    cache: dict[str, str] = {}
    return patient_ids.map(lambda p: cache.get(p) or cache.setdefault(p, shard_label(p, n_shards)))


def plan_cohort(config: dict) -> CohortPlan:
    """Read and check the sheets named in ``config``; group slides and patients by shard. A sheet that
    is null in ``config`` (its stage switched off) plans as an empty one.

    Raises :class:`~tessera.errors.InputErrors` listing every problem of every sheet (invalid rows,
    a slide or genomics row naming a patient absent from the clinical table) in one go.
    """
    n_shards = int(config.get("n_shards", 8))
    problems: list[InputError] = []

    def checked(check, *args):
        """Run one sheet check, keeping its problems so that every sheet's are reported together."""
        try:
            return check(*args)
        except InputErrors as e:
            problems.extend(e.errors)
        except InputError as e:
            problems.append(e)
        return None

    # A sheet switched off with null (tessera.config.switch_stages) plans as an empty one.
    empty = {"slides": ("slide_id", "patient_id", "path", "mpp", "line"),
             "clinical": (*CLINICAL_COLUMNS, "line"), "genomics": (*GENOMICS_COLUMNS, "line")}
    sheets = {}
    for key, read in (("slides", read_slide_sheet), ("clinical", read_clinical), ("genomics", read_genomics_sheet)):
        sheets[key] = checked(read, config[key]) if config.get(key) is not None else pd.DataFrame(
            columns=list(empty[key]))
    slides, clinical, genomics = sheets["slides"], sheets["clinical"], sheets["genomics"]
    if clinical is not None and config.get("clinical") is not None:
        for table, key in ((slides, "slides"), (genomics, "genomics")):
            if table is not None and config.get(key) is not None:
                checked(check_patients_known, table, config[key], clinical, config["clinical"])
    if problems:
        files = ", ".join(dict.fromkeys(str(e.file) for e in problems))
        raise InputErrors(f"the sheets ({files})", problems)

    slides = slides.assign(shard=_by_shard(slides["patient_id"], n_shards))
    records = slides[["slide_id", "patient_id", "path", "mpp", "shard"]].astype(object)
    records["mpp"] = records["mpp"].where(records["mpp"].notna(), None)
    slides_by_shard: dict[str, list[dict]] = {}
    for rec in records.to_dict("records"):
        slides_by_shard.setdefault(rec.pop("shard"), []).append(rec)

    genomics = genomics.assign(shard=_by_shard(genomics["patient_id"], n_shards))
    patients_by_shard = {
        shard: sorted(group["patient_id"]) for shard, group in genomics.groupby("shard", sort=True)
    }
    return CohortPlan(n_shards, slides, clinical, genomics, slides_by_shard, patients_by_shard)


