"""Recorded plans broken on purpose, for testing the policy pack.

Every mutation edits (or drops) one resource the real program registers, named by its logical name:
prod holds two buckets (the registry's and its DR replica), two KMS keys, three IAM roles, and each
stack two CronJobs and two Roles, so a mutation that picked "the" resource of a type would be
ambiguous. ``MUTATIONS`` maps a case name to (stack, mutation, the one policy expected to fire).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

from offline_plan import Plan, Registration
from offline_plan.recorder import reveal
from policies.rules.support import UNKNOWN, Resource, Unverifiable, config_defaults, plain
from pulumi_policy import StackValidationPolicy

UNKNOWN_WIRE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # how the engine sends an unknown value

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PROMETHEUS_RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
CONSUL_KEY_PREFIX = "consul:index/keyPrefix:KeyPrefix"
VAULT_POLICY = "vault:index/policy:Policy"
VAULT_ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"
CRON_JOB = "kubernetes:batch/v1:CronJob"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"


# --- editing a plan ---------------------------------------------------------------------------


def _find(plan: Plan, type_token: str, name: str) -> Registration:
    """The resource of ``type_token`` whose logical name is ``name``."""
    found = [r for r in plan.registrations if r.type == type_token and r.name == name]
    if len(found) != 1:
        present = sorted(r.name for r in plan.registrations if r.type == type_token)
        raise LookupError(f"no {type_token} named {name!r} in the {plan.stack} plan (it has {present})")
    return found[0]


def edit(plan: Plan, type_token: str, name: str, change: Callable[[dict], Any]) -> Plan:
    """Apply ``change`` to the inputs and the outputs of one resource (plain, secrets revealed)."""
    registration = _find(plan, type_token, name)
    registration.inputs = reveal(registration.inputs)
    change(registration.inputs)
    registration.outputs = reveal(registration.outputs) if registration.outputs else copy.deepcopy(registration.inputs)
    change(registration.outputs)
    return plan


def remove(plan: Plan, type_token: str, name: str) -> Plan:
    plan.registrations.remove(_find(plan, type_token, name))
    return plan


def remove_all(plan: Plan, type_token: str) -> Plan:
    if not plan.of_type(type_token):
        raise LookupError(f"no {type_token} in the {plan.stack} plan")
    plan.registrations = [r for r in plan.registrations if r.type != type_token]
    return plan


def _unprotect(type_token: str, name: str) -> Callable[[Plan], Plan]:
    def apply(plan: Plan) -> Plan:
        _find(plan, type_token, name).protect = False
        return plan
    return apply


def _container(inputs: dict) -> dict:
    return inputs["spec"]["template"]["spec"]["containers"][0]


def _job_container(inputs: dict) -> dict:
    return inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def _json_edit(key: str, change: Callable[[dict], Any]) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        document = json.loads(props[key])
        change(document)
        props[key] = json.dumps(document)
    return apply


def _statement(sid: str, change: Callable[[dict], Any]) -> Callable[[dict], None]:
    """Edit the statement ``sid`` of an IAM document held under ``policy``."""
    def apply(document: dict) -> None:
        matching = [s for s in document["Statement"] if s.get("Sid") == sid]
        if len(matching) != 1:
            raise LookupError(f"no statement {sid!r} in {[s.get('Sid') for s in document['Statement']]}")
        change(matching[0])
    return _json_edit("policy", apply)


def _kv_add(subkey: str, value: str) -> Callable[[dict], None]:
    """Add a key to a ``KeyPrefix`` (relative to its ``pathPrefix``); refuse to overwrite one."""
    def apply(props: dict) -> None:
        if subkey in props["subkeys"]:
            raise LookupError(f"{props['pathPrefix']}{subkey} is already in the plan")
        props["subkeys"][subkey] = value
    return apply


def _kv_drop(subkey: str) -> Callable[[dict], None]:
    """Drop a key from a ``KeyPrefix``; a key the plan does not hold is an error, not a no-op."""
    def apply(props: dict) -> None:
        del props["subkeys"][subkey]
    return apply


def _set(*path_and_value: Any) -> Callable[[dict], None]:
    *path, value = path_and_value

    def apply(props: dict) -> None:
        target = props
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return apply


STS = "kubernetes:apps/v1:StatefulSet"
SERVICE = "kubernetes:core/v1:Service"
BUCKET_VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
KMS_KEY = "aws:kms/key:Key"
BUCKET = "aws:s3/bucket:Bucket"
K8S_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"

# Logical names of what the program registers (components/storage.py, components/operations.py).
REGISTRY = "registry-storage"  # the registry's bucket and its companions: f"{REGISTRY}-versioning", ...
DR = "registry-operations-dr"  # the DR replica's bucket and companions
REGISTRY_ACCESS = "registry-storage-access"  # the registry role's policy
GC_ACCESS = "registry-operations-gc-access"
REPLICATION_ACCESS = "registry-operations-replication-access"
STATEFULSET = "registry-statefulset"
GC_CRONJOB = "registry-operations-gc-cronjob"
CONSUL_KV = "registry-consul-kv"
VAULT_POLICY_NAME = "registry-secrets-policy"
VAULT_ROLE_NAME = "registry-secrets-auth-role"
ALERT_RULES = "registry-monitoring-rules"


def _bucket_name(plan: Plan, prefix: str) -> str:
    return reveal(_find(plan, BUCKET, f"{prefix}-bucket").inputs)["bucket"]


def _bucket_arn(plan: Plan, prefix: str) -> str:
    return f"arn:aws:s3:::{_bucket_name(plan, prefix)}"


def _key_arn(plan: Plan, prefix: str) -> str:
    return _find(plan, KMS_KEY, f"{prefix}-key").outputs["arn"]


def _route_first_path_to(port: dict) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        props["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = port
    return apply


def _admit_the_internet(props: dict) -> None:
    props["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}})


def _no_noncurrent_expiration(props: dict) -> None:
    props["rules"][0].pop("noncurrentVersionExpiration")


def _aes256(props: dict) -> None:
    props["rules"][0]["applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256", kmsMasterKeyId=None)


Mutation = Callable[[Plan], Plan]


def _bucket_cases(prefix: str, which: str) -> dict[str, tuple[str, Mutation, str]]:
    """Every bucket rule broken for one bucket, its companions and its key (``prefix``: their logical names')."""
    return {
        f"versioning off{which}": ("prod", lambda p: edit(p, BUCKET_VERSIONING, f"{prefix}-versioning", _set(
            "versioningConfiguration", "status", "Suspended")), "s3-bucket-versioning-enabled"),
        f"a public access flag off{which}": ("prod", lambda p: edit(p, PUBLIC_ACCESS, f"{prefix}-public-access", _set(
            "blockPublicPolicy", False)), "s3-public-access-blocked"),
        f"a bucket without a lifecycle{which}": ("prod", lambda p: remove(p, LIFECYCLE, f"{prefix}-lifecycle"),
                                                 "s3-bucket-hardening-complete"),
        f"a bucket without encryption{which}": ("prod", lambda p: remove(p, ENCRYPTION, f"{prefix}-encryption"),
                                                "s3-bucket-hardening-complete"),
        f"AES256 instead of SSE-KMS{which}": ("prod", lambda p: edit(p, ENCRYPTION, f"{prefix}-encryption", _aes256),
                                              "s3-sse-kms-customer-key"),
        f"object writer ownership{which}": ("prod", lambda p: edit(p, OWNERSHIP, f"{prefix}-ownership", _set(
            "rule", "objectOwnership", "ObjectWriter")), "s3-bucket-owner-enforced"),
        f"a bucket policy without the TLS condition{which}": ("prod", lambda p: edit(
            p, BUCKET_POLICY, f"{prefix}-tls-only", _statement("DenyInsecureTransport", lambda s: s.pop("Condition"))),
            "s3-tls-only-bucket-policy"),
        f"no noncurrent version expiration{which}": ("prod", lambda p: edit(
            p, LIFECYCLE, f"{prefix}-lifecycle", _no_noncurrent_expiration), "s3-noncurrent-version-expiration"),
        f"an unprotected bucket{which}": ("prod", _unprotect(BUCKET, f"{prefix}-bucket"), "stateful-resources-protected"),
        f"an unprotected key{which}": ("prod", _unprotect(KMS_KEY, f"{prefix}-key"), "stateful-resources-protected"),
        f"KMS rotation off{which}": ("prod", lambda p: edit(p, KMS_KEY, f"{prefix}-key", _set("enableKeyRotation", False)),
                                     "kms-key-rotation-enabled"),
    }


MUTATIONS: dict[str, tuple[str, Mutation, str]] = {
    # every bucket rule, for the registry's bucket (two of the ten the issue names) and for its DR replica
    **_bucket_cases(REGISTRY, ""),
    **_bucket_cases(DR, " (DR replica)"),
    # each bucket must get its own companion; the registry's does not count for the replica's
    "the DR bucket's versioning pointed at the registry bucket": ("prod", lambda p: edit(
        p, BUCKET_VERSIONING, f"{DR}-versioning", _set("bucket", _bucket_name(p, REGISTRY))),
        "s3-bucket-versioning-enabled"),
    "the DR bucket policy guarding the registry bucket": ("prod", lambda p: edit(
        p, BUCKET_POLICY, f"{DR}-tls-only", _statement("DenyInsecureTransport", lambda s: s.update(Resource=[
            _bucket_arn(p, REGISTRY), f"{_bucket_arn(p, REGISTRY)}/*"]))), "s3-tls-only-bucket-policy"),
    # the other eight the issue names (and the debug port reached through the Ingress)
    "a wildcard IAM action": ("prod", lambda p: edit(p, ROLE_POLICY, REGISTRY_ACCESS, _statement(
        "RegistryObjects", lambda s: s["Action"].append("s3:*"))), "iam-no-wildcards"),
    "a root container": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i)[
        "securityContext"].update(runAsUser=0)), "workload-pod-security-restricted"),
    "a latest image": ("prod", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i).update(
        image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform/docker-registry:latest")), "workload-image-pinned"),
    "a missing NetworkPolicy": ("staging", lambda p: remove_all(p, NETWORK_POLICY), "network-default-deny-selects-registry"),
    "a password in Consul KV": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, CONSUL_KV, _kv_add(
        "env/REGISTRY_REDIS_OPTIONS_PASSWORD", "correct-horse-battery")), "consul-kv-no-plaintext-secrets"),
    "filesystem with two replicas": ("staging", lambda p: edit(p, STS, STATEFULSET, _set("spec", "replicas", 2)),
                                     "registry-filesystem-single-replica"),
    "a Vault policy with write": ("prod", lambda p: edit(p, VAULT_POLICY, VAULT_POLICY_NAME, lambda i: i.update(
        policy=i["policy"].replace('["read"]', '["read", "create", "update"]'))), "vault-policy-read-only"),
    "the debug port on the client Service": ("prod", lambda p: edit(p, SERVICE, "registry-service", lambda i: i[
        "spec"]["ports"].append({"name": "debug", "port": 5001, "targetPort": "debug", "protocol": "TCP"})),
        "registry-debug-port-not-on-client-service"),
    "the debug port behind the Ingress": ("prod", lambda p: edit(p, INGRESS, "registry-network-ingress",
                                                                 _route_first_path_to({"number": 5001})),
                                          "registry-debug-port-not-on-client-service"),
    # one for every other rule
    "the role reaching another bucket": ("prod", lambda p: edit(p, ROLE_POLICY, REGISTRY_ACCESS, _statement(
        "RegistryBucket", lambda s: s.update(Resource="arn:aws:s3:::someone-elses-bucket"))),
        "iam-registry-role-scoped"),
    "no memory limit": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i)["resources"][
        "limits"].pop("memory")), "workload-resources-set"),
    "no liveness probe": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i).pop("livenessProbe")),
                          "workload-probes-set"),
    "service links on": ("staging", lambda p: edit(p, STS, STATEFULSET, _set(
        "spec", "template", "spec", "enableServiceLinks", True)), "workload-service-links-disabled"),
    "replicas without a shared HTTP secret": ("prod", lambda p: edit(p, CONSUL_KEY_PREFIX, CONSUL_KV, _kv_drop(
        "env/REGISTRY_HTTP_SECRET")), "registry-shared-http-secret"),
    "only allow rules, no default deny": ("prod", lambda p: remove(p, NETWORK_POLICY, "registry-network-default-deny"),
                                          "network-default-deny-selects-registry"),
    "a NetworkPolicy admitting 0.0.0.0/0": ("staging", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-clients",
                                                                    _admit_the_internet), "network-no-open-cidr"),
    "a Consul key outside the registry prefix": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, CONSUL_KV, _set(
        "pathPrefix", "config/registry/staging/")), "consul-kv-registry-prefix"),
    "a KeyPrefix owning every environment's keys": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, CONSUL_KV, _set(
        "pathPrefix", "registry/")), "consul-kv-registry-prefix"),
    "an auth role bound to two service accounts": ("prod", lambda p: edit(p, VAULT_ROLE, VAULT_ROLE_NAME, _set(
        "boundServiceAccountNames", ["registry", "default"])), "vault-kubernetes-role-single-binding"),
    "an auth role bound to every namespace": ("staging", lambda p: edit(p, VAULT_ROLE, VAULT_ROLE_NAME, _set(
        "boundServiceAccountNamespaces", ["*"])), "vault-kubernetes-role-single-binding"),
    # the GC and replication roles: the IAM rules apply to every role, not only the registry's
    "a wildcard action for the GC role": ("prod", lambda p: edit(p, ROLE_POLICY, GC_ACCESS, _statement(
        "RegistryObjects", lambda s: s.update(Action="s3:*"))), "iam-no-wildcards"),
    "a wildcard action for the replication role": ("prod", lambda p: edit(p, ROLE_POLICY, REPLICATION_ACCESS, _statement(
        "ReplicaObjects", lambda s: s["Action"].append("s3:Replicate*"))), "iam-no-wildcards"),
    "the GC role reaching a foreign bucket": ("prod", lambda p: edit(p, ROLE_POLICY, GC_ACCESS, _statement(
        "RegistryObjects", lambda s: s.update(Resource="arn:aws:s3:::someone-elses-bucket/*"))),
        "iam-registry-role-scoped"),
    "the registry role reaching the DR bucket": ("prod", lambda p: edit(p, ROLE_POLICY, REGISTRY_ACCESS, _statement(
        "RegistryObjects", lambda s: s.update(Resource=[s["Resource"], f"{_bucket_arn(p, DR)}/*"]))),
        "iam-registry-role-scoped"),
    "the GC role reaching the DR key": ("prod", lambda p: edit(p, ROLE_POLICY, GC_ACCESS, _statement(
        "RegistryKmsKey", lambda s: s.update(Resource=[s["Resource"], _key_arn(p, DR)]))), "iam-registry-role-scoped"),
    "the replication role replicating to a foreign bucket": ("prod", lambda p: edit(
        p, ROLE_POLICY, REPLICATION_ACCESS, _statement("ReplicaObjects", lambda s: s.update(
            Resource="arn:aws:s3:::someone-elses-bucket/*"))), "iam-registry-role-scoped"),
    # the garbage-collection CronJob (components/operations.py): the workload rules reach its pod template
    "a root GC CronJob": ("prod", lambda p: edit(p, CRON_JOB, GC_CRONJOB, lambda i: _job_container(i)[
        "securityContext"].update(runAsUser=0)), "workload-pod-security-restricted"),
    "a GC CronJob without a memory limit": ("staging", lambda p: edit(p, CRON_JOB, GC_CRONJOB, lambda i: _job_container(
        i)["resources"]["limits"].pop("memory")), "workload-resources-set"),
    # the operations jobs' RBAC (components/operations.py)
    "the GC Role deleting any pod": ("staging", lambda p: edit(p, K8S_ROLE, "registry-operations-gc-role", lambda i: [
        rule.pop("resourceNames") for rule in i["rules"] if "delete" in rule["verbs"]]),
        "rbac-registry-roles-least-privilege"),
    "a wildcard verb in the snapshot Role": ("staging", lambda p: edit(p, K8S_ROLE, "registry-operations-snapshot-role",
                                                                     _set("rules", 0, "verbs", ["*"])),
                                             "rbac-registry-roles-least-privilege"),
    "the GC service account bound to cluster-admin": ("prod", lambda p: edit(
        p, ROLE_BINDING, "registry-operations-gc-role-binding", _set("roleRef", {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"})),
        "rbac-registry-roles-least-privilege"),
    "a GC pod outside the registry's default deny": ("staging", lambda p: edit(p, CRON_JOB, GC_CRONJOB, lambda i: i[
        "spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"].update({
            "app.kubernetes.io/instance": "registry-gc-staging"})), "network-default-deny-selects-registry"),
    "no PrometheusRule": ("prod", lambda p: remove_all(p, PROMETHEUS_RULE), "prometheus-rule-required-alerts"),
    "an alert without runbook_url": ("staging", lambda p: edit(p, PROMETHEUS_RULE, ALERT_RULES, lambda i: i["spec"][
        "groups"][0]["rules"][0]["annotations"].pop("runbook_url")), "prometheus-rule-alert-metadata"),
}


def mutated(plans: dict[str, Plan], case: str) -> Plan:
    """A copy of the stack's recorded plan with the case's mutation applied (the recorded plan is shared)."""
    stack, mutation, _ = MUTATIONS[case]
    return mutation(copy.deepcopy(plans[stack]))


# --- the pack's checks, called directly -------------------------------------------------------


def as_resource(registration: Registration, outputs: bool = False) -> Resource:
    props = registration.outputs if outputs and registration.outputs else registration.inputs
    return Resource(type=registration.type, name=registration.name, urn=registration.urn,
                    props=plain(reveal(props)), protect=registration.protect, parent=registration.parent,
                    dependencies=tuple(registration.dependencies),
                    property_dependencies=dict(registration.property_dependencies))


def violations_by_policy(plan: Plan, policies: list) -> dict[str, list[str]]:
    """Run every policy's pure check on the plan (resource checks on inputs, stack checks on outputs)."""
    found: dict[str, list[str]] = {}
    resources = [r for r in plan.registrations if r.type != "pulumi:pulumi:Stack"]
    for policy in policies:
        config = config_defaults(policy)
        if isinstance(policy, StackValidationPolicy):
            findings = list(policy.check([as_resource(r, outputs=True) for r in resources], config))
        else:
            findings = [f for r in resources if r.type in policy.types for f in policy.check(as_resource(r), config)]
        messages = [f.message for f in findings if not isinstance(f, Unverifiable)]
        if messages:
            found[policy.name] = messages
    return found


__all__ = ["MUTATIONS", "UNKNOWN", "UNKNOWN_WIRE", "edit", "mutated", "violations_by_policy"]
