"""Server-side request validation from botocore's service models, as AWS does it.

botocore checks types, required members and minimum lengths on the client; AWS itself also rejects
values over a maximum length or count, outside an enum, or not matching a member's pattern
(e.g. a SageMaker container argument over 256 characters). This module checks all of those.
"""

from __future__ import annotations

import functools
from typing import Any

import regex  # AWS patterns use \p{L}-style classes that the standard library's re lacks
from botocore.model import Shape


@functools.lru_cache(maxsize=None)
def _pattern(text: str):
    try:
        return regex.compile(text)
    except regex.error:  # a few model patterns (surrogate ranges) do not compile: not checked
        return None


def validate(shape: Shape, value: Any, path: str = "") -> list[str]:
    """Every constraint of ``shape`` that ``value`` breaks, as ``path: problem`` strings."""
    errors: list[str] = []
    meta = shape.metadata
    kind = shape.type_name
    where = path or shape.name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        for name in shape.required_members:
            if name not in value:
                errors.append(f"{where}.{name}: missing")
        for name, member_value in value.items():
            if name in shape.members and member_value is not None:
                errors += validate(shape.members[name], member_value, f"{where}.{name}")
    elif kind == "list":
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        errors += _bounds(where, len(value), meta, "items")
        for i, item in enumerate(value):
            errors += validate(shape.member, item, f"{where}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: expected a map"]
        # Only the maximum: AWS Batch takes the empty tag map that snakemake-executor-plugin-aws-batch
        # always sends although the model says min 1 (botocore does not check map sizes either).
        errors += _bounds(where, len(value), {k: v for k, v in meta.items() if k == "max"}, "entries")
        for k, v in value.items():
            errors += validate(shape.key, k, f"{where} key {k!r}")
            errors += validate(shape.value, v, f"{where}[{k!r}]")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string"]
        errors += _bounds(where, len(value), meta, "characters")
        if shape.enum and value not in shape.enum:
            errors.append(f"{where}: {value!r} is not one of the allowed values")
        pattern = meta.get("pattern")
        if pattern and (compiled := _pattern(pattern)) is not None and not compiled.fullmatch(value):
            errors.append(f"{where}: {value[:80]!r} does not match pattern {pattern}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: expected an integer"]
        if "min" in meta and value < meta["min"]:
            errors.append(f"{where}: {value} is below the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            errors.append(f"{where}: {value} is above the maximum {meta['max']}")
    elif kind == "boolean" and not isinstance(value, bool):
        errors.append(f"{where}: expected true or false")
    return errors


def _bounds(where: str, n: int, meta: dict, unit: str) -> list[str]:
    if "min" in meta and n < meta["min"]:
        return [f"{where}: {n} {unit}, at least {meta['min']} needed"]
    if "max" in meta and n > meta["max"]:
        return [f"{where}: {n} {unit}, at most {meta['max']} allowed"]
    return []
