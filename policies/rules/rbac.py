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
    resource_policy,
    schema,
    stack_policy,
    strings,
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
    return {(namespace, name) for r in resources for namespace, name in [(namespace_of(r), dig(r.props, "metadata", "name"))]
            if isinstance(namespace, str) and isinstance(name, str)
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
            bound |= {account for account in accounts if account == key}
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


# --- grants that hand out more than the role holds, whoever it is bound to -------------------------

READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "update", "patch")
# Subresources that are a shell, a debugger or a tunnel into a pod or node.
POD_ENTRY = ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "nodes/proxy", "services/proxy")
# Controllers that run pods: creating one runs a pod under any service account of the namespace.
POD_RUNNERS = ("pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs",
               "replicationcontrollers")
BROAD_GROUPS = ("system:authenticated", "system:unauthenticated", "system:serviceaccounts")
BROAD_USERS = ("system:anonymous",)


def _grants(values: list, wanted: Iterable[str]) -> list[str]:
    return sorted(set(wanted) if "*" in values else strings(values) & set(wanted))


def _sensitive_grants(rule: Any) -> Iterable[str]:
    verbs, resources = as_list(dig(rule, "verbs", default=[])), as_list(dig(rule, "resources", default=[]))
    names = as_list(dig(rule, "resourceNames", default=[]))
    secret_verbs = _grants(verbs, READ_VERBS)
    if _grants(resources, ("secrets",)) and secret_verbs:
        # get of named secrets is a choice; list and watch return every secret's data whatever the names say
        if not names or set(secret_verbs) - {"get"}:
            yield (f"{secret_verbs} on secrets{'' if names else ' (all of them)'}: every credential in the "
                   "namespace; name the one secret it reads with resourceNames and verbs ['get']")
    entry = _grants(resources, POD_ENTRY)
    if entry and verbs:
        yield f"{entry}: a shell or tunnel into pods or nodes; remove it"
    if _grants(resources, ("serviceaccounts/token",)) and _grants(verbs, ("create",)):
        yield "create on serviceaccounts/token: tokens for any service account in the namespace; remove it"
    runners = _grants(resources, POD_RUNNERS)
    writes = _grants(verbs, WRITE_VERBS)
    if runners and writes:
        yield (f"{writes} on {runners}: a pod it starts may run as any service account of the namespace; "
               "remove it")


def check_rbac_no_sensitive_grants(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Whoever a Role or ClusterRole is bound to, it reads no secret wholesale, opens no shell or tunnel,
    mints no token, and starts no pod."""
    rules = dig(resource.props, "rules", default=[])
    if rules is UNKNOWN:
        yield Unverifiable(resource.name, "rules")
        return
    for index, rule in enumerate(as_list(rules)):
        lists = [dig(rule, key, default=[]) for key in ("verbs", "resources", "resourceNames")]
        if UNKNOWN in lists or any(UNKNOWN in as_list(value) for value in lists):
            yield Unverifiable(resource.name, f"rules[{index}]")
            continue
        for grant in _sensitive_grants(rule):
            yield Violation(f"{display(resource)} rules[{index}] grants {grant}")


def check_rbac_no_broad_subjects(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Bindings name service accounts, never everyone (authenticated, anonymous, all service accounts);
    and nothing here needs cluster-wide rights."""
    subjects = dig(resource.props, "subjects", default=[])
    if subjects is UNKNOWN:
        yield Unverifiable(resource.name, "subjects")
        return
    for index, subject in enumerate(as_list(subjects)):
        kind, name = dig(subject, "kind"), dig(subject, "name")
        if UNKNOWN in (kind, name):
            yield Unverifiable(resource.name, f"subjects[{index}]")
        elif (kind == "Group" and (name in BROAD_GROUPS or str(name).startswith("system:serviceaccounts:"))) or (
                kind == "User" and name in BROAD_USERS):
            yield Violation(f"{display(resource)} subjects[{index}] binds {kind} {name!r}: every such identity gets "
                            "the role; bind the one ServiceAccount that needs it")
    if resource.type == CLUSTER_ROLE_BINDING:
        yield Violation(f"{display(resource)} grants its role in every namespace; use a RoleBinding in the registry's "
                        "namespace")


def check_service_account_no_automount(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """A service account does not hand its API token to every pod that uses it: the pods that need one
    (config-cli's Vault and Consul logins, kubectl in the jobs) opt in themselves."""
    value = dig(resource.props, "automountServiceAccountToken")
    if value is UNKNOWN:
        yield Unverifiable(resource.name, "automountServiceAccountToken")
    elif value is not False:
        yield Violation(f"{display(resource)} mounts its API token into every pod by default; set "
                        "automountServiceAccountToken: false and let the pods that need it opt in")


POLICIES = [
    stack_policy("rbac-registry-roles-least-privilege",
                 "Roles bound to the registry's service accounts grant no wildcard, no bind/escalate/impersonate, "
                 "and delete pods only by name; they are defined in the stack.",
                 check_rbac_least_privilege, RBAC_CONFIG),
    resource_policy("rbac-no-sensitive-grants",
                    "No Role or ClusterRole reads secrets wholesale, opens pods/exec, attach, portforward or proxies, "
                    "creates service account tokens, or creates pods and their controllers.",
                    (ROLE, CLUSTER_ROLE), check_rbac_no_sensitive_grants),
    resource_policy("rbac-no-broad-subjects",
                    "Bindings name service accounts, not system:authenticated, system:unauthenticated, "
                    "system:serviceaccounts[:<ns>] or system:anonymous; no ClusterRoleBinding.",
                    (ROLE_BINDING, CLUSTER_ROLE_BINDING), check_rbac_no_broad_subjects),
    resource_policy("kubernetes-service-account-no-automount",
                    "Service accounts set automountServiceAccountToken: false.",
                    (SERVICE_ACCOUNT,), check_service_account_no_automount),
]
