"""Kubernetes RBAC rules: what the registry's service accounts may do in the cluster.

A Role or ClusterRole bound to one of the registry's service accounts (those labelled with
``registryLabels``, named as a subject or reached through the ``system:serviceaccounts[:<ns>]``
groups) grants no wildcard verb, resource, API group or URL, none of the verbs that hand out more
rights (``bind``, ``escalate``, ``impersonate``), and deletes pods only by name: the garbage
collector restarts the registry's own pods, and ``delete`` without ``resourceNames`` would let it
delete any pod in the namespace (``deletecollection`` cannot be limited by name at all). A binding to
a role the stack does not define (``cluster-admin``, ``edit``) cannot be checked and is a violation.

Unknown rules, subjects or role references are reported as "cannot verify during preview".
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .support import (
    REGISTRY_LABELS_PROPERTY,
    UNKNOWN,
    Finding,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    dig,
    display,
    labels_match,
    namespace_of,
    schema,
    stack_policy,
)

SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
ESCALATING_VERBS = ("bind", "escalate", "impersonate")
RULE_LISTS = ("verbs", "resources", "apiGroups", "nonResourceURLs")

RBAC_CONFIG = schema(REGISTRY_LABELS_PROPERTY)


def _registry_accounts(resources: list[Resource], registry_labels: Mapping[str, str]) -> set[tuple[Any, Any]]:
    return {(namespace_of(r), dig(r.props, "metadata", "name")) for r in resources
            if r.type == SERVICE_ACCOUNT and labels_match(dig(r.props, "metadata", "labels"), registry_labels)}


def _bound_registry_accounts(binding: Resource, accounts: set[tuple[Any, Any]]) -> Any:
    """The registry service accounts ``binding`` grants its role to; UNKNOWN if its subjects cannot be read."""
    subjects = dig(binding.props, "subjects", default=[])
    if subjects is UNKNOWN:
        return UNKNOWN
    binding_namespace = namespace_of(binding) if binding.type == ROLE_BINDING else None
    bound = set()
    for subject in as_list(subjects):
        kind, name = dig(subject, "kind"), dig(subject, "name")
        if UNKNOWN in (kind, name, dig(subject, "namespace")):
            return UNKNOWN
        if kind == "ServiceAccount":
            key = (dig(subject, "namespace") or binding_namespace, name)
            bound |= {key} & accounts
        elif kind == "Group" and name == "system:serviceaccounts":
            bound |= accounts
        elif kind == "Group" and isinstance(name, str) and name.startswith("system:serviceaccounts:"):
            bound |= {account for account in accounts if account[0] == name.split(":", 2)[2]}
    return bound


def _role_of(binding: Resource, resources: list[Resource]) -> Any:
    """The Role or ClusterRole the binding refers to; None if the stack does not define it, UNKNOWN if unreadable."""
    kind, name = dig(binding.props, "roleRef", "kind"), dig(binding.props, "roleRef", "name")
    if UNKNOWN in (kind, name):
        return UNKNOWN
    if kind == "Role":
        namespace = namespace_of(binding)
        candidates = [r for r in resources if r.type == ROLE and namespace_of(r) == namespace]
    else:
        candidates = [r for r in resources if r.type == CLUSTER_ROLE]
    return next((r for r in candidates if dig(r.props, "metadata", "name") == name), None)


def _rule_findings(role: Resource, index: int, rule: Any) -> Iterable[Finding]:
    lists = {key: dig(rule, key, default=[]) for key in (*RULE_LISTS, "resourceNames")}
    unknown = [key for key, value in lists.items() if value is UNKNOWN]
    if unknown:
        yield from (Unverifiable(role.name, f"rules[{index}].{key}") for key in unknown)
        return
    verbs, resources, groups = (as_list(lists[key]) for key in ("verbs", "resources", "apiGroups"))
    for key in RULE_LISTS:
        if "*" in as_list(lists[key]):
            yield f"rules[{index}] grants the wildcard {key[:-1]} '*'"
    for verb in (v for v in verbs if v in ESCALATING_VERBS):
        yield f"rules[{index}] grants {verb!r}, which hands out rights the role does not hold"
    if "pods" in resources and "" in groups:
        if "deletecollection" in verbs:
            yield f"rules[{index}] grants 'deletecollection' on pods, which no resourceNames can limit"
        if "delete" in verbs and not as_list(lists["resourceNames"]):
            yield f"rules[{index}] grants 'delete' on pods without resourceNames: any pod in the namespace"


def check_rbac_least_privilege(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    accounts = _registry_accounts(resources, config["registryLabels"])
    if not accounts:
        return
    checked: set[str] = set()
    for binding in (r for r in resources if r.type in (ROLE_BINDING, CLUSTER_ROLE_BINDING)):
        bound = _bound_registry_accounts(binding, accounts)
        if bound is UNKNOWN:
            yield Unverifiable(binding.name, "subjects")
            continue
        if not bound:
            continue
        who = ", ".join(f"{namespace}/{name}" for namespace, name in sorted(bound))
        role = _role_of(binding, resources)
        if role is UNKNOWN:
            yield Unverifiable(binding.name, "roleRef")
            continue
        if role is None:
            yield Violation(f"{display(binding)} binds {who} to {dig(binding.props, 'roleRef', 'kind')} "
                            f"{dig(binding.props, 'roleRef', 'name')!r}, which this stack does not define: its rules "
                            "cannot be checked", binding.urn)
            continue
        if role.urn in checked:
            continue
        checked.add(role.urn)
        rules = dig(role.props, "rules", default=[])
        if rules is UNKNOWN:
            yield Unverifiable(role.name, "rules")
            continue
        for index, rule in enumerate(as_list(rules)):
            for finding in _rule_findings(role, index, rule):
                if isinstance(finding, str):
                    yield Violation(f"{display(role)}, bound to {who}: {finding}", role.urn)
                else:
                    yield finding


POLICIES = [
    stack_policy("rbac-registry-roles-least-privilege",
                 "Roles bound to the registry's service accounts grant no wildcard, no bind/escalate/impersonate, "
                 "and delete pods only by name; they are defined in the stack.",
                 check_rbac_least_privilege, RBAC_CONFIG),
]
