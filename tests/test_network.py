"""Who reaches the registry, and whom it reaches: the recorded NetworkPolicies, evaluated."""

from __future__ import annotations

import pytest

from components.network import network_policies
from components.workload import selector_labels
from components.settings import TOKEN_KEYS
from tests.conftest import settings_for
from tests.support.netpol import Peer, egress_allowed, ingress_allowed

INTERNET = Peer(ip="93.184.216.34")


def _policies(plan) -> list[dict]:
    return [r.plain_inputs for r in plan.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")]


def _registry_pod(stack: str) -> Peer:
    return Peer(namespace="cicd", labels=selector_labels(settings_for(stack)))


def pod_in(namespace: str) -> Peer:
    return Peer(namespace=namespace, labels={"app": "anything"})


# (stack, direction, peer, port, allowed, why)
CASES = [
    ("staging", "in", pod_in("ci-runners"), 5000, True, "CI runner namespace to the registry port"),
    ("staging", "in", pod_in("ci-runners"), 20000, True, "CI runner namespace to the mesh sidecar"),
    ("prod", "in", pod_in("ci-runners-gpu"), 5000, True, "second CI runner namespace"),
    ("staging", "in", pod_in("default"), 5000, False, "an unlisted namespace"),
    ("staging", "in", pod_in("monitoring"), 5000, False, "monitoring to the registry port"),
    ("staging", "in", pod_in("monitoring"), 5001, True, "monitoring to the metrics port"),
    ("staging", "in", pod_in("ci-runners"), 5001, False, "CI runners to the metrics port"),
    # Outside the mesh the registry port accepts only the sidecar's mTLS: developers and kubelets are not admitted
    # to it (a path that cannot work); they come through the Ingress controller, which is in the mesh.
    ("staging", "in", Peer(ip="10.8.17.25"), 5000, False, "a developer straight to the mTLS-only port"),
    ("staging", "in", Peer(ip="10.8.17.25"), 20000, False, "a developer straight to the mesh port"),
    ("staging", "in", Peer(ip="10.40.3.7"), 5000, False, "a kubelet straight to the mTLS-only port"),
    ("prod", "in", Peer(ip="10.60.3.7"), 20000, False, "a kubelet straight to the mesh port"),
    ("staging", "in", Peer(ip="10.40.3.7"), 5001, True, "the node's Consul agent running the health check"),
    ("staging", "in", INTERNET, 5000, False, "an internet address"),
    ("prod", "in", pod_in("ingress-nginx"), 5000, True, "prod's Ingress controller"),
    ("staging", "in", pod_in("ingress-nginx"), 20000, True, "staging's Ingress controller, through the mesh"),
    ("staging", "out", INTERNET, 443, False, "registry egress to the internet"),
    ("prod", "out", INTERNET, 443, False, "registry egress to the internet (prod)"),
    ("staging", "out", Peer(namespace="kube-system", labels={"k8s-app": "kube-dns"}), 53, True, "DNS"),
    ("staging", "out", Peer(namespace="kube-system", labels={"k8s-app": "metrics-server"}), 53, False, "DNS port, wrong pod"),
    ("staging", "out", pod_in("consul"), 8501, True, "Consul HTTPS API"),
    ("staging", "out", pod_in("consul"), 8502, True, "Consul gRPC for the dataplane"),
    ("staging", "out", pod_in("vault"), 8200, True, "Vault"),
    ("staging", "out", pod_in("vault"), 8201, False, "Vault's cluster port"),
    ("prod", "out", Peer(ip="10.60.250.17"), 443, True, "the S3/STS interface endpoints"),
    ("staging", "out", Peer(ip="10.60.250.17"), 443, False, "staging stores on a volume, no S3"),
    ("prod", "out", pod_in("ci-runners"), 5000, False, "registry to other workloads"),
]


@pytest.mark.parametrize("stack,direction,peer,port,allowed,why", CASES, ids=[c[-1] for c in CASES])
def test_network_policies_admit_exactly_the_listed_paths(plans, stack, direction, peer, port, allowed, why):
    policies = _policies(plans[stack])
    pod = _registry_pod(stack)
    check = ingress_allowed if direction == "in" else egress_allowed
    assert check(policies, pod, peer, port) is allowed, why


def test_every_registry_pod_is_selected_by_a_default_deny_for_both_directions(stack_plan):
    pod = _registry_pod(stack_plan.stack)
    (deny,) = [p for p in _policies(stack_plan) if p["metadata"]["name"] == "registry-default-deny"]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    assert not ingress_allowed([deny], pod, pod_in("ci-runners"), 5000)


def test_empty_allow_lists_admit_nobody_rather_than_everybody():
    # htpasswd: token mode needs developer ranges (the token service's Ingress admits only them).
    settings = settings_for("staging", ciRunnerNamespaces="[]", nodeCidrs="[]", developerCidrs="[]", ingressHost=None,
                            ingressTlsSecretName=None, authMode="htpasswd", htpasswdUsers='["ci-runner:push"]',
                            pullSecretNamespaces="[]", **dict.fromkeys(TOKEN_KEYS))
    policies = network_policies(settings)
    pod = Peer(namespace="cicd", labels=selector_labels(settings))

    assert "registry-allow-clients" not in {p["metadata"]["name"] for p in policies}
    for peer in (pod_in("ci-runners"), pod_in("default"), Peer(ip="10.8.17.25"), INTERNET):
        assert not ingress_allowed(policies, pod, peer, 5000)


def test_no_policy_admits_the_whole_internet(stack_plan):
    for policy in _policies(stack_plan):
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            peers = rule.get("from", rule.get("to"))
            assert peers, f"{policy['metadata']['name']}: a rule without peers admits everybody"
            for peer in peers:
                assert peer.get("ipBlock", {}).get("cidr") not in ("0.0.0.0/0", "::/0")


def test_evaluator_reads_an_empty_from_as_everybody():
    open_policy = {
        "metadata": {"namespace": "cicd"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": 5000}]}]},
    }
    pod = Peer(namespace="cicd", labels={"a": "b"})
    assert ingress_allowed([open_policy], pod, INTERNET, 5000)
    assert not ingress_allowed([open_policy], pod, INTERNET, 5001)


def test_ingress_is_limited_to_developer_and_node_ranges_with_large_layer_settings(prod_plan):
    ingress = prod_plan.one("kubernetes:networking.k8s.io/v1:Ingress", "registry-network-ingress").plain_inputs
    annotations = ingress["metadata"]["annotations"]

    # Pulumi.prod.yaml: developerCidrs, then nodeCidrs (the kubelets pull through the Ingress).
    assert annotations["nginx.ingress.kubernetes.io/whitelist-source-range"] == "10.8.16.0/22,10.8.24.0/22,10.60.0.0/16"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    assert ingress["spec"]["tls"] == [{"hosts": ["registry.internal.example.com"],
                                       "secretName": "registry-internal-example-com-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "registry", "port": {"number": 5000}}


def test_every_stack_that_admits_nodes_gives_them_a_pull_path_through_the_ingress(stack_plan):
    """The nodes' only working path: HTTPS through the Ingress, whose source ranges must include them."""
    settings = settings_for(stack_plan.stack)
    assert settings.node_cidrs
    ingress = stack_plan.one("kubernetes:networking.k8s.io/v1:Ingress", "registry-network-ingress").plain_inputs
    ranges = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/whitelist-source-range"].split(",")
    assert {str(c) for c in settings.node_cidrs} <= set(ranges)
    assert ingress["spec"]["tls"][0]["hosts"] == [settings.ingress_host]
