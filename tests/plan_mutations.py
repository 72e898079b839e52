"""Recorded plans broken on purpose, for testing the policy pack.

Every mutation edits (or drops) one resource the real program registers, named by its logical name:
prod holds two buckets (the registry's and its DR replica), two KMS keys, three IAM roles, and each
stack two CronJobs and two Roles, so a mutation that picked "the" resource of a type would be
ambiguous. ``MUTATIONS`` maps a case name to (stack, mutation, the one policy expected to fire).
"""

from __future__ import annotations

import copy
import dataclasses
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
DR = "registry-storage-dr"  # the DR replica's bucket and companions
REGISTRY_ACCESS = "registry-storage-access"  # the registry role's policy
GC_ACCESS = "registry-storage-gc-access"
REPLICATION_ACCESS = "registry-storage-replication-access"
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


# --- what each resource grants or exposes (issue 12) -----------------------------------------------

IAM_ROLE = "aws:iam/role:Role"
ACL_POLICY = "consul:index/aclPolicy:AclPolicy"
CONFIG_ENTRY = "consul:index/configEntry:ConfigEntry"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
REGISTRY_ROLE = "registry-storage-role"
GC_ROLE = "registry-storage-gc-role"
REPLICATION_ROLE = "registry-storage-replication-role"
INTENTIONS = "registry-consul-service-intentions"
SERVICE_DEFAULTS = "registry-consul-service-defaults"
ACL = "registry-consul-acl-policy"
ACL_BINDING_RULE = "consul:index/aclBindingRule:AclBindingRule"
ACL_ROLE = "consul:index/aclRole:AclRole"
GC_BINDING_RULE = "registry-consul-gc-binding-rule"
FOREIGN_ACCOUNT = "210987654321"  # not the stacks' 123456789012
SNAPSHOT_CRONJOB = "registry-operations-snapshot-cronjob"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
INGRESS_NAME = "registry-network-ingress"
GC_K8S_ROLE = "registry-operations-gc-role"
SNAPSHOT_K8S_ROLE = "registry-operations-snapshot-role"
GC_BINDING = "registry-operations-gc-role-binding"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
RANDOM_BYTES = "random:index/randomBytes:RandomBytes"
VAULT_SECRET = "vault:kv/secretV2:SecretV2"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"


def _pod_spec(inputs: dict) -> dict:
    return inputs["spec"]["template"]["spec"]


def _job_spec(inputs: dict) -> dict:
    return inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _trust(change: Callable[[dict], Any]) -> Callable[[dict], None]:
    """Edit the (only) statement of a role's trust policy."""
    return _json_edit("assumeRolePolicy", lambda document: change(document["Statement"][0]))


def _trust_everyone(statement: dict) -> None:
    statement.update(Principal={"AWS": "*"}, Action="sts:AssumeRole")
    statement.pop("Condition")


def _claims(statement: dict) -> dict:
    return statement["Condition"]["StringEquals"]


def _sub_key(statement: dict) -> str:
    return next(key for key in _claims(statement) if key.endswith(":sub"))


def _sub_pattern(statement: dict) -> None:
    key = _sub_key(statement)
    statement["Condition"]["StringLike"] = {key: "system:serviceaccount:cicd:*"}
    del _claims(statement)[key]


def _foreign_provider(statement: dict) -> None:
    statement["Principal"]["Federated"] = statement["Principal"]["Federated"].replace("123456789012", FOREIGN_ACCOUNT)


def _add_statement(statement: dict) -> Callable[[dict], None]:
    return _json_edit("policy", lambda document: document["Statement"].append(statement))


def _bucket_grant(principal: Any, prefix: str) -> Callable[[Plan], Plan]:
    def apply(plan: Plan) -> Plan:
        return edit(plan, BUCKET_POLICY, f"{prefix}-tls-only", _add_statement({
            "Sid": "ReadImages", "Effect": "Allow", "Principal": principal, "Action": "s3:GetObject",
            "Resource": f"{_bucket_arn(plan, prefix)}/*"}))
    return apply


def _key_policy(principal: Any) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        props["policy"] = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Sid": "EnableIamPolicies", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "Use", "Effect": "Allow", "Principal": principal,
             "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*"}]})
    return apply


def _foreign_key(props: dict) -> None:
    default = props["rules"][0]["applyServerSideEncryptionByDefault"]
    default["kmsMasterKeyId"] = default["kmsMasterKeyId"].replace("123456789012", FOREIGN_ACCOUNT)


def _foreign_replica_key(props: dict) -> None:
    encryption = props["rules"][0]["destination"]["encryptionConfiguration"]
    encryption["replicaKmsKeyId"] = encryption["replicaKmsKeyId"].replace("123456789012", FOREIGN_ACCOUNT)


def _config_json(change: Callable[[dict], Any]) -> Callable[[dict], None]:
    return _json_edit("configJson", change)


def _everyone_allowed(body: dict) -> None:
    wildcard = next(source for source in body["Sources"] if source["Name"] == "*")
    wildcard.update(Action="allow", Description="everyone")


def _no_wildcard_deny(body: dict) -> None:
    body["Sources"] = [source for source in body["Sources"] if source["Name"] != "*"]


def _acl_rules(extra: str) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        props["rules"] += extra
    return apply


def _drop_auth(props: dict) -> None:
    for key in [k for k in props["subkeys"] if k.startswith("env/REGISTRY_AUTH")]:
        del props["subkeys"][key]


def _vault_policy(extra: str = "", replace: tuple[str, str] = ("", "")) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        if replace[0] and replace[0] not in props["policy"]:
            raise LookupError(f"{replace[0]!r} is not in the Vault policy")
        props["policy"] = props["policy"].replace(*replace) + extra
    return apply


# Nested braces hid this block from the pack's former regular expression; HCL sees it.
SUDO_BEHIND_A_MAP = 'path "sys/*" {\n  allowed_parameters = {\n    "*" = []\n  }\n  capabilities = ["sudo", "update"]\n}\n'

# case -> (stack, mutation, the one policy expected to fire, a phrase its message must contain)
GRANT_CASES: dict[str, tuple[str, Mutation, str, str]] = {
    # IAM trust, attachments, history
    "a role trusting every AWS principal": ("prod", lambda p: edit(p, IAM_ROLE, REGISTRY_ROLE, _trust(
        _trust_everyone)), "iam-role-trust-bound", "trusts every AWS principal"),
    "a GC role trust without a :sub condition": ("prod", lambda p: edit(p, IAM_ROLE, GC_ROLE, _trust(
        lambda s: _claims(s).pop(_sub_key(s)))), "iam-role-trust-bound", "every service account of the cluster"),
    "a trust matching service accounts by pattern": ("prod", lambda p: edit(p, IAM_ROLE, REGISTRY_ROLE, _trust(
        _sub_pattern)), "iam-role-trust-bound", "StringLike"),
    "a trust bound to the wrong service account": ("prod", lambda p: edit(p, IAM_ROLE, GC_ROLE, _trust(
        lambda s: _claims(s).update({_sub_key(s): "system:serviceaccount:cicd:registry"}))),
        "iam-role-trust-bound", "system:serviceaccount:cicd:registry-gc"),
    "the OIDC provider of another account": ("prod", lambda p: edit(p, IAM_ROLE, REGISTRY_ROLE, _trust(
        _foreign_provider)), "iam-role-trust-bound", f"account {FOREIGN_ACCOUNT}"),
    "the replication role trusted by EC2": ("prod", lambda p: edit(p, IAM_ROLE, REPLICATION_ROLE, _trust(
        lambda s: s["Principal"].update(Service="ec2.amazonaws.com"))), "iam-role-trust-bound", "ec2.amazonaws.com"),
    "an AWS-managed policy on the registry role": ("prod", lambda p: edit(p, IAM_ROLE, REGISTRY_ROLE, _set(
        "managedPolicyArns", ["arn:aws:iam::aws:policy/AmazonS3FullAccess"])), "iam-no-foreign-managed-policies",
        "AWS-managed policy 'arn:aws:iam::aws:policy/AmazonS3FullAccess'"),
    "an inline wildcard policy on the GC role": ("prod", lambda p: edit(p, IAM_ROLE, GC_ROLE, lambda i: i.update(
        inlinePolicies=[{"name": "read-all", "policy": json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "s3:Get*", "Resource": f"{_bucket_arn(p, REGISTRY)}/*"}]})}])),
        "iam-no-wildcards", "inlinePolicies[0].policy"),
    "the GC role deleting object versions": ("prod", lambda p: edit(p, ROLE_POLICY, GC_ACCESS, _statement(
        "RegistryObjects", lambda s: s["Action"].append("s3:DeleteObjectVersion"))),
        "iam-no-history-destroying-actions", "s3:DeleteObjectVersion"),
    "the registry role suspending versioning": ("prod", lambda p: edit(p, ROLE_POLICY, REGISTRY_ACCESS, _statement(
        "RegistryBucket", lambda s: s["Action"].append("s3:PutBucketVersioning"))),
        "iam-no-history-destroying-actions", "suspend versioning"),
    "the registry role deleting its key": ("prod", lambda p: edit(p, ROLE_POLICY, REGISTRY_ACCESS, _statement(
        "RegistryKmsKey", lambda s: s["Action"].append("kms:ScheduleKeyDeletion"))),
        "iam-no-history-destroying-actions", "kms:ScheduleKeyDeletion"),
    # S3 and KMS resource policies, lifecycle, force destroy, whose key
    "a bucket granted to another account": ("prod", _bucket_grant(
        {"AWS": f"arn:aws:iam::{FOREIGN_ACCOUNT}:root"}, REGISTRY), "s3-bucket-policy-allows-nothing",
        f"another account ({FOREIGN_ACCOUNT})"),
    "a public DR bucket": ("prod", _bucket_grant("*", DR), "s3-bucket-policy-allows-nothing", "everyone ('*')"),
    "a key policy open to *": ("prod", lambda p: edit(p, KMS_KEY, f"{REGISTRY}-key", _key_policy("*")),
                               "kms-key-policy-own-account", "to everyone ('*')"),
    "a DR key policy granting another account": ("prod", lambda p: edit(p, KMS_KEY, f"{DR}-key", _key_policy(
        {"AWS": f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/reader"})), "kms-key-policy-own-account",
        f"another account ({FOREIGN_ACCOUNT})"),
    "a lifecycle expiring current versions": ("prod", lambda p: edit(p, LIFECYCLE, f"{REGISTRY}-lifecycle", _set(
        "rules", 0, "expiration", {"days": 90})), "s3-lifecycle-keeps-current-versions", "expires current object versions"),
    "noncurrent versions kept one day": ("prod", lambda p: edit(p, LIFECYCLE, f"{DR}-lifecycle", _set(
        "rules", 0, "noncurrentVersionExpiration", "noncurrentDays", 1)), "s3-lifecycle-keeps-current-versions",
        "after 1 days"),
    "forceDestroy on the registry bucket": ("prod", lambda p: edit(p, BUCKET, f"{REGISTRY}-bucket", _set(
        "forceDestroy", True)), "s3-bucket-no-force-destroy", "forceDestroy"),
    "encryption with another account's key": ("prod", lambda p: edit(p, ENCRYPTION, f"{REGISTRY}-encryption",
                                                                     _foreign_key), "s3-encrypted-with-own-key",
                                              f"a key of account {FOREIGN_ACCOUNT}"),
    "the replica encrypted with another account's key": ("prod", lambda p: edit(
        p, REPLICATION, "registry-storage-replication", _foreign_replica_key), "s3-encrypted-with-own-key",
        "replicaKmsKeyId"),
    # Consul
    "an intention admitting every service": ("staging", lambda p: edit(p, CONFIG_ENTRY, INTENTIONS, _config_json(
        _everyone_allowed)), "consul-intentions-deny-by-default", "Name='*'"),
    "intentions without a * deny": ("prod", lambda p: edit(p, CONFIG_ENTRY, INTENTIONS, _config_json(
        _no_wildcard_deny)), "consul-intentions-deny-by-default", "default intention is allow"),
    "permissive mTLS for the registry": ("prod", lambda p: edit(p, CONFIG_ENTRY, SERVICE_DEFAULTS, _config_json(
        lambda body: body.update(MutualTLSMode="permissive"))), "consul-mesh-strict-mtls", "permissive"),
    "an ACL policy with operator write": ("prod", lambda p: edit(p, ACL_POLICY, ACL, _acl_rules(
        'operator = "write"\n')), "consul-acl-policy-least-privilege", "operator = 'write'"),
    "an ACL policy writing the whole KV folder": ("staging", lambda p: edit(p, ACL_POLICY, ACL, _acl_rules(
        'key_prefix "registry/staging/" {\n  policy = "write"\n}\n')), "consul-acl-policy-least-privilege",
        "write on every key under registry/staging/"),
    "an ACL policy reading every KV key": ("prod", lambda p: edit(p, ACL_POLICY, ACL, _acl_rules(
        'key_prefix "" {\n  policy = "read"\n}\n')), "consul-acl-policy-least-privilege", "outside the registry's folder"),
    "an ACL policy registering any service": ("prod", lambda p: edit(p, ACL_POLICY, ACL, _acl_rules(
        'service_prefix "" {\n  policy = "write"\n}\n')), "consul-acl-policy-least-privilege", "act as any service"),
    "an anonymous registry": ("prod", lambda p: edit(p, CONSUL_KEY_PREFIX, CONSUL_KV, _drop_auth),
                              "registry-auth-required", "anonymously"),
    "silly auth": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, CONSUL_KV, _set("subkeys", "env/REGISTRY_AUTH",
                                                                                  "silly")),
                   "registry-auth-required", "REGISTRY_AUTH='silly'"),
    "token auth without its root certificates": ("prod", lambda p: edit(p, CONSUL_KEY_PREFIX, CONSUL_KV, _kv_drop(
        "env/REGISTRY_AUTH_TOKEN_JWKS")), "registry-auth-required", "REGISTRY_AUTH_TOKEN_JWKS"),
    # Vault
    "sudo hidden behind a map in the Vault policy": ("prod", lambda p: edit(p, VAULT_POLICY, VAULT_POLICY_NAME,
                                                                            _vault_policy(SUDO_BEHIND_A_MAP)),
                                                     "vault-policy-read-only", "'sys/*' grants ['sudo', 'update']"),
    "write through the policy shorthand": ("staging", lambda p: edit(p, VAULT_POLICY, VAULT_POLICY_NAME, _vault_policy(
        replace=('capabilities = ["read"]', 'policy = "write"'))), "vault-policy-read-only", "'create'"),
    "a Vault token max TTL of a day": ("prod", lambda p: edit(p, VAULT_ROLE, VAULT_ROLE_NAME, _set(
        "tokenMaxTtl", 86400)), "vault-kubernetes-role-single-binding", "tokenMaxTtl is 86400"),
    "a Vault role admitting namespaces by label": ("prod", lambda p: edit(p, VAULT_ROLE, VAULT_ROLE_NAME, _set(
        "boundServiceAccountNamespaceSelector", '{"matchLabels": {"team": "ci"}}')),
        "vault-kubernetes-role-single-binding", "boundServiceAccountNamespaceSelector"),
    "periodic Vault tokens": ("staging", lambda p: edit(p, VAULT_ROLE, VAULT_ROLE_NAME, _set("tokenPeriod", 3600)),
                              "vault-kubernetes-role-single-binding", "renewable forever"),
    "the Vault default policy": ("prod", lambda p: edit(p, VAULT_ROLE, VAULT_ROLE_NAME, _set(
        "tokenNoDefaultPolicy", False)), "vault-kubernetes-role-single-binding", "tokenNoDefaultPolicy: true"),
    "a Vault role granting a policy defined elsewhere": ("prod", lambda p: edit(p, VAULT_ROLE, VAULT_ROLE_NAME, lambda i: i[
        "tokenPolicies"].append("admin")), "vault-role-policies-defined", "'admin'"),
    # Kubernetes: the whole Pod Security "restricted" profile, baseline's bans included
    **{name: (stack, mutation, "workload-pod-security-restricted", phrase) for name, (stack, mutation, phrase) in {
        "a registry pod on the host network": ("staging", lambda p: edit(p, STS, STATEFULSET, _set(
            "spec", "template", "spec", "hostNetwork", True)), "hostNetwork is true"),
        "a snapshot pod in the host PID namespace": ("staging", lambda p: edit(p, CRON_JOB, SNAPSHOT_CRONJOB, _set(
            "spec", "jobTemplate", "spec", "template", "spec", "hostPID", True)), "hostPID is true"),
        "the docker socket mounted into the GC pod": ("prod", lambda p: edit(p, CRON_JOB, GC_CRONJOB, lambda i: _job_spec(
            i)["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})), "hostPath volume"),
        "an NFS volume": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _pod_spec(i)["volumes"].append(
            {"name": "shared", "nfs": {"server": "nfs.example.com", "path": "/registry"}})), "of type ['nfs']"),
        "a hostPort on the registry": ("prod", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i)["ports"][
            0].update(hostPort=5000)), "hostPort 5000"),
        # Unmasked needs a user namespace (hostUsers: false), or the API server refuses it before Pod Security
        "an unmasked /proc": ("prod", lambda p: edit(p, STS, STATEFULSET, lambda i: (_pod_spec(i).update(
            hostUsers=False), _container(i)["securityContext"].update(procMount="Unmasked"))), "procMount 'Unmasked'"),
        "an unsafe sysctl": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _pod_spec(i)[
            "securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "65536"}])), "'kernel.msgmax'"),
        "AppArmor unconfined by annotation": ("prod", lambda p: edit(p, STS, STATEFULSET, lambda i: i["spec"][
            "template"]["metadata"]["annotations"].update({
                "container.apparmor.security.beta.kubernetes.io/registry": "unconfined"})), "AppArmor must be"),
        "AppArmor unconfined in the GC job": ("prod", lambda p: edit(p, CRON_JOB, GC_CRONJOB, lambda i: _job_container(
            i)["securityContext"].update(appArmorProfile={"type": "Unconfined"})), "appArmorProfile 'Unconfined'"),
        "a privileged SELinux type": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _pod_spec(i)[
            "securityContext"].update(seLinuxOptions={"type": "spc_t"})), "SELinux type 'spc_t'"),
        "an SELinux user": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i)[
            "securityContext"].update(seLinuxOptions={"user": "system_u"})), "SELinux user 'system_u'"),
        "SYS_ADMIN added to the GC tools": ("staging", lambda p: edit(p, CRON_JOB, GC_CRONJOB, lambda i: _job_spec(i)[
            "initContainers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])), "['SYS_ADMIN']"),
        "a privileged registry container": ("prod", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i)[
            "securityContext"].update(privileged=True)), "is privileged"),
        "seccomp unconfined for the pod": ("prod", lambda p: edit(p, STS, STATEFULSET, lambda i: _pod_spec(i)[
            "securityContext"].update(seccompProfile={"type": "Unconfined"})), "seccompProfile Unconfined"),
        "root for the pod, containers overriding": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _pod_spec(
            i)["securityContext"].update(runAsUser=0)), "spec.securityContext runs as root"),
        "a Windows host process": ("prod", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i)[
            "securityContext"].update(windowsOptions={"hostProcess": True})), "hostProcess"),
    }.items()},
    # Kubernetes: Services, Ingress, secrets in manifests
    "a LoadBalancer registry Service": ("prod", lambda p: edit(p, SERVICE, "registry-service", _set(
        "spec", "type", "LoadBalancer")), "kubernetes-service-not-exposed", "type LoadBalancer"),
    "a NodePort metrics Service": ("staging", lambda p: edit(p, SERVICE, "registry-monitoring-metrics-service", lambda i: i[
        "spec"].update(type="NodePort", clusterIP=None)), "kubernetes-service-not-exposed", "type NodePort"),
    "externalIPs on the registry Service": ("staging", lambda p: edit(p, SERVICE, "registry-service", _set(
        "spec", "externalIPs", ["203.0.113.10"])), "kubernetes-service-not-exposed", "externalIPs"),
    "an Ingress without TLS": ("prod", lambda p: edit(p, INGRESS, INGRESS_NAME, lambda i: i["spec"].pop("tls")),
                               "kubernetes-ingress-tls-and-source-ranges", "without TLS"),
    "an Ingress without source ranges": ("prod", lambda p: edit(p, INGRESS, INGRESS_NAME, lambda i: i["metadata"][
        "annotations"].pop("nginx.ingress.kubernetes.io/whitelist-source-range")),
        "kubernetes-ingress-tls-and-source-ranges", "restricts no source ranges"),
    "an Ingress open to half the internet twice": ("prod", lambda p: edit(p, INGRESS, INGRESS_NAME, lambda i: i[
        "metadata"]["annotations"].update({"nginx.ingress.kubernetes.io/whitelist-source-range": "0.0.0.0/1,128.0.0.0/1"})),
        "kubernetes-ingress-tls-and-source-ranges", "internet addresses"),
    "an Ingress answering any host": ("prod", lambda p: edit(p, INGRESS, INGRESS_NAME, lambda i: i["spec"]["rules"][
        0].pop("host")), "kubernetes-ingress-tls-and-source-ranges", "without a host"),
    "an Ingress serving plain HTTP too": ("prod", lambda p: edit(p, INGRESS, INGRESS_NAME, lambda i: i["metadata"][
        "annotations"].update({"nginx.ingress.kubernetes.io/ssl-redirect": "false"})),
        "kubernetes-ingress-tls-and-source-ranges", "ssl-redirect: false"),
    "a configuration snippet on the Ingress": ("prod", lambda p: edit(p, INGRESS, INGRESS_NAME, lambda i: i["metadata"][
        "annotations"].update({"nginx.ingress.kubernetes.io/server-snippet": "allow all;"})),
        "kubernetes-ingress-tls-and-source-ranges", "server-snippet"),
    "a password in the GC ConfigMap": ("prod", lambda p: edit(p, CONFIG_MAP, "registry-operations-gc-script", lambda i: i[
        "data"].update({"probe-password": "correct-horse-battery"})), "kubernetes-no-secrets-in-manifests",
        "probe-password names a secret"),
    "a private key in a ConfigMap": ("staging", lambda p: edit(p, CONFIG_MAP, "registry-operations-snapshot-script", lambda i: i[
        "data"].update({"tls.pem": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n"})),
        "kubernetes-no-secrets-in-manifests", "a PEM private key"),
    "the HTTP secret as a literal env value": ("staging", lambda p: edit(p, STS, STATEFULSET, lambda i: _container(i)[
        "env"].append({"name": "REGISTRY_HTTP_SECRET", "value": "a-long-shared-secret-for-all-pods"})),
        "kubernetes-no-secrets-in-manifests", "REGISTRY_HTTP_SECRET names a secret"),
    # Kubernetes RBAC
    "the GC role reading every secret": ("staging", lambda p: edit(p, K8S_ROLE, GC_K8S_ROLE, lambda i: i["rules"].append(
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]})), "rbac-no-sensitive-grants",
        "on secrets (all of them)"),
    "exec into the registry pods": ("prod", lambda p: edit(p, K8S_ROLE, GC_K8S_ROLE, lambda i: i["rules"].append(
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]})), "rbac-no-sensitive-grants", "pods/exec"),
    "token creation for the snapshot job": ("staging", lambda p: edit(p, K8S_ROLE, SNAPSHOT_K8S_ROLE, lambda i: i[
        "rules"].append({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]})),
        "rbac-no-sensitive-grants", "serviceaccounts/token"),
    "the GC role creating pods": ("prod", lambda p: edit(p, K8S_ROLE, GC_K8S_ROLE, lambda i: i["rules"].append(
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]})), "rbac-no-sensitive-grants",
        "['create'] on ['jobs']"),
    "a binding to every authenticated user": ("staging", lambda p: edit(p, ROLE_BINDING, GC_BINDING, lambda i: i[
        "subjects"].append({"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"})),
        "rbac-no-broad-subjects", "'system:authenticated'"),
    "a binding to every service account of the namespace": ("prod", lambda p: edit(p, ROLE_BINDING, GC_BINDING, _set(
        "subjects", [{"kind": "Group", "name": "system:serviceaccounts:cicd", "apiGroup": "rbac.authorization.k8s.io"}])),
        "rbac-no-broad-subjects", "'system:serviceaccounts:cicd'"),
    # Network
    "a half-internet CIDR pair": ("staging", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-clients", lambda i: i[
        "spec"]["ingress"][0]["from"].extend([{"ipBlock": {"cidr": "0.0.0.0/1"}}, {"ipBlock": {"cidr": "128.0.0.0/1"}}])),
        "network-no-open-cidr", "together admit internet addresses"),
    "two policies adding up to the internet": ("prod", lambda p: edit(edit(
        p, NETWORK_POLICY, "registry-network-allow-clients", lambda i: i["spec"]["ingress"][0]["from"].append(
            {"ipBlock": {"cidr": "0.0.0.0/1"}})), NETWORK_POLICY, "registry-network-allow-metrics", lambda i: i["spec"][
                "ingress"][0]["from"].append({"ipBlock": {"cidr": "128.0.0.0/1"}})),
        "network-no-open-cidr", "0.0.0.0/1, 10.60.0.0/16"),
    "an egress range on the internet": ("prod", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-egress", lambda i: i[
        "spec"]["egress"][3]["to"].append({"ipBlock": {"cidr": "52.0.0.0/8"}})), "network-no-open-cidr",
        "egress ipBlocks"),
    "two private /12s adding up past maxAddresses": ("prod", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-clients",
                                                                          lambda i: i["spec"]["ingress"][0]["from"].extend(
                                                                              [{"ipBlock": {"cidr": "10.64.0.0/12"}},
                                                                               {"ipBlock": {"cidr": "10.80.0.0/12"}}])),
                                                      "network-no-open-cidr", "more than maxAddresses"),
    "all of 10.0.0.0/8 as clients": ("staging", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-clients", lambda i: i[
        "spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "10.0.0.0/8"}})), "network-no-open-cidr",
        "more than maxAddresses"),
    "metrics from every namespace": ("prod", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-metrics", _set(
        "spec", "ingress", 0, "from", 0, {"namespaceSelector": {}})), "network-peers-scoped", "namespaceSelector is empty"),
    "clients from every pod of the namespace": ("staging", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-clients",
                                                                          lambda i: i["spec"]["ingress"][0]["from"].append(
                                                                              {"podSelector": {}})),
                                                "network-peers-scoped", "podSelector is empty"),
    "clients from every namespace but one": ("prod", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-clients",
                                                                    _set("spec", "ingress", 0, "from", 0, "namespaceSelector",
                                                                         {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                                                                                "operator": "NotIn",
                                                                                                "values": ["kube-system"]}]})),
                                             "network-peers-scoped", "uses NotIn"),
    "egress to every port of the storage endpoint": ("prod", lambda p: edit(p, NETWORK_POLICY, "registry-network-allow-egress",
                                                                            lambda i: i["spec"]["egress"][3].pop("ports")),
                                                     "network-peers-scoped", "lists no ports"),
    # the remaining resource types: generated secrets, Vault secrets, service accounts, replication
    "an 8-character HTTP secret": ("staging", lambda p: edit(p, RANDOM_PASSWORD, "registry-secrets-http-secret", _set(
        "length", 8)), "random-secrets-strong", "generates 8 characters"),
    "a 4-byte bcrypt salt": ("prod", lambda p: edit(p, RANDOM_BYTES, "registry-secrets-ci-runner-salt", _set(
        "length", 4)), "random-secrets-strong", "generates 4 bytes"),
    "the registry's secret written over another team's": ("prod", lambda p: edit(
        p, VAULT_SECRET, "registry-secrets-secret", _set("name", "platform/shared")), "vault-secrets-own-paths",
        "secret/platform/shared is outside"),
    "a Vault secret deleting its history": ("staging", lambda p: edit(p, VAULT_SECRET, "registry-secrets-secret", _set(
        "deleteAllVersions", True)), "vault-secrets-own-paths", "deleteAllVersions"),
    "a service account automounting its token": ("staging", lambda p: edit(
        p, SERVICE_ACCOUNT, "registry-service-account", _set("automountServiceAccountToken", True)),
        "kubernetes-service-account-no-automount", "mounts its API token"),
    "replication to another account's bucket": ("prod", lambda p: edit(p, REPLICATION, "registry-storage-replication",
                                                                        lambda i: i["rules"][0]["destination"].update(
                                                                            bucket="arn:aws:s3:::someone-elses-bucket",
                                                                            account=FOREIGN_ACCOUNT)),
                                                 "s3-replication-to-own-bucket", f"of account {FOREIGN_ACCOUNT}"),
    "replication through a role outside the stack": ("prod", lambda p: edit(
        p, REPLICATION, "registry-storage-replication", _set("role", f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/copier")),
        "s3-replication-to-own-bucket", "does not manage"),
    "a Consul login for every service account": ("prod", lambda p: edit(p, ACL_BINDING_RULE, GC_BINDING_RULE, _set(
        "selector", 'serviceaccount.namespace=="cicd"')), "consul-acl-logins-scoped", "more than one service account"),
    "a Consul login choosing its own service name": ("staging", lambda p: edit(p, ACL_BINDING_RULE, GC_BINDING_RULE, lambda i: i.update(
        bindType="service", bindName="${serviceaccount.name}")), "consul-acl-logins-scoped", "a name taken from the login"),
    "a Consul role holding global-management": ("prod", lambda p: edit(p, ACL_ROLE, "registry-consul-gc-acl-role", lambda i: i[
        "policies"].append("00000000-0000-0000-0000-000000000001")), "consul-acl-logins-scoped", "every right in the cluster"),
    "a PodDisruptionBudget selecting the GC job's pods": ("prod", lambda p: edit(p, PDB, "registry-pdb", lambda i: i[
        "spec"]["selector"]["matchLabels"].pop("app.kubernetes.io/component")), "kubernetes-pdb-selects-its-workload",
        "CronJob registry-gc"),
    "a PodDisruptionBudget selecting nothing": ("staging", lambda p: edit(p, PDB, "registry-pdb", _set(
        "spec", "selector", "matchLabels", "app.kubernetes.io/name", "docker-registy")),
        "kubernetes-pdb-selects-its-workload", "protects nothing"),
    "a ServiceMonitor scraping every namespace": ("prod", lambda p: edit(p, SERVICE_MONITOR, "registry-monitoring-service-monitor",
                                                                         _set("spec", "namespaceSelector", {"any": True})),
                                                  "prometheus-service-monitor-scoped", "namespaceSelector.any"),
    "Prometheus's token sent to the registry": ("staging", lambda p: edit(p, SERVICE_MONITOR, "registry-monitoring-service-monitor",
                                                                        lambda i: i["spec"]["endpoints"][0].update(
                                                                            bearerTokenFile="/var/run/secrets/kubernetes.io/serviceaccount/token")),
                                                 "prometheus-service-monitor-scoped", "bearerTokenFile"),
    "the DR provider assuming a role of another account": ("prod", lambda p: edit(
        p, "pulumi:providers:aws", "registry-storage-dr-aws", _set("assumeRoles", json.dumps(
            [{"roleArn": f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/deployer"}]))), "aws-providers-own-account",
        f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/deployer"),
    "the registry's provider allowed into another account": ("prod", lambda p: edit(
        p, "pulumi:providers:aws", "registry-storage-aws", _set("allowedAccountIds", json.dumps([FOREIGN_ACCOUNT]))),
        "aws-providers-own-account", f"allows account '{FOREIGN_ACCOUNT}'"),
    # found by a second round of regressions written after the rules (see the report of issue 12)
    "the registry role creating grants on its key": ("prod", lambda p: edit(p, ROLE_POLICY, REGISTRY_ACCESS, _statement(
        "RegistryKmsKey", lambda s: s["Action"].append("kms:CreateGrant"))), "iam-no-delegating-actions",
        "kms:CreateGrant"),
    "a 7-day deletion window on the registry's key": ("prod", lambda p: edit(p, KMS_KEY, f"{REGISTRY}-key", _set(
        "deletionWindowInDays", 7)), "kms-key-deletion-window", "deletionWindowInDays is 7"),
    "the GC's Vault role bound to the default service account": ("prod", lambda p: edit(
        p, VAULT_ROLE, "registry-secrets-registry-gc-auth-role", _set("boundServiceAccountNames", ["default"])),
        "vault-role-bound-to-stack-account", "cicd/default"),
}

# --- the token service (components/token_service.py): the same rules reach its objects -----------------------

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
TOKEN = "registry-token-service"
TOKEN_DEPLOYMENT = f"{TOKEN}-deployment"
TOKEN_CASES: dict[str, tuple[str, Mutation, str, str]] = {
    "a root token service container": ("staging", lambda p: edit(p, DEPLOYMENT, TOKEN_DEPLOYMENT, lambda i: _container(
        i)["securityContext"].update(runAsUser=0)), "workload-pod-security-restricted", "runAsUser"),
    "a token service without a readiness probe": ("prod", lambda p: edit(p, DEPLOYMENT, TOKEN_DEPLOYMENT, lambda i: _container(
        i).pop("readinessProbe")), "workload-probes-set", "readinessProbe"),
    "a token service image from Docker Hub": ("prod", lambda p: edit(p, DEPLOYMENT, TOKEN_DEPLOYMENT, lambda i: _container(
        i).update(image=f"docker.io/someone/token-service:1.0@sha256:{'d' * 64}")), "workload-image-pinned", "docker.io"),
    "a token service outside any default deny": ("staging", lambda p: remove(p, NETWORK_POLICY, f"{TOKEN}-default-deny"),
                                                 "network-default-deny-selects-registry", "Deployment registry-token-service"),
    "the token realm Ingress admitting everyone": ("prod", lambda p: edit(p, INGRESS, f"{TOKEN}-ingress", lambda i: i[
        "metadata"]["annotations"].update({"nginx.ingress.kubernetes.io/whitelist-source-range": "0.0.0.0/0"})),
        "kubernetes-ingress-tls-and-source-ranges", "admit internet addresses"),
    "the token service's ops port on its client Service": ("staging", lambda p: edit(p, SERVICE, f"{TOKEN}-service", lambda i: i[
        "spec"]["ports"].append({"name": "ops", "port": 5051, "targetPort": "ops", "protocol": "TCP"})),
        "registry-debug-port-not-on-client-service", "ops"),
    "the registry's Vault policy reading the signing keys": ("prod", lambda p: edit(p, VAULT_POLICY, VAULT_POLICY_NAME, _vault_policy(
        'path "secret/data/registry/prod/token-signing" {\n  capabilities = ["read"]\n}\n')),
        "vault-policy-read-only", "token-signing"),
    # (A client secret there is vault-client-secrets-only-for-stores' case: it fires for any policy.)
    "the token service's Vault policy reading another stack's signing key": ("staging", lambda p: edit(
        p, VAULT_POLICY, f"{TOKEN}-policy", _vault_policy(
            'path "secret/data/registry/prod/token-signing" {\n  capabilities = ["read"]\n}\n')),
        "vault-policy-read-only", "2 environments"),
    "the token service's KeyPrefix owning the registry's folder": ("staging", lambda p: edit(
        p, CONSUL_KEY_PREFIX, f"{TOKEN}-kv", _set("pathPrefix", "registry/staging/")), "consul-kv-registry-prefix",
        "registry/staging/"),
    "the token service's Consul token writing its settings": ("prod", lambda p: edit(p, ACL_POLICY, f"{TOKEN}-acl-policy", _acl_rules(
        'key_prefix "registry-token-service/prod/" {\n  policy = "write"\n}\n')), "consul-acl-policy-least-privilege",
        "grants write on every key"),
    "a token service without its alerts": ("staging", lambda p: remove(p, PROMETHEUS_RULE, f"{TOKEN}-rules"),
                                           "prometheus-rule-required-alerts", "token service down"),
}
MUTATIONS.update({case: (stack, mutation, expected) for case, (stack, mutation, expected, _) in GRANT_CASES.items()})
MUTATIONS.update({case: (stack, mutation, expected) for case, (stack, mutation, expected, _) in TOKEN_CASES.items()})
MESSAGES = {case: phrase for case, (_, _, _, phrase) in GRANT_CASES.items()}
# What the token cases' messages name (the grant or the object), without the grant cases' "; <fix>" form.
TOKEN_PHRASES = {case: phrase for case, (_, _, _, phrase) in TOKEN_CASES.items()}


# --- pull credentials (policies/rules/pull_credentials.py) ---------------------------------------------------
EXTERNAL_SECRET = "kubernetes:external-secrets.io/v1:ExternalSecret"
CLUSTER_SECRET_STORE = "kubernetes:external-secrets.io/v1:ClusterSecretStore"
PULL_CREDENTIALS = "registry-pull-credentials"


def _remote_keys(key: str) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        for reference in props["spec"]["data"]:
            reference["remoteRef"]["key"] = key
    return apply


def _plaintext_pull_secret(plan: Plan) -> Plan:
    """A dockerconfigjson Secret written into the plan itself, beside the ExternalSecret that should render it."""
    account = _find(plan, "kubernetes:core/v1:ServiceAccount", f"{PULL_CREDENTIALS}-service-account")
    secret = dataclasses.replace(
        account, type="kubernetes:core/v1:Secret", name=f"{PULL_CREDENTIALS}-plaintext",
        urn=account.urn.replace("kubernetes:core/v1:ServiceAccount", "kubernetes:core/v1:Secret")
        .replace("-service-account", "-plaintext"),
        inputs={"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "registry-pull", "namespace": "apps"},
                "stringData": {".dockerconfigjson": '{"auths":{"registry.staging.internal.example.com":'
                                                    '{"username":"cluster-pull","password":"hunter2hunter2"}}}'}})
    secret.outputs = copy.deepcopy(secret.inputs)
    plan.registrations.append(secret)
    return plan


PULL_CREDENTIAL_CASES: dict[str, tuple[str, Mutation, str, str]] = {
    "a pull Secret of type Opaque": ("staging", lambda p: edit(p, EXTERNAL_SECRET, f"{PULL_CREDENTIALS}-apps", _set(
        "spec", "target", "template", "type", "Opaque")), "pull-secret-from-pull-robot", "'Opaque'"),
    "the CI robot's credentials in a pull Secret": ("prod", lambda p: edit(
        p, EXTERNAL_SECRET, f"{PULL_CREDENTIALS}-batch", _remote_keys("registry/prod/clients/ci-runner")),
        "pull-secret-from-pull-robot", "'registry/prod/clients/ci-runner'"),
    "a pull Secret copying the registry's whole secret": ("staging", lambda p: edit(
        p, EXTERNAL_SECRET, f"{PULL_CREDENTIALS}-batch", _set("spec", "dataFrom", [{"extract": {"key": "registry/staging"}}])),
        "pull-secret-from-pull-robot", "dataFrom"),
    "a ClusterSecretStore without conditions": ("prod", lambda p: edit(
        p, CLUSTER_SECRET_STORE, f"{PULL_CREDENTIALS}-store", lambda i: i["spec"].pop("conditions")),
        "pull-credentials-store-scoped", "no conditions"),
    "a ClusterSecretStore admitting namespaces by label": ("staging", lambda p: edit(
        p, CLUSTER_SECRET_STORE, f"{PULL_CREDENTIALS}-store", _set("spec", "conditions", [
            {"namespaceSelector": {"matchLabels": {"team": "apps"}}}])), "pull-credentials-store-scoped", "namespaceSelector"),
    "the store reaching Vault over plain http": ("staging", lambda p: edit(
        p, CLUSTER_SECRET_STORE, f"{PULL_CREDENTIALS}-store", _set("spec", "provider", "vault", "server",
                                                                    "http://vault.vault.svc:8200")),
        "pull-credentials-store-scoped", "without TLS"),
    "the store's Vault policy reading the CI robot": ("prod", lambda p: edit(
        p, VAULT_POLICY, f"{PULL_CREDENTIALS}-policy", _vault_policy(replace=("/clients/cluster-pull", "/clients/ci-runner"))),
        "pull-credentials-store-reads-only-pull-robots", "clients/ci-runner"),
    "the store's Vault policy also reading the registry's secret": ("staging", lambda p: edit(
        p, VAULT_POLICY, f"{PULL_CREDENTIALS}-policy", _vault_policy(
            'path "secret/data/registry/staging" {\n  capabilities = ["read"]\n}\n')),
        "pull-credentials-store-reads-only-pull-robots", "'secret/data/registry/staging'"),
    "the store's Vault role bound to the registry's account": ("staging", lambda p: edit(
        p, VAULT_ROLE, f"{PULL_CREDENTIALS}-auth-role", _set("boundServiceAccountNames", ["registry"])),
        "pull-credentials-store-reads-only-pull-robots", "not to the store's own service account"),
    "the registry's Vault role granted the pull robot's policy": ("prod", lambda p: edit(
        p, VAULT_ROLE, "registry-secrets-auth-role", lambda i: i["tokenPolicies"].append(
            "registry-pull-credentials-prod")), "vault-client-secrets-only-for-stores", "registry-pull-credentials-prod"),
    "a plaintext dockerconfigjson Secret in the plan": ("staging", _plaintext_pull_secret,
                                                        "no-plaintext-kubernetes-secrets", "['stringData']"),
}
MUTATIONS.update({case: (stack, mutation, expected) for case, (stack, mutation, expected, _) in
                  PULL_CREDENTIAL_CASES.items()})
MESSAGES.update({case: phrase for case, (_, _, _, phrase) in PULL_CREDENTIAL_CASES.items()})


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


__all__ = ["MESSAGES", "MUTATIONS", "UNKNOWN", "UNKNOWN_WIRE", "edit", "mutated", "violations_by_policy"]
