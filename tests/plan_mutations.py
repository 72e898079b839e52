"""Recorded plans, completed and broken on purpose, for testing the policy pack.

``complete_plan`` adds stand-ins for the resources other branches are adding (Consul KV, Vault
policy and auth role, the default-deny NetworkPolicy, the PrometheusRule) *only when the plan has
none of that type*, built from the project's own pure functions where they exist, so every mutation
below starts from a plan with zero mandatory violations. Once the real resources land, the stand-ins
disappear and the mutations edit the real ones.

``MUTATIONS`` maps a case name to (stack, mutation, the one policy expected to fire).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Optional

from components.registry_config import registry_environment
from components.settings import S3Storage
from components.workload import selector_labels
from offline_plan import Plan, Registration
from offline_plan.recorder import reveal
from policies.rules.support import UNKNOWN, Resource, Unverifiable, config_defaults, plain
from pulumi_policy import StackValidationPolicy
from tests.conftest import settings_for

UNKNOWN_WIRE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # how the engine sends an unknown value

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PROMETHEUS_RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
CONSUL_KEYS = "consul:index/keys:Keys"
CONSUL_KEY_PREFIX = "consul:index/keyPrefix:KeyPrefix"
CONSUL_KV_TYPES = (CONSUL_KEYS, CONSUL_KEY_PREFIX)
VAULT_POLICY = "vault:index/policy:Policy"
VAULT_ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"
PENDING_TYPES = {
    "NetworkPolicy": (NETWORK_POLICY,),
    "PrometheusRule": (PROMETHEUS_RULE,),
    "Consul KV": CONSUL_KV_TYPES,
    "Vault policy": (VAULT_POLICY,),
    "Vault Kubernetes auth role": (VAULT_ROLE,),
}


def missing_kinds(plan: Plan) -> list[str]:
    """Which of the resources other branches add this plan still lacks."""
    present = {r.type for r in plan.registrations}
    return [kind for kind, types in PENDING_TYPES.items() if not present & set(types)]


def _stand_in(plan: Plan, type_token: str, name: str, inputs: dict) -> Registration:
    stack_urn = plan.registrations[0].urn
    return Registration(
        urn=f"urn:pulumi:{plan.stack}::{plan.project}::{type_token}::{name}", type=type_token, name=name,
        inputs=inputs, parent=stack_urn, protect=False, retain_on_delete=False, dependencies=(), custom=True,
        provider="", outputs=copy.deepcopy(inputs),
    )


def _alert(name: str) -> dict:
    return {
        "alert": name, "expr": "vector(0) > 0", "for": "10m", "labels": {"severity": "warning"},
        "annotations": {"summary": name, "description": name, "runbook_url": f"https://example.invalid/#{name}"},
    }


def complete_plan(plan: Plan) -> Plan:
    completed = copy.deepcopy(plan)
    settings = settings_for(plan.stack)
    environment = settings.environment
    missing = missing_kinds(plan)
    added: list[Registration] = []
    if "Consul KV" in missing:
        kms_key_arn = None
        if isinstance(settings.storage, S3Storage):
            kms_key_arn = plan.one("aws:kms/key:Key").outputs["arn"]
        keys = [{"path": f"{settings.consul_kv_prefix}{key}", "value": value}
                for key, value in sorted(registry_environment(settings, kms_key_arn).items())]
        added.append(_stand_in(plan, CONSUL_KEYS, "registry-config-kv", {"keys": keys}))
    if "Vault policy" in missing:
        text = f'path "{settings.vault_kv_mount}/data/{settings.vault_secret_path}" {{\n  capabilities = ["read"]\n}}\n'
        added.append(_stand_in(plan, VAULT_POLICY, "registry-vault-policy",
                               {"name": f"registry-{environment}", "policy": text}))
    if "Vault Kubernetes auth role" in missing:
        added.append(_stand_in(plan, VAULT_ROLE, "registry-vault-role", {
            "backend": "kubernetes", "roleName": f"registry-{environment}", "boundServiceAccountNames": ["registry"],
            "boundServiceAccountNamespaces": [settings.namespace], "tokenPolicies": [f"registry-{environment}"],
            "audience": "vault", "tokenTtl": 900.0,
        }))
    if "NetworkPolicy" in missing:
        added.append(_stand_in(plan, NETWORK_POLICY, "registry-default-deny", {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "registry-default-deny", "namespace": settings.namespace},
            "spec": {"podSelector": {"matchLabels": selector_labels(settings)}, "policyTypes": ["Ingress", "Egress"]},
        }))
    if "PrometheusRule" in missing:
        alerts = ["RegistryDown", "RegistryHigh5xxRate", "RegistryStorageAbove80Percent", "RegistryAuthFailureSpike",
                  "RegistryGarbageCollectionFailed"]
        added.append(_stand_in(plan, PROMETHEUS_RULE, "registry-alerts", {
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "registry", "namespace": settings.namespace},
            "spec": {"groups": [{"name": "registry", "rules": [_alert(a) for a in alerts]}]},
        }))
    completed.registrations += added
    return completed


# --- editing a plan ---------------------------------------------------------------------------


def _find(plan: Plan, type_token: str, name: Optional[str] = None) -> Registration:
    found = [r for r in plan.registrations if r.type == type_token and (name is None or r.name == name)]
    if not found:
        raise LookupError(f"no {type_token} {name or ''} in the {plan.stack} plan")
    return found[0]


def edit(plan: Plan, type_token: str, change: Callable[[dict], Any], name: Optional[str] = None) -> Plan:
    """Apply ``change`` to the inputs and the outputs of one resource (plain, secrets revealed)."""
    registration = _find(plan, type_token, name)
    registration.inputs = reveal(registration.inputs)
    change(registration.inputs)
    registration.outputs = reveal(registration.outputs) if registration.outputs else copy.deepcopy(registration.inputs)
    change(registration.outputs)
    return plan


def remove(plan: Plan, type_token: str, name: Optional[str] = None) -> Plan:
    plan.registrations.remove(_find(plan, type_token, name))
    return plan


def remove_all(plan: Plan, type_token: str) -> Plan:
    _find(plan, type_token)
    plan.registrations = [r for r in plan.registrations if r.type != type_token]
    return plan


def _container(inputs: dict) -> dict:
    return inputs["spec"]["template"]["spec"]["containers"][0]


def _json_edit(key: str, change: Callable[[dict], Any]) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        document = json.loads(props[key])
        change(document)
        props[key] = json.dumps(document)
    return apply


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


def _unprotect(plan: Plan) -> Plan:
    _find(plan, BUCKET).protect = False
    return plan


def _add_open_network_policy(plan: Plan) -> Plan:
    plan.registrations.append(_stand_in(plan, NETWORK_POLICY, "registry-allow-everyone", {
        "metadata": {"name": "registry-allow-everyone", "namespace": "cicd"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "docker-registry"}},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 5000}]}]},
    }))
    return plan


Mutation = Callable[[Plan], Plan]

MUTATIONS: dict[str, tuple[str, Mutation, str]] = {
    # the ten the issue names
    "versioning off": ("prod", lambda p: edit(p, BUCKET_VERSIONING, _set("versioningConfiguration", "status", "Suspended")),
                       "s3-bucket-versioning-enabled"),
    "a public access flag off": ("prod", lambda p: edit(p, PUBLIC_ACCESS, _set("blockPublicPolicy", False)),
                                 "s3-public-access-blocked"),
    "a wildcard IAM action": ("prod", lambda p: edit(p, ROLE_POLICY, _json_edit(
        "policy", lambda d: d["Statement"][1]["Action"].append("s3:*"))), "iam-no-wildcards"),
    "a root container": ("staging", lambda p: edit(p, STS, lambda i: _container(i)["securityContext"].update(runAsUser=0)),
                         "workload-pod-security-restricted"),
    "a latest image": ("prod", lambda p: edit(p, STS, lambda i: _container(i).update(
        image="registry.internal.example.com/platform/docker-registry:latest")), "workload-image-pinned"),
    "a missing NetworkPolicy": ("staging", lambda p: remove_all(p, NETWORK_POLICY), "network-default-deny-selects-registry"),
    "a password in Consul KV": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, _kv_add(
        "env/REGISTRY_REDIS_OPTIONS_PASSWORD", "correct-horse-battery")),
                                "consul-kv-no-plaintext-secrets"),
    "filesystem with two replicas": ("staging", lambda p: edit(p, STS, _set("spec", "replicas", 2)),
                                     "registry-filesystem-single-replica"),
    "a Vault policy with write": ("prod", lambda p: edit(p, VAULT_POLICY, lambda i: i.update(
        policy=i["policy"].replace('["read"]', '["read", "create", "update"]'))), "vault-policy-read-only"),
    "the debug port on the client Service": ("prod", lambda p: edit(p, SERVICE, lambda i: i["spec"]["ports"].append(
        {"name": "debug", "port": 5001, "targetPort": "debug", "protocol": "TCP"}), name="registry-service"),
        "registry-debug-port-not-on-client-service"),
    # one for every other rule
    "a bucket without a lifecycle": ("prod", lambda p: remove(p, LIFECYCLE), "s3-bucket-hardening-complete"),
    "AES256 instead of SSE-KMS": ("prod", lambda p: edit(p, ENCRYPTION, lambda i: i["rules"][0][
        "applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256", kmsMasterKeyId=None)),
        "s3-sse-kms-customer-key"),
    "object writer ownership": ("prod", lambda p: edit(p, OWNERSHIP, _set("rule", "objectOwnership", "ObjectWriter")),
                                "s3-bucket-owner-enforced"),
    "a bucket policy without the TLS condition": ("prod", lambda p: edit(p, BUCKET_POLICY, _json_edit(
        "policy", lambda d: d["Statement"][0].pop("Condition"))), "s3-tls-only-bucket-policy"),
    "no noncurrent version expiration": ("prod", lambda p: edit(p, LIFECYCLE, lambda i: i["rules"][0].pop(
        "noncurrentVersionExpiration")), "s3-noncurrent-version-expiration"),
    "an unprotected bucket": ("prod", _unprotect, "stateful-resources-protected"),
    "KMS rotation off": ("prod", lambda p: edit(p, KMS_KEY, _set("enableKeyRotation", False)), "kms-key-rotation-enabled"),
    "the role reaching another bucket": ("prod", lambda p: edit(p, ROLE_POLICY, _json_edit(
        "policy", lambda d: d["Statement"][0].update(Resource="arn:aws:s3:::someone-elses-bucket"))),
        "iam-registry-role-scoped"),
    "no memory limit": ("staging", lambda p: edit(p, STS, lambda i: _container(i)["resources"]["limits"].pop("memory")),
                        "workload-resources-set"),
    "no liveness probe": ("staging", lambda p: edit(p, STS, lambda i: _container(i).pop("livenessProbe")),
                          "workload-probes-set"),
    "service links on": ("staging", lambda p: edit(p, STS, _set("spec", "template", "spec", "enableServiceLinks", True)),
                         "workload-service-links-disabled"),
    "replicas without a shared HTTP secret": ("prod", lambda p: edit(p, CONSUL_KEY_PREFIX,
                                                                      _kv_drop("env/REGISTRY_HTTP_SECRET")),
                                              "registry-shared-http-secret"),
    "a NetworkPolicy admitting 0.0.0.0/0": ("staging", _add_open_network_policy, "network-no-open-cidr"),
    "a Consul key outside the registry prefix": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, _set(
        "pathPrefix", "config/registry/staging/")), "consul-kv-registry-prefix"),
    "a KeyPrefix owning every environment's keys": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, _set(
        "pathPrefix", "registry/")), "consul-kv-registry-prefix"),
    "an auth role bound to two service accounts": ("prod", lambda p: edit(p, VAULT_ROLE, _set(
        "boundServiceAccountNames", ["registry", "default"])), "vault-kubernetes-role-single-binding"),
    "no PrometheusRule": ("prod", lambda p: remove_all(p, PROMETHEUS_RULE), "prometheus-rule-required-alerts"),
    "an alert without runbook_url": ("staging", lambda p: edit(p, PROMETHEUS_RULE, lambda i: i["spec"]["groups"][0][
        "rules"][0]["annotations"].pop("runbook_url")), "prometheus-rule-alert-metadata"),
}


def mutated(plans: dict[str, Plan], case: str) -> Plan:
    stack, mutation, _ = MUTATIONS[case]
    return mutation(complete_plan(plans[stack]))


# --- the pack's checks, called directly -------------------------------------------------------


def as_resource(registration: Registration, outputs: bool = False) -> Resource:
    props = registration.outputs if outputs and registration.outputs else registration.inputs
    return Resource(type=registration.type, name=registration.name, urn=registration.urn,
                    props=plain(reveal(props)), protect=registration.protect, parent=registration.parent,
                    dependencies=tuple(registration.dependencies))


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


__all__ = ["MUTATIONS", "UNKNOWN", "UNKNOWN_WIRE", "complete_plan", "edit", "missing_kinds", "mutated",
           "violations_by_policy"]
