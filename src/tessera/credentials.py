"""No credential travels with a remote job: a guard on the requests that submit jobs to AWS.

Both remote executors copy environment variables into what they send: AWS Batch
(snakemake-executor-plugin-aws-batch 0.2.1) into each job definition's ``containerProperties.environment``,
the SageMaker executor into each Processing job's ``Environment``; anyone who may describe jobs reads them.
Which variables those are is settled late — by Snakemake's *parsed* storage settings (options, abbreviated
options, workflow profiles, ``SNAKEMAKE_STORAGE_*`` variables), which it passes on as
``SNAKEMAKE_STORAGE_<PLUGIN>_<SETTING>`` variables, and by ``--envvars``, whose variables may hold anything —
so no reading of the command line can tell. The guard looks at each request as the executor sends it
instead (a botocore ``before-parameter-build`` hook on the client's events) and refuses one that contains,
anywhere and whatever it is called:

- a credential of the launching identity: the access key, secret key and session token boto3 resolves
  for the session the executor uses (environment, ``AWS_PROFILE``, SSO, ...), compared by value;
- the value of a storage setting that is a credential: a ``SNAKEMAKE_STORAGE_*`` variable of the
  request whose setting is named like a key, secret, token or password, and ``extra`` values the caller
  knows (the SageMaker executor passes the parsed storage settings themselves).

Jobs get their credentials from their role. Values shorter than 8 characters are not compared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping

SECRET_SETTING = re.compile(r"key|secret|token|password", re.IGNORECASE)
STORAGE_VARIABLE = re.compile(r"^SNAKEMAKE_STORAGE_[A-Z0-9]+_(?P<setting>[A-Z0-9_]+)$")
MIN_SECRET_CHARS = 8
FIX = ("remove them: no storage-s3-access-key / -secret-key / -token (as options, abbreviated or not, in a "
       "profile or as SNAKEMAKE_STORAGE_S3_* variables) and no --envvars variable that holds a key; jobs get "
       "their credentials from the job role, this process from your usual AWS configuration (AWS_PROFILE, SSO)")


class CredentialsInRequest(RuntimeError):
    """A request to AWS would carry credentials into a job; nothing was sent."""


def identity_secrets(session) -> list[str]:
    """Access key, secret key and token of a boto3 (or botocore) ``session``'s credentials; ``[]`` without any."""
    creds = session.get_credentials()
    if creds is None:
        return []
    frozen = creds.get_frozen_credentials()
    return [s for s in (frozen.access_key, frozen.secret_key, frozen.token) if s]


def storage_setting_secrets(settings: Iterable[object]) -> list[str]:
    """String values of the credential fields (named like key/secret/token/password) of storage settings
    dataclasses, e.g. ``workflow.storage_provider_settings`` flattened."""
    secrets = []
    for setting in settings:
        for name, value in vars(setting).items():
            if SECRET_SETTING.search(name) and isinstance(value, str) and value:
                secrets.append(value)
    return secrets


def _environment_items(value) -> Iterable[tuple[str, str]]:
    """Every (name, value) pair of environment-like parts of a request: ``{NAME: value}`` mappings and
    ``[{"name": NAME, "value": value}]`` lists (Batch's form), at any depth."""
    if isinstance(value, Mapping):
        if isinstance(value.get("name"), str) and isinstance(value.get("value"), str):
            yield value["name"], value["value"]
        for k, v in value.items():
            if isinstance(v, str):
                yield str(k), v
            else:
                yield from _environment_items(v)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _environment_items(item)


def leaked(request: Mapping, secrets: Iterable[str]) -> list[str]:
    """The credentials found in ``request``, masked to their first 4 characters: ``secrets`` (by value,
    anywhere) and the values of storage credential variables (``SNAKEMAKE_STORAGE_S3_SECRET_KEY`` ...)."""
    candidates = list(secrets)
    for name, value in _environment_items(request):
        match = STORAGE_VARIABLE.match(name)
        if match and SECRET_SETTING.search(match["setting"]):
            candidates.append(value)
    text = json.dumps(request, default=str)
    found = []
    for secret in dict.fromkeys(s for s in candidates if s and len(s) >= MIN_SECRET_CHARS):
        if secret in text:
            found.append(f"{secret[:4]}…")
    return found


def guard_requests(events, service: str, secrets: Callable[[], Iterable[str]], what: str = "") -> None:
    """Refuse every request of ``service`` (``"batch"``, ``"sagemaker"``) made through a client with
    these botocore ``events`` (``client.meta.events``, or a session's ``events`` before its clients are
    created) that contains credentials (:func:`leaked`; ``secrets()`` is asked at each request, so
    credentials resolved or refreshed later count too). Raises :class:`CredentialsInRequest` from the
    call instead of sending it. Registering twice for one service keeps one hook."""

    def check(params, model, **_):
        found = leaked(params, secrets())
        if found:
            raise CredentialsInRequest(
                f"refusing to send {what or service} request {model.name}: it would put credentials into "
                f"a job ({', '.join(found)}). Fix: {FIX}"
            )

    events.register(f"before-parameter-build.{service}", check, unique_id=f"tessera-credential-guard-{service}")


def guard_default_session(service: str, what: str = "") -> None:
    """:func:`guard_requests` on boto3's default session, which executors that call ``boto3.client(...)``
    use (snakemake-executor-plugin-aws-batch): called from the profile, before the executor exists, with
    the launching identity's credentials as the secrets."""
    import boto3

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    session = boto3.DEFAULT_SESSION
    guard_requests(session.events, service, lambda: identity_secrets(session), what=what)
