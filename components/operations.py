"""Operations: safe garbage collection, volume snapshots and the S3 disaster-recovery copy.

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
``storage.py``, plus an optional cross-region replica in a DR bucket with its own key.

Manifests are computed by pure functions below; ``RegistryOperations`` only registers them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from . import names
from .names import (API_SERVER_PORTS, BACKUP_COMPONENT, COMPONENT_LABEL, DATA_VOLUME, GC_COMPONENT, GC_NAME,
                    HEADLESS_SERVICE_NAME, HTTP_PORT, MESH_INBOUND_PORT, POD_NAME_LABEL, SNAPSHOT_NAME, WORKLOAD_NAME,
                    data_claim_name, dns_egress, object_metadata, readonly_kv_key)
from .registry_config import DATA_DIRECTORY, SECRETS_DIRECTORY, registry_environment
from .settings import DisasterRecoveryBucket, FilesystemStorage, S3Storage, Settings
from .storage import S3BucketStorage, irsa_trust_policy, s3_access_policy, secure_bucket_settings
from .workload import (IRSA_ANNOTATION, VAULT_TOKEN_MOUNT, config_cli_environment, container_resources,
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


def operations_labels(settings: Settings, component: str) -> dict[str, str]:
    return names.operations_labels(settings.environment, component)


def _metadata(settings: Settings, name: str, component: str, annotations: Optional[dict] = None) -> dict:
    return object_metadata(name, settings.namespace, operations_labels(settings, component), annotations)


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


def rbac(settings: Settings, name: str, component: str, rules: list[dict]) -> dict[str, dict]:
    """ServiceAccount, Role and RoleBinding of one operations job."""
    return {
        "service_account": {"metadata": _metadata(settings, name, component), "automountServiceAccountToken": False},
        "role": {"metadata": _metadata(settings, name, component), "rules": rules},
        "role_binding": {
            "metadata": _metadata(settings, name, component),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": settings.namespace}],
        },
    }


def script_config_map(settings: Settings, name: str, component: str, script: str) -> dict:
    return {"metadata": _metadata(settings, name, component), "data": {script: script_text(script)}}


# --- pod building blocks -----------------------------------------------------------------------------


def _tools_init_container(settings: Settings) -> dict:
    """Copies kubectl, consul and curl from the tools image into a volume the main container reads."""
    return {
        "name": "tools",
        "image": settings.operations_tools_image,
        "imagePullPolicy": image_pull_policy(settings.operations_tools_image),
        "command": ["cp", *[f"/usr/local/bin/{tool}" for tool in TOOLS], TOOLS_MOUNT],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "securityContext": container_security_context(settings),
        "volumeMounts": [{"name": "tools", "mountPath": TOOLS_MOUNT}],
    }


def _path_with_tools() -> str:
    return f"{TOOLS_MOUNT}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _script_volume(config_map: str) -> dict:
    return {"name": "scripts", "configMap": {"name": config_map, "defaultMode": 0o555}}


def gc_storage_environment(settings: Settings, kms_key_arn: Optional[Any] = None) -> list[dict]:
    """The storage settings `registry garbage-collect` needs: the registry's own, from one function.

    The maintenance flags stay out: the collector never serves, and REGISTRY_STORAGE_MAINTENANCE_*
    would only make it parse what it does not use.
    """
    env = registry_environment(settings, kms_key_arn)
    return [{"name": key, "value": value} for key, value in sorted(env.items())
            if key.startswith("REGISTRY_STORAGE") and not key.startswith("REGISTRY_STORAGE_MAINTENANCE")]


def gc_pod_labels(settings: Settings) -> dict[str, str]:
    """The registry's selector labels, so the Job's read-only replica is an endpoint of the client
    Service and of the Consul service and is covered by the registry's NetworkPolicies; its component
    label (garbage-collector) keeps it out of the StatefulSet's PodDisruptionBudget."""
    return {**operations_labels(settings, GC_COMPONENT), **selector_labels(settings)}


def gc_pod_annotations(settings: Settings) -> dict[str, str]:
    """The registry's Consul Connect annotations, so the replica serves mesh clients, plus:

    - proxy lifecycle: the dataplane sidecar never exits by itself, which would keep the Job running;
      the script asks it to stop (``SIDECAR_SHUTDOWN_URL``) after the replica is gone;
    - the Kubernetes API is reached directly, not through the sidecar's transparent proxy.
    """
    return {
        **mesh_annotations(settings),
        "consul.hashicorp.com/enable-sidecar-proxy-lifecycle": "true",
        "consul.hashicorp.com/transparent-proxy-exclude-outbound-cidrs": ",".join(
            str(cidr) for cidr in settings.kubernetes_api_cidrs),
    }


def _pod_url_template(settings: Settings) -> str:
    return f"http://@POD@.{HEADLESS_SERVICE_NAME}.{settings.namespace}.svc.cluster.local:{HTTP_PORT}"


def gc_container(settings: Settings, kms_key_arn: Optional[Any] = None) -> dict:
    mounts = [
        {"name": "scripts", "mountPath": SCRIPT_MOUNT, "readOnly": True},
        {"name": "tools", "mountPath": TOOLS_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "secrets", "mountPath": SECRETS_DIRECTORY},
        VAULT_TOKEN_MOUNT,
    ]
    if isinstance(settings.storage, FilesystemStorage):
        mounts.append({"name": DATA_VOLUME, "mountPath": DATA_DIRECTORY})
    env = [
        # The replica's config-cli logs in to Vault and Consul as registry-gc, under its own roles.
        *config_cli_environment(settings, GC_NAME),
        {"name": "PATH", "value": _path_with_tools()},
        {"name": "NAMESPACE", "value": settings.namespace},
        {"name": "STATEFULSET", "value": WORKLOAD_NAME},
        {"name": "READONLY_KV_KEY", "value": readonly_kv_key(settings.environment)},
        {"name": "GC_SERVE_COMMAND", "value": " ".join(names.CONFIG_CLI_COMMAND)},
        {"name": "GC_REPLICA_URL", "value": f"http://127.0.0.1:{HTTP_PORT}"},
        {"name": "GC_DRAIN_MARKER", "value": DRAIN_MARKER},
        {"name": "GC_POD_URL_TEMPLATE", "value": _pod_url_template(settings)},
        {"name": "GC_PROBE_REPOSITORY", "value": PROBE_REPOSITORY},
        {"name": "GC_CONSUL_LOGIN_METHOD", "value": settings.consul_auth_method},
        {"name": "GC_DELETE_UNTAGGED", "value": "true" if settings.gc_delete_untagged else "false"},
        {"name": "GC_SIDECAR_SHUTDOWN_URL", "value": SIDECAR_SHUTDOWN_URL},
        *gc_storage_environment(settings, kms_key_arn),
    ]
    return {
        "name": GC_NAME,
        "image": settings.image,
        "imagePullPolicy": image_pull_policy(settings.image),
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
        "resources": container_resources(settings),
        "securityContext": container_security_context(settings),
        "volumeMounts": mounts,
    }


def gc_pod_spec(settings: Settings, kms_key_arn: Optional[Any] = None) -> dict:
    volumes: list[dict] = [
        _script_volume(GC_NAME),
        {"name": "tools", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        vault_token_volume(settings),
    ]
    spec: dict[str, Any] = {
        "serviceAccountName": GC_NAME,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": GC_TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(settings),
        "initContainers": [_tools_init_container(settings)],
        "containers": [gc_container(settings, kms_key_arn)],
        "volumes": volumes,
    }
    if isinstance(settings.storage, FilesystemStorage):
        # ReadWriteOnce means one node, not one pod: next to registry-0 the Job mounts the same claim.
        volumes.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": data_claim_name()}})
        spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {POD_NAME_LABEL: f"{WORKLOAD_NAME}-0"}},
            "topologyKey": "kubernetes.io/hostname",
        }]}}
    return spec


def _cron_job(settings: Settings, name: str, component: str, schedule: str, pod_labels: dict,
              pod_annotations: dict, pod_spec: dict, active_deadline_seconds: int) -> dict:
    return {
        "metadata": _metadata(settings, name, component, TOKEN_SKIP_ANNOTATION),
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": GC_STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {
                "metadata": {"labels": operations_labels(settings, component)},
                "spec": {
                    # A retry would open a second read-only window; the next schedule is the retry.
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": active_deadline_seconds,
                    "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations},
                                 "spec": pod_spec},
                },
            },
        },
    }


def gc_cron_job(settings: Settings, kms_key_arn: Optional[Any] = None) -> dict:
    return _cron_job(settings, GC_NAME, GC_COMPONENT, settings.gc_schedule, gc_pod_labels(settings),
                     gc_pod_annotations(settings), gc_pod_spec(settings, kms_key_arn),
                     settings.gc_active_deadline_seconds)


def snapshot_cron_job(settings: Settings) -> dict:
    snapshots = settings.snapshots
    assert snapshots is not None
    selector = operations_labels(settings, BACKUP_COMPONENT)
    container = {
        "name": SNAPSHOT_NAME,
        "image": settings.operations_tools_image,
        "imagePullPolicy": image_pull_policy(settings.operations_tools_image),
        "command": ["sh", f"{SCRIPT_MOUNT}/{SNAPSHOT_SCRIPT}"],
        "env": [
            {"name": "NAMESPACE", "value": settings.namespace},
            {"name": "CLAIM", "value": data_claim_name()},
            {"name": "SNAPSHOT_CLASS", "value": snapshots.snapshot_class},
            {"name": "RETENTION", "value": str(snapshots.retention)},
            {"name": "SELECTOR_LABELS", "value": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))},
        ],
        "livenessProbe": {"exec": {"command": ["sh", "-c", "kill -0 1"]}, "periodSeconds": 30},
        "readinessProbe": {"exec": {"command": ["sh", "-c", "kill -0 1"]}, "periodSeconds": 30},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        "securityContext": container_security_context(settings),
        "volumeMounts": [{"name": "scripts", "mountPath": SCRIPT_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec = {
        "serviceAccountName": SNAPSHOT_NAME,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": pod_security_context(settings),
        "containers": [container],
        "volumes": [_script_volume(SNAPSHOT_NAME), {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    return _cron_job(settings, SNAPSHOT_NAME, BACKUP_COMPONENT, snapshots.schedule, selector, {}, pod_spec, 3600)


# --- network -------------------------------------------------------------------------------------------


def _api_server_egress(settings: Settings) -> dict:
    return {"to": [{"ipBlock": {"cidr": str(cidr)}} for cidr in settings.kubernetes_api_cidrs],
            "ports": [{"protocol": "TCP", "port": port} for port in API_SERVER_PORTS]}


def network_policies(settings: Settings) -> list[dict]:
    """What the operations jobs add to the registry's default-deny policies.

    The GC pod carries the registry's selector labels, so the registry's own policies already admit
    its clients and its Consul, Vault, DNS and storage traffic; it also needs the API server and the
    registry pods it checks. The snapshot pod gets its own default deny with DNS and the API server.
    """
    gc_pods = {"matchLabels": {**selector_labels(settings), COMPONENT_LABEL: GC_COMPONENT}}
    registry_ports = [{"protocol": "TCP", "port": port} for port in (HTTP_PORT, MESH_INBOUND_PORT)]
    policies = [
        {
            "metadata": _metadata(settings, f"{GC_NAME}-allow-egress", GC_COMPONENT),
            "spec": {
                "podSelector": gc_pods,
                "policyTypes": ["Egress"],
                "egress": [
                    _api_server_egress(settings),
                    {"to": [{"podSelector": {"matchLabels": selector_labels(settings)}}], "ports": registry_ports},
                ],
            },
        },
        {
            "metadata": _metadata(settings, f"{WORKLOAD_NAME}-allow-gc-probe", GC_COMPONENT),
            "spec": {
                "podSelector": {"matchLabels": selector_labels(settings)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": gc_pods}], "ports": registry_ports}],
            },
        },
    ]
    if settings.snapshots is not None:
        snapshot_pods = {"matchLabels": operations_labels(settings, BACKUP_COMPONENT)}
        policies.append({
            "metadata": _metadata(settings, f"{SNAPSHOT_NAME}-default-deny", BACKUP_COMPONENT),
            "spec": {"podSelector": snapshot_pods, "policyTypes": ["Ingress", "Egress"]},
        })
        policies.append({
            "metadata": _metadata(settings, f"{SNAPSHOT_NAME}-allow-egress", BACKUP_COMPONENT),
            "spec": {
                "podSelector": snapshot_pods,
                "policyTypes": ["Egress"],
                "egress": [dns_egress(), _api_server_egress(settings)],
            },
        })
    return policies


# --- S3 disaster recovery --------------------------------------------------------------------------------


def replication_trust_policy() -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def replication_policy(source_bucket_arn: str, source_key_arn: str, source_region: str,
                       replica_bucket_arn: str, replica_key_arn: str, replica_region: str) -> dict:
    """What S3 replication needs, and nothing else: read versions here, replicate there, per key."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "SourceBucket", "Effect": "Allow",
             "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": source_bucket_arn},
            {"Sid": "SourceObjects", "Effect": "Allow",
             "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
             "Resource": f"{source_bucket_arn}/*"},
            {"Sid": "ReplicaObjects", "Effect": "Allow",
             "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
             "Resource": f"{replica_bucket_arn}/*"},
            {"Sid": "DecryptSource", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": source_key_arn,
             "Condition": {"StringLike": {"kms:ViaService": f"s3.{source_region}.amazonaws.com"}}},
            {"Sid": "EncryptReplica", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
             "Resource": replica_key_arn,
             "Condition": {"StringLike": {"kms:ViaService": f"s3.{replica_region}.amazonaws.com"}}},
        ],
    }


def replication_rules(replica_bucket_arn: str, replica_key_arn: str) -> list[dict]:
    return [{
        "id": "registry-to-dr",
        "status": "Enabled",
        "priority": 1,
        "filter": {},
        # Deletes (garbage collection) replicate as delete markers; the replica's own versioning and
        # lifecycle keep the deleted data for the same restore window as the source.
        "delete_marker_replication": {"status": "Enabled"},
        "source_selection_criteria": {"sse_kms_encrypted_objects": {"status": "Enabled"}},
        "destination": {
            "bucket": replica_bucket_arn,
            "storage_class": "STANDARD",
            "encryption_configuration": {"replica_kms_key_id": replica_key_arn},
        },
    }]


# --- the component ----------------------------------------------------------------------------------------


@dataclass
class RegistryOperationsArgs:
    settings: Settings
    bucket: Optional[S3BucketStorage] = None  # s3 mode: the registry's bucket, its key, and what replication waits for


class RegistryOperations(pulumi.ComponentResource):
    """The garbage-collection CronJob and its RBAC, volume snapshots, and the optional S3 DR replica."""

    gc_cron_job_name: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryOperationsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:operations:RegistryOperations", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        if isinstance(settings.storage, S3Storage):
            if args.bucket is None:
                raise ValueError("s3 storage: RegistryOperations needs the registry's S3BucketStorage")
            gc_role_arn = self._gc_irsa_role(name, settings, args)
            kms_key_arn = args.bucket.kms_key_arn
        else:
            gc_role_arn = kms_key_arn = None

        self._job(name, "gc", settings, GC_NAME, GC_COMPONENT, gc_role_rules(WORKLOAD_NAME, settings.replicas),
                  GC_SCRIPT, gc_cron_job(settings, kms_key_arn), gc_role_arn)
        if settings.snapshots is not None:
            self._job(name, "snapshot", settings, SNAPSHOT_NAME, BACKUP_COMPONENT, snapshot_role_rules(), SNAPSHOT_SCRIPT,
                      snapshot_cron_job(settings), None)
        for policy in network_policies(settings):
            k8s.networking.v1.NetworkPolicy(f"{name}-{policy['metadata']['name']}", metadata=policy["metadata"],
                                            spec=policy["spec"], opts=child)
        if settings.disaster_recovery is not None and isinstance(settings.storage, S3Storage):
            self._disaster_recovery(name, settings, settings.storage, settings.disaster_recovery, args)

        self.gc_cron_job_name = pulumi.Output.from_input(GC_NAME)
        self.register_outputs({"gc_cron_job_name": self.gc_cron_job_name})

    def _job(self, name: str, short: str, settings: Settings, job_name: str, component: str, rules: list[dict],
             script: str, cron_job: dict, role_arn: Optional[pulumi.Input[str]]) -> None:
        child = pulumi.ResourceOptions(parent=self)
        access = rbac(settings, job_name, component, rules)
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
        config_map = script_config_map(settings, job_name, component, script)
        k8s.core.v1.ConfigMap(f"{name}-{short}-script", metadata=config_map["metadata"], data=config_map["data"],
                              opts=child)
        k8s.batch.v1.CronJob(f"{name}-{short}-cronjob", metadata=cron_job["metadata"], spec=cron_job["spec"],
                             opts=child)

    def _gc_irsa_role(self, name: str, settings: Settings, args: RegistryOperationsArgs) -> pulumi.Output[str]:
        """The collector deletes from the bucket: the registry's S3 permissions, under its own identity."""
        storage = settings.storage
        assert isinstance(storage, S3Storage)
        provider = aws.Provider(f"{name}-aws", region=storage.region, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        role = aws.iam.Role(
            f"{name}-gc-role",
            description=f"Docker registry ({settings.environment}) garbage collection {settings.namespace}/{GC_NAME}",
            assume_role_policy=json.dumps(irsa_trust_policy(storage.oidc_provider_arn, storage.oidc_provider_host_path,
                                                            settings.namespace, GC_NAME)),
            max_session_duration=3600,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-gc-access", role=role.id,
            policy=pulumi.Output.all(args.bucket.bucket_arn, args.bucket.kms_key_arn).apply(
                lambda arns: json.dumps(s3_access_policy(*arns))),
            opts=child,
        )
        self._primary_provider = provider
        return role.arn

    def _disaster_recovery(self, name: str, settings: Settings, storage: S3Storage, dr: DisasterRecoveryBucket,
                           args: RegistryOperationsArgs) -> None:
        tags = {"app": names.APP_NAME, "environment": settings.environment, "managed-by": "pulumi",
                "role": "disaster-recovery"}
        dr_provider = aws.Provider(f"{name}-dr-aws", region=dr.region, default_tags={"tags": tags},
                                   opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=dr_provider)
        stateful = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True, retain_on_delete=True))

        key = aws.kms.Key(f"{name}-dr-key", description=f"Encrypts the {settings.environment} registry DR bucket {dr.bucket}",
                          enable_key_rotation=True, deletion_window_in_days=30, opts=stateful)
        aws.kms.Alias(f"{name}-dr-key-alias", name=f"alias/docker-registry-{settings.environment}-dr",
                      target_key_id=key.key_id, opts=child)
        bucket = aws.s3.Bucket(f"{name}-dr-bucket", bucket=dr.bucket, force_destroy=False, opts=stateful)
        versioning = secure_bucket_settings(f"{name}-dr", bucket, key, storage, child)

        primary = pulumi.ResourceOptions(parent=self, provider=self._primary_provider)
        role = aws.iam.Role(f"{name}-replication-role",
                            description=f"S3 replication of {storage.bucket} to {dr.bucket}",
                            assume_role_policy=json.dumps(replication_trust_policy()), opts=primary)
        aws.iam.RolePolicy(
            f"{name}-replication-access", role=role.id,
            policy=pulumi.Output.all(args.bucket.bucket_arn, args.bucket.kms_key_arn, bucket.arn, key.arn).apply(
                lambda arns: json.dumps(replication_policy(arns[0], arns[1], storage.region, arns[2], arns[3], dr.region))),
            opts=primary,
        )
        # Replication needs versioning on both buckets (the source's is inside the storage component).
        depends = [versioning, args.bucket]
        aws.s3.BucketReplicationConfig(
            f"{name}-replication", bucket=args.bucket.bucket_name, role=role.arn,
            rules=pulumi.Output.all(bucket.arn, key.arn).apply(lambda arns: replication_rules(*arns)),
            opts=pulumi.ResourceOptions.merge(primary, pulumi.ResourceOptions(depends_on=depends)),
        )
