"""Recorded plans, completed and broken on purpose, for testing the policy pack.

Every mutation edits (or drops) a resource the real program registers: KeyPrefix subkeys, the
Vault policy and auth role, the NetworkPolicies, the Services and Ingress, the PrometheusRule.

``complete_plan`` adds a stand-in only for a type that another branch adds and that is not merged
yet: the garbage-collection CronJob (issue 6), built from the plan's own registry pod template as
that issue describes it, so the workload rules are shown to apply to a CronJob's pod template once
one lands. When the plan already has a CronJob, nothing is added and the mutations edit the real one.

``MUTATIONS`` maps a case name to (stack, mutation, the one policy expected to fire).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Optional

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
# Types other branches add that are not merged yet, and the stand-in complete_plan adds for each.
PENDING_TYPES = {"garbage-collection CronJob": CRON_JOB}
GC_CRONJOB_NAME = "registry-gc"  # components/monitoring.py's GC_CRONJOB_NAME: its alerts watch this CronJob


def missing_kinds(plan: Plan) -> list[str]:
    """Which of the resources other branches add this plan still lacks."""
    present = {r.type for r in plan.registrations}
    return [kind for kind, type_token in PENDING_TYPES.items() if type_token not in present]


def _gc_cronjob_stand_in(plan: Plan) -> Registration:
    """Issue 6's CronJob as the registry's own pod template runs it: same image, security context and
    resources, ``registry garbage-collect`` instead of the server, no probes (a Job ends), its own
    service account, ``concurrencyPolicy: Forbid``."""
    statefulset = plan.one("kubernetes:apps/v1:StatefulSet")
    template = copy.deepcopy(reveal(statefulset.inputs)["spec"]["template"])
    server = template["spec"]["containers"][0]
    collector = {key: server[key] for key in ("image", "securityContext", "resources", "env", "volumeMounts")
                 if key in server}
    collector.update(name="garbage-collect",
                     args=["registry", "garbage-collect", "--delete-untagged", "/etc/distribution/config.yml"])
    template["metadata"]["labels"]["app.kubernetes.io/component"] = "garbage-collection"
    template["spec"].update(containers=[collector], restartPolicy="OnFailure", serviceAccountName=GC_CRONJOB_NAME)
    namespace = statefulset.inputs["metadata"]["namespace"]
    inputs = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": GC_CRONJOB_NAME, "namespace": namespace},
        "spec": {"schedule": "17 3 * * 0", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3,
                 "failedJobsHistoryLimit": 3, "startingDeadlineSeconds": 3600,
                 "jobTemplate": {"spec": {"backoffLimit": 0, "activeDeadlineSeconds": 7200, "template": template}}},
    }
    name = f"{GC_CRONJOB_NAME}-cronjob"
    return Registration(
        urn=f"urn:pulumi:{plan.stack}::{plan.project}::{CRON_JOB}::{name}", type=CRON_JOB, name=name,
        inputs=inputs, parent=plan.registrations[0].urn, protect=False, retain_on_delete=False, dependencies=(),
        custom=True, provider="", outputs=copy.deepcopy(inputs),
    )


def complete_plan(plan: Plan) -> Plan:
    """A copy of ``plan`` with a stand-in for each type still pending on another branch."""
    completed = copy.deepcopy(plan)
    if "garbage-collection CronJob" in missing_kinds(plan):
        completed.registrations.append(_gc_cronjob_stand_in(completed))
    return completed


# --- editing a plan ---------------------------------------------------------------------------


def _find(plan: Plan, type_token: str, name: Optional[str] = None) -> Registration:
    """The one resource of ``type_token`` (named ``name`` when the plan has several of that type)."""
    found = [r for r in plan.registrations if r.type == type_token and (name is None or r.name == name)]
    if len(found) != 1:
        names = sorted(r.name for r in found)
        raise LookupError(f"expected one {type_token} {name or ''} in the {plan.stack} plan, found {names}")
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
    if not plan.of_type(type_token):
        raise LookupError(f"no {type_token} in the {plan.stack} plan")
    plan.registrations = [r for r in plan.registrations if r.type != type_token]
    return plan


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


def _route_first_path_to(port: dict) -> Callable[[dict], None]:
    def apply(props: dict) -> None:
        props["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = port
    return apply


def _admit_the_internet(props: dict) -> None:
    props["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}})


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
    "the debug port behind the Ingress": ("prod", lambda p: edit(p, INGRESS, _route_first_path_to({"number": 5001}),
                                                                 name="registry-network-ingress"),
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
    "only allow rules, no default deny": ("prod", lambda p: remove(p, NETWORK_POLICY, "registry-network-default-deny"),
                                          "network-default-deny-selects-registry"),
    "a NetworkPolicy admitting 0.0.0.0/0": ("staging", lambda p: edit(p, NETWORK_POLICY, _admit_the_internet,
                                                                    name="registry-network-allow-clients"),
                                            "network-no-open-cidr"),
    "a Consul key outside the registry prefix": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, _set(
        "pathPrefix", "config/registry/staging/")), "consul-kv-registry-prefix"),
    "a KeyPrefix owning every environment's keys": ("staging", lambda p: edit(p, CONSUL_KEY_PREFIX, _set(
        "pathPrefix", "registry/")), "consul-kv-registry-prefix"),
    "an auth role bound to two service accounts": ("prod", lambda p: edit(p, VAULT_ROLE, _set(
        "boundServiceAccountNames", ["registry", "default"])), "vault-kubernetes-role-single-binding"),
    "an auth role bound to every namespace": ("staging", lambda p: edit(p, VAULT_ROLE, _set(
        "boundServiceAccountNamespaces", ["*"])), "vault-kubernetes-role-single-binding"),
    # the CronJob other branches add: the workload rules reach its pod template
    "a root GC CronJob": ("prod", lambda p: edit(p, CRON_JOB, lambda i: _job_container(i)["securityContext"].update(
        runAsUser=0)), "workload-pod-security-restricted"),
    "a GC CronJob without a memory limit": ("staging", lambda p: edit(p, CRON_JOB, lambda i: _job_container(i)[
        "resources"]["limits"].pop("memory")), "workload-resources-set"),
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
