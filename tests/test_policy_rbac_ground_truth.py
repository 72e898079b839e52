"""The pack's RBAC rules held to a real API server's authorizer (v1.35.4, RBAC on): for the recorded plan and
every plan broken for an RBAC rule, the stack's Roles, RoleBindings and ServiceAccounts are applied in a
namespace of their own, and the pack reports a violation exactly when some identity may do something no
identity of this project may do (asked of the server with ``kubectl auth can-i --as``)."""

from __future__ import annotations

import copy
import json

from offline_plan.render import kubernetes_manifest
from policies.rules import POLICIES
from tests.plan_mutations import MUTATIONS, mutated, violations_by_policy
from tests.support.kube_cluster import KubeCluster

pytest_plugins = ["tests.support.peer_fixtures"]

RBAC_TYPES = ("kubernetes:core/v1:ServiceAccount", "kubernetes:rbac.authorization.k8s.io/v1:Role",
              "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
RBAC_RULES = ("rbac-registry-roles-least-privilege", "rbac-no-sensitive-grants", "rbac-no-broad-subjects")
# What no service account of this stack may do (verb, resource[/name], or verb, resource, subresource)
FORBIDDEN = [
    ("list", "secrets"), ("get", "secrets"), ("create", "pods", "exec"), ("create", "pods", "portforward"),
    ("create", "serviceaccounts", "token"), ("create", "pods"), ("create", "jobs.batch"),
    ("delete", "pods/someone-elses-pod"), ("deletecollection", "pods"),
    ("deletecollection", "volumesnapshots.snapshot.storage.k8s.io"), ("escalate", "roles.rbac.authorization.k8s.io"),
]
# What the stack's roles grant their own accounts: forbidden to any other account (here: the namespace's default)
GRANTED_TO_OWN_ACCOUNTS = [("get", "statefulsets.apps/registry"), ("delete", "pods/registry-0"),
                           ("create", "volumesnapshots.snapshot.storage.k8s.io")]


def _in_namespace(manifests: list[dict], namespace: str) -> list[dict]:
    moved = copy.deepcopy(manifests)
    for manifest in moved:
        manifest["metadata"]["namespace"] = namespace
        for subject in manifest.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
            elif subject.get("name", "").startswith("system:serviceaccounts:"):
                subject["name"] = f"system:serviceaccounts:{namespace}"
    return moved


def _forbidden_rights(cluster: KubeCluster, plan, namespace: str) -> list[str]:
    manifests = [kubernetes_manifest(r) for r in plan.registrations if r.type in RBAC_TYPES]
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": _in_namespace(manifests, namespace)}))
    own = sorted(m["metadata"]["name"] for m in manifests if m["kind"] == "ServiceAccount")
    probes = [(account, *right) for account in own for right in FORBIDDEN]
    probes += [("default", *right) for right in GRANTED_TO_OWN_ACCOUNTS]
    allowed = []
    for account, verb, what, *subresource in probes:
        answer = cluster.kubectl("auth", "can-i", verb, what, *(f"--subresource={s}" for s in subresource),
                                 "-n", namespace, f"--as=system:serviceaccount:{namespace}:{account}", check=False)
        if answer.stdout.strip() == "yes":
            allowed.append(f"{account} may {verb} {'/'.join([what, *subresource])}")
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return allowed


def test_the_pack_refuses_rbac_exactly_when_the_authorizer_grants_a_forbidden_right(kube_cluster: KubeCluster, plans):
    stack = kube_cluster.stack
    cases = [case for case, (case_stack, _, rule) in MUTATIONS.items() if rule in RBAC_RULES and case_stack == stack]
    assert cases
    disagreements = {}
    for index, case in enumerate([None, *cases]):
        plan = plans[stack] if case is None else mutated(plans, case)
        refused = sorted(set(violations_by_policy(plan, POLICIES)) & set(RBAC_RULES))
        allowed = _forbidden_rights(kube_cluster, plan, f"rbac-ground-truth-{index}")
        if bool(refused) != bool(allowed):
            disagreements[case or "the recorded plan"] = {"authorizer allows": allowed, "pack refuses": refused}
    assert disagreements == {}, json.dumps(disagreements, indent=1)
