"""Stack settings: the only module that reads ``pulumi.Config``.

``load_settings()`` reads every ``registry:*`` key of the current stack and hands the raw strings to
``parse_settings()``, a pure function that returns one immutable ``Settings`` object or raises
``SettingsError`` naming the key, the bad value and what is allowed. Defaults live in one place, the
``config:`` block of ``Pulumi.yaml``; the Pulumi CLI (and the offline plan, which mirrors it) fills
them in before the program runs, so a key without a default there is required here.

Validation is one pass before anything is registered: every value is screened alike (``_screen``), then
each key's rule runs; the rules are the pure functions of ``components/validation.py`` (which reads no
config), and every failure is one ``SettingsError`` line.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union

import pulumi

from token_service import contract

from . import names, validation
from .names import CONSUL_SERVICE_NAME
from .validation import Invalid

PROJECT = "registry"


STORAGE_MODES = ("filesystem", "s3", "minio")
LOG_LEVELS = ("error", "warn", "info", "debug")
MAX_REPLICAS = 10
MIN_VOLUME_BYTES = 1 << 30  # 1Gi
MAX_VOLUME_BYTES = 64 << 40  # 64Ti
MAX_BUCKET_BUDGET_BYTES = 1 << 50  # 1024Ti

# The token service's deployment (authMode token only; components/token_service.py, parsed by
# ``_parse_token_service``).
TOKEN_SERVICE_KEYS = (
    "tokenServiceImage",
    "tokenServiceReplicas",
    "tokenRealmTlsSecretName",
    "tokenOidcIssuer",
    "tokenOidcAudience",
    "tokenOidcIssuerCidrs",
    "tokenOidcGroupRoles",
)

# Every key this program reads, so that a misspelt key in a stack file is an error, not a silently
# ignored line. Pulumi.yaml declares the same keys (a test keeps the two in step).
KNOWN_KEYS = (
    "namespace",
    "image",
    "requireImageDigest",
    "replicas",
    "updatePartition",
    "storageMode",
    "storageClass",
    "storageSize",
    "s3Bucket",
    "s3Region",
    "s3RootDirectory",
    "s3NoncurrentVersionDays",
    "s3AbortMultipartDays",
    "s3OidcProviderArn",
    "awsAccountId",
    "minioEndpoint",
    "cpuRequest",
    "cpuLimit",
    "memoryRequest",
    "memoryLimit",
    "runAsUser",
    "fsGroup",
    "terminationGracePeriodSeconds",
    "logLevel",
    "ciRunnerNamespaces",
    "nodeCidrs",
    "developerCidrs",
    "storageEndpointCidrs",
    "ingressHost",
    "ingressClassName",
    "ingressTlsSecretName",
    "ingressControllerNamespace",
    "monitoringNamespace",
    "consulHttpAddr",
    "vaultAddr",
    "vaultKvMount",
    "s3StorageBudget",
    "runbookBaseUrl",
    "consulIntentionSources",
    "authMode",
    "htpasswdUsers",
    "tokenRealm",
    "tokenService",
    "tokenIssuer",
    "credentialsGeneration",
    "vaultKubernetesAuthPath",
    "vaultAuthAudience",
    "minioAccessKey",
    "minioSecretKey",
    "gcSchedule",
    "gcActiveDeadlineSeconds",
    "operationsToolsImage",
    "kubernetesApiCidrs",
    "snapshotSchedule",
    "snapshotClass",
    "snapshotRetention",
    "drBucket",
    "drRegion",
    "consulAuthMethod",
    "gcDeleteUntagged",
    *TOKEN_SERVICE_KEYS,
)

# Pull credentials for the kubelets (components/pull_credentials.py).
KNOWN_KEYS += ("pullSecretNamespaces",)

# Settings whose values are secrets: read with ``get_secret`` so they stay wrapped, never as plain strings.
SECRET_KEYS = ("minioAccessKey", "minioSecretKey")

AUTH_MODES = ("htpasswd", "token")
# A robot's role, as the token service reads it from the registry's Vault secret (token_service/contract.py):
# pull (cluster nodes), push (CI, also pulls), cleanup (the retention identity: pull and delete).
USER_ACCESS = (contract.ROLE_PUSH, contract.ROLE_PULL, contract.ROLE_CLEANUP)
MAX_CREDENTIALS_GENERATION = 1_000_000


class SettingsError(pulumi.RunError):
    """Bad stack configuration. The message names the key, the bad value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key = f"{PROJECT}:{key}"
        self.value = value
        self.allowed = allowed
        super().__init__(f"{self.key}: {_shown(value)} is not allowed; {allowed}")


def _shown(value: object) -> str:
    """The value as the message shows it: repr (so a newline or an invisible character is visible and the
    message stays one line), long values cut."""
    if value is None:
        return "(not set)"
    shown = repr(value)
    return shown if len(shown) <= 160 else f"{shown[:120]}... ({len(shown)} characters)"


@dataclass(frozen=True)
class FilesystemStorage:
    """Distribution's filesystem driver on one ReadWriteOnce volume per pod."""

    storage_class: str
    size: str
    mode: str = "filesystem"


@dataclass(frozen=True)
class S3Storage:
    """An AWS S3 bucket this program creates, reached through IRSA (no static keys)."""

    bucket: str
    region: str
    root_directory: str
    noncurrent_version_days: int
    abort_multipart_days: int
    oidc_provider_arn: str
    mode: str = "s3"

    @property
    def oidc_provider_host_path(self) -> str:
        from .storage import oidc_provider_host_path  # storage imports this module's types

        return oidc_provider_host_path(self.oidc_provider_arn)


@dataclass(frozen=True)
class MinioStorage:
    """An existing S3-compatible bucket (MinIO); its access keys come from Vault."""

    endpoint: str
    bucket: str
    region: str
    root_directory: str
    mode: str = "minio"


Storage = Union[FilesystemStorage, S3Storage, MinioStorage]


@dataclass(frozen=True)
class HtpasswdAuth:
    """Distribution checks Basic credentials against a bcrypt htpasswd file (every user gets push)."""

    mode: str = "htpasswd"


@dataclass(frozen=True)
class TokenAuth:
    """Distribution accepts bearer tokens signed by the token service, whose public keys (a JWKS) it reads from
    the token service's trust secret in Vault, through config-cli."""

    realm: str
    service: str
    issuer: str
    mode: str = "token"


Auth = Union[HtpasswdAuth, TokenAuth]


@dataclass(frozen=True)
class OidcIssuer:
    """The company's OIDC issuer developers log in with (through the token service)."""

    url: str
    audience: str
    # Where the token service fetches the issuer's JWKS from (egress); empty for an in-cluster issuer.
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    group_roles: tuple[tuple[str, str], ...]  # (OIDC group, token service role)


@dataclass(frozen=True)
class TokenServiceDeployment:
    """The token service as this program deploys it (authMode token)."""

    image: str
    replicas: int
    realm_host: str  # the token realm's host: the token service's Ingress host
    realm_tls_secret_name: str
    oidc: Optional[OidcIssuer]


@dataclass(frozen=True)
class RegistryUser:
    """A robot account whose password Pulumi generates; ``access`` is push, pull or cleanup."""

    name: str
    access: str


@dataclass(frozen=True)
class MinioCredentials:
    """The MinIO access key pair, kept as Pulumi secrets (``pulumi.Output``) or plain strings in tests."""

    access_key: Any
    secret_key: Any


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class VolumeSnapshots:
    """Scheduled VolumeSnapshots of the registry volume (filesystem mode)."""

    schedule: str
    snapshot_class: str
    retention: int


@dataclass(frozen=True)
class DisasterRecoveryBucket:
    """Cross-region replica of the S3 bucket (s3 mode, optional)."""

    bucket: str
    region: str


@dataclass(frozen=True)
class Settings:
    environment: str
    namespace: str
    image: str
    replicas: int
    update_partition: int
    storage: Storage
    resources: Resources
    run_as_user: int
    fs_group: int
    termination_grace_period_seconds: int
    log_level: str
    ci_runner_namespaces: tuple[str, ...]
    node_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    developer_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    storage_endpoint_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    ingress_host: Optional[str]
    ingress_class_name: str
    ingress_tls_secret_name: Optional[str]
    ingress_controller_namespace: str
    monitoring_namespace: str
    consul_http_addr: str
    vault_addr: str
    vault_kv_mount: str
    # Bucket bytes the storage alert measures against (s3 and minio modes; None with filesystem storage,
    # whose alert measures the volume's own capacity).
    s3_storage_budget_bytes: Optional[int]
    runbook_base_url: str
    consul_intention_sources: tuple[str, ...]
    auth: Auth
    users: tuple[RegistryUser, ...]
    credentials_generation: int
    vault_kubernetes_auth_path: str
    vault_auth_audience: str
    minio_credentials: Optional[MinioCredentials]
    gc_schedule: str
    gc_active_deadline_seconds: int
    operations_tools_image: str
    kubernetes_api_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    snapshots: Optional[VolumeSnapshots]
    disaster_recovery: Optional[DisasterRecoveryBucket]
    consul_auth_method: str
    gc_delete_untagged: bool
    token_service: Optional[TokenServiceDeployment] = None  # authMode token only
    # --- pull credentials: the namespaces that get the pull robot's dockerconfigjson Secret (none: no operator
    # objects at all).
    pull_secret_namespaces: tuple[str, ...] = ()

    @property
    def pull_robot(self) -> Optional[str]:
        """The pull-only robot whose credentials the consuming namespaces get (exactly one with pullSecretNamespaces)."""
        pulling = [user.name for user in self.users if user.access == contract.ROLE_PULL]
        return pulling[0] if self.pull_secret_namespaces and pulling else None

    @property
    def names(self) -> names.RegistryNames:
        """This program's registry in this stack: the names every object of it gets."""
        return names.program_names(self.environment)

    @property
    def consul_kv_prefix(self) -> str:
        return self.names.kv_prefix

    @property
    def vault_role_name(self) -> str:
        """The Vault Kubernetes auth role config-cli logs in with."""
        return self.names.vault_role(self.names.service_account)

    @property
    def vault_secret_path(self) -> str:
        """Path of the registry's secret inside the KV v2 mount."""
        return self.names.vault_secret_path


# --- reading ----------------------------------------------------------------------------------


def load_settings() -> Settings:
    """Read this stack's ``registry:*`` configuration and validate it."""
    config = pulumi.Config(PROJECT)
    given = _given_config()
    configured = _configured_keys(given)
    raw = {key: config.get(key) for key in (*KNOWN_KEYS, *sorted(given)) if key not in SECRET_KEYS}
    for key in SECRET_KEYS:
        if key in configured and not _is_encrypted(key):
            # Pulumi.yaml cannot mark these `secret: true` (see its header), so the CLI does not refuse a
            # plaintext value: refuse it here, without showing it.
            raise SettingsError(key, "[secret]", f"must be encrypted: `pulumi config set --secret {PROJECT}:{key} ...`")
    secrets = {key: config.require_secret(key) for key in SECRET_KEYS if key in configured}
    return parse_settings(raw, environment=pulumi.get_stack(), present_keys=set(given), secrets=secrets)


# What an optional setting's default in Pulumi.yaml is: the CLI hands every default to the program, so
# a key holding one of these is a setting nobody set.
UNSET_VALUES = ("", "[]")


def _given_config() -> dict[str, str]:
    """Every ``registry:`` key the CLI handed the program, the defaults of Pulumi.yaml included."""
    from pulumi.runtime import config as runtime_config

    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{PROJECT}:"
    return {key[len(prefix):]: value for key, value in values.items() if key.startswith(prefix)}


def _configured_keys(given: Mapping[str, str]) -> set[str]:
    """The keys set to something other than an empty default."""
    return {key for key, value in given.items() if value not in UNSET_VALUES}


def _is_encrypted(key: str) -> bool:
    from pulumi.runtime import config as runtime_config

    return runtime_config.is_config_secret(f"{PROJECT}:{key}")


# --- parsing (pure) ---------------------------------------------------------------------------
# Every value is screened first, the same way for every key (``_screen``): text the CLI handed over,
# printable ASCII, nothing around it. Then each key's own rule matches the whole string (``fullmatch``;
# ``$`` would accept a trailing newline) through the validators of ``components/validation.py``.

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_REGION = re.compile(r"([a-z]{2}|eusc)(-gov|-iso[a-z]?)?-[a-z]+-[0-9]")
_IMAGE = re.compile(
    r"(?P<name>[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)+)"
    r"(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_DURATION_SECONDS = (10, 600)
_SERVICE_URL_ALLOWED = "an in-cluster service URL, https://<service>.<namespace>.svc[:<port>] (TLS only)"
_CONSUL_AUTH_METHOD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
MAX_CPU_MILLIS = 256_000  # 256 cores
MAX_MEMORY_BYTES = 1 << 40  # 1Ti


def _url_text(text: str, schemes: tuple[str, ...] = ("https",), path: bool = False) -> str:
    validation.parse_url(text, schemes, path)
    return text


def _in_cluster(url: str) -> bool:
    return validation.in_cluster_service(validation.parse_url(url)) is not None


def _in_cluster_service_url(text: str) -> str:
    """Consul and Vault: the egress NetworkPolicy admits them by namespace, so they must be in-cluster
    services, and config-cli sends its Vault token and Consul ACL token there: TLS only."""
    url = validation.parse_url(text)
    if validation.in_cluster_service(url) is None:
        raise Invalid(f"expected {_SERVICE_URL_ALLOWED}")
    return text


T = TypeVar("T")


def _screen(raw: Mapping[str, Any]) -> None:
    """Every value, whether this stack's mode reads it or not: text, printable ASCII, nothing around it."""
    for key in (*KNOWN_KEYS, *sorted(set(raw) - set(KNOWN_KEYS))):
        value = raw.get(key)
        if key in SECRET_KEYS or value is None:
            continue  # secrets are Pulumi secrets here: only their presence is read
        for text in _entries(value):
            try:
                validation.check_text(text)
            except Invalid as exc:
                raise SettingsError(key, text, str(exc)) from None


def _entries(value: Any) -> list:
    """A list setting's entries (each is screened and shown on its own), or the value itself."""
    if isinstance(value, str) and value.startswith("["):
        try:
            items = json.loads(value)
        except (ValueError, RecursionError):
            return [value]
        if isinstance(items, list) and all(isinstance(item, str) for item in items):
            return items
    return [value]


class _Raw:
    """Typed access to the raw config strings, each failure a ``SettingsError`` for that key."""

    def __init__(self, raw: Mapping[str, Optional[str]]):
        self._raw = raw

    def optional(self, key: str) -> Optional[str]:
        value = self._raw.get(key)
        return None if value is None or value == "" else value

    def given(self, key: str) -> bool:
        """Set to something other than an empty default ("" or [])."""
        return self._raw.get(key) not in (None, *UNSET_VALUES)

    def string(self, key: str, allowed: str = "a non-empty string") -> str:
        value = self.optional(key)
        if value is None:
            raise SettingsError(key, self._raw.get(key), f"required: {allowed}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, "one of " + ", ".join(choices))
        if value not in choices:
            raise SettingsError(key, value, "expected one of " + ", ".join(choices))
        return value

    def matching(self, key: str, pattern: re.Pattern, allowed: str) -> str:
        value = self.string(key, allowed)
        if not pattern.fullmatch(value):
            raise SettingsError(key, value, f"expected {allowed}")
        return value

    def checked(self, key: str, check: Callable[[str], T], allowed: str) -> T:
        """The value through a validator of ``components/validation.py``; its reason becomes the message."""
        value = self.string(key, allowed)
        try:
            return check(value)
        except Invalid as exc:
            raise SettingsError(key, value, str(exc)) from None

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.string(key, f"an integer from {low} to {high}")
        if not re.fullmatch(r"-?[0-9]{1,19}", value):
            raise SettingsError(key, value, f"expected an integer from {low} to {high}")
        number = int(value)
        if not low <= number <= high:
            raise SettingsError(key, number, f"expected an integer from {low} to {high}")
        return number

    def boolean(self, key: str) -> bool:
        value = self.string(key, "true or false")
        if value not in ("true", "false"):
            raise SettingsError(key, value, "expected true or false")
        return value == "true"

    def string_list(self, key: str, item: Callable[[str], T], allowed: str) -> tuple[T, ...]:
        value = self.optional(key)
        if value is None:
            return ()
        try:
            items = json.loads(value)
        except (ValueError, RecursionError):
            raise SettingsError(key, value, f"expected a list, each entry {allowed}") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise SettingsError(key, value, f"expected a list, each entry {allowed}")
        parsed = []
        for entry in items:
            try:
                parsed.append(item(validation.check_text(entry)))
            except Invalid as exc:
                raise SettingsError(key, entry, f"each entry must be {allowed}: {exc}") from None
            except ValueError:
                raise SettingsError(key, entry, f"each entry must be {allowed}") from None
        if len(set(parsed)) != len(parsed):
            raise SettingsError(key, items, f"expected distinct entries, each {allowed}")
        return tuple(parsed)

    def cidr_list(self, key: str, allowed: str = validation.CIDR_ALLOWED) -> tuple[validation.Network, ...]:
        """CIDR blocks whose union stays within the public-address limit (judged together, not per entry)."""
        networks = self.string_list(key, validation.parse_cidr, allowed)
        try:
            validation.check_breadth(networks)
        except Invalid as exc:
            raise SettingsError(key, [str(n) for n in networks], str(exc)) from None
        return networks


def _dns_label(text: str) -> str:
    if not validation.is_dns_label(text):
        raise ValueError(text)
    return text


def _dns_subdomain(text: str) -> str:
    if not validation.is_dns_subdomain(text):
        raise Invalid("expected a Kubernetes object name (lowercase RFC 1123 subdomain, 253 characters at most)")
    return text


def _hostname(text: str) -> str:
    if not validation.is_hostname(text):
        raise Invalid("expected a DNS host name such as registry.example.com (lowercase, 253 characters at most)")
    return text


def quantity_bytes(text: str) -> int:
    """The bytes of a Kubernetes quantity that is a whole number of bytes (ValueError otherwise)."""
    value = validation.parse_quantity(text)
    if value.denominator != 1 or value < 0:
        raise Invalid(f"expected a whole number of bytes, {validation.QUANTITY_ALLOWED}")
    return int(value)


def parse_settings(
    raw: Mapping[str, Optional[str]],
    environment: str,
    present_keys: Optional[set[str]] = None,
    secrets: Optional[Mapping[str, Any]] = None,
) -> Settings:
    """Validate raw config strings (keys without the ``registry:`` prefix) into ``Settings``.

    ``secrets`` holds the values of ``SECRET_KEYS`` as Pulumi secrets; their plaintext is never read
    here, only their presence. Tests may pass them as plain strings in ``raw`` instead.
    """
    for key in sorted((present_keys or set()) - set(KNOWN_KEYS)):
        raise SettingsError(key, raw.get(key), "unknown setting; known settings are listed in Pulumi.yaml")
    _screen(raw)
    read = _Raw(raw)
    _refuse_settings_given_alone(read)

    namespace = read.matching("namespace", _DNS_LABEL, "a Kubernetes namespace name (DNS label)")
    image = _parse_image(read)
    replicas = read.integer("replicas", 1, MAX_REPLICAS)
    storage = _parse_storage(read, replicas)
    update_partition = read.integer("updatePartition", 0, replicas)
    if replicas > 1 and update_partition == replicas:
        # A partition equal to the replica count updates no pod at all: a rollout that never starts.
        raise SettingsError("updatePartition", update_partition, f"expected 0 to {replicas - 1} with {replicas} replicas")

    developer_cidrs = read.cidr_list("developerCidrs")
    node_cidrs = read.cidr_list("nodeCidrs")
    storage_endpoint_cidrs = read.cidr_list("storageEndpointCidrs")
    if isinstance(storage, S3Storage) and not storage_endpoint_cidrs:
        raise SettingsError(
            "storageEndpointCidrs", None,
            "s3 storage needs the CIDRs of the VPC interface endpoints for S3 and STS (egress is deny-by-default)",
        )
    if isinstance(storage, MinioStorage) and not _in_cluster(storage.endpoint) and not storage_endpoint_cidrs:
        raise SettingsError(
            "storageEndpointCidrs", None, "a MinIO endpoint outside the cluster needs its CIDRs (egress is deny-by-default)"
        )
    ingress_host = read.optional("ingressHost")
    ingress_tls_secret_name = None
    if ingress_host is not None:
        read.checked("ingressHost", _hostname, "a DNS host name such as registry.example.com")
        if not developer_cidrs:
            raise SettingsError("developerCidrs", [], "the developer Ingress needs at least one developer CIDR (an empty allow-list would admit everybody)")
        # Developers and kubelets share the Ingress's one allow-list: its breadth is their union's.
        try:
            validation.check_breadth((*developer_cidrs, *node_cidrs))
        except Invalid as exc:
            raise SettingsError("developerCidrs", [str(n) for n in developer_cidrs],
                                f"with nodeCidrs (the Ingress admits both) {exc}") from None
        ingress_tls_secret_name = read.checked(
            "ingressTlsSecretName", _dns_subdomain, "the name of the TLS Secret for the Ingress host"
        )
    auth = _parse_auth(read)
    users = _parse_users(read, auth)
    operations = _parse_operations(read, storage)
    token_service = _parse_token_service(read, auth, ingress_host, developer_cidrs)
    images = [("image", image), ("operationsToolsImage", operations["operations_tools_image"])]
    if token_service is not None:
        images.append(("tokenServiceImage", token_service.image))
    for key, reference in images:
        _refuse_self_hosted_image(key, reference, namespace, ingress_host)

    return Settings(
        environment=_dns_label_or_error("(stack name)", environment),
        namespace=namespace,
        image=image,
        replicas=replicas,
        update_partition=update_partition,
        storage=storage,
        resources=_parse_resources(read),
        run_as_user=read.integer("runAsUser", 1, 2_147_483_647),
        fs_group=read.integer("fsGroup", 1, 2_147_483_647),
        termination_grace_period_seconds=read.integer("terminationGracePeriodSeconds", *_DURATION_SECONDS),
        log_level=read.choice("logLevel", LOG_LEVELS),
        ci_runner_namespaces=read.string_list("ciRunnerNamespaces", _dns_label, "a Kubernetes namespace name"),
        node_cidrs=node_cidrs,
        developer_cidrs=developer_cidrs,
        storage_endpoint_cidrs=storage_endpoint_cidrs,
        ingress_host=ingress_host,
        ingress_class_name=read.checked("ingressClassName", _dns_subdomain, "an IngressClass name such as nginx"),
        ingress_tls_secret_name=ingress_tls_secret_name,
        ingress_controller_namespace=read.matching(
            "ingressControllerNamespace", _DNS_LABEL, "the namespace of the ingress controller"
        ),
        monitoring_namespace=read.matching("monitoringNamespace", _DNS_LABEL, "a Kubernetes namespace name"),
        consul_http_addr=read.checked("consulHttpAddr", _in_cluster_service_url, _SERVICE_URL_ALLOWED),
        vault_addr=read.checked("vaultAddr", _in_cluster_service_url, _SERVICE_URL_ALLOWED),
        vault_kv_mount=read.matching("vaultKvMount", re.compile(r"[a-z0-9][a-z0-9_-]{0,63}"), "a Vault mount path such as secret"),
        s3_storage_budget_bytes=_parse_storage_budget(read, storage),
        runbook_base_url=read.checked(
            "runbookBaseUrl", lambda text: _url_text(text, path=True),
            "an https:// URL of the document holding the runbooks, without a #fragment",
        ),
        consul_intention_sources=_parse_intention_sources(read),
        auth=auth,
        users=users,
        credentials_generation=read.integer("credentialsGeneration", 1, MAX_CREDENTIALS_GENERATION),
        vault_kubernetes_auth_path=read.matching(
            "vaultKubernetesAuthPath", _VAULT_PATH, "a Vault auth mount path such as kubernetes or k8s/prod"
        ),
        vault_auth_audience=read.matching("vaultAuthAudience", _AUDIENCE, "a token audience such as vault"),
        minio_credentials=_parse_minio_credentials(raw, storage, secrets or {}),
        consul_auth_method=read.matching(
            "consulAuthMethod", _CONSUL_AUTH_METHOD, "the name of Consul's Kubernetes auth method, such as consul-k8s-auth-method"
        ),
        **operations,
        token_service=token_service,
        **_parse_pull_credentials(read, auth, users, ingress_host),
    )


def image_registry_host(reference: str) -> Optional[str]:
    """The registry host of an image reference, or None for a Docker Hub short name (``library/x``)."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.split(":", 1)[0]
    return None


def _refuse_self_hosted_image(key: str, reference: str, namespace: str, ingress_host: Optional[str]) -> None:
    """The registry's own pods (and its operations jobs) must never need this registry to start: a cold
    start, a node loss or a disaster recovery would wait for itself. Their images come from the bootstrap
    registry (docs/security.md, "Bootstrap"), which this registry does not serve."""
    host = image_registry_host(reference)
    served = {f"{names.CLIENT_SERVICE_NAME}.{namespace}.svc", f"{names.CLIENT_SERVICE_NAME}.{namespace}.svc.cluster.local"}
    if ingress_host:
        served.add(ingress_host)
    if host in served:
        raise SettingsError(key, reference, f"an image outside this registry ({host} is served by it, so a cold start "
                                            "would wait for itself); use the bootstrap registry (docs/security.md, \"Bootstrap\")")


def _parse_storage_budget(read: _Raw, storage: Storage) -> Optional[int]:
    if isinstance(storage, FilesystemStorage):
        return None
    # A bucket has no capacity of its own: without a budget "storage above 80%" has nothing to measure.
    return _size_bytes(read, "s3StorageBudget", "20Ti", MIN_VOLUME_BYTES, MAX_BUCKET_BUDGET_BYTES)[1]


def _size_bytes(read: _Raw, key: str, example: str, low: int, high: int) -> tuple[str, int]:
    """(the size as written, its bytes) for a required size such as 200Gi between low and high bytes."""
    size = read.string(key, f"a size such as {example}")
    try:
        size_bytes = quantity_bytes(size)
    except ValueError:
        raise SettingsError(key, size, f"expected a size such as {example} (a Kubernetes quantity of whole bytes: "
                                       "suffixes Ki Mi Gi Ti Pi Ei or k M G T P E)") from None
    if not low <= size_bytes <= high:
        raise SettingsError(key, size, f"expected a size from {low >> 30}Gi to {high >> 40}Ti")
    return size, size_bytes


_CRON_ALLOWED = validation.CRON_ALLOWED


def _parse_operations(read: _Raw, storage: Storage) -> dict:
    tools_image = read.matching(
        "operationsToolsImage", _IMAGE,
        "an image with static kubectl, consul and curl, such as registry.example.com/platform/ops-tools:1.0@sha256:<64 hex>",
    )
    _check_image_limits("operationsToolsImage", tools_image)
    if not _IMAGE.fullmatch(tools_image)["digest"]:
        raise SettingsError("operationsToolsImage", tools_image, "the operations tools image must be pinned by digest")
    api_cidrs = read.cidr_list("kubernetesApiCidrs", "CIDR blocks of the Kubernetes API server endpoints")
    if not api_cidrs:
        raise SettingsError(
            "kubernetesApiCidrs", None,
            "required: the API server endpoint CIDRs the operations jobs may reach (egress is deny-by-default)",
        )
    snapshots = None
    if isinstance(storage, FilesystemStorage):
        snapshots = VolumeSnapshots(
            schedule=read.checked("snapshotSchedule", validation.check_cron, _CRON_ALLOWED),
            snapshot_class=read.checked("snapshotClass", _dns_subdomain, "a VolumeSnapshotClass name (filesystem mode)"),
            retention=read.integer("snapshotRetention", 1, 400),
        )
    disaster_recovery = None
    dr_bucket = read.optional("drBucket")
    if dr_bucket is not None:
        if not isinstance(storage, S3Storage):
            raise SettingsError("drBucket", dr_bucket, "cross-region replication exists only in s3 mode")
        read.checked("drBucket", lambda name: validation.check_bucket_name(name, allow_dots=False),
                     validation.BUCKET_ALLOWED)
        dr_region = read.matching("drRegion", _REGION, "the AWS region of the DR bucket, such as eu-central-1")
        if dr_region == storage.region:
            raise SettingsError("drRegion", dr_region, f"a region other than the bucket's own ({storage.region})")
        if dr_bucket == storage.bucket:
            raise SettingsError("drBucket", dr_bucket, "a bucket other than s3Bucket")
        disaster_recovery = DisasterRecoveryBucket(bucket=dr_bucket, region=dr_region)
    return {
        "gc_delete_untagged": read.boolean("gcDeleteUntagged"),
        "gc_schedule": read.checked("gcSchedule", validation.check_cron, _CRON_ALLOWED),
        "gc_active_deadline_seconds": read.integer("gcActiveDeadlineSeconds", 600, 86_400),
        "operations_tools_image": tools_image,
        "kubernetes_api_cidrs": api_cidrs,
        "snapshots": snapshots,
        "disaster_recovery": disaster_recovery,
    }


def _dns_label_or_error(key: str, value: str) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
        raise SettingsError(key, value, "the stack name becomes the environment and must be a DNS label")
    return value


def _check_image_limits(key: str, reference: str) -> None:
    """What the reference grammar's shape does not say: a repository name of 255 characters at most
    (distribution/reference), and a registry port from 1 to 65535."""
    name = _IMAGE.fullmatch(reference)["name"]
    host, _, _ = name.partition("/")
    port = host.partition(":")[2]
    if len(name) > 255 or (port and not 1 <= int(port) <= 65535):
        raise SettingsError(key, reference, "an image name of 255 characters at most, its registry port from 1 to 65535")


def _parse_image(read: _Raw) -> str:
    image = read.matching(
        "image", _IMAGE, "an image reference such as registry.example.com/team/name:tag@sha256:<64 hex digits>"
    )
    _check_image_limits("image", image)
    parts = _IMAGE.fullmatch(image)
    if parts["tag"] == "latest":
        raise SettingsError("image", image, "the tag 'latest' is never allowed; pin a version tag and a digest")
    if read.boolean("requireImageDigest") and not parts["digest"]:
        raise SettingsError("image", image, "this stack requires an image pinned by digest (name[:tag]@sha256:<64 hex>)")
    return image


def _parse_storage(read: _Raw, replicas: int) -> Storage:
    mode = read.choice("storageMode", STORAGE_MODES)
    if mode == "filesystem":
        if replicas > 1:
            # Each StatefulSet pod gets its own ReadWriteOnce volume: several replicas would be several
            # registries behind one Service, each holding a different part of the images.
            raise SettingsError("replicas", replicas, "filesystem storage allows exactly 1 replica; use s3 or minio for more")
        size, _ = _size_bytes(read, "storageSize", "200Gi", MIN_VOLUME_BYTES, MAX_VOLUME_BYTES)
        storage_class = read.checked("storageClass", _dns_subdomain, "a StorageClass name")
        return FilesystemStorage(storage_class=storage_class, size=size)

    # s3 mode: the registry's S3 driver uses virtual-hosted-style requests over TLS, which dotted names break;
    # MinIO is reached path-style.
    bucket = read.checked("s3Bucket", lambda name: validation.check_bucket_name(name, allow_dots=mode != "s3"),
                          validation.BUCKET_ALLOWED)
    root_directory = read.matching(
        "s3RootDirectory", re.compile(r"(/[A-Za-z0-9._-]+)+/?|/"), "an absolute path such as /registry (no //)"
    )
    if mode == "s3":
        region = read.matching("s3Region", _REGION, "an AWS region such as eu-west-1")
        account = read.matching("awsAccountId", validation.ACCOUNT_ID,
                                "the 12-digit AWS account of this stack (quoted in the stack file), required in s3 mode")
        return S3Storage(
            bucket=bucket,
            region=region,
            root_directory=root_directory,
            noncurrent_version_days=read.integer("s3NoncurrentVersionDays", 1, 3650),
            abort_multipart_days=read.integer("s3AbortMultipartDays", 1, 365),
            oidc_provider_arn=read.checked(
                "s3OidcProviderArn", lambda text: _oidc_provider_arn(text, account, region),
                "the EKS cluster's IAM OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/<issuer host/path>)",
            ),
        )
    return MinioStorage(
        endpoint=read.checked("minioEndpoint", _url_text, "the MinIO URL such as https://minio.storage.svc:9000"),
        bucket=bucket,
        region=read.optional("s3Region") or "us-east-1",
        root_directory=root_directory,
    )


def _oidc_provider_arn(text: str, account: str, region: str) -> str:
    """The IAM OIDC provider the registry's role trusts: in this stack's own account (a provider of another
    account would let that account's cluster mint tokens for the role), and in the bucket region's partition."""
    arn = validation.parse_arn(text)
    issuer = arn.resource.partition("oidc-provider/")[2]
    host, _, path = issuer.partition("/")
    if (arn.service != "iam" or arn.region or not arn.resource.startswith("oidc-provider/")
            or not validation.is_hostname(host) or not re.fullmatch(r"([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?", path)):
        raise Invalid("expected the EKS cluster's IAM OIDC provider ARN "
                      "(arn:aws:iam::<account>:oidc-provider/<issuer host/path>)")
    if arn.account != account:
        raise Invalid(f"an OIDC provider of this stack's account awsAccountId ({account}), not of {arn.account!r}")
    if arn.partition != validation.partition_of_region(region):
        raise Invalid(f"an ARN of the partition of s3Region {region} ({validation.partition_of_region(region)})")
    return text


# Settings that mean something only with another one: given alone they would be silently ignored, so the
# operator believes in a replica, a certificate or an allow-list that does not exist. (key, what it needs,
# the condition on the settings, as text for the message.)
def _refuse_settings_given_alone(read: _Raw) -> None:
    mode = read.optional("storageMode")
    needs = (
        ("drRegion", "drBucket", read.optional("drBucket") is not None, "drBucket (the replica it is the region of)"),
        ("ingressTlsSecretName", "ingressHost", read.optional("ingressHost") is not None,
         "ingressHost (no Ingress is created without it)"),
        ("developerCidrs", "ingressHost", read.optional("ingressHost") is not None or read.optional("authMode") == "token",
         "ingressHost or authMode token (developers reach the registry and the token service only through an Ingress)"),
        ("awsAccountId", "storageMode", mode == "s3", "storageMode s3 (the account of the bucket and its role)"),
        ("s3OidcProviderArn", "storageMode", mode == "s3", "storageMode s3 (the role it trusts exists only there)"),
        ("minioEndpoint", "storageMode", mode == "minio", "storageMode minio"),
        ("s3Bucket", "storageMode", mode in ("s3", "minio"), "storageMode s3 or minio"),
        ("s3Region", "storageMode", mode in ("s3", "minio"), "storageMode s3 or minio"),
        ("s3StorageBudget", "storageMode", mode in ("s3", "minio"), "storageMode s3 or minio"),
        ("storageClass", "storageMode", mode == "filesystem", "storageMode filesystem"),
        ("snapshotClass", "storageMode", mode == "filesystem", "storageMode filesystem"),
    )
    for key, needed_key, condition_met, needed in needs:
        if needed_key == "storageMode" and mode not in STORAGE_MODES:
            continue  # the mode's own error comes first
        if read.given(key) and not condition_met:
            raise SettingsError(key, read.optional(key), f"only used with {needed}; set that too or remove this")


def _parse_resources(read: _Raw) -> Resources:
    def cpu(example: str) -> Callable[[str], int]:
        return lambda text: validation.cpu_millis(
            text, 1, MAX_CPU_MILLIS, f"expected a CPU quantity such as {example}: whole millicores from 1m to 256")

    def memory(example: str) -> Callable[[str], int]:
        return lambda text: validation.whole_bytes(
            text, 64 << 20, MAX_MEMORY_BYTES, f"expected a memory quantity such as {example}: whole bytes from 64Mi to 1Ti")

    cpu_request = read.string("cpuRequest", "a CPU quantity such as 250m or 1")
    cpu_limit = read.string("cpuLimit", "a CPU quantity such as 2")
    memory_request = read.string("memoryRequest", "a memory quantity such as 256Mi")
    memory_limit = read.string("memoryLimit", "a memory quantity such as 1Gi")
    cpu_request_millis = read.checked("cpuRequest", cpu("250m or 1"), "a CPU quantity such as 250m or 1")
    if read.checked("cpuLimit", cpu("2"), "a CPU quantity such as 2") < cpu_request_millis:
        raise SettingsError("cpuLimit", cpu_limit, f"expected at least cpuRequest ({cpu_request})")
    memory_request_bytes = read.checked("memoryRequest", memory("256Mi"), "a memory quantity such as 256Mi")
    if read.checked("memoryLimit", memory("1Gi"), "a memory quantity such as 1Gi") < memory_request_bytes:
        raise SettingsError("memoryLimit", memory_limit, f"expected at least memoryRequest ({memory_request})")
    return Resources(cpu_request, cpu_limit, memory_request, memory_limit)


# --- consul, auth and credentials -------------------------------------------------------------

_VAULT_PATH = re.compile(r"^[a-z0-9]([a-z0-9_/-]*[a-z0-9])?$")
_AUDIENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}$")
_USER = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_TOKEN_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
_ISSUER = re.compile(r"^\S{1,255}$")
TOKEN_KEYS = ("tokenRealm", "tokenService", "tokenIssuer", *TOKEN_SERVICE_KEYS)


def _token_realm(text: str) -> str:
    """Where clients send their passwords to get a token: TLS, except on loopback (a token server on the
    same host, as in the real-registry tests)."""
    url = validation.parse_url(text, ("https", "http"), path=True)
    if url.scheme == "http" and url.host not in _LOOPBACK_HOSTS:
        raise Invalid("expected an https:// URL (http:// only to 127.0.0.1 or localhost)")
    return text


def _consul_service_name(text: str) -> str:
    if text == "*" or not _DNS_LABEL.fullmatch(text):
        raise ValueError(text)
    return text


def _parse_intention_sources(read: _Raw) -> tuple[str, ...]:
    sources = read.string_list(
        "consulIntentionSources", _consul_service_name, "Consul service names such as ci-runner (no wildcard)"
    )
    if not sources:
        # Intentions deny every source not listed: an empty list is a registry nobody can reach.
        raise SettingsError("consulIntentionSources", read.optional("consulIntentionSources"),
                            "required: at least one Consul service allowed to call the registry, such as ci-runner")
    if CONSUL_SERVICE_NAME in sources:
        raise SettingsError("consulIntentionSources", CONSUL_SERVICE_NAME, "the registry itself is not a source")
    return sources


def _parse_auth(read: _Raw) -> Auth:
    mode = read.choice("authMode", AUTH_MODES)
    if mode == "htpasswd":
        for key in TOKEN_KEYS:
            if read.given(key) and (key != "tokenServiceReplicas" or read.optional(key) != TOKEN_SERVICE_DEFAULT_REPLICAS):
                raise SettingsError(key, read.optional(key), "only used with authMode token (authMode is htpasswd)")
        return HtpasswdAuth()
    return TokenAuth(
        realm=read.checked("tokenRealm", _token_realm, "the token server's URL, https://host[:port]/path"),
        service=read.matching("tokenService", _TOKEN_SERVICE, "the service name tokens are issued for (their audience)"),
        issuer=read.matching("tokenIssuer", _ISSUER, "the issuer (iss claim) of the token server's tokens"),
    )


def _registry_user(text: str) -> RegistryUser:
    name, separator, access = text.partition(":")
    if not separator or not _USER.fullmatch(name) or access not in USER_ACCESS:
        raise ValueError(text)
    return RegistryUser(name=name, access=access)


def _parse_users(read: _Raw, auth: Auth) -> tuple[RegistryUser, ...]:
    allowed = "name:push, name:pull or name:cleanup (name: lowercase letters, digits, . _ -)"
    users = read.string_list("htpasswdUsers", _registry_user, allowed)
    names = [user.name for user in users]
    if len(set(names)) != len(names):
        raise SettingsError("htpasswdUsers", names, "expected each user name once")
    if not any(user.access == "push" for user in users):
        raise SettingsError("htpasswdUsers", read.optional("htpasswdUsers"),
                            "required: at least one pushing user (name:push), such as the CI runner's")
    pull_users = [user.name for user in users if user.access == contract.ROLE_PULL]
    limited = [user.name for user in users if user.access != contract.ROLE_PUSH]
    if isinstance(auth, HtpasswdAuth) and limited:
        # Distribution's htpasswd auth grants every authenticated user every action: a "pull" user
        # would silently be able to push. Only token auth carries per-repository actions.
        raise SettingsError("htpasswdUsers", limited,
                            "htpasswd auth gives every user every action; pull and cleanup users need authMode token")
    if isinstance(auth, TokenAuth) and not pull_users:
        raise SettingsError("htpasswdUsers", read.optional("htpasswdUsers"),
                            "with authMode token, expected at least one pull-only user (name:pull) besides the pushers")
    return users


def _parse_minio_credentials(
    raw: Mapping[str, Optional[str]], storage: Storage, secrets: Mapping[str, Any]
) -> Optional[MinioCredentials]:
    values = {key: secrets.get(key, raw.get(key) or None) for key in SECRET_KEYS}
    if not isinstance(storage, MinioStorage):
        for key, value in values.items():
            if value is not None:
                raise SettingsError(key, "[secret]", f"only used with storageMode minio (storageMode is {storage.mode})")
        return None
    for key, value in values.items():
        if value is None:
            raise SettingsError(key, None, f"required with storageMode minio: `pulumi config set --secret {PROJECT}:{key} ...`")
    return MinioCredentials(access_key=values["minioAccessKey"], secret_key=values["minioSecretKey"])


# --- the token service's deployment (authMode token) ------------------------------------------

TOKEN_SERVICE_DEFAULT_REPLICAS = "2"  # Pulumi.yaml's default: given in htpasswd mode, it means "not set"
MIN_TOKEN_SERVICE_REPLICAS = 2  # one pod may be evicted (its PDB) while another still issues tokens
_GROUP_ROLE_ALLOWED = "group:pull or group:push (an OIDC group name of letters, digits, . _ - / @, then its role)"
_OIDC_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@/-]{0,127}")
# What a developer's group may map to: never cleanup (delete), which only the retention robot holds.
DEVELOPER_ROLES = (contract.ROLE_PULL, contract.ROLE_PUSH)
_REALM_ALLOWED = (f"https://<host>{contract.TOKEN_PATH}, the token service's Ingress host "
                  f"(http://localhost:<port>{contract.TOKEN_PATH} only for a local test)")


def _group_role(text: str) -> tuple[str, str]:
    group, separator, role = text.rpartition(":")
    if not separator or not _OIDC_GROUP.fullmatch(group) or role not in DEVELOPER_ROLES:
        raise ValueError(text)
    return group, role


def _realm_host(realm: str) -> str:
    """The realm clients are sent to is where this program deploys the token service: its Ingress host, on
    443, at the token path. (A loopback realm is only a test's token service on this machine.)"""
    url = validation.parse_url(realm, ("https", "http"), path=True)
    if url.path != contract.TOKEN_PATH:
        raise Invalid(f"expected {_REALM_ALLOWED}: the token service answers at {contract.TOKEN_PATH}")
    if url.host in _LOOPBACK_HOSTS:
        return url.host
    if not validation.is_hostname(url.host) or url.port not in (None, names.HTTPS_PORT):
        raise Invalid(f"expected {_REALM_ALLOWED}: a DNS host name on port 443 (the Ingress)")
    return url.host


def _oidc_url(text: str) -> str:
    """The issuer's URL: TLS (developers' tokens are verified against what it serves), http only on loopback."""
    url = validation.parse_url(text, ("https", "http"), path=True)
    if url.scheme == "http" and url.host not in _LOOPBACK_HOSTS:
        raise Invalid("expected an https:// issuer URL (http:// only to 127.0.0.1 or localhost)")
    return text


def _parse_token_service(read: _Raw, auth: Auth, ingress_host: Optional[str],
                         developer_cidrs: tuple) -> Optional[TokenServiceDeployment]:
    if not isinstance(auth, TokenAuth):
        return None
    realm_host = read.checked("tokenRealm", _realm_host, _REALM_ALLOWED)
    if realm_host == ingress_host:
        raise SettingsError("tokenRealm", auth.realm, f"a host other than ingressHost ({ingress_host}): the token "
                                                      "service has its own Ingress")
    if not developer_cidrs:
        raise SettingsError("developerCidrs", [], "authMode token needs at least one developer CIDR: the token "
                                                  "service's Ingress admits only them and the nodes (an empty "
                                                  "allow-list would admit everybody)")
    image = read.matching("tokenServiceImage", _IMAGE, "the token service image (token_service/Dockerfile), such as "
                          "registry.example.com/platform/token-service:1.0@sha256:<64 hex>, required with authMode token")
    _check_image_limits("tokenServiceImage", image)
    parts = _IMAGE.fullmatch(image)
    if parts["tag"] == "latest" or not parts["digest"]:
        raise SettingsError("tokenServiceImage", image, "the token service image must be pinned by digest "
                                                        "(name[:tag]@sha256:<64 hex>), never :latest")
    oidc = None
    issuer = read.optional("tokenOidcIssuer")
    if issuer is None:
        for key in ("tokenOidcAudience", "tokenOidcIssuerCidrs", "tokenOidcGroupRoles"):
            if read.given(key):
                raise SettingsError(key, read.optional(key), "only used with tokenOidcIssuer (developer logins); "
                                                             "set that too or remove this")
    else:
        read.checked("tokenOidcIssuer", _oidc_url, "the company OIDC issuer's URL, https://host[/path]")
        cidrs = read.cidr_list("tokenOidcIssuerCidrs", "CIDR blocks of the OIDC issuer (its JWKS endpoint)")
        issuer_url = validation.parse_url(issuer, ("https", "http"), path=True)
        if not cidrs and validation.in_cluster_service(issuer_url) is None and issuer_url.host not in _LOOPBACK_HOSTS:
            raise SettingsError("tokenOidcIssuerCidrs", None, "an OIDC issuer outside the cluster needs its CIDRs "
                                                              "(the token service's egress is deny-by-default)")
        oidc = OidcIssuer(
            url=issuer,
            audience=read.matching("tokenOidcAudience", _AUDIENCE, "the audience the developers' tokens carry, "
                                                                   "required with tokenOidcIssuer"),
            cidrs=cidrs,
            group_roles=read.string_list("tokenOidcGroupRoles", _group_role, _GROUP_ROLE_ALLOWED),
        )
    return TokenServiceDeployment(
        image=image,
        replicas=read.integer("tokenServiceReplicas", MIN_TOKEN_SERVICE_REPLICAS, MAX_REPLICAS),
        realm_host=realm_host,
        realm_tls_secret_name=read.checked("tokenRealmTlsSecretName", _dns_subdomain,
                                           "the TLS Secret for the token realm's host, required with authMode token"),
        oidc=oidc,
    )
# --- pull credentials ---------------------------------------------------------------------------


def _parse_pull_credentials(read: _Raw, auth: Auth, users: tuple[RegistryUser, ...],
                            ingress_host: Optional[str]) -> dict:
    """``pullSecretNamespaces``: where the External Secrets Operator renders the pull robot's dockerconfigjson
    Secret. It needs the path the kubelets pull on (the Ingress), a pull-only robot (token auth), and exactly one
    such robot, so that every namespace gets the same one and none a pusher's credentials."""
    key = "pullSecretNamespaces"
    namespaces = read.string_list(key, _dns_label, "a Kubernetes namespace name (DNS label)")
    if not namespaces:
        return {"pull_secret_namespaces": ()}
    if ingress_host is None:
        raise SettingsError(key, list(namespaces), "only used with ingressHost (kubelets pull through the Ingress); "
                                                   "set that too or remove this")
    if not isinstance(auth, TokenAuth):
        raise SettingsError(key, list(namespaces), "needs authMode token: only token auth has pull-only robots, and "
                                                   "htpasswd would hand every namespace a robot that can push")
    pulling = [user.name for user in users if user.access == contract.ROLE_PULL]
    if len(pulling) != 1:
        raise SettingsError("htpasswdUsers", pulling, f"with {key}, expected exactly one pull-only robot (name:pull): "
                                                      "the one whose credentials every consuming namespace gets")
    return {"pull_secret_namespaces": namespaces}
