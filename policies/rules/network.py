"""Network rules: every registry workload is selected by a default-deny NetworkPolicy, and no
policy admits the whole internet.

A registry workload is any workload whose pod template carries ``registryLabels``: the StatefulSet,
and the operations CronJobs too (the garbage collector runs a read-only registry of its own, and
its pod, like the snapshot pod, reaches the Kubernetes API).

Reading of unknown values: a NetworkPolicy whose selector or policy types are unknown cannot be
shown to isolate anything, so it does not count as the registry's default deny (a violation if no
other policy does); an unknown peer CIDR is reported as "cannot verify during preview".
"""

from __future__ import annotations

import ipaddress
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
    pod_template,
    resource_policy,
    schema,
    stack_policy,
)

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DIRECTIONS = {"Ingress": ("ingress", "from"), "Egress": ("egress", "to")}

DEFAULT_DENY_CONFIG = schema({
    **REGISTRY_LABELS_PROPERTY,
    "defaultDenyPolicyTypes": {
        "type": "array",
        "items": {"type": "string", "enum": ["Ingress", "Egress"]},
        "description": "Directions the registry's default-deny NetworkPolicy must deny.",
        "default": ["Ingress", "Egress"],
    },
})


def selector_matches(selector: Any, labels: Mapping[str, str]) -> Any:
    """Kubernetes label-selector semantics; ``UNKNOWN`` if the selector cannot be read."""
    if selector is UNKNOWN:
        return UNKNOWN
    if selector is None:
        return False
    match_labels = dig(selector, "matchLabels", default={})
    expressions = dig(selector, "matchExpressions", default=[])
    if match_labels is UNKNOWN or expressions is UNKNOWN:
        return UNKNOWN
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in as_list(expressions):
        key, operator, values = dig(expression, "key"), dig(expression, "operator"), dig(expression, "values", default=[])
        if UNKNOWN in (key, operator, values):
            return UNKNOWN
        present = key in labels
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and present and labels.get(key) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def denied_directions(policy: Resource) -> Any:
    """The directions in which this NetworkPolicy admits nothing at all (UNKNOWN if unreadable)."""
    spec = dig(policy.props, "spec", default={})
    types = dig(spec, "policyTypes")
    if spec is UNKNOWN or types is UNKNOWN:
        return UNKNOWN
    if not types:
        # The API server's default: Ingress always, Egress only when egress rules are given.
        types = ["Ingress"] + (["Egress"] if dig(spec, "egress") else [])
    denied = set()
    for direction in types:
        rules = dig(spec, DIRECTIONS.get(direction, ("",))[0], default=[])
        if rules is UNKNOWN:
            return UNKNOWN
        if not rules:
            denied.add(direction)
    return denied


def check_default_deny(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    required = set(config["defaultDenyPolicyTypes"])
    workloads = [r for r in resources if pod_template(r) is not None
                 and labels_match(dig(pod_template(r), "metadata", "labels"), config["registryLabels"])]
    policies = [r for r in resources if r.type == NETWORK_POLICY]
    for workload in workloads:
        labels = dig(pod_template(workload), "metadata", "labels", default={})
        namespace = namespace_of(workload)
        covered: set[str] = set()
        unreadable = []
        for policy in (p for p in policies if namespace_of(p) == namespace):
            selects = selector_matches(dig(policy.props, "spec", "podSelector"), labels)
            denied = denied_directions(policy)
            if selects is UNKNOWN or denied is UNKNOWN:
                unreadable.append(policy.name)
            elif selects:
                covered |= denied
        missing = sorted(required - covered)
        if missing:
            note = f" ({', '.join(unreadable)} cannot be read during preview)" if unreadable else ""
            yield Violation(f"{display(workload)} in namespace {namespace} is not selected by a NetworkPolicy that "
                            f"denies all {' and '.join(missing)} traffic by default{note}", workload.urn)


def check_no_open_cidr(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    spec = dig(resource.props, "spec")
    if spec is UNKNOWN:
        yield Unverifiable(resource.name, "spec")
        return
    for direction, (rules_key, peers_key) in DIRECTIONS.items():
        rules = dig(spec, rules_key, default=[])
        if rules is UNKNOWN:
            yield Unverifiable(resource.name, f"spec.{rules_key}")
            continue
        for index, rule in enumerate(as_list(rules)):
            where = f"spec.{rules_key}[{index}]"
            peers = dig(rule, peers_key)
            if peers is UNKNOWN:
                yield Unverifiable(resource.name, f"{where}.{peers_key}")
                continue
            if not peers:
                yield Violation(f"{where} has no '{peers_key}': it admits every peer, the whole internet included")
                continue
            for peer_index, peer in enumerate(as_list(peers)):
                cidr = dig(peer, "ipBlock", "cidr")
                if cidr is UNKNOWN:
                    yield Unverifiable(resource.name, f"{where}.{peers_key}[{peer_index}].ipBlock.cidr")
                elif isinstance(cidr, str):
                    try:
                        network = ipaddress.ip_network(cidr, strict=False)
                    except ValueError:
                        yield Violation(f"{where}.{peers_key}[{peer_index}] has an invalid CIDR {cidr!r}")
                        continue
                    if network.prefixlen == 0:
                        yield Violation(f"{where}.{peers_key}[{peer_index}] admits {cidr}: the whole internet")


POLICIES = [
    stack_policy("network-default-deny-selects-registry",
                 "Every registry workload (its jobs included) is selected by a NetworkPolicy that denies all "
                 "traffic by default.",
                 check_default_deny, DEFAULT_DENY_CONFIG),
    resource_policy("network-no-open-cidr",
                    "No NetworkPolicy rule admits 0.0.0.0/0 (or ::/0), or every peer by omitting its peer list.",
                    (NETWORK_POLICY,), check_no_open_cidr),
]
