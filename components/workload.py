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
from .names import DEBUG_PORT, GC_COMPONENT, HTTP_PORT, RegistryNames, object_metadata
from .registry_config import SECRETS_DIRECTORY
from .settings import FilesystemStorage, Resources, Storage
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


@dataclass(frozen=True, kw_only=True)
class RegistryPod:
    """What a pod that runs the registry under config-cli needs: the registry's StatefulSet pods, and the
    garbage-collection Job's read-only replica. (The stack's ``Settings`` has the same fields.)"""

    names: RegistryNames
    environment: str
    namespace: str
    image: str
    resources: Resources
    run_as_user: int
    fs_group: int
    consul_http_addr: str
    consul_auth_method: str
    vault_addr: str
    vault_kubernetes_auth_path: str
    vault_auth_audience: str

    @property
    def consul_kv_prefix(self) -> str:
        return self.names.kv_prefix

@dataclass(frozen=True, kw_only=True)
class RegistryWorkloadArgs(RegistryPod):
    replicas: int
    update_partition: int
    storage: Storage
    termination_grace_period_seconds: int
    # The IRSA role the registry's service account assumes (s3 mode): the storage component's output.
    role_arn: Optional[pulumi.Input[str]] = None
    # Extra pod template annotations (the credentials generation from the Vault component rolls the pods).
    pod_annotations: Optional[dict[str, str]] = None


def selector_labels(pod: RegistryPod) -> dict[str, str]:
    return pod.names.selector_labels()


def common_labels(pod: RegistryPod) -> dict[str, str]:
    return pod.names.common_labels()


def _metadata(pod: RegistryPod, name: str, annotations: Optional[dict] = None) -> dict:
    return object_metadata(name, pod.namespace, common_labels(pod), annotations)


def mesh_annotations(pod: RegistryPod) -> dict[str, str]:
    """Consul Connect injection: the sidecar terminates TLS and speaks mTLS to every other service.

    The debug port stays outside the mesh so Prometheus and the kubelet's liveness probe reach it
    directly (the network policies admit only the monitoring namespace to it); the kubelet's
    readiness probe on the registry port is rewritten by the injector to pass through the sidecar.
    """
    return {
        "consul.hashicorp.com/connect-inject": "true",
        "consul.hashicorp.com/connect-service": pod.names.consul_service,
        "consul.hashicorp.com/connect-service-port": str(HTTP_PORT),
        "consul.hashicorp.com/transparent-proxy": "true",
        "consul.hashicorp.com/transparent-proxy-overwrite-probes": "true",
        "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports": str(DEBUG_PORT),
        "consul.hashicorp.com/service-meta-environment": pod.environment,
    }


def config_cli_environment(pod: RegistryPod, account: Optional[str] = None, service: Optional[str] = None) -> list[dict]:
    """What config-cli itself needs to find the registry's settings (docs/config-cli.md), logging in to
    Vault and Consul as ``account`` (the registry's pods by default, or the garbage-collection Job's replica)
    and registering ``service`` (the registry's; the token service passes its own, with its own KV prefix)."""
    account = account or pod.names.service_account
    return [
        {"name": "CONFIG_CLI_ENVIRONMENT", "value": pod.environment},
        {"name": "CONFIG_CLI_KV_PREFIX", "value": pod.consul_kv_prefix},
        {"name": "CONFIG_CLI_SERVICE_NAME", "value": service or pod.names.consul_service},
        {"name": "CONSUL_HTTP_ADDR", "value": pod.consul_http_addr},
        {"name": "CONFIG_CLI_CONSUL_AUTH_METHOD", "value": pod.consul_auth_method},
        {"name": "VAULT_ADDR", "value": pod.vault_addr},
        {"name": "CONFIG_CLI_VAULT_AUTH_PATH", "value": pod.vault_kubernetes_auth_path},
        {"name": "CONFIG_CLI_VAULT_ROLE", "value": pod.names.vault_role(account)},
        {"name": "CONFIG_CLI_VAULT_TOKEN_PATH", "value": f"{VAULT_TOKEN_DIRECTORY}/token"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]


def vault_token_volume(pod: RegistryPod) -> dict:
    """The projected token config-cli logs in to Vault with: minted for Vault's audience, short-lived."""
    return {"name": VAULT_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": pod.vault_auth_audience,
        "expirationSeconds": VAULT_TOKEN_SECONDS,
        "path": "token",
    }}]}}


VAULT_TOKEN_MOUNT = {"name": VAULT_TOKEN_VOLUME, "mountPath": VAULT_TOKEN_DIRECTORY, "readOnly": True}


def image_pull_policy(image: str) -> str:
    """``IfNotPresent`` for an image pinned by digest: a node that has it never asks a registry again, so a
    restart or a drain does not depend on any registry (least of all this one) being up. A tag-only image
    (only where ``requireImageDigest`` is false) is mutable, so it is pulled every time."""
    return "IfNotPresent" if "@sha256:" in image else "Always"


def container_security_context(pod: RegistryPod) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": pod.run_as_user,
        "runAsGroup": pod.fs_group,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(pod: RegistryPod) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": pod.run_as_user,
        "runAsGroup": pod.fs_group,
        "fsGroup": pod.fs_group,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_resources(pod: RegistryPod) -> dict:
    resources = pod.resources
    return {
        "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
        "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
    }


def registry_container(pod: RegistryWorkloadArgs) -> dict:
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "secrets", "mountPath": SECRETS_DIRECTORY},
        VAULT_TOKEN_MOUNT,
    ]
    if isinstance(pod.storage, FilesystemStorage):
        mounts.append(DATA_MOUNT)
    return {
        "name": CONTAINER_NAME,
        "image": pod.image,
        "imagePullPolicy": image_pull_policy(pod.image),
        "command": list(names.CONFIG_CLI_COMMAND),
        "env": config_cli_environment(pod),
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
        "resources": container_resources(pod),
        "securityContext": container_security_context(pod),
        "volumeMounts": mounts,
        # Endpoint removal reaches kube-proxy and the mesh a moment after the pod starts terminating;
        # waiting before SIGTERM lets requests already routed here arrive and be drained, not refused.
        # The kubelet's own sleep action: the image needs no shell.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }


def pod_spec(pod: RegistryWorkloadArgs) -> dict:
    spec: dict[str, Any] = {
        "serviceAccountName": pod.names.service_account,
        "automountServiceAccountToken": True,
        # A Service named "registry" would inject REGISTRY_SERVICE_HOST-style variables that
        # Distribution reads as configuration keys.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": pod.termination_grace_period_seconds,
        "securityContext": pod_security_context(pod),
        "containers": [registry_container(pod)],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            # config-cli writes the htpasswd file here from Vault; memory-backed, never on disk.
            {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            vault_token_volume(pod),
        ],
    }
    if isinstance(pod.storage, FilesystemStorage):
        # While the garbage-collection Job restarts this pod it holds the ReadWriteOnce volume on this
        # node; a replacement scheduled on another node could not attach it until the Job ends.
        spec["affinity"] = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": {**selector_labels(pod), names.COMPONENT_LABEL: GC_COMPONENT}},
                "topologyKey": "kubernetes.io/hostname",
            },
        }]}}
    if pod.replicas > 1:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": selector_labels(pod)},
            },
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(pod)},
            },
        ]
    return spec


def stateful_set(pod: RegistryWorkloadArgs, pod_annotations: Optional[dict] = None) -> dict:
    spec: dict[str, Any] = {
        "serviceName": pod.names.headless_service,
        "replicas": pod.replicas,
        # One pod at a time, in order: the seed's "rotate pods sequentially" upgrade.
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": pod.update_partition}},
        "minReadySeconds": 10,
        "revisionHistoryLimit": 10,
        "selector": {"matchLabels": selector_labels(pod)},
        "template": {
            "metadata": {
                "labels": common_labels(pod),
                "annotations": {**mesh_annotations(pod), **(pod_annotations or {})},
            },
            "spec": pod_spec(pod),
        },
    }
    if isinstance(pod.storage, FilesystemStorage):
        spec["volumeClaimTemplates"] = [volume_claim_template(pod.storage)]
        spec["persistentVolumeClaimRetentionPolicy"] = dict(VOLUME_RETENTION_POLICY)
    return {"metadata": _metadata(pod, pod.names.workload, TOKEN_SKIP_ANNOTATION), "spec": spec}


def service_account(pod: RegistryPod, role_arn: Optional[Any] = None) -> dict:
    annotations = {IRSA_ANNOTATION: role_arn} if role_arn is not None else None
    return {"metadata": _metadata(pod, pod.names.service_account, annotations), "automountServiceAccountToken": False}


def _service_port() -> dict:
    return {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}


def headless_service(pod: RegistryPod) -> dict:
    return {
        "metadata": _metadata(pod, pod.names.headless_service),
        "spec": {"clusterIP": "None", "selector": selector_labels(pod), "ports": [_service_port()]},
    }


def client_service(pod: RegistryPod) -> dict:
    """The address clients use. Only the registry port: metrics stay off the client path."""
    return {
        "metadata": _metadata(pod, pod.names.client_service),
        "spec": {"type": "ClusterIP", "selector": selector_labels(pod), "ports": [_service_port()]},
    }


def pod_disruption_budget(pod: RegistryPod) -> dict:
    """maxUnavailable rather than minAvailable: a single-replica stack must still let nodes drain. It
    selects the StatefulSet's pods only, not the garbage-collection Job's replica that shares the Service
    labels: a budget over a Job's pod cannot be computed and would refuse every eviction."""
    return {
        "metadata": _metadata(pod, pod.names.workload),
        "spec": {"maxUnavailable": 1,
                 "selector": {"matchLabels": pod.names.workload_selector_labels()}},
    }


class RegistryWorkload(pulumi.ComponentResource):
    """Distribution v3 as a StatefulSet, started by config-cli, behind a headless and a client Service.

    Pass a Kubernetes provider through ``opts`` (``providers={"kubernetes": ...}``) to deploy elsewhere
    than the ambient cluster."""

    service_account: k8s.core.v1.ServiceAccount
    headless_service: k8s.core.v1.Service
    client_service: k8s.core.v1.Service
    stateful_set: k8s.apps.v1.StatefulSet
    pod_disruption_budget: k8s.policy.v1.PodDisruptionBudget
    service_dns_name: pulumi.Output[str]
    stateful_set_name: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryWorkloadArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:workload:RegistryWorkload", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        account = service_account(args, args.role_arn)
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account", metadata=account["metadata"], automount_service_account_token=False, opts=child)
        headless = headless_service(args)
        self.headless_service = k8s.core.v1.Service(
            f"{name}-headless", metadata=headless["metadata"], spec=headless["spec"], opts=child)
        client = client_service(args)
        self.client_service = k8s.core.v1.Service(
            f"{name}-service", metadata=client["metadata"], spec=client["spec"], opts=child)
        workload = stateful_set(args, args.pod_annotations)
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset", metadata=workload["metadata"], spec=workload["spec"], opts=child)
        budget = pod_disruption_budget(args)
        self.pod_disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb", metadata=budget["metadata"], spec=budget["spec"], opts=child)

        self.service_dns_name = pulumi.Output.from_input(
            f"{args.names.client_service}.{args.namespace}.svc.cluster.local")
        self.stateful_set_name = self.stateful_set.metadata.apply(lambda metadata: metadata["name"])
        self.register_outputs({"service_dns_name": self.service_dns_name, "stateful_set_name": self.stateful_set_name})
