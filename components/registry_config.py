"""The registry's own settings: one plain mapping from environment variable to value.

Distribution v3 reads a config file (``version: 0.1`` is enough) and overrides any key with a
``REGISTRY_<PATH>`` variable. config-cli loads this mapping from Consul KV under ``registry/<env>/``
and exports it before it starts ``registry serve``. Nothing here is secret: a secret is written as a
reference (``vault:<mount>/<path>#<field>``) that config-cli resolves from Vault at start.

Traps this function avoids (each seen panicking or misbehaving in Distribution v3):
- ``REGISTRY_STORAGE`` is always set: the image's default config already defines ``filesystem``, and
  adding ``REGISTRY_STORAGE_S3_*`` on top panics "multiple storage drivers specified".
- The maintenance sections take the map form (``{"enabled":true}``); ``..._READONLY_ENABLED=true``
  panics "readonly config key must contain additional keys".
- S3's ``forcepathstyle`` defaults to false in v3; MinIO needs it true.
- v3 turns OpenTelemetry tracing on by default; nothing here collects traces, so the exporter is off.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import pulumi

from token_service import contract

from . import names
from .names import DEBUG_PORT, HTTP_PORT, READONLY_OFF, READONLY_VARIABLE
from .settings import FilesystemStorage, HtpasswdAuth, MinioStorage, S3Storage, Settings, TokenAuth

DATA_DIRECTORY = "/var/lib/registry"
# config-cli writes the files of ``config_files()`` here (a memory-backed volume) before the registry starts.
SECRETS_DIRECTORY = "/run/registry"
HTPASSWD_FILE = "htpasswd"
# The token service's public keys, and the only algorithm it signs with (token_service/contract.py).
TOKEN_JWKS_VARIABLE, TOKEN_JWKS_FIELD, TOKEN_JWKS_FILE = contract.REGISTRY_TRUST_FILES["jwks"]
TOKEN_SIGNING_ALGORITHMS = "[" + ",".join(contract.REGISTRY_SIGNING_ALGORITHMS) + "]"
HTPASSWD_PATH = f"{SECRETS_DIRECTORY}/{HTPASSWD_FILE}"
TOKEN_JWKS_PATH = f"{SECRETS_DIRECTORY}/{TOKEN_JWKS_FILE}"
HTPASSWD_REALM = "Registry"

# Fields of the registry's Vault secret (``registry/<env>`` in the KV v2 mount).
FIELD_HTTP_SECRET = "http_secret"
# The bcrypt lines the registry (htpasswd mode) and the token service (token mode) check robots against.
FIELD_HTPASSWD = contract.ROBOT_HASHES_FIELD
FIELD_S3_ACCESS_KEY = "s3_access_key"
FIELD_S3_SECRET_KEY = "s3_secret_key"
VAULT_REFERENCE_PREFIX = "vault:"
# Shorter than the pod's grace period, so in-flight pushes finish before the kubelet kills the pod.
DRAIN_TIMEOUT_SECONDS = 25
UPLOAD_PURGE_AGE = "168h"
UPLOAD_PURGE_INTERVAL = "24h"


def vault_reference(settings: Settings, field: str) -> str:
    """How a KV value points at a field of the registry's Vault secret (resolved by config-cli)."""
    return f"{VAULT_REFERENCE_PREFIX}{settings.vault_kv_mount}/{settings.vault_secret_path}#{field}"


def trust_secret_path(settings: Settings) -> str:
    """The token service's trust secret (public keys), beside the registry's own secret."""
    return f"{settings.vault_secret_path}/{names.TOKEN_TRUST_SECRET}"


def trust_reference(settings: Settings) -> str:
    return f"{VAULT_REFERENCE_PREFIX}{settings.vault_kv_mount}/{trust_secret_path(settings)}#{TOKEN_JWKS_FIELD}"


def _compact_json(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def registry_environment(settings: Settings, kms_key_arn: Optional["pulumi.Input[str]"] = None) -> dict[str, Any]:
    """Every ``REGISTRY_*`` (and tracing) variable Distribution v3 needs for this stack.

    ``kms_key_arn`` is the customer-managed key of the S3 bucket (s3 mode only): it exists only once
    the key is created, so the caller passes it in, as a string or as the key's output, which is
    placed as it is (every other value is a plain string).
    """
    env = {
        "REGISTRY_LOG_LEVEL": settings.log_level,
        "REGISTRY_LOG_FORMATTER": "json",
        # The access log is Apache combined format, not JSON, on the same stream; every request is also
        # logged as JSON ("response completed", with method, URI, status, duration and user).
        "REGISTRY_LOG_ACCESSLOG_DISABLED": "true",
        "REGISTRY_LOG_FIELDS_ENVIRONMENT": settings.environment,
        "REGISTRY_HTTP_ADDR": f":{HTTP_PORT}",
        "REGISTRY_HTTP_SECRET": vault_reference(settings, FIELD_HTTP_SECRET),
        "REGISTRY_HTTP_DRAINTIMEOUT": f"{DRAIN_TIMEOUT_SECONDS}s",
        "REGISTRY_HTTP_DEBUG_ADDR": f":{DEBUG_PORT}",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH": "/metrics",
        "REGISTRY_HEALTH_STORAGEDRIVER_ENABLED": "true",
        "REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL": "10s",
        "REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD": "3",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "inmemory",
        "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING": _compact_json(
            {"enabled": True, "age": UPLOAD_PURGE_AGE, "interval": UPLOAD_PURGE_INTERVAL, "dryrun": False}
        ),
        # Write mode; the garbage-collection job overrides it through maintenance/ (components/names.py).
        READONLY_VARIABLE: READONLY_OFF,
        "OTEL_TRACES_EXPORTER": "none",
    }
    env.update(_auth_environment(settings))
    env.update(_storage_environment(settings, kms_key_arn))
    return env


def _auth_environment(settings: Settings) -> dict[str, str]:
    """Exactly one ``REGISTRY_AUTH_<MODE>_*`` family: Distribution refuses a second auth section."""
    auth = settings.auth
    if isinstance(auth, TokenAuth):
        return {
            "REGISTRY_AUTH": "token",
            "REGISTRY_AUTH_TOKEN_REALM": auth.realm,
            "REGISTRY_AUTH_TOKEN_SERVICE": auth.service,
            "REGISTRY_AUTH_TOKEN_ISSUER": auth.issuer,
            TOKEN_JWKS_VARIABLE: TOKEN_JWKS_PATH,
            # A token signed any other way is refused, whatever key it names.
            "REGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS": TOKEN_SIGNING_ALGORITHMS,
        }
    assert isinstance(auth, HtpasswdAuth)
    return {
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": HTPASSWD_REALM,
        "REGISTRY_AUTH_HTPASSWD_PATH": HTPASSWD_PATH,
    }


def config_files(settings: Settings) -> dict[str, str]:
    """Files config-cli writes into ``SECRETS_DIRECTORY`` before the registry starts, by file name.

    A value is either the file's content or a Vault reference whose field holds the content: the bcrypt
    htpasswd file, or in token mode the token service's published JWKS (public; its keys command writes it, so
    a key rotation reaches the registry with a rolling restart and no change to any stack file).
    """
    auth = settings.auth
    if isinstance(auth, TokenAuth):
        return {TOKEN_JWKS_FILE: trust_reference(settings)}
    return {HTPASSWD_FILE: vault_reference(settings, FIELD_HTPASSWD)}


def _storage_environment(settings: Settings, kms_key_arn: Optional["pulumi.Input[str]"]) -> dict[str, Any]:
    storage = settings.storage
    if isinstance(storage, FilesystemStorage):
        return {
            "REGISTRY_STORAGE": "filesystem",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": DATA_DIRECTORY,
        }
    common = {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STORAGE_S3_BUCKET": storage.bucket,
        "REGISTRY_STORAGE_S3_REGION": storage.region,
        "REGISTRY_STORAGE_S3_ROOTDIRECTORY": storage.root_directory,
        "REGISTRY_STORAGE_S3_V4AUTH": "true",
        # Clients talk only to the registry (through the mesh); presigned redirects would send them to
        # the storage endpoint, which the network policies and developer ranges do not admit.
        "REGISTRY_STORAGE_REDIRECT_DISABLE": "true",
    }
    if isinstance(storage, S3Storage):
        if not kms_key_arn:
            raise ValueError("s3 storage needs the bucket's KMS key ARN")
        # No access keys: the AWS SDK picks up the IRSA web identity token EKS mounts into the pod.
        return {
            **common,
            "REGISTRY_STORAGE_S3_SECURE": "true",
            "REGISTRY_STORAGE_S3_ENCRYPT": "true",
            "REGISTRY_STORAGE_S3_KEYID": kms_key_arn,
        }
    assert isinstance(storage, MinioStorage)
    return {
        **common,
        "REGISTRY_STORAGE_S3_REGIONENDPOINT": storage.endpoint,
        "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
        "REGISTRY_STORAGE_S3_SECURE": "true" if storage.endpoint.startswith("https://") else "false",
        "REGISTRY_STORAGE_S3_ACCESSKEY": vault_reference(settings, FIELD_S3_ACCESS_KEY),
        "REGISTRY_STORAGE_S3_SECRETKEY": vault_reference(settings, FIELD_S3_SECRET_KEY),
    }
