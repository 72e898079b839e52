"""Workload rules: the Pod Security "restricted" fields, requests and limits, probes, images pinned
by digest from allowed registries, no service links, and the registry-specific constraints
(filesystem storage means one replica; several replicas need one shared HTTP secret; the debug
port stays off the Services clients use).

Unknown values (an image computed from another resource, say) are reported as "cannot verify during
preview" and checked at ``pulumi up``.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from .support import (
    CONSUL_KV_TYPES,
    LONG_RUNNING_TYPES,
    REGISTRY_LABELS_PROPERTY,
    UNKNOWN,
    WORKLOAD_TYPES,
    Finding,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    consul_kv_entries,
    dig,
    display,
    is_registry_workload,
    pod_template,
    resource_policy,
    schema,
    stack_policy,
)

SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
SECCOMP_PROFILES = ("RuntimeDefault", "Localhost")
ALLOWED_ADDED_CAPABILITIES = ("NET_BIND_SERVICE",)
HTTP_SECRET_VARIABLE = "REGISTRY_HTTP_SECRET"

IMAGE = re.compile(
    r"^(?P<repository>[^@\s:]+(?::\d+)?(?:/[^@\s:]+)*)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[A-Za-z0-9_+.-]+:[0-9a-fA-F]{32,}))?$"
)
IMAGE_CONFIG = schema({
    "allowedRegistries": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Registry hosts images may come from (the first path component of the image): the "
                       "bootstrap registry, never the registry this program deploys (a cold start would wait "
                       "for itself).",
        "default": ["123456789012.dkr.ecr.eu-west-1.amazonaws.com"],
    },
})
REGISTRY_PORTS_CONFIG = schema({
    **REGISTRY_LABELS_PROPERTY,
    "registryPort": {"type": "integer", "description": "The registry's client port.", "default": 5000},
    "debugPort": {"type": "integer", "description": "The registry's debug/metrics port.", "default": 5001},
    "debugPortNames": {
        "type": "array", "items": {"type": "string"},
        "description": "Container port names that mean the debug/metrics port.",
        "default": ["debug", "metrics"],
    },
})
REGISTRY_CONFIG = schema(REGISTRY_LABELS_PROPERTY)


def _pod_spec(resource: Resource) -> Any:
    return dig(pod_template(resource), "spec")


def _containers(spec: Any, include_init: bool = True) -> list[tuple[str, Any]]:
    """(label, container) for each container of a pod spec; the label says where it is."""
    kinds = ("containers", "initContainers", "ephemeralContainers") if include_init else ("containers",)
    found = []
    for kind in kinds:
        for index, container in enumerate(as_list(dig(spec, kind, default=[]))):
            name = dig(container, "name")
            found.append((f"{kind}[{name if isinstance(name, str) else index}]", container))
    return found


# --- Pod Security "restricted" -----------------------------------------------------------------


def check_pod_security(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    spec = _pod_spec(resource)
    if spec is UNKNOWN or dig(spec, "containers") is UNKNOWN:
        yield Unverifiable(resource.name, "the pod template")
        return
    pod_context = dig(spec, "securityContext", default={})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        value = dig(spec, flag)
        if value is UNKNOWN:
            yield Unverifiable(resource.name, f"spec.{flag}")
        elif value is True:
            yield Violation(f"{flag} is true; the restricted profile forbids sharing host namespaces")
    for volume in as_list(dig(spec, "volumes", default=[])):
        if isinstance(volume, dict) and "hostPath" in volume:
            yield Violation(f"volume {volume.get('name')} is a hostPath volume")
    for label, container in _containers(spec):
        yield from _container_security(resource, label, container, pod_context)


def _inherited(container_context: Any, pod_context: Any, key: str) -> Any:
    value = dig(container_context, key)
    return dig(pod_context, key) if value is None else value


def _container_security(resource: Resource, label: str, container: Any, pod_context: Any) -> Iterable[Finding]:
    context = dig(container, "securityContext", default={})
    if context is UNKNOWN:
        yield Unverifiable(resource.name, f"{label}.securityContext")
        return
    non_root = _inherited(context, pod_context, "runAsNonRoot")
    user = _inherited(context, pod_context, "runAsUser")
    if non_root is UNKNOWN or user is UNKNOWN:
        yield Unverifiable(resource.name, f"{label}.securityContext.runAsNonRoot/runAsUser")
    else:
        if user == 0:
            yield Violation(f"{label} runs as root (runAsUser 0)")
        if non_root is not True:
            yield Violation(f"{label} does not set runAsNonRoot: true (pod or container)")
    escalation = dig(context, "allowPrivilegeEscalation")
    if escalation is UNKNOWN:
        yield Unverifiable(resource.name, f"{label}.securityContext.allowPrivilegeEscalation")
    elif escalation is not False:
        yield Violation(f"{label} must set allowPrivilegeEscalation: false")
    if dig(context, "privileged") is True:
        yield Violation(f"{label} is privileged")
    drop = dig(context, "capabilities", "drop", default=[])
    add = dig(context, "capabilities", "add", default=[])
    if UNKNOWN in (drop, add):
        yield Unverifiable(resource.name, f"{label}.securityContext.capabilities")
    else:
        if "ALL" not in as_list(drop):
            yield Violation(f"{label} must drop ALL capabilities")
        extra = [c for c in as_list(add) if c not in ALLOWED_ADDED_CAPABILITIES]
        if extra:
            yield Violation(f"{label} adds capabilities {extra}; only NET_BIND_SERVICE is allowed")
    seccomp = _inherited(dig(context, "seccompProfile", default={}), dig(pod_context, "seccompProfile", default={}),
                         "type")
    if seccomp is UNKNOWN:
        yield Unverifiable(resource.name, f"{label}.securityContext.seccompProfile")
    elif seccomp not in SECCOMP_PROFILES:
        yield Violation(f"{label} needs seccompProfile RuntimeDefault or Localhost (pod or container), has {seccomp!r}")
    for port in as_list(dig(container, "ports", default=[])):
        if isinstance(port, dict) and port.get("hostPort"):
            yield Violation(f"{label} binds hostPort {port.get('hostPort')}")


# --- resources, probes, images, service links --------------------------------------------------


def check_resources(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    spec = _pod_spec(resource)
    if spec is UNKNOWN or dig(spec, "containers") is UNKNOWN:
        yield Unverifiable(resource.name, "the pod template")
        return
    for label, container in _containers(spec):
        for section in ("requests", "limits"):
            for quantity in ("cpu", "memory"):
                value = dig(container, "resources", section, quantity)
                if value is UNKNOWN:
                    yield Unverifiable(resource.name, f"{label}.resources.{section}.{quantity}")
                elif value in (None, "", 0, "0"):
                    yield Violation(f"{label} has no {section}.{quantity}")


def check_probes(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    if resource.type not in LONG_RUNNING_TYPES:
        return
    spec = _pod_spec(resource)
    if spec is UNKNOWN or dig(spec, "containers") is UNKNOWN:
        yield Unverifiable(resource.name, "the pod template")
        return
    for label, container in _containers(spec, include_init=False):
        for probe in ("readinessProbe", "livenessProbe"):
            value = dig(container, probe)
            if value is UNKNOWN:
                yield Unverifiable(resource.name, f"{label}.{probe}")
            elif not value:
                yield Violation(f"{label} has no {probe}")


def image_registry(repository: str) -> str:
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def check_image_pinned(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    spec = _pod_spec(resource)
    if spec is UNKNOWN or dig(spec, "containers") is UNKNOWN:
        yield Unverifiable(resource.name, "the pod template")
        return
    allowed = list(config.get("allowedRegistries") or [])
    for label, container in _containers(spec):
        image = dig(container, "image")
        if image is UNKNOWN:
            yield Unverifiable(resource.name, f"{label}.image")
            continue
        match = IMAGE.match(image) if isinstance(image, str) else None
        if not match:
            yield Violation(f"{label} image {image!r} is not a valid image reference")
            continue
        if match["tag"] == "latest" or (not match["tag"] and not match["digest"]):
            yield Violation(f"{label} image {image!r} uses the tag 'latest' (explicitly or by default)")
        if not match["digest"] or not match["digest"].startswith("sha256:"):
            yield Violation(f"{label} image {image!r} is not pinned by a sha256 digest")
        registry = image_registry(match["repository"])
        if registry not in allowed:
            yield Violation(f"{label} image {image!r} comes from {registry}, not one of the allowed registries "
                            f"{allowed}")


def check_service_links_disabled(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    spec = _pod_spec(resource)
    if spec is UNKNOWN:
        yield Unverifiable(resource.name, "the pod template")
        return
    value = dig(spec, "enableServiceLinks")
    if value is UNKNOWN:
        yield Unverifiable(resource.name, "enableServiceLinks")
    elif value is not False:
        yield Violation("enableServiceLinks must be false: a Service named 'registry' injects REGISTRY_* variables "
                        "that Distribution reads as configuration")


# --- registry-specific ------------------------------------------------------------------------


def check_filesystem_single_replica(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    if not is_registry_workload(resource, config["registryLabels"]):
        return
    claims = dig(resource.props, "spec", "volumeClaimTemplates")
    replicas = dig(resource.props, "spec", "replicas", default=1)
    if claims is UNKNOWN or replicas is UNKNOWN:
        yield Unverifiable(resource.name, "spec.replicas/spec.volumeClaimTemplates")
    elif claims and replicas > 1:
        yield Violation(f"{display(resource)} keeps images on per-pod volumes (filesystem storage) with {replicas:g} "
                        "replicas: each pod would be a separate registry holding a different part of the images")


def _env_names(spec: Any) -> set[str]:
    names = set()
    for _, container in _containers(spec, include_init=False):
        for variable in as_list(dig(container, "env", default=[])):
            if isinstance(variable, dict) and (variable.get("value") or variable.get("valueFrom")):
                names.add(variable.get("name"))
    return names


def check_shared_http_secret(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """Replicas > 1 need one ``http.secret`` for all pods, from the pod env or from Consul KV.

    The program computes a ``KeyPrefix``'s whole ``subkeys`` map from the KMS key ARN, so during a
    preview that creates the key the KV keys are unknown: the secret may well be among them, which
    is "cannot verify", not a violation.
    """
    kv_keys = set()
    unreadable_kv = []
    for kv in (r for r in resources if r.type in CONSUL_KV_TYPES):
        for path, value in consul_kv_entries(kv):
            if path is UNKNOWN:
                unreadable_kv.append(kv.name)
            elif isinstance(path, str) and value not in (None, ""):
                kv_keys.add(path.rsplit("/", 1)[-1])
    for workload in (r for r in resources if is_registry_workload(r, config["registryLabels"])):
        replicas = dig(workload.props, "spec", "replicas", default=1)
        if replicas is UNKNOWN:
            yield Unverifiable(workload.name, "spec.replicas")
            continue
        if replicas <= 1:
            continue
        if HTTP_SECRET_VARIABLE in _env_names(_pod_spec(workload)) or HTTP_SECRET_VARIABLE in kv_keys:
            continue
        if unreadable_kv:
            yield from (Unverifiable(name, "the key list") for name in sorted(set(unreadable_kv)))
            continue
        yield Violation(f"{display(workload)} runs {replicas:g} replicas but no {HTTP_SECRET_VARIABLE} is set in the pod "
                        "env or in Consul KV: each pod would generate its own secret and uploads would fail across "
                        "pods", workload.urn)


def _selects_registry(selector: dict, registry_labels: Mapping[str, str]) -> bool:
    shared = set(selector) & set(registry_labels)
    return bool(shared) and all(selector[key] == registry_labels[key] for key in shared)


def _port_is_debug(port: Any, config: Mapping[str, Any]) -> bool:
    debug_names = set(config["debugPortNames"])
    return (dig(port, "port") == config["debugPort"] or dig(port, "targetPort") in (config["debugPort"], *debug_names)
            or dig(port, "name") in debug_names)


def check_debug_port_not_on_client_service(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """A Service that carries the registry port is a client path, and so is every Ingress backend; the
    debug port (``/debug/health``, ``/debug/pprof``, ``/metrics``, all without authentication) must not
    be reachable through either."""
    if resource.type == INGRESS:
        yield from _debug_port_behind_ingress(resource, config)
        return
    selector = dig(resource.props, "spec", "selector")
    ports = dig(resource.props, "spec", "ports", default=[])
    if selector is UNKNOWN or ports is UNKNOWN:
        yield Unverifiable(resource.name, "spec.selector/spec.ports")
        return
    if not isinstance(selector, dict) or not _selects_registry(selector, config["registryLabels"]):
        return
    ports = [p for p in as_list(ports) if isinstance(p, dict)]
    serves_clients = any(p.get("port") == config["registryPort"] or p.get("targetPort") in (config["registryPort"], "http")
                         for p in ports)
    if not serves_clients:
        return
    for port in ports:
        if _port_is_debug(port, config):
            yield Violation(f"{display(resource)} serves clients on {config['registryPort']} and also exposes the "
                            f"debug/metrics port ({port.get('name')}: {port.get('port')}); keep /debug and /metrics "
                            "on a separate Service")


def _ingress_backends(spec: Any) -> list[tuple[str, Any]]:
    """(where, backend) of the default backend and of every path; an unreadable list is one UNKNOWN."""
    backends = []
    default = dig(spec, "defaultBackend")
    if default is not None:
        backends.append(("spec.defaultBackend", default))
    rules = dig(spec, "rules", default=[])
    if rules is UNKNOWN:
        return backends + [("spec.rules", UNKNOWN)]
    for rule_index, rule in enumerate(as_list(rules)):
        paths = dig(rule, "http", "paths", default=[])
        where = f"spec.rules[{rule_index}].http.paths"
        if paths is UNKNOWN:
            backends.append((where, UNKNOWN))
            continue
        backends += [(f"{where}[{index}].backend", dig(path, "backend")) for index, path in enumerate(as_list(paths))]
    return backends


def _debug_port_behind_ingress(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    spec = dig(resource.props, "spec")
    if spec is UNKNOWN:
        yield Unverifiable(resource.name, "spec")
        return
    for where, backend in _ingress_backends(spec):
        port = dig(backend, "service", "port")
        number, name = dig(port, "number"), dig(port, "name")
        if UNKNOWN in (backend, port, number, name):
            yield Unverifiable(resource.name, f"{where}.service.port")
        elif number == config["debugPort"] or name in config["debugPortNames"]:
            service = dig(backend, "service", "name")
            yield Violation(f"{display(resource)} routes {where} to the debug/metrics port of Service {service} "
                            f"({name or number}); an Ingress serves the registry port {config['registryPort']} only")


WORKLOAD_TYPE_TOKENS = tuple(WORKLOAD_TYPES)

POLICIES = [
    resource_policy("workload-pod-security-restricted",
                    "Pods meet the Pod Security 'restricted' profile: non-root, no privilege escalation, all "
                    "capabilities dropped, RuntimeDefault seccomp, no host namespaces, hostPath or hostPort.",
                    WORKLOAD_TYPE_TOKENS, check_pod_security),
    resource_policy("workload-resources-set",
                    "Every container sets CPU and memory requests and limits.",
                    WORKLOAD_TYPE_TOKENS, check_resources),
    resource_policy("workload-probes-set",
                    "Every container of a long-running workload has readiness and liveness probes.",
                    WORKLOAD_TYPE_TOKENS, check_probes),
    resource_policy("workload-image-pinned",
                    "Images come from an allowed registry, are pinned by sha256 digest and never use 'latest'.",
                    WORKLOAD_TYPE_TOKENS, check_image_pinned, IMAGE_CONFIG),
    resource_policy("workload-service-links-disabled",
                    "Pods set enableServiceLinks: false.",
                    WORKLOAD_TYPE_TOKENS, check_service_links_disabled),
    resource_policy("registry-filesystem-single-replica",
                    "A registry on per-pod volumes (filesystem storage) runs exactly one replica.",
                    (STATEFUL_SET,), check_filesystem_single_replica, REGISTRY_CONFIG),
    stack_policy("registry-shared-http-secret",
                 "A registry with more than one replica gets one shared REGISTRY_HTTP_SECRET.",
                 check_shared_http_secret, REGISTRY_CONFIG),
    resource_policy("registry-debug-port-not-on-client-service",
                    "Services that carry the registry port, and Ingress backends, do not expose its debug/metrics "
                    "port.",
                    (SERVICE, INGRESS), check_debug_port_not_on_client_service, REGISTRY_PORTS_CONFIG),
]
