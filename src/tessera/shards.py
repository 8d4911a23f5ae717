"""Patient-aligned, stable shards: the unit of work that keeps planning cheap at 200,000 slides.

A patient's shard is ``crc32(patient_id) % n_shards``. Membership depends only on the patient's own
ID, so adding patients or slides to a cohort changes only the shards they fall in; every slide of a
patient lands in the same shard. ``n_shards`` is fixed for a cohort's lifetime (changing it
reassigns everything).
"""

from __future__ import annotations

import zlib


def shard_of(patient_id: str, n_shards: int) -> int:
    """Shard index in ``[0, n_shards)`` of a patient."""
    return zlib.crc32(patient_id.encode("utf-8")) % n_shards


def shard_name(index: int, n_shards: int) -> str:
    """Zero-padded shard label, e.g. ``007`` for index 7 of 1000 shards."""
    return f"{index:0{len(str(max(n_shards - 1, 0)))}d}"


def shard_label(patient_id: str, n_shards: int) -> str:
    """Zero-padded shard label of a patient."""
    return shard_name(shard_of(patient_id, n_shards), n_shards)
