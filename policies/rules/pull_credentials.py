"""Pull credentials rules: the kubelets' image pull Secrets come from Vault through the External Secrets Operator,
hold only a pull-only robot, and never appear in a manifest.

- ``pull-secret-from-pull-robot`` (ExternalSecret): the target is a ``kubernetes.io/dockerconfigjson`` Secret
  rendered by template engine v2; every remote reference names a pull-only robot's client secret and one field
  of it; no ``dataFrom`` (which copies whole secrets, or every secret a search finds).
- ``pull-credentials-store-scoped`` (ClusterSecretStore/SecretStore): Vault over https with Kubernetes auth and
  an audience; a cluster store lists the namespaces that may use it by name (no selector, no regular expression).
- ``pull-credentials-store-reads-only-pull-robots`` (stack): the Vault role a store logs in with is one of this
  stack's, bound to the store's own service account, and every policy it grants reads only pull-only robots'
  client secrets.
- ``vault-client-secrets-only-for-stores`` (stack): a Vault policy that reads a robot's client secret is granted
  only by a role some secret store logs in with.
- ``no-plaintext-kubernetes-secrets`` (stack): no Kubernetes Secret with data in the plan at all: a credential
  there is in every manifest, preview and state file.

Which robots are pull-only is the pack's config (``pullOnlyRobots``): the robots' roles live in a Vault secret the
plan holds only as a Pulumi secret. ``tests/test_policy_rules.py`` holds the default to the stack files.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from .config_secrets import VAULT_K8S_ROLE, VAULT_POLICY, vault_policy_rules
from .support import (
    UNKNOWN,
    Finding,
    HclError,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    dig,
    resource_policy,
    schema,
    stack_policy,
)

EXTERNAL_SECRET = "kubernetes:external-secrets.io/v1:ExternalSecret"
CLUSTER_SECRET_STORE = "kubernetes:external-secrets.io/v1:ClusterSecretStore"
SECRET_STORE = "kubernetes:external-secrets.io/v1:SecretStore"
STORE_TYPES = (CLUSTER_SECRET_STORE, SECRET_STORE)
KUBERNETES_SECRET = "kubernetes:core/v1:Secret"
DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"

PULL_ROBOTS_PROPERTY = {
    "pullOnlyRobots": {
        "type": "array", "items": {"type": "string"},
        "description": "Robots whose role is pull (the stack files' name:pull htpasswdUsers): the only ones whose "
                       "client secret an image pull Secret may carry.",
        "default": ["cluster-pull"],
    },
}
PULL_SECRET_CONFIG = schema({
    **PULL_ROBOTS_PROPERTY,
    "clientSecretPattern": {
        "type": "string",
        "description": "Regular expression of a robot's client secret path inside the KV v2 mount; group 'robot' "
                       "is the robot's name.",
        "default": r"^registry/[a-z0-9-]+/clients/(?P<robot>[a-z0-9._-]+)$",
    },
})
STORE_ROLE_CONFIG = schema({
    **PULL_ROBOTS_PROPERTY,
    "clientDataPathPattern": {
        "type": "string",
        "description": "Regular expression of a Vault policy path reading a robot's client secret (KV v2 data "
                       "path); group 'robot' is the robot's name.",
        "default": r"^[A-Za-z0-9_-]+/data/registry/[a-z0-9-]+/clients/(?P<robot>[a-z0-9._-]+)$",
    },
})


def check_pull_secret(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    name = f"ExternalSecret {dig(resource.props, 'metadata', 'namespace')}/{dig(resource.props, 'metadata', 'name')}"
    template = dig(resource.props, "spec", "target", "template")
    secret_type = dig(template, "type") if isinstance(template, dict) else template
    if secret_type is UNKNOWN:
        yield Unverifiable(resource.name, "spec.target.template.type")
    elif secret_type != DOCKER_CONFIG_JSON:
        yield Violation(f"{name} renders a Secret of type {secret_type!r}; kubelets read image pull credentials only "
                        f"from {DOCKER_CONFIG_JSON}: set spec.target.template.type to it")
    engine = dig(resource.props, "spec", "target", "template", "engineVersion")
    if engine not in ("v2", UNKNOWN):
        yield Violation(f"{name} uses template engine {engine!r}; engine v1 is deprecated and renders differently: "
                        "set engineVersion: v2")
    if dig(resource.props, "spec", "dataFrom"):
        yield Violation(f"{name} uses dataFrom, which copies whole secrets (or every secret a search finds) into the "
                        "pull Secret; name each field of the pull robot's client secret under data instead")
    pattern = re.compile(config["clientSecretPattern"])
    allowed = set(config["pullOnlyRobots"])
    references = dig(resource.props, "spec", "data", default=[])
    if references is UNKNOWN:
        yield Unverifiable(resource.name, "spec.data")
        return
    if not as_list(references):
        yield Violation(f"{name} reads nothing from the store; reference the pull robot's username and password")
    for reference in as_list(references):
        key = dig(reference, "remoteRef", "key")
        if key is UNKNOWN:
            yield Unverifiable(resource.name, "spec.data[].remoteRef.key")
            continue
        match = pattern.match(key) if isinstance(key, str) else None
        if match is None or match.group("robot") not in allowed:
            yield Violation(f"{name} reads {key!r}, which is not a pull-only robot's client secret (robots "
                            f"{sorted(allowed)}, paths matching {pattern.pattern}): a node would hold credentials "
                            "that can push or delete; reference the pull robot only")
        if not dig(reference, "remoteRef", "property"):
            yield Violation(f"{name} copies all of {key!r} into one key; name the property (username or password) "
                            "it needs")


def check_store_scoped(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    kind = "ClusterSecretStore" if resource.type == CLUSTER_SECRET_STORE else "SecretStore"
    name = f"{kind} {dig(resource.props, 'metadata', 'name')}"
    vault = dig(resource.props, "spec", "provider", "vault")
    if vault is UNKNOWN:
        yield Unverifiable(resource.name, "spec.provider.vault")
        return
    if not isinstance(vault, dict):
        yield Violation(f"{name} is not a Vault store; the pull robot's credentials live in Vault: use provider vault")
        return
    server = vault.get("server")
    if isinstance(server, str) and not server.startswith("https://"):
        yield Violation(f"{name} reaches Vault at {server!r} without TLS, so its Vault token and the robot's "
                        "password cross the network in clear; use an https:// address")
    kubernetes = dig(vault, "auth", "kubernetes")
    if kubernetes is UNKNOWN:
        yield Unverifiable(resource.name, "spec.provider.vault.auth.kubernetes")
    elif not isinstance(kubernetes, dict) or set(dig(vault, "auth", default={})) != {"kubernetes"}:
        yield Violation(f"{name} logs in to Vault with {sorted(map(str, dig(vault, 'auth', default={})))}, not (only) "
                        "Kubernetes auth: a token or secret in the cluster would outlive every rotation; use "
                        "auth.kubernetes with a service account")
    elif not dig(kubernetes, "serviceAccountRef", "audiences"):
        yield Violation(f"{name} requests service account tokens without an audience, so they are also valid for "
                        "the API server; set serviceAccountRef.audiences to the Vault role's audience")
    if resource.type != CLUSTER_SECRET_STORE:
        return
    conditions = dig(resource.props, "spec", "conditions", default=[])
    if conditions is UNKNOWN:
        yield Unverifiable(resource.name, "spec.conditions")
        return
    if not as_list(conditions):
        yield Violation(f"{name} has no conditions: an ExternalSecret in any namespace could read the pull robot "
                        "through it; list the consuming namespaces under spec.conditions[].namespaces")
    for condition in as_list(conditions):
        if dig(condition, "namespaceSelector") is UNKNOWN or dig(condition, "namespaces") is UNKNOWN:
            yield Unverifiable(resource.name, "spec.conditions")
            continue
        broad = [key for key in ("namespaceSelector", "namespaceRegexes") if dig(condition, key)]
        if broad:
            yield Violation(f"{name}: condition {broad} admits every namespace that matches, whoever creates or "
                            "labels it; list the namespaces by name")
        elif not dig(condition, "namespaces"):
            yield Violation(f"{name}: a condition without namespaces admits every namespace; list them by name")


def _by_name(resources: list[Resource], type_token: str, field: str) -> tuple[dict[str, Resource], bool]:
    """The resources of a type by the string in ``field``, and whether some name is unknown (or not a string)."""
    found, unknown = {}, False
    for resource in (r for r in resources if r.type == type_token):
        name = dig(resource.props, field)
        if isinstance(name, str):
            found[name] = resource
        else:
            unknown = True
    return found, unknown


def _policy_rules(policy: Resource) -> tuple[list[tuple[str, list[str]]], list[str]]:
    text = dig(policy.props, "policy")
    if not isinstance(text, str):
        return [], [f"policy text {text!r}"]
    try:
        return vault_policy_rules(text)
    except HclError:
        return [], ["policy text that is not HCL"]


def check_store_role_reads_only_pull_robots(resources: list[Resource], config: Mapping[str, Any]
                                            ) -> Iterable[Finding]:
    roles, unknown_roles = _by_name(resources, VAULT_K8S_ROLE, "roleName")
    policies, unknown_policies = _by_name(resources, VAULT_POLICY, "name")
    pattern = re.compile(config["clientDataPathPattern"])
    allowed = set(config["pullOnlyRobots"])
    for store in (r for r in resources if r.type in STORE_TYPES):
        name = f"{store.type.rsplit(':', 1)[-1]} {dig(store.props, 'metadata', 'name')}"
        kubernetes = dig(store.props, "spec", "provider", "vault", "auth", "kubernetes")
        role_name = dig(kubernetes, "role")
        if kubernetes is UNKNOWN or role_name is UNKNOWN:
            yield Unverifiable(store.name, "the store's Vault role")
            continue
        if not isinstance(kubernetes, dict):
            continue  # pull-credentials-store-scoped reports it
        role = roles.get(role_name) if isinstance(role_name, str) else None
        if role is None:
            if unknown_roles:
                yield Unverifiable(store.name, "the stack's Vault role names")
            else:
                yield Violation(f"{name} logs in as Vault role {role_name!r}, which this stack does not define: what "
                                "it may read cannot be checked; use the stack's own role", store.urn)
            continue
        account = dig(kubernetes, "serviceAccountRef")
        account = account if isinstance(account, dict) else {}
        namespace = account.get("namespace", dig(store.props, "metadata", "namespace"))
        bound = (as_list(dig(role.props, "boundServiceAccountNames")),
                 as_list(dig(role.props, "boundServiceAccountNamespaces")))
        if UNKNOWN in (*bound[0], *bound[1]) or UNKNOWN in (account.get("name"), namespace):
            yield Unverifiable(store.name, "the store's service account and its role's binding")
        elif bound != ([account.get("name")], [namespace]):
            yield Violation(f"{name} uses Vault role {role_name!r}, which is bound to {bound[1]}/{bound[0]}, not to "
                            f"the store's own service account {namespace}/{account.get('name')}; bind the role to "
                            "that one account", store.urn)
        granted = dig(role.props, "tokenPolicies")
        if granted is UNKNOWN:
            yield Unverifiable(store.name, "the store role's tokenPolicies")
            continue
        for policy_name in as_list(granted):
            policy = policies.get(policy_name) if isinstance(policy_name, str) else None
            if policy is None or dig(policy.props, "policy") is UNKNOWN:
                if policy is None and not unknown_policies and policy_name is not UNKNOWN:
                    yield Violation(f"{name}: its role grants {policy_name!r}, which is not a Vault policy of this "
                                    "stack, so what it reads cannot be checked; grant the stack's own policy",
                                    store.urn)
                else:
                    yield Unverifiable(store.name, f"Vault policy {policy_name!r}")
                continue
            rules, unreadable = _policy_rules(policy)
            for what in unreadable:
                yield Violation(f"{name}: Vault policy {policy_name} has {what}, which this pack cannot judge; grant "
                                "only read on the pull robot's client secret", store.urn)
            for path, capabilities in rules:
                match = pattern.match(path)
                if match is None or match.group("robot") not in allowed:
                    yield Violation(f"{name}: Vault policy {policy_name} reaches {path!r}, not only a pull-only robot's "
                                    f"client secret (robots {sorted(allowed)}): every consuming namespace could read "
                                    "it; grant read on the pull robot's client secret only", store.urn)
                elif set(capabilities) - {"read"}:
                    yield Violation(f"{name}: Vault policy {policy_name} grants {sorted(capabilities)} on {path!r}; "
                                    "grant read only", store.urn)


def check_client_secrets_read_only_by_stores(resources: list[Resource], config: Mapping[str, Any]
                                             ) -> Iterable[Finding]:
    """A policy that reads a robot's client secret is granted only by roles that a secret store logs in with: any
    other pod holding it would hold a robot's password."""
    pattern = re.compile(config["clientDataPathPattern"])
    store_roles = {dig(r.props, "spec", "provider", "vault", "auth", "kubernetes", "role")
                   for r in resources if r.type in STORE_TYPES}
    store_roles = {role for role in store_roles if isinstance(role, str)}
    readers = set()
    for policy in (r for r in resources if r.type == VAULT_POLICY):
        rules, _ = _policy_rules(policy)  # what is unreadable, vault-policy-read-only reports
        name = dig(policy.props, "name")
        if isinstance(name, str) and any(pattern.match(path) for path, _ in rules):
            readers.add(name)
    for role in (r for r in resources if r.type == VAULT_K8S_ROLE):
        role_name = dig(role.props, "roleName")
        granted = readers & {p for p in as_list(dig(role.props, "tokenPolicies")) if isinstance(p, str)}
        if granted and role_name is UNKNOWN:
            yield Unverifiable(role.name, "roleName")
        elif granted and not (isinstance(role_name, str) and role_name in store_roles):
            yield Violation(f"Vault role {role_name} grants {sorted(granted)}, which reads a robot's client secret, but "
                            "no secret store logs in with it: its pods would hold a robot's password; grant client "
                            "secrets only to the pull credentials' store role", role.urn)


def check_no_plaintext_secrets(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    for secret in (r for r in resources if r.type == KUBERNETES_SECRET):
        fields = [key for key in ("data", "stringData") if dig(secret.props, key) not in (None, {}, UNKNOWN)]
        if fields:
            yield Violation(f"Secret {dig(secret.props, 'metadata', 'namespace')}/{dig(secret.props, 'metadata', 'name')} "
                            f"carries {fields} in the plan, so the value is in every manifest, preview and state "
                            "file; keep it in Vault and render it with an ExternalSecret", secret.urn)


POLICIES = [
    resource_policy("pull-secret-from-pull-robot",
                    "ExternalSecrets render dockerconfigjson Secrets (engine v2) from a pull-only robot's client "
                    "secret, field by field.",
                    (EXTERNAL_SECRET,), check_pull_secret, PULL_SECRET_CONFIG),
    resource_policy("pull-credentials-store-scoped",
                    "Secret stores reach Vault over TLS with Kubernetes auth and an audience; a ClusterSecretStore "
                    "names the namespaces that may use it.",
                    STORE_TYPES, check_store_scoped),
    stack_policy("pull-credentials-store-reads-only-pull-robots",
                 "A secret store's Vault role is the stack's own, bound to the store's service account, and reads "
                 "only pull-only robots' client secrets.",
                 check_store_role_reads_only_pull_robots, STORE_ROLE_CONFIG),
    stack_policy("vault-client-secrets-only-for-stores",
                 "Only the Vault roles secret stores log in with may read robots' client secrets.",
                 check_client_secrets_read_only_by_stores, STORE_ROLE_CONFIG),
    stack_policy("no-plaintext-kubernetes-secrets",
                 "No Kubernetes Secret carries data in the plan: credentials reach namespaces from Vault.",
                 check_no_plaintext_secrets),
]
