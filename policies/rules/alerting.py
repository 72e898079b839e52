"""Alerting rules: when a stack runs the registry, its PrometheusRules hold the alerts the system
card asks for, and every alert carries what an on-call engineer needs.

Required alerts are matched by concern, not by exact name: each concern is a regular expression over
alert names (case-insensitive), tunable per stack. An unknown rule group during preview is
reported as "cannot verify during preview".
"""

from __future__ import annotations

import re
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
    is_registry_workload,
    pod_template,
    resource_policy,
    schema,
    stack_policy,
)

PROMETHEUS_RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")

DEFAULT_REQUIRED_ALERTS = {
    "registry down": r"down|unavailable|absent",
    "high 5xx error rate": r"5xx|error",
    "storage above 80%": r"storage|capacity|disk|volume|bucket",
    "auth failure spike": r"auth",
    "garbage collection failure": r"garbage|gc",
}
# Alerts a stack that also runs the token service (pods labelled with its component) must have.
DEFAULT_TOKEN_SERVICE_ALERTS = {
    "token service down": r"^TokenService.*(Down|Unavailable)",
    "token service errors": r"^TokenService.*5xx",
    "login failures or lockouts": r"^TokenService.*(Login|Lockout)",
}
REQUIRED_ALERTS_CONFIG = schema({
    **REGISTRY_LABELS_PROPERTY,
    "tokenServiceComponent": {
        "type": "string",
        "description": "app.kubernetes.io/component of the token service's pods.",
        "default": "token-service",
    },
    "requiredTokenServiceAlerts": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "With the token service deployed: concern -> regular expression some alert name must match.",
        "default": DEFAULT_TOKEN_SERVICE_ALERTS,
    },
    "requiredAlerts": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Concern -> regular expression (case-insensitive) that some alert name must match.",
        "default": DEFAULT_REQUIRED_ALERTS,
    },
})


def alert_rules(resource: Resource) -> Any:
    """Every alerting rule (dict) of a PrometheusRule, or UNKNOWN."""
    groups = dig(resource.props, "spec", "groups", default=[])
    if groups is UNKNOWN:
        return UNKNOWN
    rules = []
    for group in as_list(groups):
        group_rules = dig(group, "rules", default=[])
        if group_rules is UNKNOWN:
            return UNKNOWN
        rules += [rule for rule in as_list(group_rules) if isinstance(rule, dict) and "alert" in rule]
    return rules


def check_required_alerts(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    workloads = [r for r in resources if is_registry_workload(r, config["registryLabels"])]
    if not workloads:
        return
    names: list[str] = []
    for resource in (r for r in resources if r.type == PROMETHEUS_RULE):
        rules = alert_rules(resource)
        if rules is UNKNOWN:
            yield Unverifiable(resource.name, "spec.groups")
            continue
        names += [rule["alert"] for rule in rules if isinstance(rule["alert"], str)]
    missing = [concern for concern, pattern in sorted(config["requiredAlerts"].items())
               if not any(re.search(pattern, name, re.I) for name in names)]
    token_service = [w for w in workloads if dig(pod_template(w), "metadata", "labels", "app.kubernetes.io/component")
                     == config["tokenServiceComponent"]]
    if token_service:
        missing += [concern for concern, pattern in sorted(config["requiredTokenServiceAlerts"].items())
                    if not any(re.search(pattern, name) for name in names)]
    if missing:
        where = f"alerts {sorted(names)}" if names else "no PrometheusRule alerts"
        yield Violation(f"the stack runs the registry ({', '.join(display(w) for w in workloads)}) but has {where}; "
                        f"missing: {', '.join(missing)}; add an alert for each")


def check_alert_metadata(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    rules = alert_rules(resource)
    if rules is UNKNOWN:
        yield Unverifiable(resource.name, "spec.groups")
        return
    for rule in rules:
        name = rule.get("alert")
        if not dig(rule, "labels", "severity"):
            yield Violation(f"{resource.name}: alert {name} has no severity label; label it (critical, warning, info) so "
                            "it is routed")
        missing = [a for a in REQUIRED_ANNOTATIONS if not dig(rule, "annotations", a)]
        if missing:
            yield Violation(f"{resource.name}: alert {name} lacks annotations {missing}; on-call needs each of them")


SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"


def check_service_monitor_scoped(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """A ServiceMonitor scrapes named namespaces and never hands Prometheus's own credentials to a target."""
    spec = dig(resource.props, "spec")
    if spec is UNKNOWN:
        yield Unverifiable(resource.name, "spec")
        return
    name = dig(resource.props, "metadata", "name", default=resource.name)
    if dig(spec, "namespaceSelector", "any") is True:
        yield Violation(f"ServiceMonitor {name} sets namespaceSelector.any: Prometheus scrapes every namespace's "
                        "Services that carry its labels, whoever made them; name the namespaces (matchNames)")
    endpoints = dig(spec, "endpoints", default=[])
    for index, endpoint in enumerate(as_list(endpoints) if endpoints is not UNKNOWN else []):
        if dig(endpoint, "bearerTokenFile"):
            yield Violation(f"ServiceMonitor {name} endpoints[{index}] sets bearerTokenFile: Prometheus sends its own "
                            "service account token to the scraped pod; use authorization from a Secret, or none")
        if dig(endpoint, "tlsConfig", "insecureSkipVerify") is True:
            yield Violation(f"ServiceMonitor {name} endpoints[{index}] skips TLS verification: anyone on the path can "
                            "answer the scrape; verify against the CA (tlsConfig.ca)")


POLICIES = [
    stack_policy("prometheus-rule-required-alerts",
                 "A stack that runs the registry has alerts for: registry down, high 5xx rate, storage above 80%, "
                 "auth failure spike, garbage collection failure.",
                 check_required_alerts, REQUIRED_ALERTS_CONFIG),
    resource_policy("prometheus-rule-alert-metadata",
                    "Every alert has a severity label and summary, description and runbook_url annotations.",
                    (PROMETHEUS_RULE,), check_alert_metadata),
    resource_policy("prometheus-service-monitor-scoped",
                    "ServiceMonitors scrape named namespaces, send no bearerTokenFile, verify TLS.",
                    (SERVICE_MONITOR,), check_service_monitor_scoped),
]
