"""Configuration and secrets rules: Consul KV holds settings and ``vault:`` references, never a
secret; the registry's Vault policy can only read its own secret; its Kubernetes auth role is bound
to one service account in one namespace.

Reading of unknown values: a Consul key whose *name* says it holds a secret must hold a literal
``vault:<mount>/<path>#<field>`` reference, so an unknown (computed) value there is a violation: it
can only be something generated, such as a password. Any other unknown KV value, and an unknown
Vault policy or role field, is reported as "cannot verify during preview".
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from .support import (
    CONSUL_KEY_PREFIX,
    CONSUL_KV_TYPES,
    UNKNOWN,
    Finding,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    consul_kv_entries,
    dig,
    resource_policy,
    schema,
)

VAULT_POLICY = "vault:index/policy:Policy"
VAULT_K8S_ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"

VAULT_REFERENCE = re.compile(r"^vault:[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*#[A-Za-z0-9_.-]+$")
# The last word of a key name says what the value is: REGISTRY_HTTP_SECRET and ..._S3_SECRETKEY are
# secrets; REGISTRY_AUTH_TOKEN_REALM (a URL) and REGISTRY_AUTH_HTPASSWD_PATH (a file path) are not.
SECRET_KEY_WORDS = frozenset({
    "password", "passwd", "pwd", "secret", "secretkey", "secretaccesskey", "accesskey", "token", "apikey",
    "privatekey", "credential", "credentials", "clientsecret", "passphrase",
})
SECRET_VALUE_PATTERNS = {
    "a PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "an AWS access key ID": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a bcrypt hash (htpasswd entry)": re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}"),
    "an htpasswd entry": re.compile(r"^[^:\s]+:\$(2[abxy]?|apr1|5|6)\$", re.M),
    "a JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
    "a Vault token": re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"),
    "a GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "credentials in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I),
    "a password/secret/token assignment": re.compile(
        r"(?i)[\"']?\b(password|passwd|secret|token|api[_-]?key)\b[\"']?\s*[:=]\s*[\"']?[^\s\"',}{]{4,}"
    ),
}

CONSUL_PREFIX_CONFIG = schema({
    "keyPattern": {
        "type": "string",
        "description": "Regular expression every Consul KV key path the stack writes must match.",
        "default": r"^registry/[a-z0-9-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
    },
    "keyPrefixPattern": {
        "type": "string",
        "description": "Regular expression the pathPrefix of a KeyPrefix must match: exactly one environment's "
                       "config/ folder, since a KeyPrefix deletes every key under it that it does not declare "
                       "(owning registry/<env>/ itself would undo the garbage-collection job's maintenance/ key).",
        "default": r"^registry/[a-z0-9-]+/config/$",
    },
})
VAULT_POLICY_CONFIG = schema({
    "allowedCapabilities": {
        "type": "array", "items": {"type": "string"},
        "description": "Capabilities a registry Vault policy may grant.",
        "default": ["read"],
    },
    "pathPattern": {
        "type": "string",
        "description": "Regular expression for the one path a registry Vault policy may name (KV v2 data path).",
        "default": r"^[A-Za-z0-9_-]+/data/registry/[a-z0-9-]+$",
    },
})
VAULT_ROLE_CONFIG = schema({
    "maxTokenTtlSeconds": {
        "type": "integer",
        "description": "Longest token TTL the registry's Kubernetes auth role may issue.",
        "default": 3600,
    },
})


def key_looks_secret(path: str) -> bool:
    last_segment = path.rstrip("/").rsplit("/", 1)[-1]
    words = [w for w in re.split(r"[^a-z0-9]+", last_segment.lower()) if w]
    return bool(words) and words[-1] in SECRET_KEY_WORDS


def secret_value_kind(value: str) -> str | None:
    if VAULT_REFERENCE.match(value):
        return None
    for kind, pattern in SECRET_VALUE_PATTERNS.items():
        if pattern.search(value):
            return kind
    return None


def check_consul_kv_no_secrets(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    for path, value in consul_kv_entries(resource):
        if path is UNKNOWN:
            yield Unverifiable(resource.name, "a key path")
            continue
        shown = path if isinstance(path, str) else repr(path)
        if isinstance(path, str) and key_looks_secret(path):
            if value is UNKNOWN:
                yield Violation(f"{shown} names a secret but its value is computed (unknown during preview); a "
                                "secret key may hold only a literal vault:<mount>/<path>#<field> reference")
            elif value not in (None, "") and not (isinstance(value, str) and VAULT_REFERENCE.match(value)):
                yield Violation(f"{shown} names a secret but holds a plaintext value, not a vault: reference")
            continue
        if value is UNKNOWN:
            yield Unverifiable(resource.name, f"the value of {shown}")
        elif isinstance(value, str):
            kind = secret_value_kind(value)
            if kind:
                yield Violation(f"{shown} holds what looks like {kind}; secrets belong in Vault, referenced as "
                                "vault:<mount>/<path>#<field>")


def check_consul_kv_prefix(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Every key under ``registry/<env>/``; a ``KeyPrefix`` owns exactly one environment's ``config/`` folder.

    A ``KeyPrefix`` deletes every key under its ``pathPrefix`` that it does not declare, so a prefix of
    ``registry/`` would wipe the other environments' settings, even though each key it writes still
    looks like ``registry/<something>/<name>`` (``registry/env/REGISTRY_LOG_LEVEL``). Its prefix is
    checked on its own, which also works while the subkeys are unknown during preview.
    """
    if resource.type == CONSUL_KEY_PREFIX:
        prefix = dig(resource.props, "pathPrefix")
        if prefix is UNKNOWN:
            yield Unverifiable(resource.name, "pathPrefix")
            return
        owned = re.compile(config["keyPrefixPattern"])
        if not isinstance(prefix, str) or not owned.match(prefix):
            yield Violation(f"KeyPrefix pathPrefix {prefix!r} is not one environment's folder (expected to match "
                            f"{owned.pattern}): a KeyPrefix deletes every key under its prefix that it does not "
                            "declare")
    pattern = re.compile(config["keyPattern"])
    for path, _ in consul_kv_entries(resource):
        if path is UNKNOWN:
            yield Unverifiable(resource.name, "a key path")
        elif not isinstance(path, str) or not pattern.match(path):
            yield Violation(f"KV key {path!r} is outside the registry's prefix (expected to match {pattern.pattern})")


PATH_BLOCK = re.compile(r'path\s+"(?P<path>[^"]*)"\s*\{(?P<body>[^{}]*)\}', re.S)
CAPABILITIES = re.compile(r"capabilities\s*=\s*\[(?P<items>[^\]]*)\]", re.S)


def vault_policy_rules(text: str) -> list[tuple[str, list[str]]]:
    """(path, capabilities) of each rule of a Vault policy in HCL or JSON."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError:
            return []
        paths = document.get("path", {}) if isinstance(document, dict) else {}
        return [(p, list(as_list(dig(rule, "capabilities", default=[])))) for p, rule in paths.items()]
    without_comments = re.sub(r"(?m)(#|//).*$", "", text)
    rules = []
    for block in PATH_BLOCK.finditer(without_comments):
        found = CAPABILITIES.search(block["body"])
        items = re.findall(r'"([^"]*)"', found["items"]) if found else []
        rules.append((block["path"], items))
    return rules


def check_vault_policy_read_only(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    text = dig(resource.props, "policy")
    if text is UNKNOWN:
        yield Unverifiable(resource.name, "policy")
        return
    rules = vault_policy_rules(text) if isinstance(text, str) else []
    if not rules:
        yield Violation("the policy has no path rule this pack can read; write it as path \"...\" { capabilities = "
                        "[\"read\"] }")
        return
    allowed = set(config["allowedCapabilities"])
    pattern = re.compile(config["pathPattern"])
    paths = {path for path, _ in rules}
    for path, capabilities in rules:
        extra = sorted(set(capabilities) - allowed)
        if extra:
            yield Violation(f"path {path!r} grants {extra}; the registry may only {sorted(allowed)}")
        if not pattern.match(path):
            yield Violation(f"path {path!r} is not the registry's own secret (expected to match {pattern.pattern})")
    if len(paths) > 1:
        yield Violation(f"the policy names {len(paths)} paths {sorted(paths)}; the registry reads exactly one secret")


def check_vault_role_binding(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    for field in ("boundServiceAccountNames", "boundServiceAccountNamespaces"):
        values = dig(resource.props, field, default=[])
        if values is UNKNOWN or UNKNOWN in as_list(values):
            yield Unverifiable(resource.name, field)
        elif len(as_list(values)) != 1 or any("*" in str(v) for v in as_list(values)):
            yield Violation(f"{field} is {as_list(values)}; bind exactly one, without wildcards")
    policies = dig(resource.props, "tokenPolicies", default=[])
    if policies is UNKNOWN:
        yield Unverifiable(resource.name, "tokenPolicies")
    elif "root" in as_list(policies):
        yield Violation("tokenPolicies includes 'root'")
    audience = dig(resource.props, "audience")
    if audience is UNKNOWN:
        yield Unverifiable(resource.name, "audience")
    elif not audience:
        yield Violation("no audience: any service account token for this cluster, whatever its audience, could log in")
    ttl = dig(resource.props, "tokenTtl")
    limit = config["maxTokenTtlSeconds"]
    if ttl is UNKNOWN:
        yield Unverifiable(resource.name, "tokenTtl")
    elif not isinstance(ttl, (int, float)) or not 0 < ttl <= limit:
        yield Violation(f"tokenTtl is {ttl!r}; set 1 to {limit} seconds (0 or unset means the mount's long default)")


POLICIES = [
    resource_policy("consul-kv-no-plaintext-secrets",
                    "Consul KV holds no password, secret, token or key material; secret settings are vault: "
                    "references.",
                    CONSUL_KV_TYPES, check_consul_kv_no_secrets),
    resource_policy("consul-kv-registry-prefix",
                    "Consul KV keys stay under registry/<env>/, and a KeyPrefix owns one environment's folder.",
                    CONSUL_KV_TYPES, check_consul_kv_prefix, CONSUL_PREFIX_CONFIG),
    resource_policy("vault-policy-read-only",
                    "The registry's Vault policy only reads its own secret path.",
                    (VAULT_POLICY,), check_vault_policy_read_only, VAULT_POLICY_CONFIG),
    resource_policy("vault-kubernetes-role-single-binding",
                    "The Vault Kubernetes auth role is bound to one service account in one namespace, with an "
                    "audience and a short token TTL.",
                    (VAULT_K8S_ROLE,), check_vault_role_binding, VAULT_ROLE_CONFIG),
]
