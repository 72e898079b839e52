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
from .names import DATA_VOLUME, RegistryNames
from .settings import FilesystemStorage

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


def oidc_provider_host_path(oidc_provider_arn: str) -> str:
    """The issuer as IAM condition keys spell it: ``oidc.eks.<region>.amazonaws.com/id/<id>``."""
    return oidc_provider_arn.split(":oidc-provider/", 1)[1]


def irsa_trust_policy(oidc_provider_arn: str, oidc_provider_host_path: str, namespace: str, service_account: str) -> dict:
    """Only the one service account, in its namespace, on this cluster may assume the role."""
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


def lifecycle_rules(storage: "S3BucketStorageArgs") -> list[dict]:
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


# --- the AWS component ------------------------------------------------------------------------


def secure_bucket_settings(prefix: str, bucket: aws.s3.Bucket, key: aws.kms.Key, storage: "S3BucketStorageArgs",
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


@dataclass(frozen=True, kw_only=True)
class DisasterRecoveryReplica:
    """A cross-region replica of the bucket: its name, its region and the AWS provider of that region."""

    bucket: str
    region: str
    provider: pulumi.ProviderResource


@dataclass(frozen=True, kw_only=True)
class S3BucketStorageArgs:
    """The bucket and who reaches it. The AWS provider of ``region`` comes in through ``opts``
    (``providers={"aws": ...}``); the replica's provider with the replica."""

    names: RegistryNames  # the service accounts the IRSA roles trust, in ``namespace``
    environment: str
    namespace: str
    bucket: str
    region: str
    oidc_provider_arn: str  # the EKS cluster's IAM OIDC provider
    noncurrent_version_days: int
    abort_multipart_days: int
    replica: Optional[DisasterRecoveryReplica] = None


class S3BucketStorage(pulumi.ComponentResource):
    """A private, versioned, SSE-KMS bucket, the IRSA roles of the registry and of its garbage collector,
    and the optional cross-region replica with its own key and the replication role."""

    bucket: aws.s3.Bucket
    key: aws.kms.Key
    role: aws.iam.Role
    gc_role: aws.iam.Role
    replica_bucket: Optional[aws.s3.Bucket]
    replica_key: Optional[aws.kms.Key]
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    gc_role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: S3BucketStorageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:storage:S3BucketStorage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The key and the bucket hold every image: `pulumi destroy` or a refactor must not delete them.
        stateful = pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True)

        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"Encrypts the {args.environment} Docker registry bucket {args.bucket}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=stateful,
        )
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/docker-registry-{args.environment}",
                      target_key_id=self.key.key_id, opts=child)
        self.bucket = aws.s3.Bucket(f"{name}-bucket", bucket=args.bucket, force_destroy=False, opts=stateful)
        versioning = secure_bucket_settings(name, self.bucket, self.key, args, child)

        # The registry reads and writes; the garbage collector deletes: the same S3 permissions, each under
        # its own identity.
        self.role = self._irsa_role(f"{name}-role", f"{name}-access", args, args.names.service_account,
                                    f"Docker registry ({args.environment}) service account")
        self.gc_role = self._irsa_role(f"{name}-gc-role", f"{name}-gc-access", args, args.names.gc,
                                       f"Docker registry ({args.environment}) garbage collection")

        self.replica_bucket = self.replica_key = None
        if args.replica is not None:
            self._replica(name, args, args.replica, versioning)

        self.bucket_name = self.bucket.bucket
        self.bucket_arn = self.bucket.arn
        self.kms_key_arn = self.key.arn
        self.role_arn = self.role.arn
        self.gc_role_arn = self.gc_role.arn
        self.register_outputs({
            "bucket_name": self.bucket_name,
            "bucket_arn": self.bucket_arn,
            "kms_key_arn": self.kms_key_arn,
            "role_arn": self.role_arn,
            "gc_role_arn": self.gc_role_arn,
            "replica_bucket_arn": self.replica_bucket.arn if self.replica_bucket else None,
        })

    def _irsa_role(self, role_name: str, policy_name: str, args: S3BucketStorageArgs, account: str,
                   description: str) -> aws.iam.Role:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            role_name,
            description=f"{description} {args.namespace}/{account}",
            assume_role_policy=json.dumps(irsa_trust_policy(
                args.oidc_provider_arn, oidc_provider_host_path(args.oidc_provider_arn), args.namespace, account)),
            max_session_duration=3600,
            opts=child,
        )
        aws.iam.RolePolicy(
            policy_name,
            role=role.id,
            policy=pulumi.Output.all(self.bucket.arn, self.key.arn).apply(lambda arns: json.dumps(s3_access_policy(*arns))),
            opts=child,
        )
        return role

    def _replica(self, name: str, args: S3BucketStorageArgs, replica: DisasterRecoveryReplica,
                 source_versioning: aws.s3.BucketVersioning) -> None:
        child = pulumi.ResourceOptions(parent=self)
        there = pulumi.ResourceOptions(parent=self, provider=replica.provider)
        stateful = pulumi.ResourceOptions.merge(there, pulumi.ResourceOptions(protect=True, retain_on_delete=True))

        key = aws.kms.Key(f"{name}-dr-key", description=f"Encrypts the {args.environment} registry DR bucket {replica.bucket}",
                          enable_key_rotation=True, deletion_window_in_days=30, opts=stateful)
        aws.kms.Alias(f"{name}-dr-key-alias", name=f"alias/docker-registry-{args.environment}-dr",
                      target_key_id=key.key_id, opts=there)
        bucket = aws.s3.Bucket(f"{name}-dr-bucket", bucket=replica.bucket, force_destroy=False, opts=stateful)
        versioning = secure_bucket_settings(f"{name}-dr", bucket, key, args, there)

        role = aws.iam.Role(f"{name}-replication-role",
                            description=f"S3 replication of {args.bucket} to {replica.bucket}",
                            assume_role_policy=json.dumps(replication_trust_policy()), opts=child)
        aws.iam.RolePolicy(
            f"{name}-replication-access", role=role.id,
            policy=pulumi.Output.all(self.bucket.arn, self.key.arn, bucket.arn, key.arn).apply(
                lambda arns: json.dumps(replication_policy(arns[0], arns[1], args.region, arns[2], arns[3], replica.region))),
            opts=child,
        )
        # Replication needs versioning on both buckets.
        aws.s3.BucketReplicationConfig(
            f"{name}-replication", bucket=self.bucket.bucket, role=role.arn,
            rules=pulumi.Output.all(bucket.arn, key.arn).apply(lambda arns: replication_rules(*arns)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning, source_versioning]),
        )
        self.replica_bucket, self.replica_key = bucket, key
