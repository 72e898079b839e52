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
    ACCOUNTS_PROPERTY,
    arn_account,
    dig,
    is_number,
    own_accounts,
    parse_json_document,
    principals,
    resource_policy,
    schema,
    stack_policy,
    statements,
    strings,
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
        yield Violation(f"{resource.name}: no server-side encryption rule")
        return
    for index, rule in enumerate(as_list(rules)):
        default = dig(rule, "applyServerSideEncryptionByDefault")
        algorithm = dig(default, "sseAlgorithm")
        key = dig(default, "kmsMasterKeyId")
        if algorithm is UNKNOWN:
            yield Unverifiable(resource.name, f"rules[{index}].applyServerSideEncryptionByDefault.sseAlgorithm")
        elif algorithm not in ("aws:kms", "aws:kms:dsse"):
            yield Violation(f"{resource.name}: rules[{index}] encrypts with {algorithm!r}; SSE-KMS ('aws:kms') with a "
                            "customer-managed key is required")
        if key is UNKNOWN:
            yield Unverifiable(resource.name, f"rules[{index}].applyServerSideEncryptionByDefault.kmsMasterKeyId")
        elif not key or (isinstance(key, str) and key.endswith("alias/aws/s3")):
            yield Violation(f"{resource.name}: rules[{index}] names no customer-managed KMS key (kmsMasterKeyId is {key!r}); the AWS "
                            "managed key cannot be scoped to the registry role")


def check_public_access_block(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    for flag in PUBLIC_ACCESS_FLAGS:
        value = dig(resource.props, flag)
        if value is UNKNOWN:
            yield Unverifiable(resource.name, flag)
        elif value is not True:
            yield Violation(f"{resource.name}: {flag} is {value!r}: a public ACL or policy would take effect; set all "
                            "four public access flags to true")


def check_owner_enforced(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    ownership = dig(resource.props, "rule", "objectOwnership")
    if ownership is UNKNOWN:
        yield Unverifiable(resource.name, "rule.objectOwnership")
    elif ownership != "BucketOwnerEnforced":
        yield Violation(f"{resource.name}: objectOwnership is {ownership!r}; 'BucketOwnerEnforced' disables ACLs entirely")


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
        yield Violation(f"{resource.name}: the bucket policy is not a JSON policy document")
        return
    statements = [s for s in as_list(document.get("Statement")) if _denies_plain_http(s)]
    if not statements:
        yield Violation(f"{resource.name}: no statement denies every principal all S3 actions when aws:SecureTransport is false")
    elif not any(_covers_bucket_and_objects(s, bucket) for s in statements):
        target = f"arn:aws:s3:::{bucket}" if isinstance(bucket, str) else "<arn>"
        yield Violation(f"{resource.name}: the TLS-only statement must cover the bucket the policy is attached to and its objects "
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
        yield Violation(f"{resource.name}: no enabled rule expires noncurrent object versions; old versions would be kept forever")


def check_protected(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    if not resource.protect:
        what = "bucket" if resource.type in BUCKET_TYPES else "KMS key"
        yield Violation(f"{resource.name}: the {what} holds (or decrypts) every image; set protect=True so no update or destroy "
                        "can delete it")


def check_key_rotation(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    rotation = dig(resource.props, "enableKeyRotation")
    if rotation is UNKNOWN:
        yield Unverifiable(resource.name, "enableKeyRotation")
    elif rotation is not True:
        yield Violation(f"{resource.name}: enableKeyRotation is {rotation!r}: the key material never changes; set "
                        "enableKeyRotation: true")


AWS_DEFAULT_DELETION_WINDOW = 30  # days, when deletionWindowInDays is not set
KEY_DELETION_CONFIG = schema({
    "minDeletionWindowDays": {
        "type": "integer",
        "description": "Fewest days between scheduling a key's deletion and the deletion (the window to cancel it).",
        "default": 30,
    },
})


def check_key_deletion_window(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """Deleting a key deletes every image encrypted with it: the waiting period is the last chance to notice."""
    days = dig(resource.props, "deletionWindowInDays", default=AWS_DEFAULT_DELETION_WINDOW)
    minimum = config["minDeletionWindowDays"]
    if days is UNKNOWN:
        yield Unverifiable(resource.name, "deletionWindowInDays")
    elif not is_number(days) or days < minimum:
        yield Violation(f"{resource.name}: deletionWindowInDays is {days!r}: a scheduled deletion of the key (and "
                        f"of every image with it) could go unnoticed; set at least {minimum} days")


# --- who the resource policies admit ------------------------------------------------------------


def _who(kind: str, value: Any, accounts: set[str]) -> str:
    """How a principal reads in a message: everyone, another account, or one of this stack's account."""
    if kind == "*" or value == "*":
        return "everyone ('*')"
    account = arn_account(value)
    if account and accounts and account not in accounts:
        return f"{kind} {value!r} of another account ({account})"
    return f"{kind} {value!r}"


def check_bucket_policy_grants(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """A bucket policy only denies: the roles' own policies grant access (and ``iam-registry-role-scoped``
    judges them), so any Allow in a bucket policy is a grant no other rule sees."""
    accounts = own_accounts(resources, config["accountIds"])
    for policy in (r for r in resources if r.type == BUCKET_POLICY):
        document = parse_json_document(dig(policy.props, "policy"))
        if document is UNKNOWN:
            yield Unverifiable(policy.name, "policy")
            continue
        for statement in statements(document, "Allow"):
            sid = statement.get("Sid", "(no Sid)")
            actions = as_list(statement.get("Action") or statement.get("NotAction"))
            who = [_who(kind, value, accounts) for kind, value in principals(statement)] or ["NotPrincipal: everyone else"]
            condition = " under conditions" if statement.get("Condition") else ""
            yield Violation(f"bucket policy {policy.name} statement {sid} allows {actions} to {', '.join(who)}"
                            f"{condition}; a bucket policy here only denies: grant access through the role's own "
                            "policy (roleAccess)", policy.urn)


KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"


def _restricted_to(statement: dict, accounts: set[str]) -> bool:
    """Whether a ``*`` statement is limited to callers of this stack's accounts (kms:CallerAccount)."""
    callers = as_list(dig(statement, "Condition", "StringEquals", "kms:CallerAccount"))
    return bool(callers) and bool(accounts) and set(callers) <= accounts


def check_key_policy(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """A KMS key policy admits only principals of the stack's accounts: never ``*`` (unless limited to
    those accounts' callers), never another account; no lockout safety bypass. A key without a policy
    gets AWS's default (its own account decides through IAM), which is fine."""
    accounts = own_accounts(resources, config["accountIds"])
    for key in (r for r in resources if r.type in (KMS_KEY, KEY_POLICY)):
        if dig(key.props, "bypassPolicyLockoutSafetyCheck") is True:
            yield Violation(f"KMS key {key.name} sets bypassPolicyLockoutSafetyCheck: its policy could lock the "
                            "account out of the key; remove it", key.urn)
        text = dig(key.props, "policy")
        if text is None:
            continue
        document = parse_json_document(text)
        if document is UNKNOWN:
            yield Unverifiable(key.name, "policy")
            continue
        if not isinstance(document, dict):
            yield Violation(f"KMS key {key.name}: policy is not a JSON policy document", key.urn)
            continue
        for statement in statements(document, "Allow"):
            sid = statement.get("Sid", "(no Sid)")
            actions = as_list(statement.get("Action") or statement.get("NotAction"))
            if "NotPrincipal" in statement:
                yield Violation(f"KMS key {key.name} statement {sid} allows {actions} to everyone but a list "
                                "(NotPrincipal); name the principals", key.urn)
            for kind, value in principals(statement):
                account = arn_account(value)
                if kind == "*" or value == "*":
                    if not _restricted_to(statement, accounts):
                        yield Violation(f"KMS key {key.name} statement {sid} allows {actions} to everyone ('*'); "
                                        "name this account's principals, or limit '*' with StringEquals "
                                        "kms:CallerAccount", key.urn)
                elif kind == "AWS" and account and not accounts:
                    yield Unverifiable(key.name, "the stack's AWS account (accountIds)")
                elif kind == "AWS" and account not in accounts:
                    yield Violation(f"KMS key {key.name} statement {sid} allows {actions} to {value!r} of another "
                                    f"account ({account or '?'}); only this stack's accounts {sorted(accounts)} may "
                                    "use the key", key.urn)


# --- lifecycle, force destroy, whose key ---------------------------------------------------------

LIFECYCLE_CONFIG = schema({
    "minNoncurrentDays": {
        "type": "integer",
        "description": "Fewest days a noncurrent version is kept (the window to restore a deleted image).",
        "default": 7,
    },
})


def check_lifecycle_keeps_current_versions(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    """No enabled rule expires current versions (every image would turn into a delete marker, and then,
    with noncurrent expiration, disappear), and noncurrent versions are kept long enough to restore."""
    rules = dig(resource.props, "rules")
    if rules is UNKNOWN:
        yield Unverifiable(resource.name, "rules")
        return
    minimum = config["minNoncurrentDays"]
    for index, rule in enumerate(as_list(rules)):
        status = dig(rule, "status")
        if status is UNKNOWN:
            yield Unverifiable(resource.name, f"rules[{index}].status")
            continue
        if status != "Enabled":
            continue
        name = dig(rule, "id", default=index)
        for field in ("days", "date"):
            value = dig(rule, "expiration", field)
            if value is UNKNOWN:
                yield Unverifiable(resource.name, f"rules[{index}].expiration.{field}")
            elif value not in (None, 0, ""):
                yield Violation(f"lifecycle {resource.name} rule {name} expires current object versions "
                                f"(expiration.{field} = {value!r}): every image ages out of the registry; expire "
                                "only noncurrent versions and delete markers")
        days = dig(rule, "noncurrentVersionExpiration", "noncurrentDays")
        if days is UNKNOWN:
            yield Unverifiable(resource.name, f"rules[{index}].noncurrentVersionExpiration.noncurrentDays")
        elif isinstance(days, (int, float)) and days < minimum:
            yield Violation(f"lifecycle {resource.name} rule {name} deletes noncurrent versions after {days:g} days, "
                            f"less than the {minimum}-day restore window; keep them at least {minimum} days")


def check_no_force_destroy(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    value = dig(resource.props, "forceDestroy")
    if value is UNKNOWN:
        yield Unverifiable(resource.name, "forceDestroy")
    elif value is True:
        yield Violation(f"bucket {resource.name} sets forceDestroy: a destroy (or a replacement) deletes every image "
                        "and version in it; set forceDestroy: false")


KMS_ALIAS = "aws:kms/alias:Alias"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"


def _stack_key_names(resources: list[Resource]) -> tuple[set[str], list[Resource]]:
    """Every way an encryption setting can name a KMS key of the stack (ARN, key ID, alias name or ARN)."""
    keys = [r for r in resources if r.type == KMS_KEY]
    names = strings(dig(k.props, field) for k in keys for field in ("arn", "keyId", "id"))
    names |= strings(dig(a.props, field) for a in resources if a.type == KMS_ALIAS for field in ("name", "arn"))
    return names, keys


def _key_settings(resources: list[Resource]) -> Iterable[tuple[Resource, str, Any]]:
    for resource in resources:
        if resource.type in (ENCRYPTION, ENCRYPTION_V2):
            rules = dig(resource.props, "rules", default=[])
            if rules is UNKNOWN:
                yield resource, "rules", UNKNOWN
            for index, rule in enumerate(as_list(rules)):
                yield (resource, f"rules[{index}].applyServerSideEncryptionByDefault.kmsMasterKeyId",
                       dig(rule, "applyServerSideEncryptionByDefault", "kmsMasterKeyId"))
        elif resource.type == REPLICATION:
            rules = dig(resource.props, "rules", default=[])
            if rules is UNKNOWN:
                yield resource, "rules", UNKNOWN
            for index, rule in enumerate(as_list(rules)):
                yield (resource, f"rules[{index}].destination.encryptionConfiguration.replicaKmsKeyId",
                       dig(rule, "destination", "encryptionConfiguration", "replicaKmsKeyId"))


def check_encrypted_with_own_key(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """Buckets (and replicas) are encrypted with a KMS key this stack manages: a key of another account
    (or one nobody here controls) can be disabled or deleted by its owner, and every image with it."""
    names, keys = _stack_key_names(resources)
    for resource, where, key in _key_settings(resources):
        if key in (None, "") or (isinstance(key, str) and key.endswith("alias/aws/s3")):
            continue  # no customer key at all: s3-sse-kms-customer-key reports it
        if key is UNKNOWN:
            sources = resource.property_dependencies.get("rules") or resource.dependencies
            if not any(k.urn in sources for k in keys):
                yield Unverifiable(resource.name, where)
            continue
        if isinstance(key, str) and key in names:
            continue
        account = arn_account(key)
        whose = f"a key of account {account}" if account else "a key"
        yield Violation(f"{resource.name}: {where} is {key!r}, {whose} this stack does not manage; its owner could "
                        "disable or delete it and every image with it; encrypt with the stack's own aws.kms.Key",
                        resource.urn)


ROLE = "aws:iam/role:Role"


def check_replication_targets(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """Replication copies every image to a bucket this stack manages, through a role this stack manages:
    a destination elsewhere is a copy of every image in someone else's hands."""
    buckets = [r for r in resources if r.type in BUCKET_TYPES]
    bucket_arns = {arn for b in buckets for arn in _arns_from(b)}
    roles = strings(dig(r.props, "arn") for r in resources if r.type == ROLE)
    for replication in (r for r in resources if r.type == REPLICATION):
        role = dig(replication.props, "role")
        if role is UNKNOWN:
            yield Unverifiable(replication.name, "role")
        elif not isinstance(role, str) or role not in roles:
            yield Violation(f"{replication.name} replicates through the role {role!r}, which this stack does not "
                            "manage; use the stack's replication role", replication.urn)
        rules = dig(replication.props, "rules", default=[])
        for index, rule in enumerate(as_list(rules) if rules is not UNKNOWN else [UNKNOWN]):
            destination = dig(rule, "destination", "bucket")
            if destination is UNKNOWN or rule is UNKNOWN:
                yield Unverifiable(replication.name, f"rules[{index}].destination.bucket")
            elif not isinstance(destination, str) or destination not in bucket_arns:
                account = dig(rule, "destination", "account")
                whose = f" of account {account}" if account else ""
                yield Violation(f"{replication.name}: rules[{index}] copies every image to {destination!r}{whose}, a "
                                "bucket this stack does not manage; replicate to the stack's DR bucket",
                                replication.urn)


def _arns_from(bucket: Resource) -> set[str]:
    arn, name = dig(bucket.props, "arn"), dig(bucket.props, "bucket")
    return {value for value in (arn, f"arn:aws:s3:::{name}" if isinstance(name, str) else None) if isinstance(value, str)}


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
    resource_policy("kms-key-deletion-window",
                    "KMS keys wait at least minDeletionWindowDays (30) between a scheduled deletion and the deletion.",
                    (KMS_KEY,), check_key_deletion_window, KEY_DELETION_CONFIG),
    stack_policy("s3-bucket-policy-allows-nothing",
                 "Bucket policies only deny; no Allow to anyone, any account or any principal (roles get access "
                 "from their own policies).",
                 check_bucket_policy_grants, schema(ACCOUNTS_PROPERTY)),
    stack_policy("kms-key-policy-own-account",
                 "KMS key policies admit only the stack's accounts: no '*' unless limited by kms:CallerAccount, "
                 "no other account, no lockout-safety bypass.",
                 check_key_policy, schema(ACCOUNTS_PROPERTY)),
    resource_policy("s3-lifecycle-keeps-current-versions",
                    "No lifecycle rule expires current versions; noncurrent versions are kept minNoncurrentDays.",
                    (LIFECYCLE, LIFECYCLE_V2), check_lifecycle_keeps_current_versions, LIFECYCLE_CONFIG),
    resource_policy("s3-bucket-no-force-destroy",
                    "Buckets do not set forceDestroy.",
                    BUCKET_TYPES, check_no_force_destroy),
    stack_policy("s3-encrypted-with-own-key",
                 "Bucket encryption and replica encryption name a KMS key (or alias) this stack manages.",
                 check_encrypted_with_own_key),
    stack_policy("s3-replication-to-own-bucket",
                 "Replication goes to a bucket of this stack, through a role of this stack.",
                 check_replication_targets),
]
