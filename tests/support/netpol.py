"""Kubernetes NetworkPolicy semantics, evaluated over plain manifests.

Follows the API reference (networking.k8s.io/v1): a pod is isolated for a direction once any policy
that selects it lists that direction in policyTypes; a connection is then allowed if any such
policy has a rule whose peers match (an absent or empty ``from``/``to`` matches everyone) and whose
ports match (absent or empty ``ports`` matches every port). A namespaceSelector together with a
podSelector in one peer means both must match. Named ports are not used by this project and are
rejected rather than guessed.

Kept only for what no peer here can show: the real kube-apiserver (tests/test_peer_kubernetes.py) validates and
stores the policies, but no CNI runs on this machine, so nothing enforces them; this evaluator is the only judge
of what they admit.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from components.names import NAMESPACE_LABEL


@dataclass(frozen=True)
class Peer:
    """A pod (namespace and labels) or an address outside the cluster (ip only)."""

    namespace: Optional[str] = None
    labels: dict = field(default_factory=dict)
    ip: Optional[str] = None


def selects(selector: Optional[dict], labels: dict) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(rule_peer: dict, peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        if peer.ip is None:
            return False
        address = ipaddress.ip_address(peer.ip)
        block = rule_peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(excluded) for excluded in block.get("except") or [])
    if peer.namespace is None:
        return False
    namespace_selector = rule_peer.get("namespaceSelector")
    pod_selector = rule_peer.get("podSelector")
    if namespace_selector is not None:
        if not selects(namespace_selector, {NAMESPACE_LABEL: peer.namespace}):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return pod_selector is None or selects(pod_selector, peer.labels)


def _port_matches(rule_ports: Optional[list], port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rule_port:
            return True
        if isinstance(rule_port["port"], str):
            raise ValueError(f"named port {rule_port['port']!r} is not supported by this evaluator")
        if rule_port["port"] <= port <= rule_port.get("endPort", rule_port["port"]):
            return True
    return False


def _allowed(policies: list[dict], pod: Peer, other: Peer, port: int, protocol: str, direction: str) -> bool:
    policy_type, rules_key, peers_key = (
        ("Ingress", "ingress", "from") if direction == "ingress" else ("Egress", "egress", "to")
    )
    isolating = [
        p for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and selects(p["spec"]["podSelector"], pod.labels)
        and policy_type in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(p, other, policy["metadata"]["namespace"]) for p in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def ingress_allowed(policies: list[dict], pod: Peer, source: Peer, port: int, protocol: str = "TCP") -> bool:
    return _allowed(policies, pod, source, port, protocol, "ingress")


def egress_allowed(policies: list[dict], pod: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    return _allowed(policies, pod, destination, port, protocol, "egress")
