"""Stable pseudonyms for patient and slide IDs in the report (config ``explain.pseudonymise``).

A pseudonym is a keyed hash: ``PT-`` (patients) or ``SL-`` (slides) followed by the first 12 hex digits of
HMAC-SHA256(key = the cohort's salt, message = ``patient:`` or ``slide:`` + ID). The same salt gives the
same pseudonyms in every run, so reports of one cohort can be compared; without the salt they cannot be
reversed by hashing candidate IDs. The salt is therefore a secret of the cohort: keep the config that
holds it inside the trusted environment, use a long random string (e.g. ``python -c "import secrets;
print(secrets.token_hex(32))"``), and one salt per cohort. It never appears in any output.
"""

from __future__ import annotations

import hashlib
import hmac

from tessera.errors import InputError

DIGITS = 12


class Pseudonyms:
    """Maps IDs to pseudonyms (or leaves them as they are when ``salt`` is None)."""

    def __init__(self, salt: str | None) -> None:
        if salt is not None and len(salt) < 16:
            raise InputError(
                "the pseudonym salt is missing or shorter than 16 characters", field="explain.pseudonym_salt",
                fix="set explain.pseudonym_salt to a long random secret, e.g. the output of "
                "python -c \"import secrets; print(secrets.token_hex(32))\"",
            )
        self._key = salt.encode("utf-8") if salt is not None else None
        self._seen: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def _hash(self, kind: str, prefix: str, value: str) -> str:
        if self._key is None:
            return value
        name = prefix + hmac.new(self._key, f"{kind}:{value}".encode("utf-8"), hashlib.sha256).hexdigest()[:DIGITS]
        other = self._seen.setdefault(name, f"{kind}:{value}")
        if other != f"{kind}:{value}":  # 48 bits: ~1e-4 chance at 200,000 IDs, but never silently
            raise InputError(f"pseudonym collision between two IDs ({name})", field="explain.pseudonym_salt",
                             fix="choose another salt")
        return name

    def patient(self, patient_id: str) -> str:
        return self._hash("patient", "PT-", str(patient_id))

    def slide(self, slide_id: str) -> str:
        return self._hash("slide", "SL-", str(slide_id))
