"""Where the registry keeps its blobs: a volume per pod, an AWS S3 bucket, or an existing MinIO bucket.

The documents (IAM policies, the volume claim template) are computed by pure functions; the
``S3BucketStorage`` component only registers resources from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from .registry_config import DATA_DIRECTORY
from . import names
from .names import DATA_VOLUME, SERVICE_ACCOUNT_NAME
from .settings import FilesystemStorage, S3Storage

# Exactly what Distribution's S3 driver documents it needs, split by the ARN each applies to.
S3_BUCKET_ACTIONS = ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads")
S3_OBJECT_ACTIONS = (
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
)
# SSE-KMS: PutObject and multipart uploads need a data key; GetObject and multipart completion decrypt.
KMS_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")


# --- pure documents ---------------------------------------------------------------------------


def volume_claim_template(storage: FilesystemStorage) -> dict:
    """The StatefulSet's volumeClaimTemplate: one ReadWriteOnce volume for the single replica."""
    return {
        "metadata": {"name": DATA_VOLUME},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage.storage_class,
            "resources": {"requests": {"storage": storage.size}},
        },
    }


# Keep the volume (and the images on it) when the StatefulSet is deleted or scaled down.
VOLUME_RETENTION_POLICY = {"whenDeleted": "Retain", "whenScaled": "Retain"}
DATA_MOUNT = {"name": DATA_VOLUME, "mountPath": DATA_DIRECTORY}


def s3_access_policy(bucket_arn: str, kms_key_arn: str) -> dict:
    """The registry role's permissions: the documented S3 actions on this bucket, KMS on this key."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "RegistryBucket", "Effect": "Allow", "Action": list(S3_BUCKET_ACTIONS), "Resource": bucket_arn},
            {
                "Sid": "RegistryObjects",
                "Effect": "Allow",
                "Action": list(S3_OBJECT_ACTIONS),
                "Resource": f"{bucket_arn}/*",
            },
            {"Sid": "RegistryKmsKey", "Effect": "Allow", "Action": list(KMS_ACTIONS), "Resource": kms_key_arn},
        ],
    }


def irsa_trust_policy(oidc_provider_arn: str, oidc_provider_host_path: str, namespace: str,
                      service_account: str = SERVICE_ACCOUNT_NAME) -> dict:
    """Only the one service account (the registry's by default), in its namespace, on this cluster may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{oidc_provider_host_path}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                        f"{oidc_provider_host_path}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def tls_only_bucket_policy(bucket_arn: str) -> dict:
    """Deny every request to the bucket or its objects that does not arrive over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def lifecycle_rules(storage: S3Storage) -> list[dict]:
    return [
        {
            "id": "expire-noncurrent-versions",
            "status": "Enabled",
            "filter": {},
            "noncurrent_version_expiration": {"noncurrent_days": storage.noncurrent_version_days},
            "expiration": {"expired_object_delete_marker": True},
        },
        {
            "id": "abort-incomplete-multipart-uploads",
            "status": "Enabled",
            "filter": {},
            "abort_incomplete_multipart_upload": {"days_after_initiation": storage.abort_multipart_days},
        },
    ]


# --- the AWS component ------------------------------------------------------------------------


def secure_bucket_settings(prefix: str, bucket: aws.s3.Bucket, key: aws.kms.Key, storage: S3Storage,
                           opts: pulumi.ResourceOptions) -> aws.s3.BucketVersioning:
    """Versioning, SSE-KMS with `key`, no public access, owner-enforced objects, TLS only, and the
    noncurrent-version lifecycle: what every bucket holding registry data gets (the registry's own
    bucket and its disaster-recovery replica). Returns the versioning, which replication waits for."""
    bucket_child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[bucket]))
    versioning = aws.s3.BucketVersioning(
        f"{prefix}-versioning", bucket=bucket.id,
        versioning_configuration={"status": "Enabled"}, opts=bucket_child,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{prefix}-encryption",
        bucket=bucket.id,
        rules=[{
            "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms", "kms_master_key_id": key.arn},
            "bucket_key_enabled": True,
        }],
        opts=bucket_child,
    )
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{prefix}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=bucket_child,
    )
    aws.s3.BucketOwnershipControls(
        f"{prefix}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=bucket_child,
    )
    aws.s3.BucketPolicy(
        f"{prefix}-tls-only",
        bucket=bucket.id,
        policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
        # S3 rejects bucket policies while the public access block is being applied.
        opts=pulumi.ResourceOptions.merge(bucket_child, pulumi.ResourceOptions(depends_on=[public_access])),
    )
    aws.s3.BucketLifecycleConfiguration(
        f"{prefix}-lifecycle", bucket=bucket.id, rules=lifecycle_rules(storage), opts=bucket_child,
    )
    return versioning


@dataclass
class S3BucketStorageArgs:
    storage: S3Storage
    environment: str
    namespace: str


class S3BucketStorage(pulumi.ComponentResource):
    """A private, versioned, SSE-KMS bucket and the IRSA role the registry uses to reach it."""

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: S3BucketStorageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:storage:S3BucketStorage", name, None, opts)
        storage = args.storage
        tags = {"app": names.APP_NAME, "environment": args.environment, "managed-by": "pulumi"}
        provider = aws.Provider(f"{name}-aws", region=storage.region, default_tags={"tags": tags},
                                opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        # The key and the bucket hold every image: `pulumi destroy` or a refactor must not delete them.
        stateful = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True, retain_on_delete=True))

        key = aws.kms.Key(
            f"{name}-key",
            description=f"Encrypts the {args.environment} Docker registry bucket {storage.bucket}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=stateful,
        )
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/docker-registry-{args.environment}", target_key_id=key.key_id,
                      opts=child)

        bucket = aws.s3.Bucket(f"{name}-bucket", bucket=storage.bucket, force_destroy=False, opts=stateful)
        secure_bucket_settings(name, bucket, key, storage, child)

        role = aws.iam.Role(
            f"{name}-role",
            description=f"Docker registry ({args.environment}) service account {args.namespace}/{SERVICE_ACCOUNT_NAME}",
            assume_role_policy=json.dumps(
                irsa_trust_policy(storage.oidc_provider_arn, storage.oidc_provider_host_path, args.namespace)
            ),
            max_session_duration=3600,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-access",
            role=role.id,
            policy=pulumi.Output.all(bucket.arn, key.arn).apply(lambda arns: json.dumps(s3_access_policy(*arns))),
            opts=child,
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        self.role_arn = role.arn
        self.register_outputs({
            "bucket_name": self.bucket_name,
            "bucket_arn": self.bucket_arn,
            "kms_key_arn": self.kms_key_arn,
            "role_arn": self.role_arn,
        })
