"""The pack's Pod Security rule held to the real thing: every plan broken for
``workload-pod-security-restricted`` yields a pod that a Kubernetes API server (v1.35.4) refuses in a namespace
labelled ``enforce=restricted``, with the Pod Security message for the same field, and the recorded plans' pods
are admitted (tests/test_peer_kubernetes.py). So the rule bans what Pod Security bans, baseline's bans
included, and a case that only the pack thought bad would show up here."""

from __future__ import annotations

import json

import pytest

from offline_plan.render import kubernetes_manifest
from policies.rules import POLICIES
from tests.plan_mutations import MUTATIONS, mutated, violations_by_policy
from tests.support.kube_cluster import KubeCluster
from tests.test_peer_kubernetes import create_dry_run, pod_from_template

pytest_plugins = ["tests.support.peer_fixtures"]

POD_SECURITY = "workload-pod-security-restricted"
PSS = 'violates PodSecurity "restricted:latest": '
# case -> what the API server's refusal says: Pod Security's check, or (where the API server's own validation or
# its --allow-privileged=false refuses the pod first) that validation's message
REFUSED_FOR = {
    "a root container": PSS + "runAsUser=0",
    "a root GC CronJob": PSS + "runAsUser=0",
    "a root token service container": PSS + "runAsUser=0",
    "a registry pod on the host network": PSS + "host namespaces",
    "a snapshot pod in the host PID namespace": PSS + "host namespaces",
    "the docker socket mounted into the GC pod": PSS + 'restricted volume types (volume "docker" uses restricted volume type "hostPath")',
    "an NFS volume": PSS + "restricted volume types",
    "a hostPort on the registry": PSS + "hostPort",
    "an unmasked /proc": PSS + "procMount",
    "an unsafe sysctl": PSS + "forbidden sysctls",
    "AppArmor unconfined by annotation": PSS + "forbidden AppArmor profile",
    "AppArmor unconfined in the GC job": PSS + "forbidden AppArmor profile",
    "a privileged SELinux type": PSS + "seLinuxOptions",
    "an SELinux user": PSS + "seLinuxOptions",
    "SYS_ADMIN added to the GC tools": PSS + "unrestricted capabilities",
    "a privileged registry container": "securityContext.privileged: Forbidden: disallowed by cluster policy",
    "seccomp unconfined for the pod": PSS + "seccompProfile",
    "root for the pod, containers overriding": PSS + "runAsUser=0",
    "a Windows host process": "hostProcess containers are disallowed by cluster policy",
}


def test_every_pod_security_case_is_named_here():
    assert sorted(case for case, (_, _, rule) in MUTATIONS.items() if rule == POD_SECURITY) == sorted(REFUSED_FOR)


@pytest.fixture(scope="module")
def cluster_with_accounts(kube_cluster: KubeCluster, plans) -> KubeCluster:
    """The stack's service accounts exist, so a pod is judged by Pod Security, not refused for a missing account."""
    accounts = [kubernetes_manifest(r) for r in plans[kube_cluster.stack].registrations
                if r.type == "kubernetes:core/v1:ServiceAccount"]
    kube_cluster.kubectl("apply", "--server-side", "--field-manager=pulumi", "-f", "-",
                         input=json.dumps({"apiVersion": "v1", "kind": "List", "items": accounts}))
    return kube_cluster


def _changed_owner(plans, case: str):
    """The workload the case broke, as the manifest the program would apply."""
    stack = MUTATIONS[case][0]
    before = {r.urn: kubernetes_manifest(r) for r in plans[stack].registrations if r.type.startswith("kubernetes:")}
    after = {r.urn: kubernetes_manifest(r) for r in mutated(plans, case).registrations if r.type.startswith("kubernetes:")}
    changed = [manifest for urn, manifest in after.items() if before.get(urn) != manifest]
    assert len(changed) == 1, f"{case}: {len(changed)} objects changed"
    return changed[0]


def test_pod_security_refuses_every_pod_the_pack_refuses(cluster_with_accounts: KubeCluster, plans):
    cases = [case for case in REFUSED_FOR if MUTATIONS[case][0] == cluster_with_accounts.stack]
    assert cases
    disagreements = {}
    for case in cases:
        assert set(violations_by_policy(mutated(plans, case), POLICIES)) == {POD_SECURITY}, case
        result = create_dry_run(cluster_with_accounts, pod_from_template(_changed_owner(plans, case)))
        refusal = result.stderr.strip()
        if result.returncode == 0 or REFUSED_FOR[case] not in refusal:
            disagreements[case] = refusal or "admitted"
    assert disagreements == {}, json.dumps(disagreements, indent=1)
