"""What every rule module shares: plain data with unknowns made explicit, findings, and the adapters
that turn a pure check into a Pulumi policy.

A check is a pure function. It receives plain dicts and lists (never the SDK's proxies) in which a
value the engine could not know yet (during ``pulumi preview``, anything computed from another
resource's output) is the ``UNKNOWN`` marker, and it yields findings:

- ``Violation``: the desired state breaks the rule. Reported at the policy's enforcement level
  (mandatory unless a stack's policy config says otherwise).
- ``Unverifiable``: the rule depends on a value that is unknown during preview. The adapter turns
  these into the SDK's own "can't run policy ... during preview" advisory, *after* reporting every
  violation it could establish from the known values, so one unknown field never hides a real
  violation elsewhere. ``pulumi up`` analyses each resource again with its inputs resolved, so the
  rule is then enforced in full. Where an unknown value is itself the danger (a computed value in a
  secret-looking Consul key, a NetworkPolicy selector nobody can read), the check yields a
  ``Violation`` instead; each module says which reading it takes.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

import hcl2  # python-hcl2 (policies/requirements.txt): a missing parser fails the pack at start, not mid-preview
from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, _is_unknown


class _Unknown:
    """A value the engine does not know yet (preview). Falsy, equal only to itself."""

    _instance: Optional["_Unknown"] = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def plain(value: Any) -> Any:
    """The SDK's unknown-checking proxies (or raw wire data) as plain dicts/lists with ``UNKNOWN``."""
    if _is_unknown(value):
        return UNKNOWN
    if isinstance(value, Mapping):
        result = {}
        for key in list(iter(value)):
            try:
                result[key] = plain(value[key])
            except UnknownValueError:
                result[key] = UNKNOWN
        return result
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def dig(data: Any, *path: Union[str, int], default: Any = None) -> Any:
    """``data[path[0]][path[1]]...``; ``UNKNOWN`` as soon as a step is unknown, ``default`` if absent."""
    current = data
    for step in path:
        if current is UNKNOWN:
            return UNKNOWN
        if isinstance(step, int):
            if not isinstance(current, list) or not -len(current) <= step < len(current):
                return default
            current = current[step]
        else:
            if not isinstance(current, dict) or step not in current:
                return default
            current = current[step]
    return current


def parse_json_document(value: Any) -> Any:
    """An IAM-style JSON document given as a string (or already parsed); UNKNOWN stays UNKNOWN."""
    if value is UNKNOWN or isinstance(value, (dict, list)):
        return value
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return None


def is_number(value: Any) -> bool:
    """A JSON number (not a bool): what a count or a size must be before it is compared."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def strings(values: Iterable[Any]) -> set[str]:
    """The strings among ``values``: a list, a map or an unknown where a name belongs is no name."""
    return {value for value in values if isinstance(value, str)}


def as_list(value: Any) -> list:
    """IAM fields take a string or a list of strings; ``None`` is an empty list."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


# --- AWS policy documents ---------------------------------------------------------------------


def statements(document: Any, effect: Optional[str] = None) -> list[dict]:
    """The statements of a parsed IAM-style document (only those of ``effect`` if given)."""
    found = as_list(document.get("Statement")) if isinstance(document, dict) else []
    return [s for s in found if isinstance(s, dict) and (effect is None or s.get("Effect") == effect)]


def principals(statement: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(kind, value) of each principal a statement names: ``("*", "*")`` for everyone, else
    ``("AWS" | "Service" | "Federated" | "CanonicalUser", value)``."""
    principal = statement.get("Principal")
    if principal is None:
        return []
    if principal == "*" or principal is UNKNOWN:
        return [("*", principal)]
    if not isinstance(principal, dict):
        return [("?", principal)]
    return [(kind, value) for kind, values in principal.items() for value in as_list(values)]


def arn_account(arn: Any) -> Optional[str]:
    """The account ID field of an ARN (``arn:<partition>:<service>:<region>:<account>:...``); a bare
    12-digit account ID is its own account; None when the value names no account (S3 bucket ARNs)."""
    if not isinstance(arn, str):
        return None
    if re.fullmatch(r"\d{12}", arn):
        return arn
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and re.fullmatch(r"\d{12}", parts[4]):
        return parts[4]
    return None


def own_accounts(resources: Iterable["Resource"], configured: Iterable[str] = ()) -> set[str]:
    """The AWS accounts the stack lives in: the policy config's ``accountIds`` if it names any, else
    the accounts of the ARNs the stack's own AWS resources report (its roles' and keys' ``arn``).
    Empty while none is known (the first preview of a new stack)."""
    named = {account for account in configured if isinstance(account, str)}
    if named:
        return named
    return {account for r in resources if r.type.startswith("aws:")
            for account in (arn_account(dig(r.props, "arn")),) if account}


ACCOUNTS_PROPERTY = {
    "accountIds": {
        "type": "array", "items": {"type": "string", "pattern": "^[0-9]{12}$"},
        "description": "The AWS accounts this stack's resources belong to; empty means the accounts of the "
                       "ARNs the stack's own roles and keys report.",
        "default": [],
    }
}


# --- address ranges -----------------------------------------------------------------------------

IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
# Addresses that are not the internet's: RFC 1918, shared (CGNAT), loopback, link-local, IPv6 ULA.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "fc00::/7", "fe80::/10", "::1/128"))


def _minus(networks: Iterable[IpNetwork], removed: Iterable[IpNetwork]) -> list[IpNetwork]:
    remaining = list(networks)
    for cut in removed:
        kept: list[IpNetwork] = []
        for network in remaining:
            if network.version != cut.version or not network.overlaps(cut):
                kept.append(network)
            elif not network.subnet_of(cut):  # type: ignore[arg-type]
                kept += list(network.address_exclude(cut))  # type: ignore[arg-type]
        remaining = kept
    return remaining


def cidr_union(blocks: Iterable[tuple[IpNetwork, Iterable[IpNetwork]]]) -> list[IpNetwork]:
    """The addresses a set of (CIDR, its ``except`` list) admits together, as collapsed networks."""
    admitted: list[IpNetwork] = []
    for network, exceptions in blocks:
        admitted += _minus([network], exceptions)
    by_version = [[n for n in admitted if n.version == version] for version in (4, 6)]
    return [n for group in by_version for n in ipaddress.collapse_addresses(group)]  # type: ignore[arg-type]


def public_part(networks: Iterable[IpNetwork]) -> list[IpNetwork]:
    """The internet addresses (outside ``PRIVATE_NETWORKS``) among ``networks``, collapsed."""
    return cidr_union((network, ()) for network in _minus(networks, PRIVATE_NETWORKS))


def address_count(networks: Iterable[IpNetwork], version: int = 4) -> int:
    return sum(n.num_addresses for n in networks if n.version == version)


def shown_networks(networks: list[IpNetwork], limit: int = 4) -> str:
    listed = ", ".join(str(n) for n in networks[:limit])
    return listed + (f" and {len(networks) - limit} more" if len(networks) > limit else "")


# --- HCL (Vault and Consul policies) ------------------------------------------------------------


class HclError(ValueError):
    """The text is neither HCL nor JSON: a policy the pack cannot read."""


def parse_hcl(text: str) -> dict:
    """An HCL (or, as Vault and Consul also accept, JSON) policy as a dict, parsed by python-hcl2.

    Blocks become ``{"<type>": [{"<label>": {...body...}}, ...]}``; string values lose their quotes.
    """
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise HclError(f"invalid JSON: {error}") from error
        if not isinstance(document, dict):
            raise HclError("the JSON document is not an object")
        return document
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True,
                                        preserve_heredocs=False)
    try:
        return hcl2.loads(text, serialization_options=options)
    except Exception as error:  # lark raises several unrelated types for bad input
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HclError(f"invalid HCL: {first_line}") from error


def hcl_blocks(document: Mapping[str, Any], block_type: str) -> list[tuple[Any, Any]]:
    """(label, body) of every ``<block_type> "<label>" { ... }`` in a parsed HCL or JSON document.

    HCL gives a list of one-entry dicts; the JSON form gives one dict of label -> body (or a list of them).
    """
    found: list[tuple[Any, Any]] = []
    for entry in as_list(document.get(block_type)):
        if isinstance(entry, dict):
            found += list(entry.items())
        else:
            found.append((entry, None))
    return found


# --- findings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    message: str
    urn: Optional[str] = None


@dataclass(frozen=True)
class Unverifiable:
    """The rule needs ``path`` (of ``resource``), which is unknown during preview."""

    resource: str
    path: str


Finding = Union[Violation, Unverifiable]


@dataclass(frozen=True)
class Resource:
    """A resource as a check sees it: plain properties plus the options the rules care about."""

    type: str
    name: str
    urn: str
    props: dict
    protect: bool = False
    parent: Optional[str] = None
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


ResourceCheck = Callable[[Resource, Mapping[str, Any]], Iterable[Finding]]
StackCheck = Callable[[list[Resource], Mapping[str, Any]], Iterable[Finding]]


# --- labels that identify the registry --------------------------------------------------------

# The selector labels components/workload.py puts on every registry pod. Several policies need to
# recognise "the registry's pods"; they share this config property and its default.
DEFAULT_REGISTRY_LABELS = {"app.kubernetes.io/name": "docker-registry"}
REGISTRY_LABELS_PROPERTY = {
    "registryLabels": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Pod labels that identify the registry's pods (all must match).",
        "default": DEFAULT_REGISTRY_LABELS,
    }
}

WORKLOAD_TYPES = {
    "kubernetes:apps/v1:StatefulSet": ("spec", "template"),
    "kubernetes:apps/v1:Deployment": ("spec", "template"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template"),
    "kubernetes:batch/v1:Job": ("spec", "template"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template"),
    "kubernetes:core/v1:Pod": (),
}
LONG_RUNNING_TYPES = (
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:apps/v1:ReplicaSet",
)


def pod_template(resource: Resource) -> Any:
    """The pod template (metadata + spec) of a workload resource, or None if it is not one."""
    path = WORKLOAD_TYPES.get(resource.type)
    if path is None:
        return None
    return dig(resource.props, *path) if path else resource.props


def labels_match(labels: Any, wanted: Mapping[str, str]) -> bool:
    return isinstance(labels, dict) and all(labels.get(key) == value for key, value in wanted.items())


def is_registry_workload(resource: Resource, registry_labels: Mapping[str, str]) -> bool:
    if resource.type not in LONG_RUNNING_TYPES:
        return False
    return labels_match(dig(pod_template(resource), "metadata", "labels"), registry_labels)


def namespace_of(resource: Resource) -> Any:
    return dig(resource.props, "metadata", "namespace", default="default")


def display(resource: Resource) -> str:
    name = dig(resource.props, "metadata", "name")
    kind = resource.type.rsplit(":", 1)[-1]
    return f"{kind} {name}" if isinstance(name, str) else f"{kind} {resource.name}"


# --- adapters --------------------------------------------------------------------------------


def _with_defaults(schema: Optional[PolicyConfigSchema], given: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI fills schema defaults in; a pack driven without that still sees the same values."""
    # A copy: a check (or a test) that edits its config must not change the schema's defaults.
    config = {key: copy.deepcopy(spec["default"]) for key, spec in (schema.properties if schema else {}).items()
              if "default" in spec}
    config.update({key: value for key, value in (given or {}).items() if key != "enforcementLevel"})
    return config


def _report(findings: Iterable[Finding], report_violation: ReportViolation) -> None:
    unverifiable: list[Unverifiable] = []
    for finding in findings:
        if isinstance(finding, Unverifiable):
            unverifiable.append(finding)
        else:
            report_violation(finding.message, finding.urn)
    if unverifiable:
        # The SDK reports this as an advisory "can't run policy ... during preview: <message>".
        error = UnknownValueError(UNKNOWN_STRING_VALUE, [])
        error.message = "cannot verify during preview: " + "; ".join(
            f"{item.resource} {item.path} is unknown" for item in unverifiable
        )
        raise error


def resource_from_args(args: Any) -> Resource:
    return Resource(
        type=args.resource_type,
        name=args.name,
        urn=args.urn,
        props=plain(args.props),
        protect=bool(getattr(args.opts, "protect", False)),
        parent=getattr(args.opts, "parent", None),
    )


def resource_policy(
    name: str,
    description: str,
    types: Iterable[str],
    check: ResourceCheck,
    config_schema: Optional[PolicyConfigSchema] = None,
) -> ResourceValidationPolicy:
    """A resource policy that runs ``check`` on resources of ``types``."""
    wanted = frozenset(types)

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in wanted:
            return
        config = _with_defaults(config_schema, args.get_config())
        _report(check(resource_from_args(args), config), report_violation)

    policy = ResourceValidationPolicy(name=name, description=description, validate=validate,
                                      config_schema=config_schema)
    policy.check = check  # type: ignore[attr-defined]  # the pure function, for tests
    policy.types = wanted  # type: ignore[attr-defined]
    return policy


def stack_policy(
    name: str,
    description: str,
    check: StackCheck,
    config_schema: Optional[PolicyConfigSchema] = None,
) -> StackValidationPolicy:
    """A stack policy that runs ``check`` on every resource of the stack (their outputs)."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            Resource(
                type=r.resource_type,
                name=r.name,
                urn=r.urn,
                props=plain(r.props),
                protect=bool(getattr(r.opts, "protect", False)),
                parent=r.parent.urn if r.parent is not None else None,
                dependencies=tuple(d.urn for d in r.dependencies),
                property_dependencies={k: tuple(d.urn for d in v) for k, v in r.property_dependencies.items()},
            )
            for r in args.resources
        ]
        config = _with_defaults(config_schema, args.get_config())
        _report(check(resources, config), report_violation)

    policy = StackValidationPolicy(name=name, description=description, validate=validate, config_schema=config_schema)
    policy.check = check  # type: ignore[attr-defined]
    return policy


def schema(properties: Mapping[str, Mapping[str, Any]]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={key: dict(value) for key, value in properties.items()})


def config_defaults(policy: Any) -> dict[str, Any]:
    """The config a policy runs with when the stack sets none (its schema defaults)."""
    return _with_defaults(policy.config_schema, {})


# --- Consul KV ---------------------------------------------------------------------------------

CONSUL_KEYS = "consul:index/keys:Keys"
CONSUL_KEY_PREFIX = "consul:index/keyPrefix:KeyPrefix"
CONSUL_KV_TYPES = (CONSUL_KEYS, CONSUL_KEY_PREFIX)


def consul_kv_entries(resource: Resource) -> list[tuple[Any, Any]]:
    """(full key path, value) of every KV pair a ``Keys`` or ``KeyPrefix`` resource writes."""
    props = resource.props
    if resource.type == CONSUL_KEYS:
        keys = dig(props, "keys", default=[])
        if keys is UNKNOWN:
            return [(UNKNOWN, UNKNOWN)]
        return [(dig(entry, "path"), dig(entry, "value")) for entry in as_list(keys)]
    prefix = dig(props, "pathPrefix", default="")
    entries: list[tuple[Any, Any]] = []
    subkeys = dig(props, "subkeys", default={})
    collection = dig(props, "subkeyCollection", default=[])
    if subkeys is UNKNOWN or collection is UNKNOWN:
        entries.append((UNKNOWN, UNKNOWN))
    if isinstance(subkeys, dict):
        entries += [(_join(prefix, key), value) for key, value in subkeys.items()]
    if isinstance(collection, list):
        entries += [(_join(prefix, dig(entry, "path")), dig(entry, "value")) for entry in collection]
    return entries


def _join(prefix: Any, key: Any) -> Any:
    if prefix is UNKNOWN or key is UNKNOWN:
        return UNKNOWN
    return f"{prefix}{key}"
