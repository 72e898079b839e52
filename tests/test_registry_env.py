"""The registry's own settings: one complete, correct mapping per stack, secrets only by reference."""

from __future__ import annotations

import json

import pytest

from components.registry_config import registry_environment
from tests.conftest import STACKS, settings_for
from tests.test_config_settings import HTPASSWD_ONLY

KMS_ARN = "arn:aws:kms:eu-west-1:123456789012:key/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"

# Expected values written out by hand from Distribution's configuration reference, not copied from the
# function's output: each line is one documented key and the value this deployment needs.
COMMON = {
    "REGISTRY_LOG_LEVEL": None,  # per stack, checked below
    "REGISTRY_LOG_FORMATTER": "json",
    "REGISTRY_HTTP_ADDR": ":5000",
    "REGISTRY_HTTP_DEBUG_ADDR": ":5001",
    "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
    "REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH": "/metrics",
    "REGISTRY_HTTP_DRAINTIMEOUT": "25s",
    "REGISTRY_HEALTH_STORAGEDRIVER_ENABLED": "true",
    "REGISTRY_STORAGE_DELETE_ENABLED": "true",
    "REGISTRY_STORAGE_MAINTENANCE_READONLY": '{"enabled":false}',
    "OTEL_TRACES_EXPORTER": "none",
}


def _check_common(env: dict, log_level: str) -> None:
    for key, value in COMMON.items():
        assert key in env, key
        if value is not None:
            assert env[key] == value, key
    assert env["REGISTRY_LOG_LEVEL"] == log_level
    purging = json.loads(env["REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING"])
    assert purging["enabled"] is True and purging["dryrun"] is False
    # The map form only: "_READONLY_ENABLED" / "_UPLOADPURGING_ENABLED" panic Distribution v3 at start.
    assert not [key for key in env if key.startswith("REGISTRY_STORAGE_MAINTENANCE_") and key.count("_") > 3]


def test_staging_environment_is_filesystem_with_token_auth():
    env = registry_environment(settings_for("staging"))
    _check_common(env, "debug")

    assert env["REGISTRY_STORAGE"] == "filesystem"
    assert env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"] == "/var/lib/registry"
    assert not [key for key in env if key.startswith("REGISTRY_STORAGE_S3_")]
    assert env["REGISTRY_AUTH"] == "token"
    assert env["REGISTRY_AUTH_TOKEN_JWKS"].startswith("/run/registry/")


def test_prod_environment_is_s3_with_sse_kms_and_no_static_keys():
    env = registry_environment(settings_for("prod"), kms_key_arn=KMS_ARN)
    _check_common(env, "info")

    assert env["REGISTRY_STORAGE"] == "s3"
    assert env["REGISTRY_STORAGE_S3_BUCKET"] == "example-cicd-registry-prod-eu-west-1"
    assert env["REGISTRY_STORAGE_S3_REGION"] == "eu-west-1"
    assert env["REGISTRY_STORAGE_S3_ROOTDIRECTORY"] == "/registry"
    assert env["REGISTRY_STORAGE_S3_ENCRYPT"] == "true"
    assert env["REGISTRY_STORAGE_S3_KEYID"] == KMS_ARN
    assert env["REGISTRY_STORAGE_S3_SECURE"] == "true"
    assert "REGISTRY_STORAGE_S3_ACCESSKEY" not in env and "REGISTRY_STORAGE_S3_SECRETKEY" not in env
    assert "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY" not in env


def test_minio_environment_forces_path_style_and_references_vault_for_keys():
    settings = settings_for(
        "staging", storageMode="minio", s3Bucket="registry-staging", minioEndpoint="https://minio.storage.svc:9000",
        s3StorageBudget="2Ti", minioAccessKey="plain-access", minioSecretKey="plain-secret",
        storageClass=None, snapshotClass=None,
    )
    env = registry_environment(settings)

    assert env["REGISTRY_STORAGE"] == "s3"
    assert env["REGISTRY_STORAGE_S3_REGIONENDPOINT"] == "https://minio.storage.svc:9000"
    assert env["REGISTRY_STORAGE_S3_FORCEPATHSTYLE"] == "true"
    assert env["REGISTRY_STORAGE_S3_ACCESSKEY"] == "vault:secret/registry/staging#s3_access_key"
    assert env["REGISTRY_STORAGE_S3_SECRETKEY"] == "vault:secret/registry/staging#s3_secret_key"
    assert "plain-access" not in json.dumps(env) and "plain-secret" not in json.dumps(env)


@pytest.mark.parametrize("stack", STACKS)
def test_http_secret_is_a_vault_reference_shared_by_every_replica(stack):
    env = registry_environment(settings_for(stack), kms_key_arn=KMS_ARN)
    assert env["REGISTRY_HTTP_SECRET"] == f"vault:secret/registry/{stack}#http_secret"


def test_s3_environment_refuses_to_be_computed_without_the_key():
    with pytest.raises(ValueError, match="KMS key"):
        registry_environment(settings_for("prod"))


def test_htpasswd_mode_points_at_the_file_config_cli_writes():
    env = registry_environment(settings_for("staging", **HTPASSWD_ONLY))
    assert env["REGISTRY_AUTH"] == "htpasswd"
    assert env["REGISTRY_AUTH_HTPASSWD_PATH"] == "/run/registry/htpasswd"
    assert env["REGISTRY_AUTH_HTPASSWD_REALM"]
    assert not [key for key in env if key.startswith("REGISTRY_AUTH_TOKEN")]
