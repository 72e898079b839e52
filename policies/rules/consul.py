"""Consul rules: what the stack's ACL policies let a token do, which services the intentions admit,
whether the mesh may be bypassed, and whether the registry's KV configuration turns authentication on.

ACL policies are parsed with python-hcl2 (JSON rules too). A token may read the registry's own KV
folder (``registry/<env>/``), write only the exact keys ``writableKeys`` lists (the garbage
collector flips ``registry/<env>/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY``: a ``key`` rule, never a
``key_prefix``), register only the services ``serviceNames`` lists, read the catalog, and hold no
``acl``, ``operator``, ``keyring``, ``mesh`` or ``peering`` scope at all.

Unknown values (rules, a config entry's JSON, the KV map during a preview that creates the KMS key)
are reported as "cannot verify during preview".
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from .support import (
    CONSUL_KV_TYPES,
    REGISTRY_LABELS_PROPERTY,
    UNKNOWN,
    Finding,
    HclError,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    consul_kv_entries,
    dig,
    hcl_blocks,
    is_registry_workload,
    parse_hcl,
    resource_policy,
    schema,
    stack_policy,
)

ACL_POLICY = "consul:index/aclPolicy:AclPolicy"
CONFIG_ENTRY = "consul:index/configEntry:ConfigEntry"

# Scopes that administer the cluster itself: any grant there outranks every other rule.
CLUSTER_SCOPES = ("acl", "operator", "keyring", "mesh", "peering")
# Blocks whose write lets a token act as (or on) other agents, nodes, sessions, events or queries.
CATALOG_BLOCKS = ("node", "node_prefix", "agent", "agent_prefix", "session", "session_prefix", "event",
                  "event_prefix", "query", "query_prefix")
ACCESS_LEVELS = ("deny", "read", "list", "write")

ACL_CONFIG = schema({
    "kvPrefixPattern": {
        "type": "string",
        "description": "Regular expression a KV path in an ACL rule must match: the registry's own folders and its "
                       "token service's.",
        "default": r"^registry(-token-service)?/[a-z0-9-]+/",
    },
    "writableKeys": {
        "type": "array", "items": {"type": "string"},
        "description": "Regular expressions for the exact KV keys (key rules, never key_prefix) a token may write.",
        "default": [r"^registry/[a-z0-9-]+/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY$"],
    },
    "serviceNames": {
        "type": "array", "items": {"type": "string"},
        "description": "Services (and identities) a token may register: exact names.",
        "default": ["registry", "registry-sidecar-proxy", "registry-token-service", "registry-token-service-sidecar-proxy"],
    },
})
AUTH_CONFIG = schema({
    **REGISTRY_LABELS_PROPERTY,
    "allowedAuth": {
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "description": "Accepted REGISTRY_AUTH modes, each with the REGISTRY_AUTH_<MODE>_* settings it needs.",
        "default": {"token": ["REALM", "SERVICE", "ISSUER", "JWKS"], "htpasswd": ["REALM", "PATH"]},
    },
})


# --- ACL policies ------------------------------------------------------------------------------


def _acl_rule_findings(document: Mapping[str, Any], config: Mapping[str, Any]) -> Iterable[str]:
    """What each rule of a parsed ACL policy grants beyond the registry's needs (one message each)."""
    kv_prefix = re.compile(config["kvPrefixPattern"])
    writable = [re.compile(pattern) for pattern in config["writableKeys"]]
    services = set(config["serviceNames"])
    for key, value in document.items():
        if key in CLUSTER_SCOPES:
            if value != "deny":
                yield (f"grants {key} = {value!r}: cluster administration ({key} scope); remove it, the registry "
                       "and its jobs need none")
            continue
        blocks = hcl_blocks(document, key)
        if key not in ("key", "key_prefix", "service", "service_prefix", "identity", "identity_prefix",
                       *CATALOG_BLOCKS):
            yield f"has a {key!r} rule this pack cannot judge; remove it or extend the pack"
            continue
        for label, body in blocks:
            level = dig(body, "policy")
            where = f'{key} "{label}"'
            if key.startswith("service") and dig(body, "intentions") not in (None, "deny", "read"):
                yield (f"{where} grants intentions = {dig(body, 'intentions')!r}: the token could open the mesh to "
                       "any caller; remove it")
            if level not in ACCESS_LEVELS:
                yield f"{where} has policy {level!r}; use one of {list(ACCESS_LEVELS)}"
                continue
            if key in ("key", "key_prefix"):
                if not isinstance(label, str) or not kv_prefix.match(label):
                    if level != "deny":
                        yield (f"{where} grants {level} on KV outside the registry's folder (expected to match "
                               f"{kv_prefix.pattern}); name the registry's own prefix")
                    continue
                if level == "write" and key == "key_prefix":
                    yield (f"{where} grants write on every key under {label}, REGISTRY_AUTH and the vault: "
                           "references included; grant write on the one exact key the job flips (a key rule)")
                elif level == "write" and not any(p.match(label) for p in writable):
                    yield (f"{where} grants write on a key that is not in writableKeys "
                           f"{[p.pattern for p in writable]}; grant read, or declare the key")
            elif key in ("service", "identity"):
                if level == "write" and label not in services:
                    yield (f"{where} grants write: the token could register (and receive traffic as) {label!r}; "
                           f"only {sorted(services)} may be registered")
            elif level == "write":
                yield (f"{where} grants write: the token could register or act as {'any' if 'prefix' in key else 'a'} "
                       f"{key.split('_')[0]}; grant read at most")


def check_consul_acl_policy(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    rules = dig(resource.props, "rules")
    name = dig(resource.props, "name", default=resource.name)
    if rules is UNKNOWN:
        yield Unverifiable(resource.name, "rules")
        return
    try:
        document = parse_hcl(rules) if isinstance(rules, str) else None
    except HclError as error:
        yield Violation(f"Consul ACL policy {name}: {error}; write its rules in HCL the pack can read")
        return
    if not document:
        yield Violation(f"Consul ACL policy {name} has no rules")
        return
    for message in _acl_rule_findings(document, config):
        yield Violation(f"Consul ACL policy {name} {message}")


# --- config entries ----------------------------------------------------------------------------


def _config_json(resource: Resource) -> Any:
    """The config entry's body, UNKNOWN, or None when it is not a JSON object."""
    text = dig(resource.props, "configJson")
    if text is UNKNOWN:
        return UNKNOWN
    try:
        body = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _wildcard_fields(source: Mapping[str, Any]) -> list[str]:
    return [field for field in ("Name", "Namespace", "Partition", "Peer", "SamenessGroup")
            if isinstance(source.get(field), str) and "*" in source[field]]


def check_intentions_deny_by_default(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """service-intentions: named sources only, and an explicit ``*`` deny for everything else.

    Consul applies the most precise intention first, so named allows win over the ``*`` deny; without
    that deny, a cluster whose default intention is allow admits every service.
    """
    if dig(resource.props, "kind") != "service-intentions":
        return
    destination = dig(resource.props, "name")
    body = _config_json(resource)
    if body is UNKNOWN or destination is UNKNOWN:
        yield Unverifiable(resource.name, "configJson")
        return
    if body is None:
        yield Violation(f"service-intentions {destination}: configJson is not a JSON object")
        return
    if isinstance(destination, str) and "*" in destination:
        yield Violation(f"service-intentions {destination!r} applies to every destination service; name the "
                        "registry's service")
    sources = [s for s in as_list(body.get("Sources")) if isinstance(s, dict)]
    denies_the_rest = False
    for index, source in enumerate(sources):
        wildcards = _wildcard_fields(source)
        actions = [source.get("Action")] + [dig(p, "Action") for p in as_list(source.get("Permissions"))]
        if wildcards and "allow" in actions:
            yield Violation(f"service-intentions {destination}: Sources[{index}] allows "
                            f"{', '.join(f'{f}={source[f]!r}' for f in wildcards)}: every service; name each caller "
                            "(consulIntentionSources) and deny '*'")
        if source.get("Name") == "*" and source.get("Action") == "deny" and not source.get("Permissions"):
            denies_the_rest = True
    if not denies_the_rest:
        yield Violation(f"service-intentions {destination} has no Sources entry denying '*': where the cluster's "
                        "default intention is allow, every other service may call it; add "
                        "{\"Name\": \"*\", \"Action\": \"deny\"}")


def check_mesh_strict_mtls(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Permissive mTLS lets plain, unauthenticated traffic past the sidecar, around every intention."""
    kind = dig(resource.props, "kind")
    if kind not in ("service-defaults", "proxy-defaults", "mesh"):
        return
    body = _config_json(resource)
    if body is UNKNOWN:
        yield Unverifiable(resource.name, "configJson")
        return
    if body is None:
        yield Violation(f"{kind} {dig(resource.props, 'name')}: configJson is not a JSON object")
        return
    mode = body.get("MutualTLSMode")
    if isinstance(mode, str) and mode.lower() == "permissive":
        yield Violation(f"{kind} {dig(resource.props, 'name')} sets MutualTLSMode 'permissive': non-mesh clients "
                        "reach the service without mTLS and without intentions; use 'strict' (or leave it unset)")
    if body.get("AllowEnablingPermissiveMutualTLS") is True:
        yield Violation(f"{kind} {dig(resource.props, 'name')} sets AllowEnablingPermissiveMutualTLS: any "
                        "service-defaults could then bypass intentions; remove it")


# --- the registry's auth settings in KV -----------------------------------------------------------


def check_registry_auth(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """The KV the registry loads turns authentication on: ``REGISTRY_AUTH`` present, one of the accepted
    modes (never ``none`` or ``silly``, which accepts any Authorization header), with that mode's settings."""
    if not any(is_registry_workload(r, config["registryLabels"]) for r in resources):
        return
    entries: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for kv in (r for r in resources if r.type in CONSUL_KV_TYPES):
        for path, value in consul_kv_entries(kv):
            if path is UNKNOWN:
                yield Unverifiable(kv.name, "the key list")
                return
            if isinstance(path, str):
                entries[path.rsplit("/", 1)[-1]] = value
                sources[path.rsplit("/", 1)[-1]] = kv.name
    allowed: Mapping[str, list[str]] = config["allowedAuth"]
    mode = entries.get("REGISTRY_AUTH")
    fix = f"set REGISTRY_AUTH to one of {sorted(allowed)} with its settings (registry:auth)"
    where = f"the registry's Consul KV ({', '.join(sorted(set(sources.values()))) or 'no KV resource'})"
    if mode is UNKNOWN:
        yield Unverifiable(sources["REGISTRY_AUTH"], "the value of REGISTRY_AUTH")
        return
    if mode in (None, ""):
        yield Violation(f"{where} has no REGISTRY_AUTH: every client may pull and push "
                        f"anonymously; {fix}")
        return
    if not isinstance(mode, str) or mode not in allowed:
        yield Violation(f"{where} sets REGISTRY_AUTH={mode!r}, which does not authenticate "
                        f"clients; {fix}")
        return
    missing = [f"REGISTRY_AUTH_{mode.upper()}_{setting}" for setting in allowed[mode]
               if entries.get(f"REGISTRY_AUTH_{mode.upper()}_{setting}") in (None, "")]
    if missing:
        yield Violation(f"{where} sets REGISTRY_AUTH={mode!r} without {', '.join(missing)}: "
                        "Distribution refuses to start or checks nothing; set them")
    realm = entries.get(f"REGISTRY_AUTH_{mode.upper()}_REALM")
    if mode == "token" and isinstance(realm, str) and not realm.startswith("https://"):
        yield Violation(f"REGISTRY_AUTH_TOKEN_REALM is {realm!r}: clients would send their credentials to the token "
                        "server in plain text; use an https:// URL")


# --- logins: who may get a token, with which rights ----------------------------------------------

ACL_BINDING_RULE = "consul:index/aclBindingRule:AclBindingRule"
ACL_TOKEN = "consul:index/aclToken:AclToken"
ACL_ROLE = "consul:index/aclRole:AclRole"
# By name (tokens) or by ID (roles): global-management and the built-in global read-only policy.
MANAGEMENT_POLICIES = ("global-management", "builtin/global-read-only", "00000000-0000-0000-0000-000000000001",
                       "00000000-0000-0000-0000-000000000002")
EXACT_ACCOUNT = re.compile(r'serviceaccount\.name\s*==\s*"?[A-Za-z0-9_.-]+"?')


def check_acl_logins(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """A binding rule turns a Kubernetes login into a Consul token: it must match one named service
    account (``serviceaccount.name=="<name>"``) and bind a fixed name, never one taken from the login
    (``${serviceaccount.name}``: any account becomes a service of its own choosing). No token or role
    the stack creates holds the management policies."""
    for rule in (r for r in resources if r.type == ACL_BINDING_RULE):
        selector, bind_name = dig(rule.props, "selector"), dig(rule.props, "bindName")
        if UNKNOWN in (selector, bind_name):
            yield Unverifiable(rule.name, "selector/bindName")
            continue
        if not isinstance(selector, str) or not EXACT_ACCOUNT.search(selector) or "!=" in selector or " or " in selector:
            yield Violation(f"Consul binding rule {rule.name} has selector {selector!r}: it lets more than one service "
                            "account of the cluster log in; select exactly one: serviceaccount.name==\"<name>\"",
                            rule.urn)
        if isinstance(bind_name, str) and "${" in bind_name:
            yield Violation(f"Consul binding rule {rule.name} binds {bind_name!r}, a name taken from the login: the "
                            "caller decides which identity it gets; bind a fixed policy, role or service name",
                            rule.urn)
    for holder in (r for r in resources if r.type in (ACL_TOKEN, ACL_ROLE)):
        policies = dig(holder.props, "policies", default=[])
        if policies is UNKNOWN:
            yield Unverifiable(holder.name, "policies")
            continue
        for policy in as_list(policies):
            name = policy if isinstance(policy, str) else dig(policy, "name")
            if name in MANAGEMENT_POLICIES:
                yield Violation(f"Consul {holder.type.rsplit(':', 1)[-1]} {holder.name} holds {name!r}: every right in "
                                "the cluster (or every secret to read); give it the stack's own ACL policy", holder.urn)


POLICIES = [
    resource_policy("consul-acl-policy-least-privilege",
                    "Consul ACL policies read only the registry's KV folder, write only declared exact keys, "
                    "register only the registry's services, and hold no acl/operator/keyring/mesh/peering scope.",
                    (ACL_POLICY,), check_consul_acl_policy, ACL_CONFIG),
    resource_policy("consul-intentions-deny-by-default",
                    "service-intentions admit only named sources and deny '*' explicitly.",
                    (CONFIG_ENTRY,), check_intentions_deny_by_default),
    resource_policy("consul-mesh-strict-mtls",
                    "No service-defaults, proxy-defaults or mesh entry allows permissive mTLS.",
                    (CONFIG_ENTRY,), check_mesh_strict_mtls),
    stack_policy("consul-acl-logins-scoped",
                 "Consul binding rules select one service account and bind a fixed name; no ACL token or role holds "
                 "the management policies.",
                 check_acl_logins),
    stack_policy("registry-auth-required",
                 "The registry's Consul KV sets REGISTRY_AUTH to token or htpasswd with that mode's settings "
                 "(never anonymous).",
                 check_registry_auth, AUTH_CONFIG),
]
