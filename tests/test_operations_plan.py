"""The operations resources as the program registers them (recorded plans) and their settings."""

from __future__ import annotations

import json

import pytest

from components.names import GC_NAME, SNAPSHOT_NAME, readonly_kv_key
from components.operations import (gc_cron_job, replication_policy,
                                   script_text)
from components.settings import SettingsError
from components.workload import client_service, container_security_context, pod_security_context, selector_labels
from offline_plan import record_plan
from tests.conftest import settings_for

CRONJOB = "kubernetes:batch/v1:CronJob"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
ACCOUNT = "kubernetes:core/v1:ServiceAccount"


def named(plan, type_token, name):
    found = [r for r in plan.of_type(type_token) if r.plain_inputs["metadata"]["name"] == name]
    assert len(found) == 1, f"{plan.stack}: {len(found)} {type_token} named {name}"
    return found[0].plain_inputs


def gc_pod(plan):
    return named(plan, CRONJOB, GC_NAME)["spec"]["jobTemplate"]["spec"]["template"]


def env_of(container):
    return {e["name"]: e.get("value") for e in container["env"]}


def test_gc_cronjob_runs_on_schedule_one_at_a_time_without_retries(stack_plan):
    settings = settings_for(stack_plan.stack)
    spec = named(stack_plan, CRONJOB, GC_NAME)["spec"]
    assert spec["schedule"] == settings.gc_schedule == "17 3 * * 0"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 5)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["activeDeadlineSeconds"] == settings.gc_active_deadline_seconds
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_gc_schedule_comes_from_settings():
    plan = record_plan("staging", overrides={"registry:gcSchedule": "5 1 * * 3"})
    assert plan.error is None
    assert named(plan, CRONJOB, GC_NAME)["spec"]["schedule"] == "5 1 * * 3"


def test_gc_role_deletes_only_the_registry_pods_and_reads_only_its_statefulset(stack_plan):
    replicas = settings_for(stack_plan.stack).replicas
    rules = named(stack_plan, ROLE, GC_NAME)["rules"]
    deleting = [r for r in rules if "delete" in r["verbs"]]
    assert deleting == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"],
                         "resourceNames": [f"registry-{i}" for i in range(replicas)]}]
    statefulsets = [r for r in rules if "statefulsets" in r["resources"]]
    assert statefulsets == [{"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"],
                             "resourceNames": ["registry"]}]
    assert {verb for r in rules for verb in r["verbs"]} == {"get", "list", "watch", "delete"}
    assert all(r["resources"] in (["pods"], ["statefulsets"]) for r in rules)
    binding = named(stack_plan, BINDING, GC_NAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GC_NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": GC_NAME, "namespace": "cicd"}]
    assert gc_pod(stack_plan)["spec"]["serviceAccountName"] == GC_NAME
    assert named(stack_plan, ACCOUNT, GC_NAME)["automountServiceAccountToken"] is False


def test_gc_job_ships_the_script_and_runs_it_in_the_registry_image(stack_plan):
    settings = settings_for(stack_plan.stack)
    assert named(stack_plan, CONFIG_MAP, GC_NAME)["data"] == {"registry-gc.sh": script_text("registry-gc.sh")}
    container = gc_pod(stack_plan)["spec"]["containers"][0]
    assert container["image"] == settings.image
    assert container["command"] == ["sh", "/opt/registry-ops/registry-gc.sh"]
    env = env_of(container)
    assert env["READONLY_KV_KEY"] == readonly_kv_key(stack_plan.stack)
    assert not [k for k in env if k.startswith("REGISTRY_STORAGE_MAINTENANCE")]


def test_the_key_the_gc_job_flips_is_the_one_config_cli_exports_as_the_read_only_flag(stack_plan, tmp_path):
    """Through the one config-cli stand-in: the recorded KV plus the job's write must make the registry
    read-only, and the key must lie outside what the program's KeyPrefix owns (or pulumi up would undo it)."""
    from tests.support.config_cli import as_tree, load_tree, recorded_kv

    path_prefix, subkeys = recorded_kv(stack_plan)
    # No secret matters here: Vault references become placeholders, so no Vault is needed.
    subkeys = {key: "placeholder" if value.startswith("vault:") else value for key, value in subkeys.items()}
    env = env_of(gc_pod(stack_plan)["spec"]["containers"][0])
    written, kv_prefix = env["READONLY_KV_KEY"], env["CONFIG_CLI_KV_PREFIX"]
    assert written.startswith(kv_prefix) and not written.startswith(path_prefix)
    during = load_tree({**as_tree(subkeys), written[len(kv_prefix):]: '{"enabled":true}'}, None, tmp_path / "gc")
    assert during.environment["REGISTRY_STORAGE_MAINTENANCE_READONLY"] == '{"enabled":true}'
    resting = load_tree(as_tree(subkeys), None, tmp_path / "resting")
    assert resting.environment["REGISTRY_STORAGE_MAINTENANCE_READONLY"] == '{"enabled":false}'


def test_gc_pod_is_an_endpoint_of_the_client_service_and_in_the_mesh(stack_plan):
    settings = settings_for(stack_plan.stack)
    template = gc_pod(stack_plan)
    selector = client_service(settings)["spec"]["selector"]
    assert selector.items() <= template["metadata"]["labels"].items()
    annotations = template["metadata"]["annotations"]
    assert annotations["consul.hashicorp.com/connect-inject"] == "true"
    assert annotations["consul.hashicorp.com/connect-service"] == "registry"
    assert annotations["consul.hashicorp.com/enable-sidecar-proxy-lifecycle"] == "true"
    assert env_of(template["spec"]["containers"][0])["GC_SIDECAR_SHUTDOWN_URL"].endswith("/graceful_shutdown")
    probe = template["spec"]["containers"][0]["readinessProbe"]["exec"]["command"][-1]
    assert "/tmp/registry-gc-draining" in probe and "127.0.0.1:5000" in probe


def test_gc_pod_meets_the_restricted_pod_security_standard_like_the_statefulset(stack_plan):
    settings = settings_for(stack_plan.stack)
    spec = gc_pod(stack_plan)["spec"]
    assert spec["securityContext"] == pod_security_context(settings)
    for container in [*spec["initContainers"], *spec["containers"]]:
        assert container["securityContext"] == container_security_context(settings)
        assert container["resources"]["limits"] and container["resources"]["requests"]
        assert "@sha256:" in container["image"]


def test_staging_gc_pod_mounts_the_registry_volume_next_to_registry_0(staging_plan):
    spec = gc_pod(staging_plan)["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-registry-0"}} in spec["volumes"]
    term = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term == {"labelSelector": {"matchLabels": {"statefulset.kubernetes.io/pod-name": "registry-0"}},
                    "topologyKey": "kubernetes.io/hostname"}
    env = env_of(spec["containers"][0])
    assert (env["REGISTRY_STORAGE"], env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]) == ("filesystem", "/var/lib/registry")
    statefulset = staging_plan.one("kubernetes:apps/v1:StatefulSet").plain_inputs
    preferred = statefulset["spec"]["template"]["spec"]["affinity"]["podAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert preferred["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "garbage-collector"


def test_prod_gc_pod_collects_the_bucket_under_its_own_irsa_role(prod_plan):
    spec = gc_pod(prod_plan)["spec"]
    assert "affinity" not in spec and not [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    env = env_of(spec["containers"][0])
    assert env["REGISTRY_STORAGE"] == "s3" and env["REGISTRY_STORAGE_S3_BUCKET"] == "example-cicd-registry-prod-eu-west-1"
    assert env["REGISTRY_STORAGE_S3_KEYID"].startswith("arn:aws:kms:eu-west-1:")
    account = named(prod_plan, ACCOUNT, GC_NAME)
    gc_role = prod_plan.one("aws:iam/role:Role", "registry-operations-gc-role").plain_inputs
    trust = json.loads(gc_role["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert [v for k, v in trust.items() if k.endswith(":sub")] == ["system:serviceaccount:cicd:registry-gc"]
    assert ":role/registry-operations-gc-role" in account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]


def test_staging_snapshots_the_volume_on_schedule_with_class_and_retention_from_settings(staging_plan):
    settings = settings_for("staging")
    spec = named(staging_plan, CRONJOB, SNAPSHOT_NAME)["spec"]
    assert spec["schedule"] == settings.snapshots.schedule and spec["concurrencyPolicy"] == "Forbid"
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    assert (env["CLAIM"], env["SNAPSHOT_CLASS"], env["RETENTION"]) == ("data-registry-0", "ceph-rbd-snapshot", "14")
    assert named(staging_plan, CONFIG_MAP, SNAPSHOT_NAME)["data"] == {
        "registry-snapshot.sh": script_text("registry-snapshot.sh")}
    assert named(staging_plan, ROLE, SNAPSHOT_NAME)["rules"] == [{
        "apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"],
        "verbs": ["create", "get", "list", "delete"]}]
    override = record_plan("staging", overrides={"registry:snapshotRetention": "3",
                                                 "registry:snapshotClass": "fast-snapshots"})
    env = env_of(named(override, CRONJOB, SNAPSHOT_NAME)["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"][0])
    assert (env["SNAPSHOT_CLASS"], env["RETENTION"]) == ("fast-snapshots", "3")


def test_prod_has_no_volume_snapshots(prod_plan):
    assert not [r for r in prod_plan.of_type(CRONJOB) if r.plain_inputs["metadata"]["name"] == SNAPSHOT_NAME]


def test_prod_replicates_the_bucket_to_a_private_encrypted_versioned_dr_bucket(prod_plan):
    bucket = prod_plan.one("aws:s3/bucket:Bucket", "registry-operations-dr-bucket")
    assert bucket.plain_inputs["bucket"] == "example-cicd-registry-prod-dr-eu-central-1"
    assert bucket.protect and bucket.retain_on_delete
    provider = prod_plan.one("pulumi:providers:aws", "registry-operations-dr-aws")
    assert provider.plain_inputs["region"] == "eu-central-1"
    assert bucket.provider.startswith(provider.urn)
    assert prod_plan.one("aws:s3/bucketVersioning:BucketVersioning", "registry-operations-dr-versioning").plain_inputs[
        "versioningConfiguration"] == {"status": "Enabled"}
    dr_key = prod_plan.one("aws:kms/key:Key", "registry-operations-dr-key")
    assert dr_key.protect and dr_key.plain_inputs["enableKeyRotation"] is True
    encryption = prod_plan.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                               "registry-operations-dr-encryption").plain_inputs["rules"][0]
    default = encryption["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms" and ":eu-central-1:" in default["kmsMasterKeyId"]
    blocked = prod_plan.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                            "registry-operations-dr-public-access").plain_inputs
    assert all(blocked[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                             "restrictPublicBuckets"))
    assert prod_plan.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls",
                         "registry-operations-dr-ownership").plain_inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    replication = prod_plan.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig",
                                "registry-operations-replication").plain_inputs
    assert replication["bucket"] == "example-cicd-registry-prod-eu-west-1"
    rule = replication["rules"][0]
    assert rule["destination"]["bucket"] == "arn:aws:s3:::example-cicd-registry-prod-dr-eu-central-1"
    assert rule["destination"]["encryptionConfiguration"]["replicaKmsKeyId"] == default["kmsMasterKeyId"]
    assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}


def test_replication_role_may_only_read_the_source_and_replicate_into_the_dr_bucket(prod_plan):
    policy = json.loads(prod_plan.one("aws:iam/rolePolicy:RolePolicy", "registry-operations-replication-access")
                        .plain_inputs["policy"])
    by_resource = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and statement["Resource"] not in ("*", "arn:aws:s3:::*")
        by_resource.setdefault(statement["Resource"], set()).update(statement["Action"])
    source, replica = "arn:aws:s3:::example-cicd-registry-prod-eu-west-1", "arn:aws:s3:::example-cicd-registry-prod-dr-eu-central-1"
    assert by_resource[source] == {"s3:GetReplicationConfiguration", "s3:ListBucket"}
    assert by_resource[source + "/*"] == {"s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl",
                                          "s3:GetObjectVersionTagging"}
    assert by_resource[replica + "/*"] == {"s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"}
    assert replica not in by_resource
    trust = json.loads(prod_plan.one("aws:iam/role:Role", "registry-operations-replication-role")
                       .plain_inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}


def test_dr_replication_is_optional():
    plan = record_plan("prod", overrides={"registry:drBucket": None, "registry:drRegion": None})
    assert plan.error is None
    assert not [r for r in plan.resources if "-dr-" in r.name or "replication" in r.name]


@pytest.mark.parametrize("stack,overrides,key", [
    ("prod", {"drRegion": "eu-west-1"}, "registry:drRegion"),
    ("prod", {"drBucket": "example-cicd-registry-prod-eu-west-1"}, "registry:drBucket"),
    ("prod", {"drRegion": None}, "registry:drRegion"),
    ("staging", {"drBucket": "some-dr-bucket", "drRegion": "eu-central-1"}, "registry:drBucket"),
    ("staging", {"gcSchedule": "every sunday"}, "registry:gcSchedule"),
    ("staging", {"snapshotSchedule": "0 2 * *"}, "registry:snapshotSchedule"),
    ("staging", {"snapshotClass": None}, "registry:snapshotClass"),
    ("staging", {"snapshotRetention": "0"}, "registry:snapshotRetention"),
    ("staging", {"operationsToolsImage": "registry.example.com/ops/tools:1.0"}, "registry:operationsToolsImage"),
    ("staging", {"kubernetesApiCidrs": "[]"}, "registry:kubernetesApiCidrs"),
    ("staging", {"gcActiveDeadlineSeconds": "60"}, "registry:gcActiveDeadlineSeconds"),
])
def test_bad_operations_settings_are_rejected_naming_the_key(stack, overrides, key):
    with pytest.raises(SettingsError) as error:
        settings_for(stack, **overrides)
    assert error.value.key == key


def test_replication_policy_conditions_kms_use_on_s3_in_each_region():
    policy = replication_policy("arn:src", "arn:key-src", "eu-west-1", "arn:dst", "arn:key-dst", "eu-central-1")
    kms = {s["Sid"]: s for s in policy["Statement"] if s["Sid"] in ("DecryptSource", "EncryptReplica")}
    assert kms["DecryptSource"]["Condition"]["StringLike"]["kms:ViaService"] == "s3.eu-west-1.amazonaws.com"
    assert kms["EncryptReplica"]["Condition"]["StringLike"]["kms:ViaService"] == "s3.eu-central-1.amazonaws.com"


def test_gc_selector_labels_match_without_being_adopted_by_the_statefulset():
    settings = settings_for("staging")
    labels = gc_cron_job(settings)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert selector_labels(settings).items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "garbage-collector"


def test_replication_waits_for_versioning_of_both_buckets(prod_plan):
    replication = prod_plan.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig", "registry-operations-replication")
    dr_versioning = prod_plan.one("aws:s3/bucketVersioning:BucketVersioning", "registry-operations-dr-versioning")
    storage = prod_plan.one("registry:storage:S3BucketStorage")
    assert dr_versioning.urn in replication.dependencies
    assert storage.urn in replication.dependencies or prod_plan.one(
        "aws:s3/bucketVersioning:BucketVersioning", "registry-storage-versioning").urn in replication.dependencies


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_operations_manifests_validate_against_the_kubernetes_schemas(stack):
    import kubernetes_validate

    from components.operations import gc_role_rules, network_policies, rbac, snapshot_cron_job

    settings = settings_for(stack)
    access = rbac(settings, GC_NAME, "garbage-collector", gc_role_rules("registry", settings.replicas))
    documents = [
        ("batch/v1", "CronJob", gc_cron_job(settings, "arn:aws:kms:eu-west-1:123456789012:key/k")),
        ("v1", "ServiceAccount", access["service_account"]),
        ("rbac.authorization.k8s.io/v1", "Role", access["role"]),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", access["role_binding"]),
        *[("networking.k8s.io/v1", "NetworkPolicy", policy) for policy in network_policies(settings)],
    ]
    if settings.snapshots:
        documents.append(("batch/v1", "CronJob", snapshot_cron_job(settings)))
    for api_version, kind, body in documents:
        kubernetes_validate.validate({"apiVersion": api_version, "kind": kind, **body}, "1.30", strict=True)


def test_only_the_registry_and_the_gc_pods_match_the_registry_selector(stack_plan):
    """The client Service, the PDB and the registry's NetworkPolicies select on these labels: a
    snapshot pod matching them would receive registry traffic and the registry's network access."""
    from components.workload import selector_labels
    from tests.conftest import settings_for

    selector = selector_labels(settings_for(stack_plan.stack))
    matching = set()
    for registration in stack_plan.of_type("kubernetes:batch/v1:CronJob"):
        spec = registration.plain_inputs["spec"]["jobTemplate"]["spec"]["template"]
        labels = spec["metadata"]["labels"]
        if all(labels.get(k) == v for k, v in selector.items()):
            matching.add(registration.plain_inputs["metadata"]["name"])
    assert matching == {"registry-gc"}
