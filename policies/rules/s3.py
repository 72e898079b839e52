"""S3 bucket rules: every bucket versioned, encrypted with a customer-managed KMS key, private,
owner-enforced, TLS-only, with noncurrent versions expiring, and the bucket and its key protected.

pulumi-aws v7 splits a bucket's settings into companion resources (``BucketVersioning``, ...), so
"the bucket is versioned" is a property of two resources. A stack may hold several buckets (prod:
the registry's and its DR replica), so the stack policies pair each companion with the one bucket it
configures: the bucket its ``bucket`` input names; while that input is unknown (preview), the bucket
that input's value comes from (the engine's property dependencies), else the only bucket among its
dependencies. A companion that none of these ties to one bucket satisfies no bucket: the bucket
then gets "cannot verify during preview" instead of a violation. A bucket policy must guard the
bucket it is attached to, not another one. An unknown setting inside a companion is reported as
"cannot verify during preview" (checked again at ``pulumi up``).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

from .support import (
    UNKNOWN,
    Finding,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    dig,
    parse_json_document,
    resource_policy,
    stack_policy,
)

BUCKET = "aws:s3/bucket:Bucket"
BUCKET_V2 = "aws:s3/bucketV2:BucketV2"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
VERSIONING_V2 = "aws:s3/bucketVersioningV2:BucketVersioningV2"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
ENCRYPTION_V2 = "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
LIFECYCLE_V2 = "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2"
KMS_KEY = "aws:kms/key:Key"

BUCKET_TYPES = (BUCKET, BUCKET_V2)
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
COMPANIONS = {
    "server-side encryption": (ENCRYPTION, ENCRYPTION_V2),
    "public access block": (PUBLIC_ACCESS_BLOCK,),
    "ownership controls": (OWNERSHIP,),
    "bucket policy": (BUCKET_POLICY,),
    "lifecycle configuration": (LIFECYCLE, LIFECYCLE_V2),
}


# --- pairing companions with buckets ----------------------------------------------------------


def _bucket_names(bucket: Resource) -> set[str]:
    """What a companion's ``bucket`` input can hold for this bucket: its name or its ID (the same in S3)."""
    return {value for value in (dig(bucket.props, "bucket"), dig(bucket.props, "id")) if isinstance(value, str)}


def bucket_of(companion: Resource, buckets: list[Resource]) -> Any:
    """The bucket ``companion`` configures; None if it names a bucket outside the stack, UNKNOWN if
    nothing known ties it to exactly one of ``buckets``."""
    target = dig(companion.props, "bucket")
    if isinstance(target, str):
        return next((bucket for bucket in buckets if target in _bucket_names(bucket)), None)
    sources = companion.property_dependencies.get("bucket") or companion.dependencies
    candidates = [bucket for bucket in buckets if bucket.urn in sources]
    return candidates[0] if len(candidates) == 1 else UNKNOWN


def _companions(resources: list[Resource], bucket: Resource, types: Iterable[str]) -> tuple[list[Resource], list[Resource]]:
    """(the companions of ``types`` that configure ``bucket``, those whose bucket cannot be told)."""
    wanted = set(types)
    buckets = [r for r in resources if r.type in BUCKET_TYPES]
    paired, untold = [], []
    for companion in (r for r in resources if r.type in wanted):
        target = bucket_of(companion, buckets)
        if target is UNKNOWN:
            untold.append(companion)
        elif target is bucket:
            paired.append(companion)
    return paired, untold


def check_bucket_versioning(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    for bucket in (r for r in resources if r.type in BUCKET_TYPES):
        versionings, untold = _companions(resources, bucket, (VERSIONING, VERSIONING_V2))
        if not versionings:
            if untold:
                yield from (Unverifiable(versioning.name, "bucket") for versioning in untold)
            else:
                yield Violation(f"bucket {bucket.name} has no BucketVersioning resource; versioning is the restore "
                                "path for deleted or overwritten images", bucket.urn)
            continue
        for versioning in versionings:
            status = dig(versioning.props, "versioningConfiguration", "status")
            if status is UNKNOWN:
                yield Unverifiable(versioning.name, "versioningConfiguration.status")
            elif status != "Enabled":
                yield Violation(f"bucket {bucket.name}: versioning status is {status!r}, expected 'Enabled' "
                                f"(set by {versioning.name})", versioning.urn)


def check_bucket_hardening_complete(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    for bucket in (r for r in resources if r.type in BUCKET_TYPES):
        for what, types in COMPANIONS.items():
            paired, untold = _companions(resources, bucket, types)
            if paired:
                continue
            if untold:
                yield from (Unverifiable(companion.name, "bucket") for companion in untold)
            else:
                yield Violation(f"bucket {bucket.name} has no {what} resource", bucket.urn)


# --- companion contents -----------------------------------------------------------------------


def check_sse_kms(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    rules = dig(resource.props, "rules")
    if rules is UNKNOWN:
        yield Unverifiable(resource.name, "rules")
        return
    if not rules:
        yield Violation("no server-side encryption rule")
        return
    for index, rule in enumerate(as_list(rules)):
        default = dig(rule, "applyServerSideEncryptionByDefault")
        algorithm = dig(default, "sseAlgorithm")
        key = dig(default, "kmsMasterKeyId")
        if algorithm is UNKNOWN:
            yield Unverifiable(resource.name, f"rules[{index}].applyServerSideEncryptionByDefault.sseAlgorithm")
        elif algorithm not in ("aws:kms", "aws:kms:dsse"):
            yield Violation(f"rules[{index}] encrypts with {algorithm!r}; SSE-KMS ('aws:kms') with a "
                            "customer-managed key is required")
        if key is UNKNOWN:
            yield Unverifiable(resource.name, f"rules[{index}].applyServerSideEncryptionByDefault.kmsMasterKeyId")
        elif not key or (isinstance(key, str) and key.endswith("alias/aws/s3")):
            yield Violation(f"rules[{index}] names no customer-managed KMS key (kmsMasterKeyId is {key!r}); the AWS "
                            "managed key cannot be scoped to the registry role")


def check_public_access_block(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    for flag in PUBLIC_ACCESS_FLAGS:
        value = dig(resource.props, flag)
        if value is UNKNOWN:
            yield Unverifiable(resource.name, flag)
        elif value is not True:
            yield Violation(f"{flag} is {value!r}; all four public access flags must be true")


def check_owner_enforced(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    ownership = dig(resource.props, "rule", "objectOwnership")
    if ownership is UNKNOWN:
        yield Unverifiable(resource.name, "rule.objectOwnership")
    elif ownership != "BucketOwnerEnforced":
        yield Violation(f"objectOwnership is {ownership!r}; 'BucketOwnerEnforced' disables ACLs entirely")


def _denies_plain_http(statement: Any) -> bool:
    if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
        return False
    principal = statement.get("Principal")
    if principal not in ("*", {"AWS": "*"}):
        return False
    actions = as_list(statement.get("Action"))
    if not ({"s3:*", "*"} & set(actions)):
        return False
    condition = dig(statement, "Condition", "Bool", "aws:SecureTransport")
    return condition in ("false", False)


S3_ARN = re.compile(r"^arn:aws[a-z-]*:s3:::(?P<bucket>[^/]+)(?P<objects>/\*)?$")


def _covers_bucket_and_objects(statement: dict, bucket: Any) -> bool:
    """Whether the statement names the bucket's ARN and ``<arn>/*``; any one bucket if ``bucket`` is unknown."""
    covered: dict[str, set[bool]] = {}
    for arn in as_list(statement.get("Resource")):
        match = S3_ARN.match(arn) if isinstance(arn, str) else None
        if match:
            covered.setdefault(match["bucket"], set()).add(bool(match["objects"]))
    names = [bucket] if isinstance(bucket, str) else list(covered)
    return any(covered.get(name) == {True, False} for name in names)


def check_tls_only_policy(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    document = parse_json_document(dig(resource.props, "policy"))
    bucket = dig(resource.props, "bucket")
    if document is UNKNOWN:
        yield Unverifiable(resource.name, "policy")
        return
    if not isinstance(document, dict):
        yield Violation("the bucket policy is not a JSON policy document")
        return
    statements = [s for s in as_list(document.get("Statement")) if _denies_plain_http(s)]
    if not statements:
        yield Violation("no statement denies every principal all S3 actions when aws:SecureTransport is false")
    elif not any(_covers_bucket_and_objects(s, bucket) for s in statements):
        target = f"arn:aws:s3:::{bucket}" if isinstance(bucket, str) else "<arn>"
        yield Violation(f"the TLS-only statement must cover the bucket the policy is attached to and its objects "
                        f"({target} and {target}/*)")
    elif bucket is UNKNOWN:
        yield Unverifiable(resource.name, "bucket")


def check_noncurrent_expiration(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    rules = dig(resource.props, "rules")
    if rules is UNKNOWN:
        yield Unverifiable(resource.name, "rules")
        return
    unknown_path: Optional[str] = None
    for index, rule in enumerate(as_list(rules)):
        status = dig(rule, "status")
        days = dig(rule, "noncurrentVersionExpiration", "noncurrentDays")
        if UNKNOWN in (status, days):
            unknown_path = f"rules[{index}]"
            continue
        if status == "Enabled" and isinstance(days, (int, float)) and days > 0:
            return
    if unknown_path:
        yield Unverifiable(resource.name, unknown_path)
    else:
        yield Violation("no enabled rule expires noncurrent object versions; old versions would be kept forever")


def check_protected(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    if not resource.protect:
        what = "bucket" if resource.type in BUCKET_TYPES else "KMS key"
        yield Violation(f"the {what} holds (or decrypts) every image; set protect=True so no update or destroy "
                        "can delete it")


def check_key_rotation(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    rotation = dig(resource.props, "enableKeyRotation")
    if rotation is UNKNOWN:
        yield Unverifiable(resource.name, "enableKeyRotation")
    elif rotation is not True:
        yield Violation("enableKeyRotation must be true")


POLICIES = [
    stack_policy("s3-bucket-versioning-enabled",
                 "Every S3 bucket is paired with a BucketVersioning resource whose status is Enabled.",
                 check_bucket_versioning),
    stack_policy("s3-bucket-hardening-complete",
                 "Every S3 bucket has its encryption, public access block, ownership controls, bucket policy and "
                 "lifecycle resources.",
                 check_bucket_hardening_complete),
    resource_policy("s3-sse-kms-customer-key",
                    "S3 default encryption is SSE-KMS with a customer-managed key.",
                    (ENCRYPTION, ENCRYPTION_V2), check_sse_kms),
    resource_policy("s3-public-access-blocked",
                    "An S3 public access block sets all four flags.",
                    (PUBLIC_ACCESS_BLOCK,), check_public_access_block),
    resource_policy("s3-bucket-owner-enforced",
                    "S3 object ownership is BucketOwnerEnforced (ACLs disabled).",
                    (OWNERSHIP,), check_owner_enforced),
    resource_policy("s3-tls-only-bucket-policy",
                    "The bucket policy denies any request that does not use TLS.",
                    (BUCKET_POLICY,), check_tls_only_policy),
    resource_policy("s3-noncurrent-version-expiration",
                    "The bucket lifecycle expires noncurrent object versions.",
                    (LIFECYCLE, LIFECYCLE_V2), check_noncurrent_expiration),
    resource_policy("stateful-resources-protected",
                    "S3 buckets and KMS keys are protected against deletion.",
                    (*BUCKET_TYPES, KMS_KEY), check_protected),
    resource_policy("kms-key-rotation-enabled",
                    "KMS keys rotate their key material yearly.",
                    (KMS_KEY,), check_key_rotation),
]
