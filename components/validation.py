"""Pure validators for setting values: each returns the parsed value or raises ``Invalid`` saying what is allowed.

They know nothing about keys or ``pulumi.Config``; ``components/settings.py`` (the only reader of stack
configuration) names the key and turns ``Invalid`` into its one-line ``SettingsError``. Where a well-kept
library implements a grammar, it is used: ``ipaddress`` for addresses and networks, ``urllib.parse`` for URLs,
``croniter`` for whether a cron schedule ever fires. The Kubernetes quantity grammar, AWS's bucket naming
rules and the ARN layout have no such library on the program's dependencies, so they are written here from
their specifications (cited at each).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Optional, Union
from urllib.parse import SplitResult, urlsplit

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Invalid(ValueError):
    """The value breaks a rule; ``str()`` says what is allowed instead."""


# --- text -----------------------------------------------------------------------------------------


def check_text(text: str) -> str:
    """Printable ASCII (space to ~), nothing around it: every value ends up in a Kubernetes object, a Consul
    KV entry, an AWS name or a URL, where a trailing newline, a zero-width space or a homoglyph is either
    refused later (after other resources were created) or silently becomes part of a name."""
    if not isinstance(text, str):
        raise Invalid("expected text")
    if text != text.strip(" \t\r\n\x0b\x0c"):
        raise Invalid("expected no surrounding whitespace")
    for position, char in enumerate(text):
        if not " " <= char <= "~":
            raise Invalid(f"expected printable ASCII only (found U+{ord(char):04X} at position {position})")
    return text


# --- names ----------------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def is_dns_label(text: str) -> bool:
    """RFC 1123 label, as Kubernetes names namespaces and services."""
    return _DNS_LABEL.fullmatch(text) is not None


def is_dns_subdomain(text: str) -> bool:
    """RFC 1123 subdomain, as Kubernetes names most objects: dot-separated labels, 253 characters at most."""
    return len(text) <= 253 and all(is_dns_label(label) for label in text.split("."))


def is_hostname(text: str) -> bool:
    """A fully qualified DNS host name: two labels or more, the last one alphabetic."""
    labels = text.split(".")
    return (len(text) <= 253 and len(labels) >= 2 and all(is_dns_label(label) for label in labels)
            and re.fullmatch(r"[a-z]{2,63}", labels[-1]) is not None)


# --- Kubernetes quantities ----------------------------------------------------------------------------
# The grammar of k8s.io/apimachinery/pkg/api/resource (Quantity): a signed decimal number followed by a
# binary SI suffix (Ki ... Ei), a decimal SI suffix (n u m "" k M G T P E) or a decimal exponent (e<int>).

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?|[eE][+-]?[0-9]{1,3})"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
QUANTITY_ALLOWED = "a Kubernetes quantity such as 250m, 2, 512Mi or 200Gi"


def parse_quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity."""
    match = _QUANTITY.fullmatch(text) if len(text) <= 64 else None
    if match is None:
        raise Invalid(f"expected {QUANTITY_ALLOWED}")
    number = Fraction(match["number"] if not match["number"].endswith(".") else match["number"][:-1])
    suffix = match["suffix"]
    if suffix in _BINARY:
        value = number * (1 << (10 * _BINARY[suffix]))
    elif suffix in _DECIMAL:
        value = number * Fraction(10) ** _DECIMAL[suffix]
    else:
        value = number * Fraction(10) ** int(suffix[1:])
    return -value if match["sign"] == "-" else value


def whole_bytes(text: str, low: int, high: int, allowed: str) -> int:
    """A byte quantity (memory, volume, bucket budget) that is a whole number of bytes from low to high."""
    try:
        value = parse_quantity(text)
    except Invalid:
        raise Invalid(allowed) from None
    if value.denominator != 1 or not low <= value <= high:
        raise Invalid(allowed)
    return int(value)


def cpu_millis(text: str, low: int, high: int, allowed: str) -> int:
    """A CPU quantity in whole millicores (Kubernetes' finest CPU unit) from low to high."""
    try:
        millis = parse_quantity(text) * 1000
    except Invalid:
        raise Invalid(allowed) from None
    if millis.denominator != 1 or not low <= millis <= high:
        raise Invalid(allowed)
    return int(millis)


# --- cron -------------------------------------------------------------------------------------------
# Kubernetes CronJobs parse schedules with robfig/cron's standard parser: five fields, each a comma list of
# `*`, `N` or `N-M`, optionally `/step`. Names (MON, JAN), `?`, `L`, `#`, macros and time zones are refused
# here to keep one spelling; croniter then says whether the schedule ever fires.

CRON_ALLOWED = "a five-field cron schedule in UTC such as '17 3 * * 0' (digits, * / , - only)"
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
_CRON_PART = re.compile(r"(?P<range>\*|(?P<low>[0-9]{1,2})(-(?P<high>[0-9]{1,2}))?)(/(?P<step>[0-9]{1,2}))?")


def check_cron(text: str) -> str:
    fields = text.split(" ")
    if len(fields) != 5:
        raise Invalid(f"expected {CRON_ALLOWED}")
    for field, (name, low, high) in zip(fields, _CRON_FIELDS):
        for part in field.split(","):
            match = _CRON_PART.fullmatch(part)
            if match is None:
                raise Invalid(f"expected {CRON_ALLOWED}")
            first = int(match["low"]) if match["low"] else low
            last = int(match["high"]) if match["high"] else (first if match["low"] else high)
            step = int(match["step"]) if match["step"] else None
            if not low <= first <= last <= high:
                raise Invalid(f"{CRON_ALLOWED}; the {name} field allows {low}-{high}, ranges low-high")
            if step is not None and not 1 <= step <= high:
                raise Invalid(f"{CRON_ALLOWED}; a {name} step from 1 to {high}")
            if part == "*/1":
                # robfig/cron and croniter disagree on whether */1 is `*` for the day-of-month/day-of-week rule.
                raise Invalid(f"{CRON_ALLOWED}; write * instead of */1")
    from croniter import croniter, CroniterBadDateError

    start = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)  # a leap year starts the search
    try:
        croniter(text, start).get_next(datetime.datetime)
    except CroniterBadDateError:
        raise Invalid("a schedule that fires: this day of month never occurs in the given months") from None
    return text


# --- URLs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str
    port: Optional[int]
    path: str


def parse_url(text: str, schemes: tuple[str, ...] = ("https",), path: bool = False) -> Url:
    """An absolute URL of one of ``schemes`` to a DNS host or IP address: no user info, query or fragment; a
    port from 1 to 65535; a path only if ``path`` (unreserved characters, ``/`` and ``%XX``)."""
    wanted = " or ".join(f"{scheme}://" for scheme in schemes)
    try:
        parts: SplitResult = urlsplit(text)
        port = parts.port
    except ValueError:
        raise Invalid(f"expected a {wanted} URL with a port from 1 to 65535") from None
    if parts.scheme not in schemes or not text.startswith(f"{parts.scheme}://"):
        raise Invalid(f"expected a {wanted} URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise Invalid("expected a URL without user name or password")
    if "?" in text or "#" in text:
        raise Invalid("expected a URL without query or fragment")
    host = parts.hostname or ""
    if parts.netloc != (f"{host}:{port}" if port is not None else host) or not (is_hostname(host) or _is_ip(host) or host == "localhost"):
        raise Invalid(f"expected a {wanted} URL to a lowercase DNS host name or an IP address")
    if port is not None and not 1 <= port <= 65535:
        raise Invalid("expected a port from 1 to 65535")
    if parts.path not in ("", "/"):
        if not path or re.fullmatch(r"(/([A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})*)+", parts.path) is None:
            raise Invalid("expected no path" if not path else "expected a path of letters, digits, . _ ~ - / and %XX")
    return Url(scheme=parts.scheme, host=host, port=port, path=parts.path)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def in_cluster_service(url: Url) -> Optional[tuple[str, str]]:
    """(service, namespace) of ``<service>.<namespace>.svc[.<cluster domain>]``, or None."""
    labels = url.host.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return labels[0], labels[1]
    return None


# --- networks ---------------------------------------------------------------------------------------

# Allow-lists and egress targets never need these, and each is a known way around an allow-list: the
# instance metadata service (link-local), the node itself (loopback), "this network", multicast, reserved
# space, and IPv4 written as IPv6 (mapped or NAT64), which would hide IPv4 breadth from the IPv4 count.
FORBIDDEN_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/127", "::ffff:0:0/96", "64:ff9b::/96", "fe80::/10", "ff00::/8",
))
# Address space that is internal by definition: breadth there is not exposure to the internet.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
))
# At most this many public addresses in one allow-list, however it is split: a /16 of IPv4, a /32 of IPv6
# (one organisation's allocation). 0.0.0.0/1 + 128.0.0.0/1 is the internet in two entries.
MAX_PUBLIC_ADDRESSES = {4: 1 << 16, 6: 1 << 96}
CIDR_ALLOWED = "a CIDR block such as 10.20.0.0/16 (network address, not /0)"


def parse_cidr(text: str) -> Network:
    if "/" not in text:
        raise Invalid(f"expected {CIDR_ALLOWED}")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise Invalid(f"expected {CIDR_ALLOWED}") from None
    if network.prefixlen == 0:
        raise Invalid(f"expected {CIDR_ALLOWED}; not /0")
    check_breadth([network])
    for forbidden in FORBIDDEN_NETWORKS:
        if network.version == forbidden.version and network.overlaps(forbidden):
            raise Invalid(f"a network outside {forbidden} (loopback, link-local/metadata, multicast, reserved "
                          "and IPv4-in-IPv6 ranges are never allowed)")
    return network


def public_addresses(networks: Iterable[Network]) -> dict[int, int]:
    """Public addresses the union of ``networks`` admits, per IP version (overlaps counted once)."""
    counts = {4: 0, 6: 0}
    for version in (4, 6):
        union = list(ipaddress.collapse_addresses(n for n in networks if n.version == version))
        private = [p for p in PRIVATE_NETWORKS if p.version == version]
        for network in union:
            pieces = [network]
            for reserved in private:
                pieces = [rest for piece in pieces for rest in _without(piece, reserved)]
            counts[version] += sum(piece.num_addresses for piece in pieces)
    return counts


def _without(network: Network, other: Network) -> list[Network]:
    if not network.overlaps(other):
        return [network]
    if network.subnet_of(other):
        return []
    return list(network.address_exclude(other))


def check_breadth(networks: Iterable[Network]) -> None:
    networks = list(networks)
    for version, count in public_addresses(networks).items():
        if count > MAX_PUBLIC_ADDRESSES[version]:
            limit = "a /16 of IPv4" if version == 4 else "a /32 of IPv6"
            raise Invalid(f"at most {limit} of public address space in all ({count} public IPv{version} "
                          "addresses here); list the real networks")


# --- AWS ----------------------------------------------------------------------------------------------

# General purpose bucket naming rules (S3 User Guide, "Bucket naming rules").
BUCKET_ALLOWED = ("an S3 bucket name: 3-63 lowercase letters, digits, hyphens (and dots outside s3 mode), "
                  "starting and ending with a letter or digit, not an IP address, no reserved prefix or suffix")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def check_bucket_name(name: str, allow_dots: bool) -> str:
    if re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name) is None or ".." in name:
        raise Invalid(f"expected {BUCKET_ALLOWED}")
    if _is_ip(name) or re.fullmatch(r"[0-9.]+", name):
        raise Invalid("a bucket name that is not formatted as an IP address")
    if name.startswith(_BUCKET_RESERVED_PREFIXES) or name.endswith(_BUCKET_RESERVED_SUFFIXES):
        raise Invalid("a bucket name without the prefixes " + ", ".join(_BUCKET_RESERVED_PREFIXES)
                      + " and the suffixes " + ", ".join(_BUCKET_RESERVED_SUFFIXES) + " AWS reserves")
    if not allow_dots and "." in name:
        # Virtual-hosted-style requests over TLS (the registry's S3 driver default) fail certificate checks
        # for dotted names: *.s3.<region>.amazonaws.com covers one label only.
        raise Invalid("a bucket name without dots (dotted names break TLS with virtual-hosted-style requests)")
    return name


# The partitions and how their regions are spelt (AWS General Reference, "ARNs" and "Regions").
PARTITIONS = {"aws": "", "aws-cn": "cn-", "aws-us-gov": "us-gov-", "aws-iso": "us-iso-", "aws-iso-b": "us-isob-",
              "aws-iso-e": "eu-isoe-", "aws-iso-f": "us-isof-", "aws-eusc": "eusc-"}
ACCOUNT_ID = re.compile(r"[0-9]{12}")


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str


def parse_arn(text: str) -> Arn:
    """``arn:partition:service:region:account-id:resource``."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[1] not in PARTITIONS:
        raise Invalid("expected an ARN, arn:<partition>:<service>:<region>:<account>:<resource>, partition one of "
                      + ", ".join(PARTITIONS))
    return Arn(*parts[1:])


def partition_of_region(region: str) -> str:
    for partition, prefix in sorted(PARTITIONS.items(), key=lambda item: -len(item[1])):
        if region.startswith(prefix):
            return partition
    return "aws"
