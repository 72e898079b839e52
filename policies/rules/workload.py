"""Workload rules: the Pod Security "restricted" fields, requests and limits, probes, images pinned
by digest from allowed registries, no service links, and the registry-specific constraints
(filesystem storage means one replica; several replicas need one shared HTTP secret; the debug
port stays off the Services clients use).

Unknown values (an image computed from another resource, say) are reported as "cannot verify during
preview" and checked at ``pulumi up``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, Mapping

from .config_secrets import VAULT_REFERENCE, key_looks_secret, secret_value_kind
from .network import selector_matches
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
    address_count,
    as_list,
    cidr_union,
    consul_kv_entries,
    dig,
    display,
    is_number,
    is_registry_workload,
    namespace_of,
    pod_template,
    public_part,
    resource_policy,
    schema,
    shown_networks,
    stack_policy,
    strings,
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
        "description": "Container port names that mean the debug/metrics port (the token service's: ops).",
        "default": ["debug", "metrics", "ops"],
    },
})
REGISTRY_CONFIG = schema({
    **REGISTRY_LABELS_PROPERTY,
    "nonDistributionComponents": {
        "type": "array", "items": {"type": "string"},
        "description": "app.kubernetes.io/component values of the registry's pods that do not run Distribution "
                       "(the token service): Distribution's own settings (its HTTP secret) do not concern them.",
        "default": ["token-service"],
    },
})


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


# The Pod Security Standards (v1.35): baseline's allowed values, restricted's volume types.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
APPARMOR_TYPES = ("RuntimeDefault", "Localhost")
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})


def check_pod_security(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """The whole "restricted" profile, baseline's bans included; each finding names the field and the fix."""
    spec = _pod_spec(resource)
    if spec is UNKNOWN or dig(spec, "containers") is UNKNOWN:
        yield Unverifiable(resource.name, "the pod template")
        return
    who = display(resource)
    pod_context = dig(spec, "securityContext", default={})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        value = dig(spec, flag)
        if value is UNKNOWN:
            yield Unverifiable(resource.name, f"spec.{flag}")
        elif value is True:
            yield Violation(f"{who}: {flag} is {str(value).lower()}; the pod would share the node's "
                            f"{flag[4:].lower()} namespace; remove it")
    for volume in as_list(dig(spec, "volumes", default=[])):
        if not isinstance(volume, dict):
            continue
        kinds = sorted(set(volume) - {"name"})
        if "hostPath" in kinds:
            yield Violation(f"{who}: volume {volume.get('name')} is a hostPath volume (the node's filesystem); use "
                            "an emptyDir or a PersistentVolumeClaim")
        elif any(kind not in RESTRICTED_VOLUME_TYPES for kind in kinds):
            yield Violation(f"{who}: volume {volume.get('name')} is of type {kinds}, which the restricted profile "
                            f"forbids; use one of {sorted(RESTRICTED_VOLUME_TYPES)}")
    yield from _pod_context_security(resource, who, pod_context)
    yield from _apparmor_annotations(resource, who)
    for label, container in _containers(spec):
        yield from _container_security(resource, label, container, pod_context)


def _pod_context_security(resource: Resource, who: str, pod_context: Any) -> Iterable[Finding]:
    if pod_context is UNKNOWN:
        yield Unverifiable(resource.name, "spec.securityContext")
        return
    if dig(pod_context, "runAsUser") == 0:
        yield Violation(f"{who}: spec.securityContext runs as root (runAsUser 0); set a non-zero UID")
    for sysctl in as_list(dig(pod_context, "sysctls", default=[])):
        name = dig(sysctl, "name")
        if name is UNKNOWN:
            yield Unverifiable(resource.name, "spec.securityContext.sysctls")
        elif name not in SAFE_SYSCTLS:
            yield Violation(f"{who}: sysctl {name!r} is not one of the namespaced safe sysctls baseline allows; "
                            "remove it")
    yield from _context_profiles(resource, f"{who}: spec.securityContext", pod_context)


def _context_profiles(resource: Resource, where: str, context: Any) -> Iterable[Finding]:
    """AppArmor, SELinux, Windows host-process and seccomp (baseline's Unconfined ban) of one securityContext."""
    apparmor = dig(context, "appArmorProfile", "type")
    if apparmor is not None and apparmor not in APPARMOR_TYPES:
        yield Violation(f"{where} sets appArmorProfile {apparmor!r}; use RuntimeDefault or Localhost")
    selinux = dig(context, "seLinuxOptions", default={})
    if isinstance(selinux, dict):
        if selinux.get("type") not in (None, *SELINUX_TYPES):
            yield Violation(f"{where} sets SELinux type {selinux.get('type')!r}; use one of "
                            f"{[t for t in SELINUX_TYPES if t]} or leave it unset")
        for field in ("user", "role"):
            if selinux.get(field):
                yield Violation(f"{where} sets SELinux {field} {selinux[field]!r}; leave it unset")
    if dig(context, "windowsOptions", "hostProcess") is True:
        yield Violation(f"{where} sets windowsOptions.hostProcess: the container runs as a process on the node; "
                        "remove it")
    if dig(context, "seccompProfile", "type") == "Unconfined":
        yield Violation(f"{where} sets seccompProfile Unconfined; use RuntimeDefault")


def _apparmor_annotations(resource: Resource, who: str) -> Iterable[Finding]:
    annotations = dig(pod_template(resource), "metadata", "annotations", default={})
    if not isinstance(annotations, dict):
        return
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (value == "runtime/default" or str(value).startswith("localhost/")):
            yield Violation(f"{who}: annotation {key} is {value!r}; AppArmor must be runtime/default or "
                            "localhost/<profile>")


def _inherited(container_context: Any, pod_context: Any, key: str) -> Any:
    value = dig(container_context, key)
    return dig(pod_context, key) if value is None else value


def _container_security(resource: Resource, label: str, container: Any, pod_context: Any) -> Iterable[Finding]:
    who = display(resource)
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
            yield Violation(f"{who} {label} runs as root (runAsUser 0)")
        if non_root is not True:
            yield Violation(f"{who} {label} does not set runAsNonRoot: true (pod or container)")
    escalation = dig(context, "allowPrivilegeEscalation")
    if escalation is UNKNOWN:
        yield Unverifiable(resource.name, f"{label}.securityContext.allowPrivilegeEscalation")
    elif escalation is not False:
        yield Violation(f"{who} {label} must set allowPrivilegeEscalation: false")
    if dig(context, "privileged") is True:
        yield Violation(f"{who} {label} is privileged: it holds every capability of the node; remove privileged")
    if dig(context, "procMount") not in (None, "Default"):
        yield Violation(f"{who} {label} sets procMount {dig(context, 'procMount')!r}, which unmasks the node's /proc; use "
                        "Default")
    yield from _context_profiles(resource, f"{who} {label}.securityContext", context)
    drop = dig(context, "capabilities", "drop", default=[])
    add = dig(context, "capabilities", "add", default=[])
    if UNKNOWN in (drop, add):
        yield Unverifiable(resource.name, f"{label}.securityContext.capabilities")
    else:
        if "ALL" not in as_list(drop):
            yield Violation(f"{who} {label} must drop ALL capabilities")
        extra = [c for c in as_list(add) if c not in ALLOWED_ADDED_CAPABILITIES]
        if extra:
            yield Violation(f"{who} {label} adds capabilities {extra}; only NET_BIND_SERVICE is allowed")
    seccomp = _inherited(dig(context, "seccompProfile", default={}), dig(pod_context, "seccompProfile", default={}),
                         "type")
    if seccomp is UNKNOWN:
        yield Unverifiable(resource.name, f"{label}.securityContext.seccompProfile")
    elif seccomp not in SECCOMP_PROFILES:
        yield Violation(f"{who} {label} needs seccompProfile RuntimeDefault or Localhost (pod or container), has {seccomp!r}")
    for port in as_list(dig(container, "ports", default=[])):
        if isinstance(port, dict) and port.get("hostPort"):
            yield Violation(f"{who} {label} binds hostPort {port.get('hostPort')} on the node; remove hostPort and reach "
                            "the pod through a Service")


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
    elif claims and is_number(replicas) and replicas > 1:
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
    others = set(config["nonDistributionComponents"])
    for workload in (r for r in resources if is_registry_workload(r, config["registryLabels"])
                     and dig(pod_template(r), "metadata", "labels", "app.kubernetes.io/component") not in others):
        replicas = dig(workload.props, "spec", "replicas", default=1)
        if replicas is UNKNOWN:
            yield Unverifiable(workload.name, "spec.replicas")
            continue
        if not is_number(replicas) or replicas <= 1:
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
            or isinstance(dig(port, "name"), str) and dig(port, "name") in debug_names)


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
        elif number == config["debugPort"] or (isinstance(name, str) and name in config["debugPortNames"]):
            service = dig(backend, "service", "name")
            yield Violation(f"{display(resource)} routes {where} to the debug/metrics port of Service {service} "
                            f"({name or number}); an Ingress serves the registry port {config['registryPort']} only")


# --- what Services, Ingresses and ConfigMaps expose -------------------------------------------------

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SOURCE_RANGE_ANNOTATIONS = ("nginx.ingress.kubernetes.io/whitelist-source-range",
                            "nginx.ingress.kubernetes.io/allowlist-source-range")
INGRESS_CONFIG = schema({
    "sourceRangeAnnotations": {
        "type": "array", "items": {"type": "string"},
        "description": "Ingress annotations that restrict client source ranges (comma-separated CIDRs).",
        "default": list(SOURCE_RANGE_ANNOTATIONS),
    },
    "maxSourceAddresses": {
        "type": "integer",
        "description": "Most IPv4 addresses an Ingress's source ranges may admit together.",
        "default": 1 << 20,
    },
})


def check_service_not_exposed(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Services stay inside the cluster: clients come through the mesh or the Ingress (TLS, source ranges)."""
    spec = dig(resource.props, "spec", default={})
    kind, external = dig(spec, "type"), dig(spec, "externalIPs", default=[])
    if UNKNOWN in (spec, kind, external):
        yield Unverifiable(resource.name, "spec.type/spec.externalIPs")
        return
    if kind in ("LoadBalancer", "NodePort"):
        yield Violation(f"{display(resource)} is of type {kind}: it opens the registry on every node or a cloud load "
                        "balancer, around the Ingress's TLS and source ranges and the mesh's intentions; use "
                        "ClusterIP")
    if as_list(external):
        yield Violation(f"{display(resource)} sets externalIPs {as_list(external)}: traffic to those addresses reaches "
                        "it from outside the cluster; remove them")


def check_ingress_tls_and_sources(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Every host is served over TLS only, and only to the source ranges an annotation lists (judged as one
    union: no internet address, at most ``maxSourceAddresses``)."""
    spec = dig(resource.props, "spec")
    annotations = dig(resource.props, "metadata", "annotations", default={})
    if spec is UNKNOWN or annotations is UNKNOWN:
        yield Unverifiable(resource.name, "spec/metadata.annotations")
        return
    who = display(resource)
    tls = dig(spec, "tls", default=[])
    rules = dig(spec, "rules", default=[])
    if UNKNOWN in (tls, rules):
        yield Unverifiable(resource.name, "spec.tls/spec.rules")
        return
    covered = strings(host for entry in as_list(tls) if dig(entry, "secretName") for host in as_list(dig(entry, "hosts")))
    hosts = [dig(rule, "host") for rule in as_list(rules)]
    if dig(spec, "defaultBackend") is not None or any(not isinstance(host, str) or not host for host in hosts):
        yield Violation(f"{who} has a rule without a host (or a default backend): it answers any host name, "
                        "without a certificate for it; name the host")
    for host in (h for h in hosts if isinstance(h, str) and h and h not in covered):
        yield Violation(f"{who} serves {host} without TLS (no spec.tls entry with a secretName lists it): credentials "
                        "and tokens would cross the network in plain text; add it to spec.tls")
    if isinstance(annotations, dict) and str(annotations.get("nginx.ingress.kubernetes.io/ssl-redirect", "")).lower() == "false":
        yield Violation(f"{who} sets ssl-redirect: false: plain HTTP is served too; remove the annotation")
    for key in (k for k in (annotations if isinstance(annotations, dict) else {}) if k.endswith("-snippet")):
        yield Violation(f"{who} sets {key}: raw controller configuration, which can undo TLS, source ranges and "
                        "every other setting here (and was the way into ingress-nginx's own secrets); remove it")
    ranges = [annotations.get(key) for key in config["sourceRangeAnnotations"] if isinstance(annotations, dict)
              and annotations.get(key)]
    if not ranges:
        yield Violation(f"{who} restricts no source ranges (none of {config['sourceRangeAnnotations']}): every "
                        "client that reaches the ingress controller reaches the registry; list the developer CIDRs")
        return
    try:
        networks = [ipaddress.ip_network(part.strip(), strict=False) for value in ranges
                    for part in str(value).split(",") if part.strip()]
    except ValueError as error:
        yield Violation(f"{who} has an invalid source range ({error}); write comma-separated address/prefix CIDRs")
        return
    union = cidr_union((network, ()) for network in networks)
    public = public_part(union)
    if public:
        yield Violation(f"{who}'s source ranges together admit internet addresses ({shown_networks(public)}); list "
                        "private developer ranges only")
    elif address_count(union) > config["maxSourceAddresses"]:
        yield Violation(f"{who}'s source ranges together admit {address_count(union):,} IPv4 addresses, more than "
                        f"maxSourceAddresses {config['maxSourceAddresses']:,}; narrow them")


def _secret_findings(where: str, name: Any, value: Any) -> Iterable[str]:
    if not isinstance(value, str) or not value or VAULT_REFERENCE.match(value):
        return
    if isinstance(name, str) and key_looks_secret(name):
        yield f"{where} {name} names a secret and holds a literal value"
    kind = secret_value_kind(value)
    if kind:
        yield f"{where} {name} holds what looks like {kind}"


def check_no_secrets_in_manifests(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """ConfigMaps and literal env values carry no secret: both are readable by anyone who may read the
    object, and land in the Pulumi state and the rendered manifests in plain text."""
    fix = ("; keep it in Vault (config-cli resolves vault: references) or mount a Secret "
           "(valueFrom.secretKeyRef)")
    if resource.type == CONFIG_MAP:
        data = dig(resource.props, "data", default={})
        if data is UNKNOWN:
            yield Unverifiable(resource.name, "data")
            return
        for key, value in (data.items() if isinstance(data, dict) else []):
            if value is UNKNOWN:
                yield Unverifiable(resource.name, f"data.{key}")
            for finding in _secret_findings(f"{display(resource)} data key", key, value):
                yield Violation(finding + fix)
        return
    spec = _pod_spec(resource)
    if spec is UNKNOWN:
        yield Unverifiable(resource.name, "the pod template")
        return
    for label, container in _containers(spec):
        for variable in as_list(dig(container, "env", default=[])):
            name, value = dig(variable, "name"), dig(variable, "value")
            if value is UNKNOWN:
                yield Unverifiable(resource.name, f"{label}.env.{name}")
            for finding in _secret_findings(f"{display(resource)} {label} env", name, value):
                yield Violation(finding + fix)


PDB = "kubernetes:policy/v1:PodDisruptionBudget"
JOB_TYPES = ("kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob")


def check_pdb_selects_its_workload(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """A PodDisruptionBudget selects the pods of a long-running workload and no Job's: the disruption
    controller needs the scale subresource of the pods' owner, Jobs have none, and the budget then
    reports SyncFailed and protects nothing (seen on a real API server with the GC job's pods)."""
    templates = [(r, dig(pod_template(r), "metadata", "labels", default={})) for r in resources
                 if pod_template(r) is not None]
    for budget in (r for r in resources if r.type == PDB):
        selector = dig(budget.props, "spec", "selector")
        matched = [(r, selector_matches(selector, labels)) for r, labels in templates
                   if namespace_of(r) == namespace_of(budget) and isinstance(labels, dict)]
        if selector is UNKNOWN or any(match is UNKNOWN for _, match in matched):
            yield Unverifiable(budget.name, "spec.selector")
            continue
        jobs = [display(r) for r, match in matched if match and r.type in JOB_TYPES]
        if jobs:
            yield Violation(f"{display(budget)} also selects the pods of {', '.join(jobs)}: Jobs have no scale "
                            "subresource, so the budget fails to sync and protects nothing; add a label only the "
                            "workload's pods carry (app.kubernetes.io/component) to its selector", budget.urn)
        elif not any(match and r.type in LONG_RUNNING_TYPES for r, match in matched):
            yield Violation(f"{display(budget)} selects no pods of a workload in the stack: it protects nothing; "
                            "select the StatefulSet's pod labels", budget.urn)


WORKLOAD_TYPE_TOKENS = tuple(WORKLOAD_TYPES)

POLICIES = [
    resource_policy("workload-pod-security-restricted",
                    "Pods meet the whole Pod Security 'restricted' profile, baseline's bans included: non-root, no "
                    "privilege escalation, all capabilities dropped, RuntimeDefault seccomp, no host namespaces, "
                    "hostPath, hostPort, host process, unmasked /proc, unsafe sysctls, unconfined AppArmor or "
                    "SELinux types, only the restricted volume types.",
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
    resource_policy("kubernetes-service-not-exposed",
                    "Services are ClusterIP without externalIPs: no LoadBalancer or NodePort around the Ingress and "
                    "the mesh.",
                    (SERVICE,), check_service_not_exposed),
    resource_policy("kubernetes-ingress-tls-and-source-ranges",
                    "Every Ingress host has TLS, plain HTTP is redirected, and source ranges are listed, judged "
                    "together: no internet address.",
                    (INGRESS,), check_ingress_tls_and_sources, INGRESS_CONFIG),
    resource_policy("kubernetes-no-secrets-in-manifests",
                    "ConfigMaps and literal env values hold no secret (by name or by shape).",
                    (CONFIG_MAP, *WORKLOAD_TYPE_TOKENS), check_no_secrets_in_manifests),
    stack_policy("kubernetes-pdb-selects-its-workload",
                 "A PodDisruptionBudget selects a long-running workload's pods and no Job's (Jobs have no scale "
                 "subresource: the budget would protect nothing).",
                 check_pdb_selects_its_workload),
    resource_policy("registry-debug-port-not-on-client-service",
                    "Services that carry the registry port, and Ingress backends, do not expose its debug/metrics "
                    "port.",
                    (SERVICE, INGRESS), check_debug_port_not_on_client_service, REGISTRY_PORTS_CONFIG),
]
