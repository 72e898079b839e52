"""The service's settings: read once from the environment into one frozen object.

``load_config(environ)`` is a pure function of the mapping it is given; it raises ``ConfigError``
naming the variable, the bad value and what is allowed (printed as one line by the entry point, exit 2).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Mapping, Optional
from urllib.parse import urlparse

from . import contract as c
from .rules import AccessRules, RulesError, parse_rules

LOG_LEVELS = ("debug", "info", "warning", "error")
VAULT_AUTH_METHODS = ("kubernetes", "token")
# Asymmetric algorithms only: an HMAC algorithm would let anyone holding the issuer's public key forge.
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MIN_TOKEN_TTL = 60  # the spec: never less than 60 seconds to live
MAX_TOKEN_TTL = 3600
MAX_REFRESH_TTL = 7 * 24 * 3600


class ConfigError(ValueError):
    """A bad setting. The message names the variable, the bad value and what is allowed."""

    def __init__(self, name: str, value: object, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        shown = "(not set)" if value is None else repr(_shorten(str(value)))
        super().__init__(f"{name}: {shown} is not allowed; {allowed}")


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    jwks_uri: str  # empty: discovered
    ca_file: str
    username_claim: str
    groups_claim: str
    jwks_refresh_seconds: int


@dataclass(frozen=True)
class VaultConfig:
    addr: str
    ca_file: str
    auth: str
    token: str = ""
    role: str = ""
    auth_path: str = "kubernetes"
    jwt_file: str = ""
    kv_mount: str = "secret"
    robots_path: str = ""
    signing_path: str = ""
    trust_path: str = ""
    refresh_seconds: int = 15
    max_staleness_seconds: int = 60


@dataclass(frozen=True)
class ServiceConfig:
    issuer: str
    registry_service: str
    registry_trust: str
    token_ttl: int
    refresh_ttl: int
    rules: AccessRules
    listen_host: str
    listen_port: int
    ops_port: Optional[int]
    trusted_proxies: tuple[str, ...]
    log_level: str
    vault: VaultConfig
    oidc: Optional[OidcConfig]
    failures_per_identity: int
    failures_per_source: int
    failure_window_seconds: int


class _Reader:
    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.defaults = {s.name: s.default for s in c.SETTINGS}

    def text(self, name: str, *, required_meaning: str = "") -> str:
        value = self.environ.get(name)
        if value is None or value == "":
            value = self.defaults.get(name)
        if value is None:
            raise ConfigError(name, None, required_meaning or "it is required")
        return value.strip()

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in allowed:
            raise ConfigError(name, value, f"allowed: {', '.join(allowed)}")
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.text(name)
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, value, f"an integer from {low} to {high}") from None
        if not low <= number <= high:
            raise ConfigError(name, value, f"an integer from {low} to {high}")
        return number


def _url(name: str, value: str, *, loopback_http: bool = True) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(name, value, "an http(s) URL")
    if parsed.scheme == "http" and loopback_http and not _is_loopback(parsed.hostname):
        raise ConfigError(name, value, "https (plain http only for a loopback address)")
    return value.rstrip("/") if name != c.ENV_OIDC_ISSUER else value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _vault_config(read: _Reader) -> VaultConfig:
    auth = read.choice(c.ENV_VAULT_AUTH, VAULT_AUTH_METHODS)
    addr = read.text(c.ENV_VAULT_ADDR, required_meaning="the Vault URL is required")
    parsed = urlparse(addr)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(c.ENV_VAULT_ADDR, addr, "an http(s) URL")
    token = read.environ.get(c.ENV_VAULT_TOKEN, "")
    if auth == "token" and not token:
        raise ConfigError(c.ENV_VAULT_TOKEN, None, f"required when {c.ENV_VAULT_AUTH}=token")
    role = read.text(c.ENV_VAULT_ROLE)
    if auth == "kubernetes" and not role:
        raise ConfigError(c.ENV_VAULT_ROLE, None, f"required when {c.ENV_VAULT_AUTH}=kubernetes")
    paths = {}
    for name in (c.ENV_VAULT_ROBOTS_PATH, c.ENV_VAULT_SIGNING_PATH, c.ENV_VAULT_TRUST_PATH):
        value = read.text(name, required_meaning="a KV v2 secret path is required").strip("/")
        if not value or ".." in value.split("/"):
            raise ConfigError(name, value, "a KV v2 secret path without '..'")
        paths[name] = value
    if paths[c.ENV_VAULT_SIGNING_PATH] == paths[c.ENV_VAULT_TRUST_PATH]:
        raise ConfigError(c.ENV_VAULT_TRUST_PATH, paths[c.ENV_VAULT_TRUST_PATH],
                          f"a path other than {c.ENV_VAULT_SIGNING_PATH}: the registry reads it, the private key "
                          "must stay out of its reach")
    refresh = read.integer(c.ENV_VAULT_REFRESH, 1, 3600)
    staleness = read.integer(c.ENV_VAULT_MAX_STALENESS, 2, 86400)
    if staleness <= refresh:
        raise ConfigError(c.ENV_VAULT_MAX_STALENESS, staleness, f"more than {c.ENV_VAULT_REFRESH} ({refresh})")
    return VaultConfig(
        addr=addr.rstrip("/"), ca_file=read.text(c.ENV_VAULT_CACERT), auth=auth, token=token, role=role,
        auth_path=read.text(c.ENV_VAULT_AUTH_PATH).strip("/"), jwt_file=read.text(c.ENV_VAULT_JWT_FILE),
        kv_mount=read.text(c.ENV_VAULT_KV_MOUNT).strip("/"), robots_path=paths[c.ENV_VAULT_ROBOTS_PATH],
        signing_path=paths[c.ENV_VAULT_SIGNING_PATH], trust_path=paths[c.ENV_VAULT_TRUST_PATH],
        refresh_seconds=refresh, max_staleness_seconds=staleness,
    )


def _oidc_config(read: _Reader) -> Optional[OidcConfig]:
    issuer = read.text(c.ENV_OIDC_ISSUER)
    if not issuer:
        return None
    issuer = _url(c.ENV_OIDC_ISSUER, issuer)
    audience = read.text(c.ENV_OIDC_AUDIENCE)
    if not audience:
        raise ConfigError(c.ENV_OIDC_AUDIENCE, None, f"required when {c.ENV_OIDC_ISSUER} is set")
    algorithms = tuple(a.strip() for a in read.text(c.ENV_OIDC_ALGORITHMS).split(",") if a.strip())
    bad = [a for a in algorithms if a not in OIDC_ALGORITHMS]
    if not algorithms or bad:
        raise ConfigError(c.ENV_OIDC_ALGORITHMS, ",".join(algorithms),
                          f"a comma-separated list of {', '.join(OIDC_ALGORITHMS)} (never none or HS*)")
    jwks_uri = read.text(c.ENV_OIDC_JWKS_URI)
    if jwks_uri:
        jwks_uri = _url(c.ENV_OIDC_JWKS_URI, jwks_uri)
    return OidcConfig(
        issuer=issuer, audience=audience, algorithms=algorithms, jwks_uri=jwks_uri,
        ca_file=read.text(c.ENV_OIDC_CA_FILE), username_claim=read.text(c.ENV_OIDC_USERNAME_CLAIM),
        groups_claim=read.text(c.ENV_OIDC_GROUPS_CLAIM),
        jwks_refresh_seconds=read.integer(c.ENV_OIDC_JWKS_REFRESH, 2, 86400),
    )


def _ops_port(read: _Reader, listen_port: int) -> Optional[int]:
    if not read.text(c.ENV_OPS_PORT):
        return None
    port = read.integer(c.ENV_OPS_PORT, 1, 65535)
    if port == listen_port:
        raise ConfigError(c.ENV_OPS_PORT, port, f"a port other than {c.ENV_LISTEN_PORT} ({listen_port})")
    return port


def load_config(environ: Mapping[str, str]) -> ServiceConfig:
    read = _Reader(environ)
    issuer = read.text(c.ENV_ISSUER, required_meaning="the tokens' issuer (REGISTRY_AUTH_TOKEN_ISSUER) is required")
    service = read.text(c.ENV_REGISTRY_SERVICE,
                        required_meaning="the registry's service name (REGISTRY_AUTH_TOKEN_SERVICE) is required")
    raw_rules = read.text(c.ENV_ACCESS_RULES)
    try:
        rules = parse_rules(json.loads(raw_rules))
    except json.JSONDecodeError as exc:
        raise ConfigError(c.ENV_ACCESS_RULES, raw_rules, f"JSON ({exc.msg} at character {exc.pos})") from None
    except RulesError as exc:
        raise ConfigError(c.ENV_ACCESS_RULES, exc.value, f"{exc.where}: {exc.allowed}") from None
    listen_port = read.integer(c.ENV_LISTEN_PORT, 1, 65535)
    proxies = tuple(p.strip() for p in read.text(c.ENV_TRUSTED_PROXIES).split(",") if p.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(c.ENV_TRUSTED_PROXIES, proxy, "comma-separated IP addresses") from None
    return ServiceConfig(
        issuer=issuer, registry_service=service,
        registry_trust=read.choice(c.ENV_REGISTRY_TRUST, c.REGISTRY_TRUST_MODES),
        token_ttl=read.integer(c.ENV_TOKEN_TTL, MIN_TOKEN_TTL, MAX_TOKEN_TTL),
        refresh_ttl=read.integer(c.ENV_REFRESH_TTL, 0, MAX_REFRESH_TTL),
        rules=rules,
        listen_host=read.text(c.ENV_LISTEN_HOST),
        listen_port=listen_port,
        ops_port=_ops_port(read, listen_port),
        trusted_proxies=proxies,
        log_level=read.choice(c.ENV_LOG_LEVEL, LOG_LEVELS),
        vault=_vault_config(read),
        oidc=_oidc_config(read),
        failures_per_identity=read.integer(c.ENV_FAILURES_PER_IDENTITY, 1, 10000),
        failures_per_source=read.integer(c.ENV_FAILURES_PER_SOURCE, 1, 100000),
        failure_window_seconds=read.integer(c.ENV_FAILURE_WINDOW, 1, 86400),
    )
