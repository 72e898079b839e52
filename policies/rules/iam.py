"""IAM rules: no wildcard in what a policy allows, and the registry's role limited to its own bucket
and key.

Deny statements may use wildcards (the TLS-only bucket policy denies ``s3:*``); only what is
*allowed* is checked. A policy document that is unknown during preview (it is usually built from a
bucket or key ARN) is reported as "cannot verify during preview" and checked at ``pulumi up``.
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


def _arn_of_bucket(bucket: Resource) -> set[str]:
    arns = {value for value in (dig(bucket.props, "arn"),) if isinstance(value, str)}
    name = dig(bucket.props, "bucket")
    if isinstance(name, str):
        arns.add(f"arn:aws:s3:::{name}")
    return arns


def check_registry_role_scoped(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """Every IAM permission in the stack names one of the stack's own buckets (or its objects) or keys."""
    bucket_arns: set[str] = set()
    for bucket in (r for r in resources if r.type in BUCKET_TYPES):
        bucket_arns |= _arn_of_bucket(bucket)
    key_arns = {dig(r.props, "arn") for r in resources if r.type == KMS_KEY}
    unknown_keys = UNKNOWN in key_arns
    allowed = bucket_arns | {f"{arn}/*" for arn in bucket_arns} | {a for a in key_arns if isinstance(a, str)}
    for resource in (r for r in resources if r.type in POLICY_TYPES or r.type == ROLE):
        for where, document in _documents(resource):
            if document is UNKNOWN:
                yield Unverifiable(resource.name, where)
                continue
            for statement in _allow_statements(document or {}):
                for arn in as_list(statement.get("Resource")):
                    if not isinstance(arn, str) or arn in allowed:
                        continue
                    if arn.startswith("arn:aws:kms:") and unknown_keys:
                        yield Unverifiable(resource.name, f"{where} (the stack's KMS key ARN)")
                        continue
                    yield Violation(f"{resource.name}: {where} statement {statement.get('Sid', '(no Sid)')} allows "
                                    f"{arn!r}, which is neither a bucket of this stack (or its objects) nor one of "
                                    "its KMS keys", resource.urn)


POLICIES = [
    resource_policy("iam-no-wildcards",
                    "IAM policies allow no wildcard action (including s3:*), no wildcard resource and no "
                    "NotAction/NotResource.",
                    (*POLICY_TYPES, ROLE), check_no_wildcards),
    stack_policy("iam-registry-role-scoped",
                 "IAM permissions name only this stack's own buckets, their objects and its KMS keys.",
                 check_registry_role_scoped),
]
