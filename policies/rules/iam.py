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

import re
from typing import Any, Iterable, Mapping

from .support import (
    ACCOUNTS_PROPERTY,
    UNKNOWN,
    Finding,
    Resource,
    Unverifiable,
    Violation,
    as_list,
    arn_account,
    dig,
    own_accounts,
    parse_json_document,
    principals,
    resource_policy,
    schema,
    stack_policy,
    statements,
)

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
USER_POLICY = "aws:iam/userPolicy:UserPolicy"
GROUP_POLICY = "aws:iam/groupPolicy:GroupPolicy"
POLICY_TYPES = (ROLE_POLICY, POLICY, USER_POLICY, GROUP_POLICY)
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
POLICY_ATTACHMENT = "aws:iam/policyAttachment:PolicyAttachment"

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
KMS_KEY = "aws:kms/key:Key"

# components/storage.py registers the registry's bucket and role, components/operations.py the
# garbage collector's role and, in prod, the DR bucket with its replication role.
REGISTRY_ACCESS = {"buckets": ["registry-storage-bucket"], "keys": ["registry-storage-key"]}
DEFAULT_ROLE_ACCESS = {
    "registry-storage-role": REGISTRY_ACCESS,
    "registry-operations-gc-role": REGISTRY_ACCESS,
    "registry-operations-replication-role": {
        "buckets": ["registry-storage-bucket", "registry-operations-dr-bucket"],
        "keys": ["registry-storage-key", "registry-operations-dr-key"],
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
    return statements(document, "Allow")


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
            yield Violation(f"{resource.name}: {where} is not a JSON policy document; give it a parseable document")
            continue
        for statement in _allow_statements(document):
            sid = statement.get("Sid", "(no Sid)")
            if "NotAction" in statement or "NotResource" in statement:
                yield Violation(f"{resource.name}: {where} statement {sid} allows with NotAction/NotResource: "
                                "everything but a list; name the actions and resources instead")
            for action in as_list(statement.get("Action")):
                if isinstance(action, str) and "*" in action:
                    yield Violation(f"{resource.name}: {where} statement {sid} allows the wildcard action {action!r}; "
                                    "list the exact actions the role needs")
            for arn in as_list(statement.get("Resource")):
                if isinstance(arn, str) and _resource_is_wildcard(arn):
                    yield Violation(f"{resource.name}: {where} statement {sid} allows on the wildcard resource "
                                    f"{arn!r}; name the bucket, its objects (<arn>/*) or the key")


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


def _owned_statements(resources: list[Resource]) -> Iterable[Any]:
    """(resource, its owner in roleAccess terms, where, statement) of every Allow statement of every
    permission document in the stack; an ``Unverifiable`` where the owner or a document is unknown."""
    roles = [r for r in resources if r.type == ROLE]
    for resource in (r for r in resources if r.type in POLICY_TYPES or r.type == ROLE):
        owner = _owner(resource, roles)
        if owner is UNKNOWN:
            yield Unverifiable(resource.name, "role")
            continue
        for where, document in _documents(resource):
            if document is UNKNOWN:
                yield Unverifiable(resource.name, where)
                continue
            for statement in _allow_statements(document or {}):
                yield resource, owner, where, statement


def check_registry_role_scoped(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """Every IAM permission names only the buckets (and their objects) and keys ``roleAccess`` declares
    for its role."""
    declared: Mapping[str, Mapping[str, list[str]]] = config["roleAccess"]
    for found in _owned_statements(resources):
        if isinstance(found, Unverifiable):
            yield found
            continue
        resource, owner, where, statement = found
        access = declared.get(owner, {})
        allowed, unknown_buckets, unknown_keys = _scope(access, resources)
        for arn in as_list(statement.get("Resource")):
            if not isinstance(arn, str) or arn in allowed:
                continue
            if (arn.startswith("arn:aws:kms:") and unknown_keys) or (arn.startswith("arn:aws:s3:") and unknown_buckets):
                yield Unverifiable(resource.name, f"{where} (the ARNs of {owner}'s buckets and keys)")
                continue
            yield Violation(f"{resource.name}: {where} statement {statement.get('Sid', '(no Sid)')} allows "
                            f"{arn!r}, but {owner} may reach only {_declared_reach(owner, access)}", resource.urn)


# --- trust policies ------------------------------------------------------------------------------

# Who may assume each role (logical name): one Kubernetes service account through the cluster's OIDC
# provider (IRSA), or one AWS service.
DEFAULT_ROLE_TRUST = {
    "registry-storage-role": {"serviceAccount": "cicd/registry"},
    "registry-operations-gc-role": {"serviceAccount": "cicd/registry-gc"},
    "registry-operations-replication-role": {"service": "s3.amazonaws.com"},
}
TRUST_CONFIG = schema({
    **ACCOUNTS_PROPERTY,
    "roleTrust": {
        "type": "object",
        "additionalProperties": {"type": "object", "properties": {"serviceAccount": {"type": "string"},
                                                                  "service": {"type": "string"}},
                                 "additionalProperties": False},
        "description": "For each IAM role (logical name), who may assume it: a Kubernetes service account "
                       "(<namespace>/<name>, through the OIDC provider) or an AWS service principal.",
        "default": DEFAULT_ROLE_TRUST,
    },
})
OIDC_PROVIDER = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):oidc-provider/(?P<host>.+)$")
WEB_IDENTITY = "sts:AssumeRoleWithWebIdentity"
TRUST_ACTIONS = {"Service": {"sts:AssumeRole", "sts:TagSession"}, "Federated": {WEB_IDENTITY}}


def _web_identity_findings(statement: dict, provider: str, declared: Mapping[str, str],
                           accounts: set[str]) -> Iterable[Any]:
    """What a federated trust statement admits beyond the declared service account (strings), or an
    ``Unverifiable`` marker for the account while the stack's account is unknown."""
    match = OIDC_PROVIDER.match(provider)
    if not match:
        yield (f"trusts the federated principal {provider!r}, which is not an OIDC provider ARN; trust the "
               "cluster's OIDC provider only")
        return
    if not accounts:
        yield Unverifiable("trust", "the stack's AWS account")
    elif match["account"] not in accounts:
        yield (f"trusts the OIDC provider of account {match['account']}, not this stack's {sorted(accounts)}: "
               "that account's cluster could assume the role; use the stack's own cluster's provider")
    account = declared.get("serviceAccount")
    if not account:
        yield "trusts an OIDC provider, but roleTrust declares an AWS service for it; trust that service only"
        return
    namespace, _, name = account.partition("/")
    wanted = f"system:serviceaccount:{namespace}:{name}"
    host = match["host"]
    condition = statement.get("Condition") if isinstance(statement.get("Condition"), dict) else {}
    for operator in condition:
        if operator != "StringEquals" and any(str(key).startswith(f"{host}:") for key in condition[operator] or {}):
            yield (f"tests the provider's claims with {operator}, which matches patterns or sets; use "
                   f"StringEquals {host}:sub = {wanted!r}")
    equals = condition.get("StringEquals") or {}
    subjects = as_list(equals.get(f"{host}:sub"))
    audiences = as_list(equals.get(f"{host}:aud"))
    if subjects != [wanted]:
        shown = subjects or "no :sub condition (every service account of the cluster)"
        yield f"admits {shown}; bind it with StringEquals {host}:sub = {wanted!r}"
    if audiences != ["sts.amazonaws.com"]:
        shown = audiences or "no :aud condition (tokens minted for any audience)"
        yield f"admits {shown}; bind it with StringEquals {host}:aud = 'sts.amazonaws.com'"


def _trusted(declared: Mapping[str, str]) -> str:
    if declared.get("serviceAccount"):
        return f"the service account {declared['serviceAccount']} (through the cluster's OIDC provider)"
    return f"the AWS service {declared.get('service')}"


def check_role_trust(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """Each role's trust policy admits exactly whom ``roleTrust`` declares for it: never ``*``, never
    another account, an OIDC provider only with :sub and :aud bound to one service account."""
    accounts = own_accounts(resources, config["accountIds"])
    for role in (r for r in resources if r.type == ROLE):
        document = parse_json_document(dig(role.props, "assumeRolePolicy"))
        if document is UNKNOWN:
            yield Unverifiable(role.name, "assumeRolePolicy")
            continue
        declared = config["roleTrust"].get(role.name)
        if not isinstance(document, dict):
            yield Violation(f"IAM role {role.name}: assumeRolePolicy is not a JSON policy document", role.urn)
            continue
        if declared is None:
            yield Violation(f"IAM role {role.name}: roleTrust declares no one who may assume it; declare its "
                            "service account or AWS service in the policy config", role.urn)
            continue
        for statement in statements(document, "Allow"):
            sid = statement.get("Sid", "(no Sid)")
            problems: list[Any] = []
            if "NotPrincipal" in statement:
                problems.append("allows with NotPrincipal: everyone but a list; name the one principal")
            actions = {a for a in as_list(statement.get("Action")) if isinstance(a, str)}
            for kind, value in principals(statement):
                if kind == "*" or value == "*":
                    problems.append("trusts every AWS principal ('*'): anyone in any account could assume it; "
                                    f"trust {_trusted(declared)} only")
                elif kind == "AWS":
                    problems.append(f"trusts the AWS principal {value!r} (account {arn_account(value) or '?'}); "
                                    f"only {_trusted(declared)} may assume it")
                elif kind == "Service":
                    if value != declared.get("service"):
                        problems.append(f"trusts the AWS service {value!r}; only {_trusted(declared)} may assume it")
                    extra = sorted(actions - TRUST_ACTIONS["Service"])
                    if extra:
                        problems.append(f"lets the service call {extra}; allow sts:AssumeRole only")
                elif kind == "Federated":
                    problems += list(_web_identity_findings(statement, str(value), declared, accounts))
                    extra = sorted(actions - TRUST_ACTIONS["Federated"])
                    if extra:
                        problems.append(f"lets the provider's tokens call {extra}; allow {WEB_IDENTITY} only")
                else:
                    problems.append(f"trusts {kind} {value!r}; only {_trusted(declared)} may assume it")
            for problem in problems:
                if isinstance(problem, Unverifiable):
                    yield Unverifiable(role.name, "the stack's AWS account (accountIds)")
                else:
                    yield Violation(f"IAM role {role.name}: trust statement {sid} {problem}", role.urn)


# --- managed-policy attachments ---------------------------------------------------------------------


def _attachments(resources: list[Resource]) -> Iterable[tuple[Resource, Any, str]]:
    """(resource, attached policy ARN, the input it came from) of every managed-policy attachment."""
    for resource in resources:
        if resource.type in (ROLE_POLICY_ATTACHMENT, POLICY_ATTACHMENT):
            yield resource, dig(resource.props, "policyArn"), "policyArn"
        elif resource.type == ROLE:
            arns = dig(resource.props, "managedPolicyArns", default=[])
            if arns is UNKNOWN:
                yield resource, UNKNOWN, "managedPolicyArns"
            for arn in as_list(arns):
                yield resource, arn, "managedPolicyArns"


def check_managed_policy_attachments(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """A role gets only policies the stack defines (so the other IAM rules read them): never an AWS-managed
    policy (``arn:aws:iam::aws:policy/...``, written for whole job functions) nor one defined elsewhere."""
    stack_policies = [r for r in resources if r.type == POLICY]
    defined = {dig(r.props, "arn") for r in stack_policies} - {None, UNKNOWN}
    for resource, arn, field in _attachments(resources):
        if arn is UNKNOWN:
            sources = resource.property_dependencies.get(field) or resource.dependencies
            if not any(policy.urn in sources for policy in stack_policies):
                yield Unverifiable(resource.name, field)
            continue
        if arn in defined:
            continue
        owner = "AWS-managed " if isinstance(arn, str) and ":iam::aws:policy/" in arn else ""
        yield Violation(f"{resource.name} attaches the {owner}policy {arn!r}, which this stack does not define: "
                        "what it grants cannot be checked here; attach an aws.iam.Policy of this stack or an "
                        "inline RolePolicy instead", resource.urn)


# --- actions that destroy history -------------------------------------------------------------------

HISTORY_ACTIONS = {
    "s3:DeleteObjectVersion": "deletes object versions for good",
    "s3:DeleteBucket": "deletes the bucket",
    "s3:PutBucketVersioning": "can suspend versioning",
    "s3:PutLifecycleConfiguration": "can expire every version",
    "s3:PutBucketPolicy": "can rewrite the bucket policy",
    "s3:DeleteBucketPolicy": "can drop the bucket policy",
    "s3:PutReplicationConfiguration": "can stop or redirect replication",
    "s3:PutEncryptionConfiguration": "can change the bucket's encryption key",
    "s3:PutBucketObjectLockConfiguration": "can change object lock",
    "s3:BypassGovernanceRetention": "can bypass object lock",
    "s3:ReplicateDelete": "propagates deletions to the replica",
    "kms:ScheduleKeyDeletion": "can destroy the key and every object encrypted with it",
    "kms:DisableKey": "can make every object unreadable",
    "kms:PutKeyPolicy": "can rewrite the key policy",
    "kms:DisableKeyRotation": "can stop key rotation",
    "iam:PutRolePolicy": "can rewrite role policies",
    "iam:DeleteRolePolicy": "can delete role policies",
    "iam:AttachRolePolicy": "can attach any policy",
    "iam:CreatePolicyVersion": "can rewrite managed policies",
    "iam:SetDefaultPolicyVersion": "can switch managed policy versions",
    "iam:UpdateAssumeRolePolicy": "can change who assumes a role",
    "cloudtrail:StopLogging": "can stop the audit trail",
    "cloudtrail:DeleteTrail": "can delete the audit trail",
}
HISTORY_CONFIG = schema({
    "historyActions": {
        "type": "object",
        "additionalProperties": NAMES,
        "description": "For each role (logical name; for a managed, user or group policy its own name), the "
                       "history-destroying actions it must have.",
        "default": {"registry-operations-replication-role": ["s3:ReplicateDelete"]},
    },
})


def _history_actions(action: str) -> list[str]:
    """The history-destroying actions an allowed action names. A pattern (``s3:*``, ``s3:Delete*``) is
    ``iam-no-wildcards``' to report, once: the policy cannot pass with it anyway."""
    if "*" in action or "?" in action:
        return []
    return [name for name in HISTORY_ACTIONS if name.lower() == action.lower()]


def check_history_actions(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """No role may destroy history (delete versions, suspend versioning, rewrite lifecycles or policies,
    destroy keys) unless ``historyActions`` says it must."""
    for found in _owned_statements(resources):
        if isinstance(found, Unverifiable):
            yield found
            continue
        resource, owner, where, statement = found
        exempt = set(config["historyActions"].get(owner, []))
        for action in (a for a in as_list(statement.get("Action")) if isinstance(a, str)):
            for name in (n for n in _history_actions(action) if n not in exempt):
                yield Violation(f"{resource.name}: {where} statement {statement.get('Sid', '(no Sid)')} lets {owner} "
                                f"call {name}, which {HISTORY_ACTIONS[name]}; remove it (or declare it in "
                                "historyActions for the one role that must have it)", resource.urn)


# --- actions that hand access to someone else ---------------------------------------------------------

DELEGATING_ACTIONS = {
    "kms:CreateGrant": "lets the role hand the key's use to any principal",
    "iam:PassRole": "lets the role give a role to a service it starts",
    "iam:CreateAccessKey": "mints long-lived keys for a user",
    "iam:CreateLoginProfile": "gives a user a console password",
    "iam:AttachUserPolicy": "gives a user any policy",
    "sts:AssumeRole": "lets the role become another role",
    "sts:GetFederationToken": "mints credentials for anyone it names",
}


def check_delegating_actions(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """No role hands its access (or a key's, or another role's) to a principal nobody here declared: what
    it would grant then escapes every rule of this pack."""
    for found in _owned_statements(resources):
        if isinstance(found, Unverifiable):
            yield found
            continue
        resource, owner, where, statement = found
        for action in (a for a in as_list(statement.get("Action")) if isinstance(a, str)):
            name = next((n for n in DELEGATING_ACTIONS if n.lower() == action.lower()), None)
            if name:
                yield Violation(f"{resource.name}: {where} statement {statement.get('Sid', '(no Sid)')} lets {owner} "
                                f"call {name}, which {DELEGATING_ACTIONS[name]}; remove it", resource.urn)


# --- which account the providers deploy into ---------------------------------------------------------

AWS_PROVIDER = "pulumi:providers:aws"


def _provider_list(value: Any) -> Any:
    """A provider input as the engine sends it: lists and objects arrive JSON-encoded."""
    parsed = parse_json_document(value) if isinstance(value, str) and value[:1] in "[{" else value
    return as_list(parsed) if parsed is not UNKNOWN else UNKNOWN


def check_providers_own_account(resources: list[Resource], config: Mapping[str, Any]) -> Iterable[Finding]:
    """An AWS provider neither assumes a role of another account nor allows one: the stack's buckets, keys and
    roles would be created (and its policies judged) in an account the pack knows nothing of."""
    accounts = own_accounts(resources, config["accountIds"])
    for provider in (r for r in resources if r.type == AWS_PROVIDER):
        inputs = [_provider_list(dig(provider.props, key)) for key in ("assumeRoles", "assumeRole", "allowedAccountIds")]
        if any(value is UNKNOWN or UNKNOWN in value for value in inputs):
            yield Unverifiable(provider.name, "assumeRoles/allowedAccountIds")
            continue
        roles, allowed = inputs[0] + inputs[1], inputs[2]
        named = [(f"assumes {dig(r, 'roleArn')!r}", arn_account(dig(r, "roleArn"))) for r in roles] + [
            (f"allows account {a!r}", arn_account(a)) for a in allowed]
        for what, account in named:
            if not accounts:
                yield Unverifiable(provider.name, "the stack's AWS account (accountIds)")
            elif account not in accounts:
                yield Violation(f"AWS provider {provider.name} {what}, not this stack's {sorted(accounts)}: the stack "
                                "would deploy into an account the pack does not judge; use the stack's account",
                                provider.urn)


POLICIES = [
    resource_policy("iam-no-wildcards",
                    "IAM policies allow no wildcard action (including s3:*), no wildcard resource and no "
                    "NotAction/NotResource.",
                    (*POLICY_TYPES, ROLE), check_no_wildcards),
    stack_policy("iam-registry-role-scoped",
                 "Each IAM role reaches only the buckets (with their objects) and KMS keys the policy config "
                 "declares for it (roleAccess).",
                 check_registry_role_scoped, ROLE_SCOPE_CONFIG),
    stack_policy("iam-role-trust-bound",
                 "Each IAM role is assumable only by whom roleTrust declares: one service account through the "
                 "stack's own OIDC provider (:sub and :aud bound with StringEquals) or one AWS service; never '*' "
                 "or another account.",
                 check_role_trust, TRUST_CONFIG),
    stack_policy("iam-no-foreign-managed-policies",
                 "Roles get no AWS-managed policy and no managed policy the stack does not define.",
                 check_managed_policy_attachments),
    stack_policy("iam-no-history-destroying-actions",
                 "No role may delete object versions, change versioning, lifecycle, replication, encryption or "
                 "policies, or disable/delete keys, unless historyActions declares it for that role.",
                 check_history_actions, HISTORY_CONFIG),
    stack_policy("iam-no-delegating-actions",
                 "No role may create KMS grants, pass or assume roles, or mint user credentials.",
                 check_delegating_actions),
    stack_policy("aws-providers-own-account",
                 "AWS providers assume no role of another account and allow no other account.",
                 check_providers_own_account, schema(ACCOUNTS_PROPERTY)),
]
