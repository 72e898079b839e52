"""The token service's names that other code shares: environment variables, Vault fields, port, metrics.

This module imports nothing outside the standard library, so the Pulumi program (which writes the
settings into Consul KV and the secrets into Vault) and the service (which reads them) can both import
it without the service image carrying the Pulumi SDK.

Every setting arrives as an environment variable, exported by config-cli from Consul KV
(``<base>-token-service/<env>/config/env/<NAME>``, ``components/names.py``), exactly like the registry's
``REGISTRY_*`` variables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

HTTP_PORT = 5050
# Health, readiness and metrics only (TOKEN_SERVICE_OPS_PORT): outside the mesh's inbound redirect, as the
# registry's debug port, so the kubelet, the Consul agent's check and Prometheus reach them without mTLS.
OPS_PORT = 5051
TOKEN_PATH = "/token"
JWKS_PATH = "/keys"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"

# What the registry's challenge names the token endpoint with (``REGISTRY_AUTH_TOKEN_REALM``) is
# ``https://<host>/token``; the values below are how the registry must be told to trust the tokens.
REGISTRY_TRUST_MODES = ("jwks", "rootcertbundle")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Optional[str]  # None: required
    meaning: str


def _setting(name: str, default: Optional[str], meaning: str) -> Setting:
    return Setting(name, default, meaning)


# Robot accounts: the program's Vault secret ``<mount>/registry/<env>`` holds these two fields
# (components/vault_secrets.py writes them: the bcrypt htpasswd lines and the ``{user: role}`` map).
ROBOT_HASHES_FIELD = "htpasswd"
ROBOT_ROLES_FIELD = "access"

# The signing secret (private: only the token service reads it) and the trust secret (public keys:
# what the registry is given as its JWKS or root certificate bundle). Written by ``python -m
# token_service.keys``; the service only reads them.
SIGNING_ACTIVE_KEY_FIELD = "active_key"
SIGNING_ACTIVE_KID_FIELD = "active_kid"
SIGNING_NEXT_KEY_FIELD = "next_key"
SIGNING_NEXT_KID_FIELD = "next_kid"
TRUST_JWKS_FIELD = "jwks"
TRUST_CERTIFICATES_FIELD = "certificates"
TRUST_RETIRING_FIELD = "retiring"  # JSON {kid: unix time after which the key may be dropped}

# Roles a robot's ``access`` value or an OIDC group can map to in the default rules.
ROLE_PULL = "pull"
ROLE_PUSH = "push"
ROLE_CLEANUP = "cleanup"

# Least privilege by default: cluster pull robots pull, CI robots push and pull, only the cleanup
# identity deletes; developers get nothing until their groups are mapped; anonymous gets nothing.
DEFAULT_ACCESS_RULES = {
    "roles": {
        ROLE_PULL: [{"type": "repository", "names": ["**"], "actions": ["pull"]}],
        ROLE_PUSH: [{"type": "repository", "names": ["**"], "actions": ["pull", "push"]}],
        ROLE_CLEANUP: [
            {"type": "repository", "names": ["**"], "actions": ["pull", "delete"]},
            {"type": "registry", "names": ["catalog"], "actions": ["*"]},
        ],
    },
    "groups": {},
}

# For each trust mode: the registry's variable naming the trust file, the trust secret's field config-cli
# writes into that file, and the file's name (beside the registry's other files config-cli writes).
REGISTRY_TRUST_FILES = {
    "jwks": ("REGISTRY_AUTH_TOKEN_JWKS", TRUST_JWKS_FIELD, "token-jwks.json"),
    "rootcertbundle": ("REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE", TRUST_CERTIFICATES_FIELD, "token-root-certs.pem"),
}
# The only algorithm the service signs with; the registry should accept no other.
REGISTRY_SIGNING_ALGORITHMS = ("ES256",)

ENV_ISSUER = "TOKEN_SERVICE_ISSUER"
ENV_REGISTRY_SERVICE = "TOKEN_SERVICE_REGISTRY_SERVICE"
ENV_REGISTRY_TRUST = "TOKEN_SERVICE_REGISTRY_TRUST"
ENV_TOKEN_TTL = "TOKEN_SERVICE_TOKEN_TTL_SECONDS"
ENV_REFRESH_TTL = "TOKEN_SERVICE_REFRESH_TTL_SECONDS"
ENV_ACCESS_RULES = "TOKEN_SERVICE_ACCESS_RULES"
ENV_LISTEN_HOST = "TOKEN_SERVICE_LISTEN_HOST"
ENV_LISTEN_PORT = "TOKEN_SERVICE_LISTEN_PORT"
ENV_OPS_PORT = "TOKEN_SERVICE_OPS_PORT"
ENV_TRUSTED_PROXIES = "TOKEN_SERVICE_TRUSTED_PROXIES"
ENV_LOG_LEVEL = "TOKEN_SERVICE_LOG_LEVEL"
ENV_VAULT_ADDR = "VAULT_ADDR"
ENV_VAULT_CACERT = "VAULT_CACERT"
ENV_VAULT_TOKEN = "VAULT_TOKEN"
ENV_VAULT_AUTH = "TOKEN_SERVICE_VAULT_AUTH"
ENV_VAULT_ROLE = "TOKEN_SERVICE_VAULT_ROLE"
ENV_VAULT_AUTH_PATH = "TOKEN_SERVICE_VAULT_AUTH_PATH"
ENV_VAULT_JWT_FILE = "TOKEN_SERVICE_VAULT_JWT_FILE"
ENV_VAULT_KV_MOUNT = "TOKEN_SERVICE_VAULT_KV_MOUNT"
ENV_VAULT_ROBOTS_PATH = "TOKEN_SERVICE_VAULT_ROBOTS_PATH"
ENV_VAULT_SIGNING_PATH = "TOKEN_SERVICE_VAULT_SIGNING_PATH"
ENV_VAULT_TRUST_PATH = "TOKEN_SERVICE_VAULT_TRUST_PATH"
ENV_VAULT_REFRESH = "TOKEN_SERVICE_VAULT_REFRESH_SECONDS"
ENV_VAULT_MAX_STALENESS = "TOKEN_SERVICE_VAULT_MAX_STALENESS_SECONDS"
ENV_OIDC_ISSUER = "TOKEN_SERVICE_OIDC_ISSUER"
ENV_OIDC_AUDIENCE = "TOKEN_SERVICE_OIDC_AUDIENCE"
ENV_OIDC_ALGORITHMS = "TOKEN_SERVICE_OIDC_ALGORITHMS"
ENV_OIDC_JWKS_URI = "TOKEN_SERVICE_OIDC_JWKS_URI"
ENV_OIDC_CA_FILE = "TOKEN_SERVICE_OIDC_CA_FILE"
ENV_OIDC_USERNAME_CLAIM = "TOKEN_SERVICE_OIDC_USERNAME_CLAIM"
ENV_OIDC_GROUPS_CLAIM = "TOKEN_SERVICE_OIDC_GROUPS_CLAIM"
ENV_OIDC_JWKS_REFRESH = "TOKEN_SERVICE_OIDC_JWKS_REFRESH_SECONDS"
ENV_FAILURES_PER_IDENTITY = "TOKEN_SERVICE_FAILURES_PER_IDENTITY"
ENV_FAILURES_PER_SOURCE = "TOKEN_SERVICE_FAILURES_PER_SOURCE"
ENV_FAILURE_WINDOW = "TOKEN_SERVICE_FAILURE_WINDOW_SECONDS"

SETTINGS: tuple[Setting, ...] = (
    _setting(ENV_ISSUER, None, "the tokens' iss; equal to REGISTRY_AUTH_TOKEN_ISSUER"),
    _setting(ENV_REGISTRY_SERVICE, None, "the registry's name, the tokens' aud; equal to REGISTRY_AUTH_TOKEN_SERVICE"),
    _setting(ENV_REGISTRY_TRUST, "jwks", "how the registry trusts the key: jwks (kid header, REGISTRY_AUTH_TOKEN_JWKS) "
             "or rootcertbundle (x5c header, REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE)"),
    _setting(ENV_TOKEN_TTL, "300", "bearer token lifetime in seconds, 60..3600"),
    _setting(ENV_REFRESH_TTL, "28800", "refresh token (offline_token) lifetime in seconds, 0 disables them"),
    _setting(ENV_ACCESS_RULES, json.dumps(DEFAULT_ACCESS_RULES, sort_keys=True),
             "JSON: roles -> [{type, names (globs), actions}], groups -> [roles]"),
    _setting(ENV_LISTEN_HOST, "0.0.0.0", "address uvicorn binds"),
    _setting(ENV_LISTEN_PORT, str(HTTP_PORT), "port uvicorn binds"),
    _setting(ENV_OPS_PORT, "", f"a second port serving only {HEALTH_PATH}, {READY_PATH} and {METRICS_PATH} "
             "(empty: none; the Deployment sets it, outside the mesh)"),
    # Empty by default: behind an L4 sidecar a client's own X-Forwarded-For would arrive from 127.0.0.1 and,
    # believed, let it pick the address its failures are counted against.
    _setting(ENV_TRUSTED_PROXIES, "", "comma-separated addresses whose X-Forwarded-For is believed (a proxy "
             "that appends the client's address, e.g. an HTTP-mode mesh sidecar or the ingress controller)"),
    _setting(ENV_LOG_LEVEL, "info", "debug, info, warning or error"),
    _setting(ENV_VAULT_ADDR, None, "Vault (or OpenBao) URL"),
    _setting(ENV_VAULT_CACERT, "", "CA bundle for Vault's TLS certificate (empty: the system's)"),
    _setting(ENV_VAULT_AUTH, "kubernetes", "kubernetes (projected service account token) or token (VAULT_TOKEN)"),
    _setting(ENV_VAULT_ROLE, "", "Vault Kubernetes auth role (kubernetes auth)"),
    _setting(ENV_VAULT_AUTH_PATH, "kubernetes", "mount path of the Kubernetes auth method"),
    _setting(ENV_VAULT_JWT_FILE, "/var/run/secrets/vault/token", "projected service account token file"),
    _setting(ENV_VAULT_KV_MOUNT, "secret", "KV v2 mount holding the three secrets below"),
    _setting(ENV_VAULT_ROBOTS_PATH, None, f"secret with the robots' {ROBOT_HASHES_FIELD} and {ROBOT_ROLES_FIELD}"),
    _setting(ENV_VAULT_SIGNING_PATH, None, "secret with the private signing key(s)"),
    _setting(ENV_VAULT_TRUST_PATH, None, "secret with the published public keys (JWKS and certificates)"),
    _setting(ENV_VAULT_REFRESH, "15", "seconds between reads of the Vault secrets"),
    _setting(ENV_VAULT_MAX_STALENESS, "60", "seconds after the last good read at which logins are refused"),
    _setting(ENV_OIDC_ISSUER, "", "company OIDC issuer URL (empty: developer logins disabled)"),
    _setting(ENV_OIDC_AUDIENCE, "", "aud the developers' tokens must carry"),
    _setting(ENV_OIDC_ALGORITHMS, "RS256", "comma-separated signature algorithms accepted from the issuer"),
    _setting(ENV_OIDC_JWKS_URI, "", "issuer JWKS URL (empty: from the issuer's discovery document)"),
    _setting(ENV_OIDC_CA_FILE, "", "CA bundle for the issuer's TLS certificate (empty: the system's)"),
    _setting(ENV_OIDC_USERNAME_CLAIM, "preferred_username", "claim the login's username must equal"),
    _setting(ENV_OIDC_GROUPS_CLAIM, "groups", "claim listing the developer's groups"),
    _setting(ENV_OIDC_JWKS_REFRESH, "300", "seconds between reads of the issuer's JWKS"),
    _setting(ENV_FAILURES_PER_IDENTITY, "5", "failed logins per username per window before 429"),
    _setting(ENV_FAILURES_PER_SOURCE, "20", "failed logins per client address per window before 429"),
    _setting(ENV_FAILURE_WINDOW, "60", "the failure counting window in seconds"),
)

# What the ops port serves; every other path there is a 404, so nothing reaches /token around the mesh.
OPS_PATHS = (HEALTH_PATH, READY_PATH, METRICS_PATH)

SETTING_NAMES = tuple(setting.name for setting in SETTINGS)

# Prometheus metric names (for the alert rules).
METRIC_REQUESTS = "token_service_requests_total"  # labels: endpoint, code
METRIC_TOKENS_ISSUED = "token_service_tokens_issued_total"  # labels: identity (robot, oidc, refresh)
METRIC_LOGIN_FAILURES = "token_service_login_failures_total"  # labels: reason
METRIC_RATE_LIMITED = "token_service_rate_limited_total"  # labels: limit (identity, source)
METRIC_DENIED_ACTIONS = "token_service_denied_actions_total"  # labels: action
METRIC_REQUEST_SECONDS = "token_service_request_duration_seconds"
METRIC_VAULT_UP = "token_service_vault_up"
METRIC_VAULT_LAST_READ = "token_service_vault_last_success_timestamp_seconds"
METRIC_OIDC_UP = "token_service_oidc_jwks_up"
METRIC_SIGNING_CERT_EXPIRY = "token_service_signing_certificate_expiry_timestamp_seconds"
