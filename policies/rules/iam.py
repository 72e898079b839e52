"""IAM rules: no wildcard in what a policy allows, and each role limited to the buckets declared
for it.

Deny statements may use wildcards (the TLS-only bucket policy denies ``s3:*``); only what is
*allowed* is checked. A policy document that is unknown during preview (it is usually built from a
bucket or key ARN) is reported as "cannot verify during preview" and checked at ``pulumi up``.

Which role may reach which bucket and key is declared in the pack's policy config (``roleAccess``:
the role's logical name -> ``{"buckets": [...], "keys": [...]}``, logical names), not read from the
program: a program change cannot widen a role's reach without a reviewed change to the pack or to
the stack's policy config. A declared bucket grants its ARN and its objects (``<arn>/*``), a declared
key its ARN, nothing else; a role not declared may reach nothing. The defaults are least privilege
for this program: the registry and the garbage collector reach the registry's bucket and key; the
replication role reaches that bucket and key and the DR replica's bucket and key. Managed, user and
group policies are looked up under their own logical name. Keys are declared rather than derived
from a bucket's encryption settings, so a broken encryption resource is reported once, by the S3
rules, and not again as every role's key permission.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

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
    schema,
    stack_policy,
)

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
USER_POLICY = "aws:iam/userPolicy:UserPolicy"
GROUP_POLICY = "aws:iam/groupPolicy:GroupPolicy"
POLICY_TYPES = (ROLE_POLICY, POLICY, USER_POLICY, GROUP_POLICY)

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
KMS_KEY = "aws:kms/key:Key"

# components/storage.py registers the registry's bucket, its key, the registry's and the
# garbage collector's roles and, in prod, the DR bucket with its key and the replication role.
REGISTRY_ACCESS = {"buckets": ["registry-storage-bucket"], "keys": ["registry-storage-key"]}
DEFAULT_ROLE_ACCESS = {
    "registry-storage-role": REGISTRY_ACCESS,
    "registry-storage-gc-role": REGISTRY_ACCESS,
    "registry-storage-replication-role": {
        "buckets": ["registry-storage-bucket", "registry-storage-dr-bucket"],
        "keys": ["registry-storage-key", "registry-storage-dr-key"],
    },
}
NAMES = {"type": "array", "items": {"type": "string"}}
ROLE_SCOPE_CONFIG = schema({
    "roleAccess": {
        "type": "object",
        "additionalProperties": {"type": "object", "properties": {"buckets": NAMES, "keys": NAMES},
                                 "additionalProperties": False},
        "description": "For each IAM role (logical name; for a managed, user or group policy its own logical "
                       "name), the buckets and KMS keys (logical names) it may reach; a bucket includes its "
                       "objects.",
        "default": DEFAULT_ROLE_ACCESS,
    },
})


def _documents(resource: Resource) -> Iterable[tuple[str, Any]]:
    """(where, parsed document) for each permission document the resource carries."""
    if resource.type == ROLE:
        inline = dig(resource.props, "inlinePolicies", default=[])
        if inline is UNKNOWN:
            yield "inlinePolicies", UNKNOWN
            return
        for index, entry in enumerate(as_list(inline)):
            yield f"inlinePolicies[{index}].policy", parse_json_document(dig(entry, "policy"))
    else:
        yield "policy", parse_json_document(dig(resource.props, "policy"))


def _allow_statements(document: Any) -> list[dict]:
    statements = as_list(document.get("Statement")) if isinstance(document, dict) else []
    return [s for s in statements if isinstance(s, dict) and s.get("Effect") == "Allow"]


def _resource_is_wildcard(arn: str) -> bool:
    """``*`` or an ARN with a wildcard, except objects of one named bucket (``arn:aws:s3:::<bucket>/*``)."""
    if arn.startswith("arn:aws:s3:::"):
        bucket = arn[len("arn:aws:s3:::"):].split("/", 1)[0]
        return not bucket or "*" in bucket or "?" in bucket
    return "*" in arn or "?" in arn


def check_no_wildcards(resource: Resource, config: Mapping[str, Any]) -> Iterable[Finding]:
    for where, document in _documents(resource):
        if document is UNKNOWN:
            yield Unverifiable(resource.name, where)
            continue
        if document is None:
            yield Violation(f"{where} is not a JSON policy document")
            continue
        for statement in _allow_statements(document):
            sid = statement.get("Sid", "(no Sid)")
            if "NotAction" in statement or "NotResource" in statement:
                yield Violation(f"{where} statement {sid} allows with NotAction/NotResource: everything but a list")
            for action in as_list(statement.get("Action")):
                if isinstance(action, str) and "*" in action:
                    yield Violation(f"{where} statement {sid} allows the wildcard action {action!r}")
            for arn in as_list(statement.get("Resource")):
                if isinstance(arn, str) and _resource_is_wildcard(arn):
                    yield Violation(f"{where} statement {sid} allows on the wildcard resource {arn!r}")


def _arns_of_bucket(bucket: Resource) -> tuple[set[str], bool]:
    """(the ARNs naming the bucket, whether they are unknown)."""
    arn, name = dig(bucket.props, "arn"), dig(bucket.props, "bucket")
    arns = {value for value in (arn,) if isinstance(value, str)}
    if isinstance(name, str):
        arns.add(f"arn:aws:s3:::{name}")
    return arns, not arns


def _role_names(role: Resource) -> set[str]:
    """What a ``RolePolicy``'s ``role`` input can hold for this role: its name or its ID."""
    return {value for value in (dig(role.props, "name"), dig(role.props, "id")) if isinstance(value, str)}


def _owner(resource: Resource, roles: list[Resource]) -> Any:
    """The logical name ``roleAccess`` knows the permissions of ``resource`` by; UNKNOWN if it cannot be told.

    A ``RolePolicy`` belongs to the role its ``role`` input names (a role outside the stack is known by
    that name); while the input is unknown, to the role its value comes from.
    """
    if resource.type != ROLE_POLICY:
        return resource.name
    target = dig(resource.props, "role")
    if isinstance(target, str):
        return next((role.name for role in roles if target in _role_names(role)), target)
    sources = resource.property_dependencies.get("role") or resource.dependencies
    candidates = [role.name for role in roles if role.urn in sources]
    return candidates[0] if len(candidates) == 1 else UNKNOWN


def _scope(access: Mapping[str, list[str]], resources: list[Resource]) -> tuple[set[str], bool, bool]:
    """(the ARNs the declared buckets and keys grant, whether a bucket ARN is unknown, whether a key ARN is)."""
    allowed: set[str] = set()
    unknown_buckets = unknown_keys = False
    for bucket in (r for r in resources if r.type in BUCKET_TYPES and r.name in access.get("buckets", [])):
        arns, unknown = _arns_of_bucket(bucket)
        allowed |= arns | {f"{arn}/*" for arn in arns}
        unknown_buckets |= unknown
    for key in (r for r in resources if r.type == KMS_KEY and r.name in access.get("keys", [])):
        arn = dig(key.props, "arn")
        if isinstance(arn, str):
            allowed.add(arn)
        else:
            unknown_keys = True
    return allowed, unknown_buckets, unknown_keys


def _declared_reach(owner: str, access: Mapping[str, list[str]]) -> str:
    names = [*access.get("buckets", []), *access.get("keys", [])]
    if not names:
        return f"nothing: roleAccess declares no bucket or key for {owner}"
    return f"what roleAccess declares for it ({', '.join(names)}; a bucket with its objects)"


def check_registry_role_scoped(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """Every IAM permission names only the buckets (and their objects) and keys ``roleAccess`` declares
    for its role."""
    declared: Mapping[str, Mapping[str, list[str]]] = config["roleAccess"]
    roles = [r for r in resources if r.type == ROLE]
    for resource in (r for r in resources if r.type in POLICY_TYPES or r.type == ROLE):
        owner = _owner(resource, roles)
        if owner is UNKNOWN:
            yield Unverifiable(resource.name, "role")
            continue
        access = declared.get(owner, {})
        allowed, unknown_buckets, unknown_keys = _scope(access, resources)
        for where, document in _documents(resource):
            if document is UNKNOWN:
                yield Unverifiable(resource.name, where)
                continue
            for statement in _allow_statements(document or {}):
                for arn in as_list(statement.get("Resource")):
                    if not isinstance(arn, str) or arn in allowed:
                        continue
                    if (arn.startswith("arn:aws:kms:") and unknown_keys) or (arn.startswith("arn:aws:s3:") and unknown_buckets):
                        yield Unverifiable(resource.name, f"{where} (the ARNs of {owner}'s buckets and keys)")
                        continue
                    yield Violation(f"{resource.name}: {where} statement {statement.get('Sid', '(no Sid)')} allows "
                                    f"{arn!r}, but {owner} may reach only {_declared_reach(owner, access)}",
                                    resource.urn)


POLICIES = [
    resource_policy("iam-no-wildcards",
                    "IAM policies allow no wildcard action (including s3:*), no wildcard resource and no "
                    "NotAction/NotResource.",
                    (*POLICY_TYPES, ROLE), check_no_wildcards),
    stack_policy("iam-registry-role-scoped",
                 "Each IAM role reaches only the buckets (with their objects) and KMS keys the policy config "
                 "declares for it (roleAccess).",
                 check_registry_role_scoped, ROLE_SCOPE_CONFIG),
]
