"""Network rules: every registry workload is selected by a default-deny NetworkPolicy; the ipBlocks
that reach a workload, taken together, admit no internet address and no more than ``maxAddresses``;
peers name their namespaces and pods, and every rule its ports.

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
    address_count,
    as_list,
    cidr_union,
    dig,
    display,
    labels_match,
    namespace_of,
    pod_template,
    public_part,
    resource_policy,
    schema,
    shown_networks,
    stack_policy,
    strings,
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
    if not isinstance(match_labels, dict) or not isinstance(expressions, list):
        return False  # not a selector the API server would accept: it selects nothing
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in as_list(expressions):
        key, operator, values = dig(expression, "key"), dig(expression, "operator"), dig(expression, "values", default=[])
        if UNKNOWN in (key, operator, values):
            return UNKNOWN
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist") or not isinstance(key, str):
            return False
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
    for direction in strings(as_list(types)) & set(DIRECTIONS):
        rules = dig(spec, DIRECTIONS[direction][0], default=[])
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


CIDR_CONFIG = schema({
    **REGISTRY_LABELS_PROPERTY,
    "maxAddresses": {
        "type": "integer",
        "description": "Most IPv4 addresses the ipBlocks admitted to one workload in one direction may cover "
                       "together (all NetworkPolicies that select it, every rule).",
        "default": 1 << 20,
    },
    "allowedPublicCidrs": {
        "type": "array", "items": {"type": "string"},
        "description": "Internet (non-private) ranges an ipBlock may admit, e.g. a partner's fixed egress range.",
        "default": [],
    },
})


def _peer_blocks(policy: Resource, direction: str) -> tuple[list[tuple[str, Any, list]], list[Finding]]:
    """((where, network, its except networks) of every ipBlock of one direction, findings on the way):
    a rule without peers, an unreadable or invalid CIDR, a /0."""
    rules_key, peers_key = DIRECTIONS[direction]
    blocks: list[tuple[str, Any, list]] = []
    findings: list[Finding] = []
    spec = dig(policy.props, "spec")
    rules = dig(spec, rules_key, default=[])
    if spec is UNKNOWN or rules is UNKNOWN:
        return blocks, [Unverifiable(policy.name, f"spec.{rules_key}")]
    for index, rule in enumerate(as_list(rules)):
        where = f"{display(policy)} spec.{rules_key}[{index}]"
        peers = dig(rule, peers_key)
        if peers is UNKNOWN:
            findings.append(Unverifiable(policy.name, f"spec.{rules_key}[{index}].{peers_key}"))
            continue
        if not peers:
            findings.append(Violation(f"{where} has no '{peers_key}': it admits every peer, the whole internet "
                                      f"included; list the peers", policy.urn))
            continue
        for peer_index, peer in enumerate(as_list(peers)):
            cidr, exceptions = dig(peer, "ipBlock", "cidr"), dig(peer, "ipBlock", "except", default=[])
            if cidr is None:
                continue
            if cidr is UNKNOWN or exceptions is UNKNOWN:
                findings.append(Unverifiable(policy.name, f"spec.{rules_key}[{index}].{peers_key}[{peer_index}].ipBlock"))
                continue
            try:
                network = ipaddress.ip_network(cidr, strict=False)
                cuts = [ipaddress.ip_network(e, strict=False) for e in as_list(exceptions)]
            except (TypeError, ValueError):
                findings.append(Violation(f"{where}.{peers_key}[{peer_index}] has an invalid CIDR {cidr!r} (or except "
                                          "entry); write address/prefix", policy.urn))
                continue
            if network.prefixlen == 0:
                findings.append(Violation(f"{where}.{peers_key}[{peer_index}] admits {cidr}: the whole internet; "
                                          "admit the clients' own ranges", policy.urn))
            blocks.append((f"{where}.{peers_key}[{peer_index}]", network, cuts))
    return blocks, findings


def _breadth_findings(who: str, direction: str, blocks: list[tuple[str, Any, list]], urn: str,
                      config: Mapping[str, Any]) -> Iterable[Finding]:
    """The union of ``blocks`` judged as one: internet addresses, and how many addresses in all."""
    union = cidr_union((network, cuts) for _, network, cuts in blocks)
    allowed = [ipaddress.ip_network(c, strict=False) for c in config["allowedPublicCidrs"]]
    public = cidr_union((n, allowed) for n in public_part(union))
    sources = ", ".join(sorted({str(network) for _, network, _ in blocks}))
    sources += " in " + ", ".join(sorted({where.split(" spec.", 1)[0] for where, _, _ in blocks}))
    if public:
        yield Violation(f"{who}: the {direction} ipBlocks ({sources}) together admit internet addresses "
                        f"({shown_networks(public)}, {address_count(public):,} IPv4 addresses); admit private "
                        "ranges only, or list a partner's range in allowedPublicCidrs", urn)
        return
    total = address_count(union)
    if total > config["maxAddresses"]:
        yield Violation(f"{who}: the {direction} ipBlocks ({sources}) together admit {total:,} IPv4 addresses, more "
                        f"than maxAddresses {config['maxAddresses']:,}; narrow them to the peers' own ranges", urn)


def check_no_open_cidr(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """CIDR breadth on the union of every ipBlock that reaches a workload: per direction, all the rules of
    all the NetworkPolicies selecting its pods (they add up), so 0.0.0.0/1 + 128.0.0.0/1 is the internet.
    A policy that selects none of the stack's workloads is judged on its own."""
    policies = [r for r in resources if r.type == NETWORK_POLICY]
    blocks: dict[tuple[str, str], list] = {}
    for policy in policies:
        for direction in DIRECTIONS:
            found, findings = _peer_blocks(policy, direction)
            blocks[(policy.urn, direction)] = found
            yield from findings
    workloads = [r for r in resources if pod_template(r) is not None]
    judged: set[str] = set()
    for workload in workloads:
        labels = dig(pod_template(workload), "metadata", "labels", default={})
        if not isinstance(labels, dict):
            continue
        selecting = [p for p in policies if namespace_of(p) == namespace_of(workload)
                     and selector_matches(dig(p.props, "spec", "podSelector"), labels) is True]
        judged |= {p.urn for p in selecting}
        for direction in DIRECTIONS:
            union = [block for p in selecting for block in blocks[(p.urn, direction)]]
            yield from _breadth_findings(f"{display(workload)}", direction.lower(), union, workload.urn, config)
    for policy in (p for p in policies if p.urn not in judged):
        for direction in DIRECTIONS:
            yield from _breadth_findings(display(policy), direction.lower(), blocks[(policy.urn, direction)],
                                         policy.urn, config)


# --- peers and ports -----------------------------------------------------------------------------


def _selector_breadth(selector: Any) -> Any:
    """Why a label selector selects more than named objects (a string), None if it names them, UNKNOWN."""
    if selector is UNKNOWN:
        return UNKNOWN
    labels = dig(selector, "matchLabels", default={})
    expressions = dig(selector, "matchExpressions", default=[])
    if labels is UNKNOWN or expressions is UNKNOWN:
        return UNKNOWN
    if not labels and not expressions:
        return "is empty: it selects everything"
    for expression in as_list(expressions):
        operator = dig(expression, "operator")
        if operator is UNKNOWN:
            return UNKNOWN
        if operator in ("NotIn", "DoesNotExist"):
            return f"uses {operator}: it selects everything but a list"
        if operator == "Exists" and not labels:
            return f"uses Exists on {dig(expression, 'key')!r}: anything carrying that label"
    return None


def check_peers_scoped(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Peers name namespaces and pods: no ``namespaceSelector: {}`` (every namespace), no bare
    ``podSelector: {}`` (every pod of the namespace), no "all but" selectors; every rule lists its ports."""
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
            where = f"{display(resource)} spec.{rules_key}[{index}]"
            ports = dig(rule, "ports")
            if ports is UNKNOWN:
                yield Unverifiable(resource.name, f"spec.{rules_key}[{index}].ports")
            elif not ports:
                yield Violation(f"{where} lists no ports: it admits every port {'to' if direction == 'Egress' else 'from'} "
                                f"its peers; list the ports the traffic uses")
            peers = dig(rule, peers_key, default=[])
            for peer_index, peer in enumerate(as_list(peers) if peers is not UNKNOWN else []):
                for selector_key in ("namespaceSelector", "podSelector"):
                    if selector_key not in (peer or {}):
                        continue
                    if selector_key == "podSelector" and "namespaceSelector" in peer:
                        continue  # pods of the named namespaces: the namespace selector decides the breadth
                    breadth = _selector_breadth(peer[selector_key])
                    if breadth is UNKNOWN:
                        yield Unverifiable(resource.name, f"spec.{rules_key}[{index}].{peers_key}[{peer_index}]")
                    elif breadth:
                        scope = "namespaces" if selector_key == "namespaceSelector" else "pods of the namespace"
                        yield Violation(f"{where}.{peers_key}[{peer_index}].{selector_key} {breadth} ({scope}); "
                                        "name them with matchLabels or an In expression")


POLICIES = [
    stack_policy("network-default-deny-selects-registry",
                 "Every registry workload (its jobs included) is selected by a NetworkPolicy that denies all "
                 "traffic by default.",
                 check_default_deny, DEFAULT_DENY_CONFIG),
    stack_policy("network-no-open-cidr",
                 "No rule omits its peers; the ipBlocks reaching a workload, judged together (every rule of every "
                 "NetworkPolicy selecting it), admit no internet address and at most maxAddresses.",
                 check_no_open_cidr, CIDR_CONFIG),
    resource_policy("network-peers-scoped",
                    "NetworkPolicy peers name namespaces and pods (no empty or all-but selectors) and every rule "
                    "lists its ports.",
                    (NETWORK_POLICY,), check_peers_scoped),
]
