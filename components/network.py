"""Who may talk to the registry pods, and whom they may talk to.

Every registry pod is selected by a default-deny policy for both directions; allow policies then
open exactly the paths that work: CI runner namespaces (in the mesh) and the ingress controller to the
registry and mesh ports; the monitoring namespace and the nodes' Consul agents to the debug port; DNS,
Consul, Vault and the storage endpoint outbound. An empty allow-list produces no rule at all: in a
NetworkPolicy an empty ``from`` would admit everybody.

Kubelets and developers are outside the mesh, and the registry port accepts only the sidecar's mTLS, so a
node or developer CIDR admitted to it would be a path that cannot work. They reach the registry through
the Ingress (HTTPS with a certificate they trust), whose source ranges hold both; without an Ingress host
the nodes have no pull path (README, "How clients reach the registry").

Traffic from the node a pod runs on (the kubelet's probes) is always allowed by Kubernetes, whatever
the policies say, so the probes need no rule here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlparse

import pulumi
import pulumi_kubernetes as k8s

from .names import (CLIENT_SERVICE_NAME, CONSUL_GRPC_PORT, DEBUG_PORT, HTTP_PORT, HTTPS_PORT, MESH_INBOUND_PORT,
                    NAMESPACE_LABEL, WORKLOAD_NAME, dns_egress)
from .settings import MinioStorage, S3Storage, Settings
from .workload import common_labels, selector_labels



def _policy(settings: Settings, name: str, spec: dict) -> dict:
    return {
        "metadata": {"name": name, "namespace": settings.namespace, "labels": common_labels(settings)},
        "spec": {"podSelector": {"matchLabels": selector_labels(settings)}, **spec},
    }


def _namespaces(names) -> dict:
    return {"namespaceSelector": {"matchExpressions": [{"key": NAMESPACE_LABEL, "operator": "In", "values": sorted(names)}]}}


def _tcp(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def service_endpoint(url: str) -> tuple[Optional[str], int]:
    """(namespace, port) of an in-cluster ``https://<service>.<namespace>.svc[...]:<port>`` URL.

    The namespace is None for an address outside the cluster.
    """
    parsed = urlparse(url)
    port = parsed.port or (HTTPS_PORT if parsed.scheme == "https" else 80)
    labels = (parsed.hostname or "").split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return labels[1], port
    return None, port


def _egress_to(url: str, extra_ports: tuple[int, ...] = ()) -> dict:
    namespace, port = service_endpoint(url)
    if namespace is None:
        raise ValueError(f"{url} is not an in-cluster service address (<service>.<namespace>.svc)")
    return {"to": [_namespaces([namespace])], "ports": _tcp(port, *extra_ports)}


def client_peers(settings: Settings, ingress_controller_namespace: Optional[str] = None) -> list[dict]:
    """Mesh clients only: the CI runner namespaces and the (mesh-injected) ingress controller."""
    namespaces = set(settings.ci_runner_namespaces)
    if ingress_controller_namespace:
        namespaces.add(ingress_controller_namespace)
    return [_namespaces(namespaces)] if namespaces else []


def ingress_source_ranges(settings: Settings) -> list[str]:
    """Who may use the Ingress: developers and the nodes' kubelets (both outside the mesh)."""
    return [str(cidr) for cidr in (*settings.developer_cidrs, *settings.node_cidrs)]


def storage_egress(settings: Settings) -> Optional[dict]:
    storage = settings.storage
    if isinstance(storage, MinioStorage):
        namespace, port = service_endpoint(storage.endpoint)
        if namespace is not None:
            return {"to": [_namespaces([namespace])], "ports": _tcp(port)}
        return {"to": [{"ipBlock": {"cidr": str(c)}} for c in settings.storage_endpoint_cidrs], "ports": _tcp(port)}
    if isinstance(storage, S3Storage):
        # S3 and STS (for IRSA's AssumeRoleWithWebIdentity) through the VPC's interface endpoints.
        return {"to": [{"ipBlock": {"cidr": str(c)}} for c in settings.storage_endpoint_cidrs], "ports": _tcp(HTTPS_PORT)}
    return None  # filesystem: the volume is not reached over the pod network


def network_policies(settings: Settings, ingress_controller_namespace: Optional[str] = None) -> list[dict]:
    """The registry's NetworkPolicies, default deny first."""
    policies = [_policy(settings, f"{WORKLOAD_NAME}-default-deny", {"policyTypes": ["Ingress", "Egress"]})]

    peers = client_peers(settings, ingress_controller_namespace)
    if peers:
        policies.append(_policy(settings, f"{WORKLOAD_NAME}-allow-clients", {
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": _tcp(HTTP_PORT, MESH_INBOUND_PORT)}],
        }))
    # The debug port serves metrics to Prometheus and /debug/health to the Consul health check, which
    # the Consul agent on each node runs (so the node CIDRs), and nothing else.
    debug_peers = [_namespaces([settings.monitoring_namespace])]
    debug_peers.extend({"ipBlock": {"cidr": str(cidr)}} for cidr in settings.node_cidrs)
    policies.append(_policy(settings, f"{WORKLOAD_NAME}-allow-metrics", {
        "policyTypes": ["Ingress"],
        "ingress": [{"from": debug_peers, "ports": _tcp(DEBUG_PORT)}],
    }))

    egress: list[dict[str, Any]] = [
        dns_egress(),
        _egress_to(settings.consul_http_addr, (CONSUL_GRPC_PORT,)),
        _egress_to(settings.vault_addr),
    ]
    storage = storage_egress(settings)
    if storage is not None and storage["to"]:
        egress.append(storage)
    policies.append(_policy(settings, f"{WORKLOAD_NAME}-allow-egress", {"policyTypes": ["Egress"], "egress": egress}))
    return policies


def developer_ingress(settings: Settings) -> Optional[dict]:
    """A TLS-terminating Ingress for developers and kubelets outside the mesh, limited to their ranges."""
    if not settings.ingress_host:
        return None
    return {
        "metadata": {
            "name": WORKLOAD_NAME,
            "namespace": settings.namespace,
            "labels": common_labels(settings),
            "annotations": {
                "nginx.ingress.kubernetes.io/whitelist-source-range": ",".join(ingress_source_ranges(settings)),
                # Layers are pushed as single multi-gigabyte requests: no body limit, no buffering,
                # and timeouts long enough for a slow link.
                "nginx.ingress.kubernetes.io/proxy-body-size": "0",
                "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
                "nginx.ingress.kubernetes.io/proxy-buffering": "off",
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "900",
                "nginx.ingress.kubernetes.io/proxy-send-timeout": "900",
                "nginx.ingress.kubernetes.io/ssl-redirect": "true",
            },
        },
        "spec": {
            "ingressClassName": settings.ingress_class_name,
            "tls": [{"hosts": [settings.ingress_host], "secretName": settings.ingress_tls_secret_name}],
            "rules": [{
                "host": settings.ingress_host,
                "http": {"paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": CLIENT_SERVICE_NAME, "port": {"number": HTTP_PORT}}},
                }]},
            }],
        },
    }


@dataclass
class RegistryNetworkArgs:
    settings: Settings


class RegistryNetwork(pulumi.ComponentResource):
    """Default-deny NetworkPolicies with the registry's allow-lists, and the optional developer Ingress."""

    def __init__(self, name: str, args: RegistryNetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:network:RegistryNetwork", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        ingress = developer_ingress(settings)
        controller_namespace = settings.ingress_controller_namespace if ingress else None
        for policy in network_policies(settings, controller_namespace):
            short = policy["metadata"]["name"].removeprefix(f"{WORKLOAD_NAME}-")
            k8s.networking.v1.NetworkPolicy(f"{name}-{short}", metadata=policy["metadata"], spec=policy["spec"], opts=child)
        if ingress:
            k8s.networking.v1.Ingress(f"{name}-ingress", metadata=ingress["metadata"], spec=ingress["spec"], opts=child)
        self.register_outputs({})
