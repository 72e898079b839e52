"""The Kubernetes objects that run Distribution: service account, services, StatefulSet, PDB.

``workload_manifests()`` computes them as plain manifests (camelCase, as the Kubernetes API spells
them); ``RegistryWorkload`` registers them. The registry's ``REGISTRY_*`` settings are deliberately
absent from the pod: config-cli loads them from Consul KV at start, so a settings change is a KV
write plus a rolling restart, not a new pod template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from . import names
from .names import (CLIENT_SERVICE_NAME, CONSUL_SERVICE_NAME, DEBUG_PORT, GC_COMPONENT, HEADLESS_SERVICE_NAME, HTTP_PORT,
                    SERVICE_ACCOUNT_NAME, WORKLOAD_NAME, object_metadata)
from .registry_config import SECRETS_DIRECTORY
from .settings import FilesystemStorage, Settings
from .storage import DATA_MOUNT, VOLUME_RETENTION_POLICY, volume_claim_template

CONTAINER_NAME = "registry"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
PRE_STOP_SECONDS = 5
VAULT_TOKEN_DIRECTORY = "/var/run/secrets/vault"
VAULT_TOKEN_VOLUME = "vault-token"
# Vault's Kubernetes auth role accepts only tokens minted for its audience, and a short life keeps a
# leaked token useless; the kubelet refreshes it long before it expires.
VAULT_TOKEN_SECONDS = 600

# Checkov's CKV_K8S_38 wants no service account token in the pod; config-cli needs one, projected
# and short-lived, to log in to Vault and Consul with Kubernetes auth.
TOKEN_SKIP_ANNOTATION = {
    "checkov.io/skip1": "CKV_K8S_38=config-cli logs in to Vault and Consul with the pod's service account token",
}


def selector_labels(settings: Settings) -> dict[str, str]:
    return names.selector_labels(settings.environment)


def common_labels(settings: Settings) -> dict[str, str]:
    return names.common_labels(settings.environment)


def _metadata(settings: Settings, name: str, annotations: Optional[dict] = None) -> dict:
    return object_metadata(name, settings.namespace, common_labels(settings), annotations)


def mesh_annotations(settings: Settings) -> dict[str, str]:
    """Consul Connect injection: the sidecar terminates TLS and speaks mTLS to every other service.

    The debug port stays outside the mesh so Prometheus and the kubelet's liveness probe reach it
    directly (the network policies admit only the monitoring namespace to it); the kubelet's
    readiness probe on the registry port is rewritten by the injector to pass through the sidecar.
    """
    return {
        "consul.hashicorp.com/connect-inject": "true",
        "consul.hashicorp.com/connect-service": CONSUL_SERVICE_NAME,
        "consul.hashicorp.com/connect-service-port": str(HTTP_PORT),
        "consul.hashicorp.com/transparent-proxy": "true",
        "consul.hashicorp.com/transparent-proxy-overwrite-probes": "true",
        "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports": str(DEBUG_PORT),
        "consul.hashicorp.com/service-meta-environment": settings.environment,
    }


def config_cli_environment(settings: Settings, account: str = SERVICE_ACCOUNT_NAME) -> list[dict]:
    """What config-cli itself needs to find the registry's settings (docs/config-cli.md), logging in to
    Vault and Consul as ``account`` (the registry's pods, or the garbage-collection Job's replica)."""
    return [
        {"name": "CONFIG_CLI_ENVIRONMENT", "value": settings.environment},
        {"name": "CONFIG_CLI_KV_PREFIX", "value": settings.consul_kv_prefix},
        {"name": "CONFIG_CLI_SERVICE_NAME", "value": CONSUL_SERVICE_NAME},
        {"name": "CONSUL_HTTP_ADDR", "value": settings.consul_http_addr},
        {"name": "CONFIG_CLI_CONSUL_AUTH_METHOD", "value": settings.consul_auth_method},
        {"name": "VAULT_ADDR", "value": settings.vault_addr},
        {"name": "CONFIG_CLI_VAULT_AUTH_PATH", "value": settings.vault_kubernetes_auth_path},
        {"name": "CONFIG_CLI_VAULT_ROLE", "value": names.vault_role_name(account, settings.environment)},
        {"name": "CONFIG_CLI_VAULT_TOKEN_PATH", "value": f"{VAULT_TOKEN_DIRECTORY}/token"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]


def vault_token_volume(settings: Settings) -> dict:
    """The projected token config-cli logs in to Vault with: minted for Vault's audience, short-lived."""
    return {"name": VAULT_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": settings.vault_auth_audience,
        "expirationSeconds": VAULT_TOKEN_SECONDS,
        "path": "token",
    }}]}}


VAULT_TOKEN_MOUNT = {"name": VAULT_TOKEN_VOLUME, "mountPath": VAULT_TOKEN_DIRECTORY, "readOnly": True}


def image_pull_policy(image: str) -> str:
    """``IfNotPresent`` for an image pinned by digest: a node that has it never asks a registry again, so a
    restart or a drain does not depend on any registry (least of all this one) being up. A tag-only image
    (only where ``requireImageDigest`` is false) is mutable, so it is pulled every time."""
    return "IfNotPresent" if "@sha256:" in image else "Always"


def container_security_context(settings: Settings) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.fs_group,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(settings: Settings) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.fs_group,
        "fsGroup": settings.fs_group,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_resources(settings: Settings) -> dict:
    resources = settings.resources
    return {
        "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
        "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
    }


def registry_container(settings: Settings) -> dict:
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "secrets", "mountPath": SECRETS_DIRECTORY},
        VAULT_TOKEN_MOUNT,
    ]
    if isinstance(settings.storage, FilesystemStorage):
        mounts.append(DATA_MOUNT)
    return {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": image_pull_policy(settings.image),
        "command": list(names.CONFIG_CLI_COMMAND),
        "env": config_cli_environment(settings),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "debug", "containerPort": DEBUG_PORT, "protocol": "TCP"},
        ],
        # Ready only while the registry answers on its own port, which turns 503 when the storage
        # health check fails: the pod leaves the Service but is not restarted.
        "readinessProbe": {
            "httpGet": {"path": "/", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Alive while the process serves its debug server, which does not depend on storage: an S3
        # outage must not restart every pod.
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": "debug"},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # config-cli fetches settings and credentials before the registry listens.
        "startupProbe": {
            "httpGet": {"path": "/metrics", "port": "debug"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "resources": container_resources(settings),
        "securityContext": container_security_context(settings),
        "volumeMounts": mounts,
        # Endpoint removal reaches kube-proxy and the mesh a moment after the pod starts terminating;
        # waiting before SIGTERM lets requests already routed here arrive and be drained, not refused.
        # The kubelet's own sleep action: the image needs no shell.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }


def pod_spec(settings: Settings) -> dict:
    spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT_NAME,
        "automountServiceAccountToken": True,
        # A Service named "registry" would inject REGISTRY_SERVICE_HOST-style variables that
        # Distribution reads as configuration keys.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_period_seconds,
        "securityContext": pod_security_context(settings),
        "containers": [registry_container(settings)],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            # config-cli writes the htpasswd file here from Vault; memory-backed, never on disk.
            {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            vault_token_volume(settings),
        ],
    }
    if isinstance(settings.storage, FilesystemStorage):
        # While the garbage-collection Job restarts this pod it holds the ReadWriteOnce volume on this
        # node; a replacement scheduled on another node could not attach it until the Job ends.
        spec["affinity"] = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": {**selector_labels(settings), names.COMPONENT_LABEL: GC_COMPONENT}},
                "topologyKey": "kubernetes.io/hostname",
            },
        }]}}
    if settings.replicas > 1:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": selector_labels(settings)},
            },
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(settings)},
            },
        ]
    return spec


def stateful_set(settings: Settings, pod_annotations: Optional[dict] = None) -> dict:
    spec: dict[str, Any] = {
        "serviceName": HEADLESS_SERVICE_NAME,
        "replicas": settings.replicas,
        # One pod at a time, in order: the seed's "rotate pods sequentially" upgrade.
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": settings.update_partition}},
        "minReadySeconds": 10,
        "revisionHistoryLimit": 10,
        "selector": {"matchLabels": selector_labels(settings)},
        "template": {
            "metadata": {
                "labels": common_labels(settings),
                "annotations": {**mesh_annotations(settings), **(pod_annotations or {})},
            },
            "spec": pod_spec(settings),
        },
    }
    if isinstance(settings.storage, FilesystemStorage):
        spec["volumeClaimTemplates"] = [volume_claim_template(settings.storage)]
        spec["persistentVolumeClaimRetentionPolicy"] = dict(VOLUME_RETENTION_POLICY)
    return {"metadata": _metadata(settings, WORKLOAD_NAME, TOKEN_SKIP_ANNOTATION), "spec": spec}


def service_account(settings: Settings, role_arn: Optional[Any] = None) -> dict:
    annotations = {IRSA_ANNOTATION: role_arn} if role_arn is not None else None
    return {"metadata": _metadata(settings, SERVICE_ACCOUNT_NAME, annotations), "automountServiceAccountToken": False}


def _service_port() -> dict:
    return {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}


def headless_service(settings: Settings) -> dict:
    return {
        "metadata": _metadata(settings, HEADLESS_SERVICE_NAME),
        "spec": {"clusterIP": "None", "selector": selector_labels(settings), "ports": [_service_port()]},
    }


def client_service(settings: Settings) -> dict:
    """The address clients use. Only the registry port: metrics stay off the client path."""
    return {
        "metadata": _metadata(settings, CLIENT_SERVICE_NAME),
        "spec": {"type": "ClusterIP", "selector": selector_labels(settings), "ports": [_service_port()]},
    }


def pod_disruption_budget(settings: Settings) -> dict:
    """maxUnavailable rather than minAvailable: a single-replica stack must still let nodes drain. It
    selects the StatefulSet's pods only, not the garbage-collection Job's replica that shares the Service
    labels: a budget over a Job's pod cannot be computed and would refuse every eviction."""
    return {
        "metadata": _metadata(settings, WORKLOAD_NAME),
        "spec": {"maxUnavailable": 1,
                 "selector": {"matchLabels": names.workload_selector_labels(settings.environment)}},
    }


@dataclass
class RegistryWorkloadArgs:
    settings: Settings
    role_arn: Optional[pulumi.Input[str]] = None
    pod_annotations: Optional[dict] = None


class RegistryWorkload(pulumi.ComponentResource):
    """Distribution v3 as a StatefulSet, started by config-cli, behind a headless and a client Service."""

    service_dns_name: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryWorkloadArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:workload:RegistryWorkload", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        account = service_account(settings, args.role_arn)
        k8s.core.v1.ServiceAccount(f"{name}-service-account", metadata=account["metadata"],
                                   automount_service_account_token=False, opts=child)
        headless = headless_service(settings)
        k8s.core.v1.Service(f"{name}-headless", metadata=headless["metadata"], spec=headless["spec"], opts=child)
        client = client_service(settings)
        k8s.core.v1.Service(f"{name}-service", metadata=client["metadata"], spec=client["spec"], opts=child)
        workload = stateful_set(settings, args.pod_annotations)
        k8s.apps.v1.StatefulSet(f"{name}-statefulset", metadata=workload["metadata"], spec=workload["spec"], opts=child)
        budget = pod_disruption_budget(settings)
        k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=budget["metadata"], spec=budget["spec"], opts=child)

        self.service_dns_name = pulumi.Output.from_input(
            f"{CLIENT_SERVICE_NAME}.{settings.namespace}.svc.cluster.local"
        )
        self.register_outputs({"service_dns_name": self.service_dns_name})
