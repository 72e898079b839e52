"""Regressions written after the rules, by someone trying to get a dangerous change past them (the second
round of issue 12; the first round is tests/plan_mutations.py). Each must be stopped by at least one
mandatory rule: which one is not the point, that none slips through is. Before the last three rules
(iam-no-delegating-actions, kms-key-deletion-window, vault-role-bound-to-stack-account) 20 of 23 were."""

from __future__ import annotations

import copy
import json

import pytest

from policies.rules import POLICIES
from tests.plan_mutations import _container, _json_edit, _pod_spec, _set, _statement, edit, violations_by_policy

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
KV = "consul:index/keyPrefix:KeyPrefix"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
SUB = ":sub"


def _trust_also(statement: dict):
    return _json_edit("assumeRolePolicy", lambda document: document["Statement"].append(statement))


def _two_subjects(document: dict) -> None:
    claims = document["Statement"][0]["Condition"]["StringEquals"]
    key = next(k for k in claims if k.endswith(SUB))
    claims[key] = ["system:serviceaccount:cicd:registry-gc", "system:serviceaccount:cicd:default"]


def _allow(action: str, resource: str):
    return _json_edit("policy", lambda document: document["Statement"].append(
        {"Effect": "Allow", "Action": action, "Resource": resource}))


def _peers(*peers: dict):
    return lambda props: props["spec"]["ingress"][0]["from"].extend(peers)


def _privileged_init(props: dict) -> None:
    debug = dict(copy.deepcopy(_container(props)), name="debug", securityContext={
        "privileged": True, "allowPrivilegeEscalation": True, "capabilities": {"add": ["ALL"]}})
    _pod_spec(props).setdefault("initContainers", []).append(debug)


REGRESSIONS = {
    "the account root may assume the registry role": ("prod", lambda p: edit(p, ROLE, "registry-storage-role", _trust_also(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}))),
    "the GC trust admits the default service account too": ("prod", lambda p: edit(
        p, ROLE, "registry-operations-gc-role", _json_edit("assumeRolePolicy", _two_subjects))),
    "the registry role may assume another role": ("prod", lambda p: edit(p, ROLE_POLICY, "registry-storage-access", _allow(
        "sts:AssumeRole", "arn:aws:iam::123456789012:role/admin"))),
    "the GC role may pass roles": ("prod", lambda p: edit(p, ROLE_POLICY, "registry-operations-gc-access", _allow(
        "iam:PassRole", "arn:aws:iam::123456789012:role/registry-storage-role-53b14a04"))),
    "the registry role may create grants on its key": ("prod", lambda p: edit(
        p, ROLE_POLICY, "registry-storage-access", _statement("RegistryKmsKey", lambda s: s["Action"].append(
            "kms:CreateGrant")))),
    "the TLS deny turned into an allow": ("prod", lambda p: edit(
        p, "aws:s3/bucketPolicy:BucketPolicy", "registry-storage-tls-only", _statement(
            "DenyInsecureTransport", lambda s: s.update(Effect="Allow")))),
    "versioning Disabled": ("prod", lambda p: edit(p, "aws:s3/bucketVersioning:BucketVersioning",
                                                   "registry-storage-versioning",
                                                   _set("versioningConfiguration", "status", "Disabled"))),
    "a 7-day deletion window on the key": ("prod", lambda p: edit(p, "aws:kms/key:Key", "registry-storage-key", _set(
        "deletionWindowInDays", 7))),
    "an intention allowing a caller from any peer": ("prod", lambda p: edit(
        p, "consul:index/configEntry:ConfigEntry", "registry-consul-service-intentions", _json_edit(
            "configJson", lambda body: body["Sources"].insert(0, {"Name": "ci-runner", "Peer": "*", "Action": "allow"})))),
    "the registry's token writing its whole folder": ("staging", lambda p: edit(
        p, "consul:index/aclPolicy:AclPolicy", "registry-consul-acl-policy", lambda i: i.update(
            rules=i["rules"].replace('policy = "read"', 'policy = "write"', 1)))),
    "the token realm over plain HTTP": ("prod", lambda p: edit(p, KV, "registry-consul-kv", lambda i: i["subkeys"].update(
        {"env/REGISTRY_AUTH_TOKEN_REALM": "http://registry-auth.prod.internal.example.com/token"}))),
    "the HTTP secret written into Consul": ("prod", lambda p: edit(p, KV, "registry-consul-kv", lambda i: i[
        "subkeys"].update({"env/REGISTRY_HTTP_SECRET": "s3cr3t-shared-by-all"}))),
    "a Vault path glob over every environment": ("prod", lambda p: edit(
        p, "vault:index/policy:Policy", "registry-secrets-policy", lambda i: i.update(
            policy=i["policy"].replace("secret/data/registry/prod", "secret/data/registry/*")))),
    "the GC's Vault role bound to the default account": ("prod", lambda p: edit(
        p, "vault:kubernetes/authBackendRole:AuthBackendRole", "registry-secrets-registry-gc-auth-role", _set(
            "boundServiceAccountNames", ["default"]))),
    "runAsNonRoot false": ("staging", lambda p: edit(p, STATEFULSET, "registry-statefulset", lambda i: _container(i)[
        "securityContext"].update(runAsNonRoot=False))),
    "a privileged debug init container": ("prod", lambda p: edit(p, STATEFULSET, "registry-statefulset",
                                                                 _privileged_init)),
    "a LoadBalancer for the metrics Service": ("prod", lambda p: edit(
        p, "kubernetes:core/v1:Service", "registry-monitoring-metrics-service", lambda i: i["spec"].update(
            type="LoadBalancer", clusterIP=None))),
    "the GC role reading everything in its namespace": ("prod", lambda p: edit(
        p, "kubernetes:rbac.authorization.k8s.io/v1:Role", "registry-operations-gc-role", lambda i: i["rules"].append(
            {"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}))),
    "the snapshot account mounting its token everywhere": ("staging", lambda p: edit(
        p, "kubernetes:core/v1:ServiceAccount", "registry-operations-snapshot-service-account", _set(
            "automountServiceAccountToken", True))),
    "the GC job reaching the internet on 443": ("prod", lambda p: edit(
        p, NETWORK_POLICY, "registry-operations-registry-gc-allow-egress", lambda i: i["spec"]["egress"][0][
            "to"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}))),
    "clients from all of CGNAT (4M addresses)": ("staging", lambda p: edit(
        p, NETWORK_POLICY, "registry-network-allow-clients", _peers({"ipBlock": {"cidr": "100.64.0.0/10"}}))),
    "the IPv6 internet in two halves": ("staging", lambda p: edit(
        p, NETWORK_POLICY, "registry-network-allow-clients", _peers({"ipBlock": {"cidr": "::/1"}},
                                                                    {"ipBlock": {"cidr": "8000::/1"}}))),
    "metrics from every namespace that has a name": ("prod", lambda p: edit(
        p, NETWORK_POLICY, "registry-network-allow-metrics", _set("spec", "ingress", 0, "from", 0, {
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}}))),
}


@pytest.mark.parametrize("case", list(REGRESSIONS))
def test_no_regression_slips_through(plans, case):
    stack, mutation = REGRESSIONS[case]
    broken = mutation(copy.deepcopy(plans[stack]))
    assert json.dumps([r.plain_inputs for r in broken.registrations], sort_keys=True, default=str) != json.dumps(
        [r.plain_inputs for r in plans[stack].registrations], sort_keys=True, default=str), "the case changes nothing"
    assert violations_by_policy(broken, POLICIES), f"{case}: planned with no violation"
