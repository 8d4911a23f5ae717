"""Stable pseudonyms for patient and slide IDs in the report (config ``explain.pseudonymise``).

A pseudonym is a keyed hash: ``PT-`` (patients) or ``SL-`` (slides) followed by the first 12 hex digits of
HMAC-SHA256(key = the cohort's salt, message = ``patient:`` or ``slide:`` + ID). The same salt gives the
same pseudonyms in every run, so reports of one cohort can be compared; without the salt they cannot be
reversed by hashing candidate IDs. The salt is therefore a secret of the cohort, like a credential: it
comes from an environment variable (config ``explain.pseudonym_salt_env``, default
``TESSERA_PSEUDONYM_SALT``), never from a config file or a job's params (Snakemake's report embeds both).
Use a long random string (e.g. ``python -c "import secrets; print(secrets.token_hex(32))"``), one per
cohort. It never appears in any output.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from tessera.errors import InputError

DIGITS = 12
SALT_FIX = ("export a long random secret in the variable explain.pseudonym_salt_env names, e.g. "
            "export TESSERA_PSEUDONYM_SALT=$(python -c \"import secrets; print(secrets.token_hex(32))\")")


def salt_problem(variable: str) -> str | None:
    """Why the environment variable ``variable`` holds no usable salt (None if it does)."""
    salt = os.environ.get(variable, "")
    if not salt:
        return f"the pseudonym salt variable {variable} is not set"
    if len(salt) < 16:
        return f"the pseudonym salt in {variable} is shorter than 16 characters"
    return None


class Pseudonyms:
    """Maps IDs to pseudonyms (or leaves them as they are when ``salt`` is None)."""

    def __init__(self, salt: str | None) -> None:
        if salt is not None and len(salt) < 16:
            raise InputError("the pseudonym salt is shorter than 16 characters", field="explain.pseudonym_salt_env",
                             fix=SALT_FIX)
        self._key = salt.encode("utf-8") if salt is not None else None
        self._seen: dict[str, str] = {}

    @classmethod
    def from_env(cls, variable: str) -> "Pseudonyms":
        """Keyed by the salt in environment variable ``variable``: a secret stays out of configs and params."""
        problem = salt_problem(variable)
        if problem:
            raise InputError(problem, field="explain.pseudonym_salt_env", fix=SALT_FIX)
        return cls(os.environ[variable])

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def _hash(self, kind: str, prefix: str, value: str) -> str:
        if self._key is None:
            return value
        name = prefix + hmac.new(self._key, f"{kind}:{value}".encode("utf-8"), hashlib.sha256).hexdigest()[:DIGITS]
        other = self._seen.setdefault(name, f"{kind}:{value}")
        if other != f"{kind}:{value}":  # 48 bits: ~1e-4 chance at 200,000 IDs, but never silently
            raise InputError(f"pseudonym collision between two IDs ({name})", field="explain.pseudonym_salt_env",
                             fix="choose another salt")
        return name

    def patient(self, patient_id: str) -> str:
        return self._hash("patient", "PT-", str(patient_id))

    def slide(self, slide_id: str) -> str:
        return self._hash("slide", "SL-", str(slide_id))
