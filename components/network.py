"""Who may talk to the registry pods, and whom they may talk to.

Every registry pod is selected by a default-deny policy for both directions; allow policies then
open exactly the paths that work: CI runner namespaces (in the mesh) and the ingress controller to the
registry and mesh ports; the monitoring namespace and the nodes' Consul agents to the debug port; DNS,
Consul, Vault and the storage endpoint outbound. An empty allow-list produces no rule at all: in a
NetworkPolicy an empty ``from`` would admit everybody.

Kubelets and developers are outside the mesh, and the registry port accepts only the sidecar's mTLS, so a
node or developer CIDR admitted to it would be a path that cannot work. They reach the registry through
the Ingress (HTTPS with a certificate they trust), whose source ranges hold both; without an Ingress host
the nodes have no pull path (docs/security.md, "How clients reach the registry").

Traffic from the node a pod runs on (the kubelet's probes) is always allowed by Kubernetes, whatever
the policies say, so the probes need no rule here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional, Union
from urllib.parse import urlparse

import pulumi
import pulumi_kubernetes as k8s

from .names import (CONSUL_GRPC_PORT, DEBUG_PORT, HTTP_PORT, HTTPS_PORT, MESH_INBOUND_PORT, NAMESPACE_LABEL,
                    RegistryNames, dns_egress)
from .settings import MinioStorage, S3Storage, Storage
from .workload import common_labels, selector_labels

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True, kw_only=True)
class RegistryNetworkArgs:
    """Who may reach the registry's pods and whom they reach (the stack's ``Settings`` has the same fields)."""

    names: RegistryNames
    namespace: str
    storage: Storage  # the storage endpoint the pods reach (none for a volume)
    storage_endpoint_cidrs: tuple[Network, ...]
    consul_http_addr: str
    vault_addr: str
    ci_runner_namespaces: tuple[str, ...]
    monitoring_namespace: str
    node_cidrs: tuple[Network, ...] = ()
    developer_cidrs: tuple[Network, ...] = ()
    # The developer Ingress, only with a host.
    ingress_host: Optional[str] = None
    ingress_class_name: str = "nginx"
    ingress_tls_secret_name: Optional[str] = None
    ingress_controller_namespace: str = "ingress-nginx"


def _policy(network: RegistryNetworkArgs, name: str, spec: dict) -> dict:
    return {
        "metadata": {"name": name, "namespace": network.namespace, "labels": common_labels(network)},
        "spec": {"podSelector": {"matchLabels": selector_labels(network)}, **spec},
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


def client_peers(network: RegistryNetworkArgs, ingress_controller_namespace: Optional[str] = None) -> list[dict]:
    """Mesh clients only: the CI runner namespaces and the (mesh-injected) ingress controller."""
    namespaces = set(network.ci_runner_namespaces)
    if ingress_controller_namespace:
        namespaces.add(ingress_controller_namespace)
    return [_namespaces(namespaces)] if namespaces else []


def ingress_source_ranges(network: RegistryNetworkArgs) -> list[str]:
    """Who may use the Ingress: developers and the nodes' kubelets (both outside the mesh)."""
    return [str(cidr) for cidr in (*network.developer_cidrs, *network.node_cidrs)]


def storage_egress(network: RegistryNetworkArgs) -> Optional[dict]:
    storage = network.storage
    if isinstance(storage, MinioStorage):
        namespace, port = service_endpoint(storage.endpoint)
        if namespace is not None:
            return {"to": [_namespaces([namespace])], "ports": _tcp(port)}
        return {"to": [{"ipBlock": {"cidr": str(c)}} for c in network.storage_endpoint_cidrs], "ports": _tcp(port)}
    if isinstance(storage, S3Storage):
        # S3 and STS (for IRSA's AssumeRoleWithWebIdentity) through the VPC's interface endpoints.
        return {"to": [{"ipBlock": {"cidr": str(c)}} for c in network.storage_endpoint_cidrs], "ports": _tcp(HTTPS_PORT)}
    return None  # filesystem: the volume is not reached over the pod network


def network_policies(network: RegistryNetworkArgs, ingress_controller_namespace: Optional[str] = None) -> list[dict]:
    """The registry's NetworkPolicies, default deny first."""
    policies = [_policy(network, f"{network.names.workload}-default-deny", {"policyTypes": ["Ingress", "Egress"]})]

    peers = client_peers(network, ingress_controller_namespace)
    if peers:
        policies.append(_policy(network, f"{network.names.workload}-allow-clients", {
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": _tcp(HTTP_PORT, MESH_INBOUND_PORT)}],
        }))
    # The debug port serves metrics to Prometheus and /debug/health to the Consul health check, which
    # the Consul agent on each node runs (so the node CIDRs), and nothing else.
    debug_peers = [_namespaces([network.monitoring_namespace])]
    debug_peers.extend({"ipBlock": {"cidr": str(cidr)}} for cidr in network.node_cidrs)
    policies.append(_policy(network, f"{network.names.workload}-allow-metrics", {
        "policyTypes": ["Ingress"],
        "ingress": [{"from": debug_peers, "ports": _tcp(DEBUG_PORT)}],
    }))

    egress: list[dict[str, Any]] = [
        dns_egress(),
        _egress_to(network.consul_http_addr, (CONSUL_GRPC_PORT,)),
        _egress_to(network.vault_addr),
    ]
    storage = storage_egress(network)
    if storage is not None and storage["to"]:
        egress.append(storage)
    policies.append(_policy(network, f"{network.names.workload}-allow-egress", {"policyTypes": ["Egress"], "egress": egress}))
    return policies


def developer_ingress(network: RegistryNetworkArgs) -> Optional[dict]:
    """A TLS-terminating Ingress for developers and kubelets outside the mesh, limited to their ranges."""
    if not network.ingress_host:
        return None
    return {
        "metadata": {
            "name": network.names.workload,
            "namespace": network.namespace,
            "labels": common_labels(network),
            "annotations": {
                "nginx.ingress.kubernetes.io/whitelist-source-range": ",".join(ingress_source_ranges(network)),
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
            "ingressClassName": network.ingress_class_name,
            "tls": [{"hosts": [network.ingress_host], "secretName": network.ingress_tls_secret_name}],
            "rules": [{
                "host": network.ingress_host,
                "http": {"paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": network.names.client_service, "port": {"number": HTTP_PORT}}},
                }]},
            }],
        },
    }


class RegistryNetwork(pulumi.ComponentResource):
    """Default-deny NetworkPolicies with the registry's allow-lists, and the optional developer Ingress."""

    network_policies: list[k8s.networking.v1.NetworkPolicy]
    ingress: Optional[k8s.networking.v1.Ingress]

    def __init__(self, name: str, args: RegistryNetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:network:RegistryNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ingress = developer_ingress(args)
        controller_namespace = args.ingress_controller_namespace if ingress else None
        self.network_policies = []
        policies = network_policies(args, controller_namespace)
        for policy in policies:
            short = policy["metadata"]["name"].removeprefix(f"{args.names.workload}-")
            self.network_policies.append(k8s.networking.v1.NetworkPolicy(
                f"{name}-{short}", metadata=policy["metadata"], spec=policy["spec"], opts=child))
        self.ingress = None
        if ingress:
            self.ingress = k8s.networking.v1.Ingress(
                f"{name}-ingress", metadata=ingress["metadata"], spec=ingress["spec"], opts=child)
        self.register_outputs({"network_policy_names": [policy["metadata"]["name"] for policy in policies]})
