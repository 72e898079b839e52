"""Storage: a retained volume in staging; a protected, private, encrypted, versioned bucket in prod."""

from __future__ import annotations

import json

from components.storage import S3_BUCKET_ACTIONS, S3_OBJECT_ACTIONS, s3_access_policy
from offline_plan import Plan

# Distribution's S3 driver documentation, "S3 permission scopes", transcribed here independently of
# components/storage.py so that a change there cannot silently change what the test expects.
DOCUMENTED_BUCKET_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"}
DOCUMENTED_OBJECT_ACTIONS = {
    "s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload",
}
SSE_KMS_ACTIONS = {"kms:Decrypt", "kms:GenerateDataKey"}

S3_CHILD_TYPES = {
    "aws:kms/key:Key",
    "aws:kms/alias:Alias",
    "aws:s3/bucket:Bucket",
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
}


def _statefulset(plan: Plan) -> dict:
    return plan.one("kubernetes:apps/v1:StatefulSet").plain_inputs


def test_staging_has_no_aws_resources_and_a_retained_volume_claim_template(staging_plan):
    assert not [r for r in staging_plan.registrations if r.type.startswith(("aws:", "pulumi:providers:aws"))]
    spec = _statefulset(staging_plan)["spec"]

    (template,) = spec["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert template["spec"]["storageClassName"] == "ceph-rbd"
    assert template["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    mounts = spec["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/var/lib/registry"} in mounts


def test_prod_has_every_s3_child_under_the_storage_component(prod_plan):
    component = prod_plan.one("registry:storage:S3BucketStorage")
    children = prod_plan.children_of(component)

    assert S3_CHILD_TYPES <= {child.type for child in children}
    assert "volumeClaimTemplates" not in _statefulset(prod_plan)["spec"]


def test_every_bucket_and_key_is_protected_and_kept_on_delete(prod_plan):
    stateful = prod_plan.of_type("aws:s3/bucket:Bucket") + prod_plan.of_type("aws:kms/key:Key")
    assert {r.name for r in stateful} >= {"registry-storage-bucket", "registry-storage-key"}
    for resource in stateful:
        assert resource.protect and resource.retain_on_delete, resource.name
    for bucket in prod_plan.of_type("aws:s3/bucket:Bucket"):
        assert bucket.plain_inputs["forceDestroy"] is False, bucket.name


def test_prod_bucket_is_versioned_encrypted_with_a_rotating_customer_key_and_private(prod_plan):
    key = prod_plan.one("aws:kms/key:Key", "registry-storage-key").plain_inputs
    assert key["enableKeyRotation"] is True

    versioning = prod_plan.one("aws:s3/bucketVersioning:BucketVersioning", "registry-storage-versioning").plain_inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"

    encryption = prod_plan.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "registry-storage-encryption").plain_inputs
    (rule,) = encryption["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms"
    assert default["kmsMasterKeyId"].startswith("arn:aws:kms:eu-west-1:")

    public = prod_plan.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "registry-storage-public-access").plain_inputs
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert public[flag] is True, flag

    ownership = prod_plan.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "registry-storage-ownership").plain_inputs
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_prod_bucket_policy_denies_plain_http(prod_plan):
    bucket_arn = "arn:aws:s3:::example-cicd-registry-prod-eu-west-1"
    policy = json.loads(prod_plan.one("aws:s3/bucketPolicy:BucketPolicy", "registry-storage-tls-only").plain_inputs["policy"])

    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert set(statement["Resource"]) == {bucket_arn, f"{bucket_arn}/*"}
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_prod_lifecycle_expires_noncurrent_versions_and_aborts_stale_uploads(prod_plan):
    rules = {r["id"]: r for r in prod_plan.one(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "registry-storage-lifecycle",
    ).plain_inputs["rules"]}

    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    assert rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7
    assert all(rule["status"] == "Enabled" for rule in rules.values())


def test_registry_role_grants_exactly_the_documented_actions_on_this_bucket_and_key(prod_plan):
    bucket_arn = "arn:aws:s3:::example-cicd-registry-prod-eu-west-1"
    key_arn = prod_plan.one("aws:iam/rolePolicy:RolePolicy", "registry-storage-access").plain_inputs
    policy = json.loads(key_arn["policy"])
    kms_arn = prod_plan.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "registry-storage-encryption")\
        .plain_inputs["rules"][0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]

    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            granted.setdefault(resource, set()).update(actions)

    assert granted == {
        bucket_arn: DOCUMENTED_BUCKET_ACTIONS,
        f"{bucket_arn}/*": DOCUMENTED_OBJECT_ACTIONS,
        kms_arn: SSE_KMS_ACTIONS,
    }
    assert not any("*" in action for actions in granted.values() for action in actions)


def test_access_policy_function_uses_the_module_action_lists():
    policy = s3_access_policy("arn:aws:s3:::b", "arn:aws:kms:r:1:key/k")
    assert set(policy["Statement"][0]["Action"]) == set(S3_BUCKET_ACTIONS) == DOCUMENTED_BUCKET_ACTIONS
    assert set(policy["Statement"][1]["Action"]) == set(S3_OBJECT_ACTIONS) == DOCUMENTED_OBJECT_ACTIONS


def test_role_trusts_only_the_registry_service_account_on_this_cluster(prod_plan):
    trust = json.loads(prod_plan.one("aws:iam/role:Role", "registry-storage-role").plain_inputs["assumeRolePolicy"])
    issuer = "oidc.eks.eu-west-1.amazonaws.com/id/5C1E9A7B3D2F4E6A8B0C1D2E3F4A5B6C"

    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{issuer}"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {"StringEquals": {
        f"{issuer}:sub": "system:serviceaccount:cicd:registry",
        f"{issuer}:aud": "sts.amazonaws.com",
    }}


def test_service_account_carries_the_role_in_prod_only(plans):
    prod_account = plans["prod"].one("kubernetes:core/v1:ServiceAccount", "registry-service-account").plain_inputs
    staging_account = plans["staging"].one("kubernetes:core/v1:ServiceAccount", "registry-service-account").plain_inputs
    role_arn = plans["prod"].outputs["role_arn"][0]

    assert prod_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role_arn
    assert "eks.amazonaws.com/role-arn" not in staging_account["metadata"].get("annotations", {})
