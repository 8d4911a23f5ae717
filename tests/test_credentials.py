"""The guard that keeps credentials out of what remote executors send (tessera.credentials)."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
import pytest

from tessera.credentials import CredentialsInRequest, guard_requests, identity_secrets, leaked, storage_setting_secrets

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_a_secret_is_found_wherever_it_hides():
    batch_env = {"containerProperties": {"environment": [{"name": "INNOCENT", "value": SECRET}]}}
    assert leaked(batch_env, [SECRET]) == ["wJal…"]
    assert leaked({"Environment": {"X": "a"}, "Args": [f"echo {SECRET} && snakemake"]}, [SECRET]) == ["wJal…"]
    assert leaked({"Environment": {"X": "a"}}, [SECRET, "short"]) == []


def test_a_storage_credential_variable_is_a_secret_by_what_snakemake_named_it():
    env = [{"name": "SNAKEMAKE_STORAGE_S3_SECRET_KEY", "value": "someone-elses-secret"},
           {"name": "SNAKEMAKE_STORAGE_S3_REGION", "value": "eu-west-2-long-enough"}]
    assert leaked({"containerProperties": {"environment": env}}, []) == ["some…"]
    assert leaked({"Environment": {"SNAKEMAKE_STORAGE_S3_TOKEN": "token-value-1234"}}, []) == ["toke…"]


def test_the_credential_fields_of_parsed_storage_settings_are_secrets():
    @dataclass
    class S3Settings:  # the fields of snakemake-storage-plugin-s3's settings that matter here
        access_key: str | None = None
        secret_key: str | None = None
        token: str | None = None
        region: str | None = None

    settings = [S3Settings("AKIASTORAGE", "storage-secret", None, "eu-west-2"), S3Settings()]
    assert storage_setting_secrets(settings) == ["AKIASTORAGE", "storage-secret"]


def test_the_guard_refuses_a_request_before_it_is_sent():
    session = boto3.session.Session(aws_access_key_id="AKIAGUARDTEST0000000", aws_secret_access_key=SECRET,
                                    region_name="eu-west-2")
    assert identity_secrets(session) == ["AKIAGUARDTEST0000000", SECRET]
    # nothing listens on port 9: a request that got past the guard would fail to connect instead
    client = session.client("batch", endpoint_url="http://127.0.0.1:9")
    guard_requests(client.meta.events, "batch", lambda: identity_secrets(session))
    guard_requests(client.meta.events, "batch", lambda: identity_secrets(session))  # one hook
    with pytest.raises(CredentialsInRequest, match=r"RegisterJobDefinition: .*\(wJal…\)") as err:
        client.register_job_definition(jobDefinitionName="d", type="container", containerProperties={
            "image": "i", "environment": [{"name": "MYVAR", "value": SECRET}]})
    assert SECRET not in str(err.value)
