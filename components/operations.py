"""Operations: safe garbage collection and volume snapshots (the S3 DR replica is in storage.py).

Garbage collection (``registry-gc`` CronJob, ``scripts/registry-gc.sh``). Distribution must be
read-only (or stopped) while ``registry garbage-collect`` runs, or a concurrent push can lose layers;
it reads its configuration only at start, so read-only means a restart. The Job pod brings its own
read-only registry on the same storage and carries the registry's selector labels: once Ready it is
an endpoint of the client Service (and of the Consul service) and serves pulls while the
StatefulSet's pods restart read-only one by one, also in staging's single-replica filesystem mode,
where the pod is scheduled next to ``registry-0`` and mounts the same ReadWriteOnce claim. The script
restores write mode in a trap, so a failing collection never leaves the registry read-only.

Backups: filesystem volumes get scheduled VolumeSnapshots (``registry-snapshot`` CronJob, oldest
pruned beyond a retention count); S3 has versioning and the noncurrent-version lifecycle from
``storage.py``, plus the optional cross-region replica there, in a DR bucket with its own key.

Manifests are computed by pure functions below; ``RegistryOperations`` only registers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from . import names
from .names import (API_SERVER_PORTS, BACKUP_COMPONENT, COMPONENT_LABEL, DATA_VOLUME, GC_COMPONENT, HTTP_PORT,
                    MESH_INBOUND_PORT, POD_NAME_LABEL, dns_egress, object_metadata)
from .registry_config import DATA_DIRECTORY, SECRETS_DIRECTORY, RegistryConfig, registry_environment
from .settings import FilesystemStorage, VolumeSnapshots
from .workload import (IRSA_ANNOTATION, VAULT_TOKEN_MOUNT, RegistryPod, config_cli_environment, container_resources,
                       container_security_context, image_pull_policy, mesh_annotations, pod_security_context,
                       selector_labels, vault_token_volume)

SCRIPTS_DIRECTORY = Path(__file__).resolve().parent / "scripts"
GC_SCRIPT = "registry-gc.sh"
SNAPSHOT_SCRIPT = "registry-snapshot.sh"
SCRIPT_MOUNT = "/opt/registry-ops"
TOOLS_MOUNT = "/opt/registry-ops-tools"
TOOLS = ("kubectl", "consul", "curl")
DRAIN_MARKER = "/tmp/registry-gc-draining"
PROBE_REPOSITORY = "registry-gc/probe"
# Consul dataplane's proxy-lifecycle endpoint: a Job pod asks its sidecar to exit when it is done.
SIDECAR_SHUTDOWN_URL = "http://127.0.0.1:20600/graceful_shutdown"
# Enough for the trap to restart every replica back into write mode after SIGTERM (deadline hit).
GC_TERMINATION_GRACE_SECONDS = 900
GC_STARTING_DEADLINE_SECONDS = 3600

# The CronJob pods call the Kubernetes API with their service account token (kubectl).
TOKEN_SKIP_ANNOTATION = {
    "checkov.io/skip1": "CKV_K8S_38=the job calls the Kubernetes API (kubectl) with its service account token",
}


@dataclass(frozen=True, kw_only=True)
class RegistryOperationsArgs(RegistryPod, RegistryConfig):
    """The GC Job runs the registry's own pod (``RegistryPod``) on its storage (``RegistryConfig``)."""

    replicas: int
    gc_schedule: str
    gc_active_deadline_seconds: int
    gc_delete_untagged: bool
    operations_tools_image: str
    kubernetes_api_cidrs: tuple
    snapshots: Optional[VolumeSnapshots] = None  # filesystem mode: scheduled VolumeSnapshots of the volume
    # s3 mode: the bucket's key and the collector's IRSA role, both outputs of the storage component.
    kms_key_arn: Optional[pulumi.Input[str]] = None
    gc_role_arn: Optional[pulumi.Input[str]] = None


def operations_labels(ops: RegistryOperationsArgs, component: str) -> dict[str, str]:
    return ops.names.operations_labels(component)


def _metadata(ops: RegistryOperationsArgs, name: str, component: str, annotations: Optional[dict] = None) -> dict:
    return object_metadata(name, ops.namespace, operations_labels(ops, component), annotations)


def script_text(name: str) -> str:
    return (SCRIPTS_DIRECTORY / name).read_text()


# --- RBAC ------------------------------------------------------------------------------------------


def gc_role_rules(statefulset: str, replicas: int) -> list[dict]:
    """The least the GC script needs: read its StatefulSet, watch pods, delete only the registry's pods.

    Reading pods cannot be limited by name: the Job also waits for its own pod, whose name is random.
    """
    return [
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"], "resourceNames": [statefulset]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"],
         "resourceNames": [f"{statefulset}-{ordinal}" for ordinal in range(replicas)]},
    ]


def snapshot_role_rules() -> list[dict]:
    """Create, read and prune VolumeSnapshots (their names carry a timestamp, so no resourceNames)."""
    return [
        {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"],
         "verbs": ["create", "get", "list", "delete"]},
    ]


def rbac(ops: RegistryOperationsArgs, name: str, component: str, rules: list[dict]) -> dict[str, dict]:
    """ServiceAccount, Role and RoleBinding of one operations job."""
    return {
        "service_account": {"metadata": _metadata(ops, name, component), "automountServiceAccountToken": False},
        "role": {"metadata": _metadata(ops, name, component), "rules": rules},
        "role_binding": {
            "metadata": _metadata(ops, name, component),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ops.namespace}],
        },
    }


def script_config_map(ops: RegistryOperationsArgs, name: str, component: str, script: str) -> dict:
    return {"metadata": _metadata(ops, name, component), "data": {script: script_text(script)}}


# --- pod building blocks -----------------------------------------------------------------------------


def _tools_init_container(ops: RegistryOperationsArgs) -> dict:
    """Copies kubectl, consul and curl from the tools image into a volume the main container reads."""
    return {
        "name": "tools",
        "image": ops.operations_tools_image,
        "imagePullPolicy": image_pull_policy(ops.operations_tools_image),
        "command": ["cp", *[f"/usr/local/bin/{tool}" for tool in TOOLS], TOOLS_MOUNT],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "securityContext": container_security_context(ops),
        "volumeMounts": [{"name": "tools", "mountPath": TOOLS_MOUNT}],
    }


def _path_with_tools() -> str:
    return f"{TOOLS_MOUNT}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _script_volume(config_map: str) -> dict:
    return {"name": "scripts", "configMap": {"name": config_map, "defaultMode": 0o555}}


def gc_storage_environment(ops: RegistryOperationsArgs, kms_key_arn: Optional[Any] = None) -> list[dict]:
    """The storage settings `registry garbage-collect` needs: the registry's own, from one function.

    The maintenance flags stay out: the collector never serves, and REGISTRY_STORAGE_MAINTENANCE_*
    would only make it parse what it does not use.
    """
    env = registry_environment(ops, kms_key_arn)
    return [{"name": key, "value": value} for key, value in sorted(env.items())
            if key.startswith("REGISTRY_STORAGE") and not key.startswith("REGISTRY_STORAGE_MAINTENANCE")]


def gc_pod_labels(ops: RegistryOperationsArgs) -> dict[str, str]:
    """The registry's selector labels, so the Job's read-only replica is an endpoint of the client
    Service and of the Consul service and is covered by the registry's NetworkPolicies; its component
    label (garbage-collector) keeps it out of the StatefulSet's PodDisruptionBudget."""
    return {**operations_labels(ops, GC_COMPONENT), **selector_labels(ops)}


def gc_pod_annotations(ops: RegistryOperationsArgs) -> dict[str, str]:
    """The registry's Consul Connect annotations, so the replica serves mesh clients, plus:

    - proxy lifecycle: the dataplane sidecar never exits by itself, which would keep the Job running;
      the script asks it to stop (``SIDECAR_SHUTDOWN_URL``) after the replica is gone;
    - the Kubernetes API is reached directly, not through the sidecar's transparent proxy.
    """
    return {
        **mesh_annotations(ops),
        "consul.hashicorp.com/enable-sidecar-proxy-lifecycle": "true",
        "consul.hashicorp.com/transparent-proxy-exclude-outbound-cidrs": ",".join(
            str(cidr) for cidr in ops.kubernetes_api_cidrs),
    }


def _pod_url_template(ops: RegistryOperationsArgs) -> str:
    return f"http://@POD@.{ops.names.headless_service}.{ops.namespace}.svc.cluster.local:{HTTP_PORT}"


def gc_container(ops: RegistryOperationsArgs, kms_key_arn: Optional[Any] = None) -> dict:
    mounts = [
        {"name": "scripts", "mountPath": SCRIPT_MOUNT, "readOnly": True},
        {"name": "tools", "mountPath": TOOLS_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "secrets", "mountPath": SECRETS_DIRECTORY},
        VAULT_TOKEN_MOUNT,
    ]
    if isinstance(ops.storage, FilesystemStorage):
        mounts.append({"name": DATA_VOLUME, "mountPath": DATA_DIRECTORY})
    env = [
        # The replica's config-cli logs in to Vault and Consul as registry-gc, under its own roles.
        *config_cli_environment(ops, ops.names.gc),
        {"name": "PATH", "value": _path_with_tools()},
        {"name": "NAMESPACE", "value": ops.namespace},
        {"name": "STATEFULSET", "value": ops.names.workload},
        {"name": "READONLY_KV_KEY", "value": ops.names.readonly_kv_key},
        {"name": "GC_SERVE_COMMAND", "value": " ".join(names.CONFIG_CLI_COMMAND)},
        {"name": "GC_REPLICA_URL", "value": f"http://127.0.0.1:{HTTP_PORT}"},
        {"name": "GC_DRAIN_MARKER", "value": DRAIN_MARKER},
        {"name": "GC_POD_URL_TEMPLATE", "value": _pod_url_template(ops)},
        {"name": "GC_PROBE_REPOSITORY", "value": PROBE_REPOSITORY},
        {"name": "GC_CONSUL_LOGIN_METHOD", "value": ops.consul_auth_method},
        {"name": "GC_DELETE_UNTAGGED", "value": "true" if ops.gc_delete_untagged else "false"},
        {"name": "GC_SIDECAR_SHUTDOWN_URL", "value": SIDECAR_SHUTDOWN_URL},
        *gc_storage_environment(ops, kms_key_arn),
    ]
    return {
        "name": ops.names.gc,
        "image": ops.image,
        "imagePullPolicy": image_pull_policy(ops.image),
        "command": ["sh", f"{SCRIPT_MOUNT}/{GC_SCRIPT}"],
        "env": env,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        # Ready while the Job's own read-only replica serves, and not once the script has marked it
        # draining: it leaves the Service before it is stopped.
        "readinessProbe": {
            "exec": {"command": ["sh", "-c",
                                 f"test ! -e {DRAIN_MARKER} && {TOOLS_MOUNT}/curl -fsS -o /dev/null http://127.0.0.1:{HTTP_PORT}/"]},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 1,
        },
        # Alive while the script runs; it is PID 1 and a crash ends the container anyway.
        "livenessProbe": {
            "exec": {"command": ["sh", "-c", "kill -0 1"]},
            "periodSeconds": 30,
            "timeoutSeconds": 5,
        },
        "resources": container_resources(ops),
        "securityContext": container_security_context(ops),
        "volumeMounts": mounts,
    }


def gc_pod_spec(ops: RegistryOperationsArgs, kms_key_arn: Optional[Any] = None) -> dict:
    volumes: list[dict] = [
        _script_volume(ops.names.gc),
        {"name": "tools", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        vault_token_volume(ops),
    ]
    spec: dict[str, Any] = {
        "serviceAccountName": ops.names.gc,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": GC_TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(ops),
        "initContainers": [_tools_init_container(ops)],
        "containers": [gc_container(ops, kms_key_arn)],
        "volumes": volumes,
    }
    if isinstance(ops.storage, FilesystemStorage):
        # ReadWriteOnce means one node, not one pod: next to registry-0 the Job mounts the same claim.
        volumes.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": ops.names.data_claim()}})
        spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {POD_NAME_LABEL: f"{ops.names.workload}-0"}},
            "topologyKey": "kubernetes.io/hostname",
        }]}}
    return spec


def _cron_job(ops: RegistryOperationsArgs, name: str, component: str, schedule: str, pod_labels: dict,
              pod_annotations: dict, pod_spec: dict, active_deadline_seconds: int) -> dict:
    return {
        "metadata": _metadata(ops, name, component, TOKEN_SKIP_ANNOTATION),
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": GC_STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {
                "metadata": {"labels": operations_labels(ops, component)},
                "spec": {
                    # A retry would open a second read-only window; the next schedule is the retry.
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": active_deadline_seconds,
                    # No empty annotations map: the kubernetes provider leaves it out, so the plan would
                    # differ from what is applied (seen by tests/test_peer_pulumi_cli.py).
                    "template": {"metadata": {"labels": pod_labels,
                                              **({"annotations": pod_annotations} if pod_annotations else {})},
                                 "spec": pod_spec},
                },
            },
        },
    }


def gc_cron_job(ops: RegistryOperationsArgs, kms_key_arn: Optional[Any] = None) -> dict:
    return _cron_job(ops, ops.names.gc, GC_COMPONENT, ops.gc_schedule, gc_pod_labels(ops),
                     gc_pod_annotations(ops), gc_pod_spec(ops, kms_key_arn),
                     ops.gc_active_deadline_seconds)


def snapshot_cron_job(ops: RegistryOperationsArgs) -> dict:
    snapshots = ops.snapshots
    assert snapshots is not None
    selector = operations_labels(ops, BACKUP_COMPONENT)
    container = {
        "name": ops.names.snapshot,
        "image": ops.operations_tools_image,
        "imagePullPolicy": image_pull_policy(ops.operations_tools_image),
        "command": ["sh", f"{SCRIPT_MOUNT}/{SNAPSHOT_SCRIPT}"],
        "env": [
            {"name": "NAMESPACE", "value": ops.namespace},
            {"name": "CLAIM", "value": ops.names.data_claim()},
            {"name": "SNAPSHOT_CLASS", "value": snapshots.snapshot_class},
            {"name": "RETENTION", "value": str(snapshots.retention)},
            {"name": "SELECTOR_LABELS", "value": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))},
        ],
        "livenessProbe": {"exec": {"command": ["sh", "-c", "kill -0 1"]}, "periodSeconds": 30},
        "readinessProbe": {"exec": {"command": ["sh", "-c", "kill -0 1"]}, "periodSeconds": 30},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        "securityContext": container_security_context(ops),
        "volumeMounts": [{"name": "scripts", "mountPath": SCRIPT_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec = {
        "serviceAccountName": ops.names.snapshot,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": pod_security_context(ops),
        "containers": [container],
        "volumes": [_script_volume(ops.names.snapshot), {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    return _cron_job(ops, ops.names.snapshot, BACKUP_COMPONENT, snapshots.schedule, selector, {}, pod_spec, 3600)


# --- network -------------------------------------------------------------------------------------------


def _api_server_egress(ops: RegistryOperationsArgs) -> dict:
    return {"to": [{"ipBlock": {"cidr": str(cidr)}} for cidr in ops.kubernetes_api_cidrs],
            "ports": [{"protocol": "TCP", "port": port} for port in API_SERVER_PORTS]}


def network_policies(ops: RegistryOperationsArgs) -> list[dict]:
    """What the operations jobs add to the registry's default-deny policies.

    The GC pod carries the registry's selector labels, so the registry's own policies already admit
    its clients and its Consul, Vault, DNS and storage traffic; it also needs the API server and the
    registry pods it checks. The snapshot pod gets its own default deny with DNS and the API server.
    """
    gc_pods = {"matchLabels": {**selector_labels(ops), COMPONENT_LABEL: GC_COMPONENT}}
    registry_ports = [{"protocol": "TCP", "port": port} for port in (HTTP_PORT, MESH_INBOUND_PORT)]
    policies = [
        {
            "metadata": _metadata(ops, f"{ops.names.gc}-allow-egress", GC_COMPONENT),
            "spec": {
                "podSelector": gc_pods,
                "policyTypes": ["Egress"],
                "egress": [
                    _api_server_egress(ops),
                    {"to": [{"podSelector": {"matchLabels": selector_labels(ops)}}], "ports": registry_ports},
                ],
            },
        },
        {
            "metadata": _metadata(ops, f"{ops.names.workload}-allow-gc-probe", GC_COMPONENT),
            "spec": {
                "podSelector": {"matchLabels": selector_labels(ops)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": gc_pods}], "ports": registry_ports}],
            },
        },
    ]
    if ops.snapshots is not None:
        snapshot_pods = {"matchLabels": operations_labels(ops, BACKUP_COMPONENT)}
        policies.append({
            "metadata": _metadata(ops, f"{ops.names.snapshot}-default-deny", BACKUP_COMPONENT),
            "spec": {"podSelector": snapshot_pods, "policyTypes": ["Ingress", "Egress"]},
        })
        policies.append({
            "metadata": _metadata(ops, f"{ops.names.snapshot}-allow-egress", BACKUP_COMPONENT),
            "spec": {
                "podSelector": snapshot_pods,
                "policyTypes": ["Egress"],
                "egress": [dns_egress(), _api_server_egress(ops)],
            },
        })
    return policies


# --- the component ----------------------------------------------------------------------------------------


class RegistryOperations(pulumi.ComponentResource):
    """The garbage-collection CronJob and its RBAC, and volume snapshots (filesystem mode)."""

    gc_cron_job: k8s.batch.v1.CronJob
    snapshot_cron_job: Optional[k8s.batch.v1.CronJob]
    network_policies: list[k8s.networking.v1.NetworkPolicy]
    gc_cron_job_name: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryOperationsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:operations:RegistryOperations", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.gc_cron_job = self._job(
            name, "gc", args, args.names.gc, GC_COMPONENT, gc_role_rules(args.names.workload, args.replicas),
            GC_SCRIPT, gc_cron_job(args, args.kms_key_arn), args.gc_role_arn)
        self.snapshot_cron_job = None
        if args.snapshots is not None:
            self.snapshot_cron_job = self._job(
                name, "snapshot", args, args.names.snapshot, BACKUP_COMPONENT, snapshot_role_rules(), SNAPSHOT_SCRIPT,
                snapshot_cron_job(args), None)
        self.network_policies = [
            k8s.networking.v1.NetworkPolicy(f"{name}-{policy['metadata']['name']}", metadata=policy["metadata"],
                                            spec=policy["spec"], opts=child)
            for policy in network_policies(args)
        ]

        self.gc_cron_job_name = self.gc_cron_job.metadata.apply(lambda metadata: metadata["name"])
        self.register_outputs({"gc_cron_job_name": self.gc_cron_job_name})

    def _job(self, name: str, short: str, args: RegistryOperationsArgs, job_name: str, component: str,
             rules: list[dict], script: str, cron_job: dict, role_arn: Optional[pulumi.Input[str]]) -> k8s.batch.v1.CronJob:
        child = pulumi.ResourceOptions(parent=self)
        access = rbac(args, job_name, component, rules)
        account = access["service_account"]
        if role_arn is not None:
            account["metadata"]["annotations"] = {IRSA_ANNOTATION: role_arn}
        k8s.core.v1.ServiceAccount(f"{name}-{short}-service-account", metadata=account["metadata"],
                                   automount_service_account_token=False, opts=child)
        k8s.rbac.v1.Role(f"{name}-{short}-role", metadata=access["role"]["metadata"], rules=access["role"]["rules"],
                         opts=child)
        binding = access["role_binding"]
        k8s.rbac.v1.RoleBinding(f"{name}-{short}-role-binding", metadata=binding["metadata"],
                                role_ref=binding["roleRef"], subjects=binding["subjects"], opts=child)
        config_map = script_config_map(args, job_name, component, script)
        k8s.core.v1.ConfigMap(f"{name}-{short}-script", metadata=config_map["metadata"], data=config_map["data"],
                              opts=child)
        return k8s.batch.v1.CronJob(f"{name}-{short}-cronjob", metadata=cron_job["metadata"], spec=cron_job["spec"],
                                    opts=child)
