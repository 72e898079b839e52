"""Configuration and secrets rules: Consul KV holds settings and ``vault:`` references, never a
secret; the registry's Vault policy can only read its own secret; its Kubernetes auth role is bound
to one service account in one namespace.

Reading of unknown values: a Consul key whose *name* says it holds a secret must hold a literal
``vault:<mount>/<path>#<field>`` reference, so an unknown (computed) value there is a violation: it
can only be something generated, such as a password. Any other unknown KV value, and an unknown
Vault policy or role field, is reported as "cannot verify during preview".
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from .support import (
    CONSUL_KEY_PREFIX,
    HclError,
    CONSUL_KV_TYPES,
    UNKNOWN,
    Finding,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    consul_kv_entries,
    dig,
    hcl_blocks,
    parse_hcl,
    resource_policy,
    schema,
    stack_policy,
    strings,
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
        "description": "Regular expression every Consul KV key path the stack writes must match: the registry's "
                       "registry/<env>/ and its token service's registry-token-service/<env>/.",
        "default": r"^registry(-token-service)?/[a-z0-9-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
    },
    "keyPrefixPattern": {
        "type": "string",
        "description": "Regular expression the pathPrefix of a KeyPrefix must match: exactly one environment's "
                       "config/ folder, since a KeyPrefix deletes every key under it that it does not declare "
                       "(owning registry/<env>/ itself would undo the garbage-collection job's maintenance/ key).",
        "default": r"^registry(-token-service)?/[a-z0-9-]+/config/$",
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
        "description": "Regular expression for the paths a registry Vault policy may name (KV v2 data paths): its "
                       "own secret, and the token service's public trust secret beside it. Never the signing keys. "
                       "A robot's client secret (clients/<robot>) only for the pull credentials' store, whose policy "
                       "pull-credentials-store-reads-only-pull-robots holds to pull-only robots.",
        "default": r"^[A-Za-z0-9_-]+/data/registry/[a-z0-9-]+(/token-trust|/clients/[a-z0-9._-]+)?$",
    },
    "signingPolicyNames": {
        "type": "string",
        "description": "Regular expression for the names of the Vault policies that may also read the token "
                       "service's private signing secret: the token service's own, no other.",
        "default": r"^registry-token-service-[a-z0-9-]+$",
    },
    "signingPathPattern": {
        "type": "string",
        "description": "Regular expression for the paths a signingPolicyNames policy may name: the robots' secret, "
                       "the signing secret and the trust secret of one environment.",
        "default": r"^[A-Za-z0-9_-]+/data/registry/[a-z0-9-]+(/token-signing|/token-trust)?$",
    },
})
VAULT_ROLE_CONFIG = schema({
    "maxTokenTtlSeconds": {
        "type": "integer",
        "description": "Longest token TTL the registry's Kubernetes auth role may issue.",
        "default": 3600,
    },
    "maxTokenMaxTtlSeconds": {
        "type": "integer",
        "description": "Longest token max TTL (renewals included) the Kubernetes auth roles may issue.",
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
                yield Violation(f"{resource.name}: {shown} names a secret but its value is computed (unknown during preview); a "
                                "secret key may hold only a literal vault:<mount>/<path>#<field> reference")
            elif value not in (None, "") and not (isinstance(value, str) and VAULT_REFERENCE.match(value)):
                yield Violation(f"{resource.name}: {shown} names a secret but holds a plaintext value; store it in Vault and write a "
                                "vault:<mount>/<path>#<field> reference here")
            continue
        if value is UNKNOWN:
            yield Unverifiable(resource.name, f"the value of {shown}")
        elif isinstance(value, str):
            kind = secret_value_kind(value)
            if kind:
                yield Violation(f"{resource.name}: {shown} holds what looks like {kind}; secrets belong in Vault, referenced as "
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
            yield Violation(f"{resource.name}: KeyPrefix pathPrefix {prefix!r} is not one environment's folder (expected to match "
                            f"{owned.pattern}): a KeyPrefix deletes every key under its prefix that it does not "
                            "declare")
    pattern = re.compile(config["keyPattern"])
    for path, _ in consul_kv_entries(resource):
        if path is UNKNOWN:
            yield Unverifiable(resource.name, "a key path")
        elif not isinstance(path, str) or not pattern.match(path):
            yield Violation(f"{resource.name}: KV key {path!r} is outside the registry's prefix (expected to match "
                            f"{pattern.pattern}); write it under registry/<env>/")


# Vault's policy syntax: what each ``policy = "..."`` shorthand grants, and the attributes a path
# block may hold (anything else, a nested block included, Vault itself rejects).
POLICY_SHORTHAND = {
    "deny": ["deny"],
    "read": ["read", "list"],
    "write": ["create", "read", "update", "delete", "list"],
    "sudo": ["create", "read", "update", "delete", "list", "sudo"],
}
PATH_ATTRIBUTES = frozenset({
    "capabilities", "policy", "comment", "allowed_parameters", "denied_parameters", "required_parameters",
    "min_wrapping_ttl", "max_wrapping_ttl", "mfa_methods", "control_group", "subscribe_event_types",
})


def vault_policy_rules(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """((path, capabilities) of each path rule, what in the policy is not a Vault policy rule).

    Parsed with a real HCL parser (python-hcl2; JSON policies too), so a rule hidden in a nested
    block or after a map-valued attribute is seen like any other. Raises ``HclError`` for text that
    is neither HCL nor JSON.
    """
    document = parse_hcl(text)
    rules: list[tuple[str, list[str]]] = []
    unreadable = [f"top-level {key!r}" for key in document if key != "path"]
    for path, body in hcl_blocks(document, "path"):
        if not isinstance(path, str) or not isinstance(body, dict):
            unreadable.append(f"path {path!r} without a block body")
            continue
        capabilities = [str(c) for c in as_list(body.get("capabilities"))]
        shorthand = body.get("policy")
        if shorthand is not None:
            capabilities += POLICY_SHORTHAND.get(str(shorthand), [f"policy={shorthand}"])
        unreadable += [f"path {path!r} attribute {key!r}" for key in body if key not in PATH_ATTRIBUTES]
        rules.append((path, capabilities))
    return rules, unreadable


def check_vault_policy_read_only(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    text = dig(resource.props, "policy")
    name = dig(resource.props, "name", default=resource.name)
    if text is UNKNOWN:
        yield Unverifiable(resource.name, "policy")
        return
    try:
        rules, unreadable = vault_policy_rules(text) if isinstance(text, str) else ([], [])
    except HclError as error:
        yield Violation(f"Vault policy {name}: {error}; write it as path \"<mount>/data/registry/<env>\" "
                        "{ capabilities = [\"read\"] }")
        return
    for what in unreadable:
        yield Violation(f"Vault policy {name}: {what} is not a Vault path rule; remove it (Vault rejects it, and "
                        "this pack cannot judge what it would grant)")
    if not rules:
        yield Violation(f"Vault policy {name} has no path rule; write it as path \"...\" "
                        "{ capabilities = [\"read\"] }")
        return
    allowed = set(config["allowedCapabilities"])
    signer = isinstance(name, str) and re.match(config["signingPolicyNames"], name) is not None
    pattern = re.compile(config["signingPathPattern" if signer else "pathPattern"])
    paths = {path for path, _ in rules}
    for path, capabilities in rules:
        extra = sorted(set(capabilities) - allowed - {"deny"})
        if extra:
            yield Violation(f"Vault policy {name}: path {path!r} grants {extra}; the registry may only "
                            f"{sorted(allowed)}: drop the other capabilities")
        if not pattern.match(path):
            owner = "the token service's three secrets" if signer else "the registry's own secret or its token trust secret"
            yield Violation(f"Vault policy {name}: path {path!r} is not {owner} "
                            f"(expected to match {pattern.pattern}); name only the KV v2 data paths it reads")
    environments = {path.split("/data/", 1)[-1].split("/")[1] for path in paths if "/data/registry/" in path}
    if len(environments) > 1:
        yield Violation(f"Vault policy {name} names paths of {len(environments)} environments {sorted(paths)}; the "
                        "registry reads its own environment's secrets only: keep only its own paths")


def _seconds_within(value: Any, limit: int) -> bool:
    return isinstance(value, (int, float)) and 0 < value <= limit


def check_vault_role_binding(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    role = dig(resource.props, "roleName", default=resource.name)
    for field in ("boundServiceAccountNames", "boundServiceAccountNamespaces"):
        values = dig(resource.props, field, default=[])
        if values is UNKNOWN or UNKNOWN in as_list(values):
            yield Unverifiable(resource.name, field)
        elif len(as_list(values)) != 1 or any("*" in str(v) for v in as_list(values)):
            yield Violation(f"Vault role {role}: {field} is {as_list(values)}; bind exactly one, without wildcards")
    selector = dig(resource.props, "boundServiceAccountNamespaceSelector")
    if selector is UNKNOWN:
        yield Unverifiable(resource.name, "boundServiceAccountNamespaceSelector")
    elif selector:
        yield Violation(f"Vault role {role}: boundServiceAccountNamespaceSelector {selector!r} admits every namespace "
                        "whose labels match, whoever labels it; bind the namespace by name only")
    policies = dig(resource.props, "tokenPolicies", default=[])
    if policies is UNKNOWN:
        yield Unverifiable(resource.name, "tokenPolicies")
    elif "root" in as_list(policies):
        yield Violation(f"Vault role {role}: tokenPolicies includes 'root', which grants everything; name the "
                        "registry's own policy only")
    elif not as_list(policies):
        yield Violation(f"Vault role {role} grants no tokenPolicies; name the registry's own policy")
    default_policy = dig(resource.props, "tokenNoDefaultPolicy")
    if default_policy is UNKNOWN:
        yield Unverifiable(resource.name, "tokenNoDefaultPolicy")
    elif default_policy is not True:
        yield Violation(f"Vault role {role} also grants Vault's 'default' policy (cubbyhole, token self-management, "
                        "whatever the cluster added to it); set tokenNoDefaultPolicy: true")
    audience = dig(resource.props, "audience")
    if audience is UNKNOWN:
        yield Unverifiable(resource.name, "audience")
    elif not audience:
        yield Violation(f"Vault role {role} has no audience: any service account token for this cluster, whatever "
                        "its audience, could log in; set audience")
    limits = {"tokenTtl": config["maxTokenTtlSeconds"], "tokenMaxTtl": config["maxTokenMaxTtlSeconds"]}
    for field, limit in limits.items():
        value = dig(resource.props, field)
        if value is UNKNOWN:
            yield Unverifiable(resource.name, field)
        elif not _seconds_within(value, limit):
            yield Violation(f"Vault role {role}: {field} is {value!r}; set 1 to {limit} seconds (0 or unset means "
                            "the mount's long default)")
    period = dig(resource.props, "tokenPeriod")
    if period is UNKNOWN:
        yield Unverifiable(resource.name, "tokenPeriod")
    elif period not in (None, 0):
        yield Violation(f"Vault role {role}: tokenPeriod {period!r} issues periodic tokens, renewable forever past "
                        "tokenMaxTtl; leave it unset")


def check_vault_role_policies_defined(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """A Kubernetes auth role grants only policies this stack defines, so the pack has judged each of them."""
    defined, unknown_names = set(), False
    for policy in (r for r in resources if r.type == VAULT_POLICY):
        name = dig(policy.props, "name")
        if isinstance(name, str):
            defined.add(name)
        else:
            unknown_names = True
    for role in (r for r in resources if r.type == VAULT_K8S_ROLE):
        granted = dig(role.props, "tokenPolicies", default=[])
        if granted is UNKNOWN:
            yield Unverifiable(role.name, "tokenPolicies")
            continue
        for policy in as_list(granted):
            if not isinstance(policy, str) and policy is not UNKNOWN:
                yield Violation(f"Vault role {dig(role.props, 'roleName', default=role.name)} names the policy "
                                f"{policy!r}, which is not a policy name; name the stack's own vault.Policy", role.urn)
            elif policy is UNKNOWN or (policy not in defined and unknown_names):
                yield Unverifiable(role.name, "tokenPolicies (the names of the stack's Vault policies)")
            elif policy not in defined:
                yield Violation(f"Vault role {dig(role.props, 'roleName', default=role.name)} grants the policy "
                                f"{policy!r}, which this stack does not define: what it allows cannot be checked; "
                                "grant only the stack's own vault.Policy", role.urn)


SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"


def check_vault_role_accounts_defined(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """A Kubernetes auth role is bound to a service account this stack defines (in its namespace): a role
    bound to ``default`` or to another team's account hands the registry's secrets to their pods."""
    pairs = [(dig(r.props, "metadata", "namespace", default="default"), dig(r.props, "metadata", "name"))
             for r in resources if r.type == SERVICE_ACCOUNT]
    accounts = {pair for pair in pairs if all(isinstance(part, str) for part in pair)}
    if any(UNKNOWN in pair for pair in pairs):
        yield from (Unverifiable(r.name, "the stack's service accounts") for r in resources if r.type == VAULT_K8S_ROLE)
        return
    for role in (r for r in resources if r.type == VAULT_K8S_ROLE):
        names = dig(role.props, "boundServiceAccountNames", default=[])
        namespaces = dig(role.props, "boundServiceAccountNamespaces", default=[])
        if UNKNOWN in (names, namespaces) or UNKNOWN in [*as_list(names), *as_list(namespaces)]:
            yield Unverifiable(role.name, "boundServiceAccountNames/Namespaces")
            continue
        bound = [(namespace, name) for namespace in strings(as_list(namespaces)) for name in strings(as_list(names))]
        if len(bound) != 1 or "*" in "".join(bound[0]):
            continue  # not one account: vault-kubernetes-role-single-binding reports it, once
        if bound[0] not in accounts:
            yield Violation(f"Vault role {dig(role.props, 'roleName', default=role.name)} is bound to "
                            f"{'/'.join(bound[0])}, a service account this stack does not define: its pods would read "
                            "the registry's secrets; bind the stack's own account", role.urn)


VAULT_SECRET = "vault:kv/secretV2:SecretV2"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
RANDOM_BYTES = "random:index/randomBytes:RandomBytes"
VAULT_SECRET_CONFIG = schema({
    "secretPathPattern": {
        "type": "string",
        "description": "Regular expression the KV v2 path (name) of every Vault secret the stack writes must match.",
        "default": r"^registry/[a-z0-9-]+(/clients/[a-z0-9-]+)?$",
    },
})
RANDOM_CONFIG = schema({
    "minPasswordLength": {"type": "integer", "description": "Shortest generated password.", "default": 32},
    "minRandomBytes": {"type": "integer", "description": "Fewest random bytes (salts).", "default": 16},
})


def check_vault_secret(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """The stack writes only the registry's own secrets, and never deletes their history."""
    name = dig(resource.props, "name")
    pattern = re.compile(config["secretPathPattern"])
    if name is UNKNOWN:
        yield Unverifiable(resource.name, "name")
    elif not isinstance(name, str) or not pattern.match(name):
        yield Violation(f"Vault secret {dig(resource.props, 'mount')}/{name} is outside the registry's own paths "
                        f"(expected to match {pattern.pattern}): the stack would overwrite (and on destroy delete) "
                        "someone else's secret; write under registry/<env>")
    if dig(resource.props, "deleteAllVersions") is True:
        yield Violation(f"Vault secret {name} sets deleteAllVersions: a destroy or replacement erases every version, "
                        "the previous credentials a rollback needs included; remove it")


def check_random_strength(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    length = dig(resource.props, "length")
    minimum = config["minPasswordLength"] if resource.type == RANDOM_PASSWORD else config["minRandomBytes"]
    unit = "characters" if resource.type == RANDOM_PASSWORD else "bytes"
    if length is UNKNOWN:
        yield Unverifiable(resource.name, "length")
    elif not isinstance(length, (int, float)) or length < minimum:
        yield Violation(f"{resource.name} generates {length!r} {unit}, fewer than {minimum}; a registry credential "
                        f"or salt that short can be guessed; generate at least {minimum}")


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
                    "Each Vault Kubernetes auth role is bound to one service account in one namespace, with an "
                    "audience, short token TTLs, no periodic tokens, no root or default policy.",
                    (VAULT_K8S_ROLE,), check_vault_role_binding, VAULT_ROLE_CONFIG),
    stack_policy("vault-role-bound-to-stack-account",
                 "Vault Kubernetes auth roles are bound to service accounts the stack defines.",
                 check_vault_role_accounts_defined),
    stack_policy("vault-role-policies-defined",
                 "Vault Kubernetes auth roles grant only Vault policies the stack defines (and the pack checks).",
                 check_vault_role_policies_defined),
    resource_policy("vault-secrets-own-paths",
                    "Vault secrets the stack writes stay under registry/<env> and keep their version history.",
                    (VAULT_SECRET,), check_vault_secret, VAULT_SECRET_CONFIG),
    resource_policy("random-secrets-strong",
                    "Generated passwords have at least minPasswordLength characters, random bytes at least "
                    "minRandomBytes.",
                    (RANDOM_PASSWORD, RANDOM_BYTES), check_random_strength, RANDOM_CONFIG),
]
