"""The names two sides share: ports, object and account names, label sets and the Consul KV layout.

Each is spelled here once. Every component, script environment, test stand-in and policy that needs one
imports it from here, so a rename cannot leave one side behind (tests/test_names.py checks that no other
module spells these strings itself).

The Consul KV layout under ``registry/<env>/`` (the contract with config-cli, docs/config-cli.md):

- ``config/``: everything the program declares, owned by one ``consul.KeyPrefix`` (a key dropped from the
  program is deleted from Consul, and a key added by hand is drift):
  ``config/env/<NAME>`` (one environment variable each), ``config/files/<file>``,
  ``config/credentials-generation``, ``config/service/check``;
- ``maintenance/<NAME>``: written only by the operations jobs, never by the program, so a ``pulumi up`` or
  the drift check never fights a running job. A value here overrides ``config/env/<NAME>``; only the names
  in ``MAINTENANCE_VARIABLES`` may appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from token_service import contract as token_contract

# --- ports -----------------------------------------------------------------------------------------
HTTP_PORT = 5000  # the registry's API, behind the mesh sidecar
DEBUG_PORT = 5001  # metrics and /debug/health, outside the mesh
# Consul Connect's Envoy sidecar accepts mTLS from other mesh services here.
MESH_INBOUND_PORT = 20000
CONSUL_GRPC_PORT = 8502  # the dataplane sidecar's xDS stream
DNS_PORT = 53
HTTPS_PORT = 443  # Vault, the S3/STS endpoints, the API server's Service
API_SERVER_PORTS = (HTTPS_PORT, 6443)

# --- objects and accounts --------------------------------------------------------------------------
DATA_VOLUME = "data"
TOKEN_SERVICE_COMPONENT = "token-service"  # the token service's component label and name suffix


def vault_role_name(account: str, environment: str) -> str:
    """The Vault Kubernetes auth role (and the Consul ACL role) of one service account in one stack."""
    return f"{account}-{environment}"


@dataclass(frozen=True)
class RegistryNames:
    """Every name of one registry instance, derived from its base name (the workload component's name) and
    its environment: Kubernetes objects and accounts, the Consul service, the KV prefix, the Vault path.

    ``RegistryNames(WORKLOAD_NAME, env)`` is this program's registry: the constants below are its names.
    """

    base: str
    environment: str

    @property
    def workload(self) -> str:
        """The StatefulSet; its pods are <base>-0..N-1."""
        return self.base

    @property
    def service_account(self) -> str:
        return self.base

    @property
    def headless_service(self) -> str:
        return f"{self.base}-headless"

    @property
    def client_service(self) -> str:
        return self.base

    @property
    def consul_service(self) -> str:
        return self.base

    @property
    def sidecar_service(self) -> str:
        return f"{self.consul_service}-sidecar-proxy"

    @property
    def gc(self) -> str:
        """The garbage-collection CronJob, and its ServiceAccount, Role, RoleBinding and script ConfigMap."""
        return f"{self.base}-gc"

    @property
    def snapshot(self) -> str:
        return f"{self.base}-snapshot"

    @property
    def metrics_service(self) -> str:
        return f"{self.base}-metrics"

    def data_claim(self, ordinal: int = 0) -> str:
        """The claim the StatefulSet's volumeClaimTemplate creates for pod ``<base>-<ordinal>``."""
        return f"{DATA_VOLUME}-{self.workload}-{ordinal}"

    def vault_role(self, account: str) -> str:
        return vault_role_name(account, self.environment)

    @property
    def instance(self) -> str:
        return f"{self.base}-{self.environment}"

    @property
    def kv_prefix(self) -> str:
        """Everything config-cli reads for one stack (``CONFIG_CLI_KV_PREFIX``)."""
        return f"{self.base}/{self.environment}/"

    @property
    def config_kv_prefix(self) -> str:
        """The part the program owns (the KeyPrefix's ``pathPrefix``)."""
        return f"{self.kv_prefix}{CONFIG_FOLDER}"

    @property
    def readonly_kv_key(self) -> str:
        """The key the garbage-collection job flips; config-cli exports it as the read-only variable."""
        return f"{self.kv_prefix}{MAINTENANCE_FOLDER}{READONLY_VARIABLE}"

    @property
    def vault_secret_path(self) -> str:
        """Path of the registry's secret inside the KV v2 mount."""
        return f"{self.base}/{self.environment}"

    def selector_labels(self) -> dict[str, str]:
        """What the client Service, the NetworkPolicies and the mesh select: every pod that serves the
        registry API, the StatefulSet's and the garbage-collection Job's read-only replica alike."""
        return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: self.instance}

    def workload_selector_labels(self) -> dict[str, str]:
        """The StatefulSet's own pods only: the PodDisruptionBudget's selector. A PDB that also matched the GC
        Job's pod could not compute its budget (a Job has no scale subresource) and would block every drain.
        (The StatefulSet's own selector stays ``selector_labels``: a selector is immutable, and changing it
        would replace the StatefulSet.)"""
        return {**self.selector_labels(), COMPONENT_LABEL: REGISTRY_COMPONENT}

    def common_labels(self) -> dict[str, str]:
        return {**self.workload_selector_labels(), **PART_OF_LABELS}

    def operations_labels(self, component: str) -> dict[str, str]:
        """Labels of the operations objects. The instance differs from the registry's, so that no operations
        pod matches the registry's selector unless it adds those labels on purpose, as the GC pod does."""
        return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: f"{self.instance}-{component}", COMPONENT_LABEL: component,
                **PART_OF_LABELS}

    # --- the token service (components/token_service.py): its own objects, labels, KV prefix, Vault paths ---

    @property
    def token_service(self) -> str:
        """The token service's Deployment, ServiceAccount, Service, PDB, Ingress and Consul service."""
        return f"{self.base}-{TOKEN_SERVICE_COMPONENT}"

    @property
    def token_service_sidecar(self) -> str:
        return f"{self.token_service}-sidecar-proxy"

    @property
    def token_service_metrics_service(self) -> str:
        return f"{self.token_service}-metrics"

    @property
    def token_service_kv_prefix(self) -> str:
        """Everything config-cli reads for the token service (its ``CONFIG_CLI_KV_PREFIX``): beside the registry's
        ``<base>/<env>/``, never inside it (the registry's config-cli refuses keys it does not know)."""
        return f"{self.token_service}/{self.environment}/"

    @property
    def token_service_config_kv_prefix(self) -> str:
        return f"{self.token_service_kv_prefix}{CONFIG_FOLDER}"

    @property
    def token_signing_secret_path(self) -> str:
        """The private signing keys: only the token service's Vault policy reads them."""
        return f"{self.vault_secret_path}/{TOKEN_SIGNING_SECRET}"

    @property
    def token_trust_secret_path(self) -> str:
        """The published public keys: the registry's and the token service's policies read them."""
        return f"{self.vault_secret_path}/{TOKEN_TRUST_SECRET}"

    def token_service_selector_labels(self) -> dict[str, str]:
        """The token service's pods. The instance differs from the registry's, so neither the registry's Service,
        PDB and NetworkPolicies nor its mesh identity ever select a token service pod."""
        return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: f"{self.instance}-{TOKEN_SERVICE_COMPONENT}",
                COMPONENT_LABEL: TOKEN_SERVICE_COMPONENT}

    def token_service_labels(self) -> dict[str, str]:
        return {**self.token_service_selector_labels(), **PART_OF_LABELS}
    # --- pull credentials (components/pull_credentials.py) ---
    def client_secret_path(self, user: str) -> str:
        """A robot's own secret (username, clear password) inside the KV v2 mount: written by the Vault secrets
        component, read by whoever hands that robot's credentials to its clients."""
        return f"{self.vault_secret_path}/{CLIENTS_FOLDER}/{user}"

    @property
    def pull_secret(self) -> str:
        """The ``kubernetes.io/dockerconfigjson`` Secret (and the ExternalSecret that renders it) in each consuming
        namespace: what their pods name in ``imagePullSecrets``."""
        return f"{self.base}-pull"

    @property
    def pull_credentials_account(self) -> str:
        """The service account the External Secrets Operator logs in to Vault as, for the pull robot only."""
        return f"{self.base}-pull-credentials"

    @property
    def pull_credentials_store(self) -> str:
        """The ClusterSecretStore (cluster-scoped: the instance's name, environment included)."""
        return f"{self.instance}-pull-credentials"


WORKLOAD_NAME = "registry"  # this program's registry: RegistryNames(WORKLOAD_NAME, env)
_PROGRAM = RegistryNames(WORKLOAD_NAME, "")
SERVICE_ACCOUNT_NAME = _PROGRAM.service_account
HEADLESS_SERVICE_NAME = _PROGRAM.headless_service
CLIENT_SERVICE_NAME = _PROGRAM.client_service
CONSUL_SERVICE_NAME = _PROGRAM.consul_service
SIDECAR_SERVICE_NAME = _PROGRAM.sidecar_service
GC_NAME = _PROGRAM.gc
SNAPSHOT_NAME = _PROGRAM.snapshot
TOKEN_SERVICE_NAME = _PROGRAM.token_service
TOKEN_SERVICE_SIDECAR_NAME = _PROGRAM.token_service_sidecar


def program_names(environment: str) -> RegistryNames:
    """This program's registry in one stack."""
    return RegistryNames(WORKLOAD_NAME, environment)


def data_claim_name(ordinal: int = 0) -> str:
    """The claim the StatefulSet's volumeClaimTemplate creates for pod ``registry-<ordinal>``."""
    return _PROGRAM.data_claim(ordinal)


# config-cli's command line: the registry's pods and the GC Job's replica start the registry this way.
CONFIG_CLI_COMMAND = ("config-cli", "run", "docker-registry")

# --- labels ----------------------------------------------------------------------------------------
APP_NAME = "docker-registry"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace
REGISTRY_COMPONENT = "registry"
GC_COMPONENT = "garbage-collector"
BACKUP_COMPONENT = "backup"
PART_OF_LABELS = {"app.kubernetes.io/part-of": "cicd", "app.kubernetes.io/managed-by": "pulumi"}


def selector_labels(environment: str) -> dict[str, str]:
    return program_names(environment).selector_labels()


def workload_selector_labels(environment: str) -> dict[str, str]:
    return program_names(environment).workload_selector_labels()


def common_labels(environment: str) -> dict[str, str]:
    return program_names(environment).common_labels()


def operations_labels(environment: str, component: str) -> dict[str, str]:
    return program_names(environment).operations_labels(component)


def object_metadata(name: str, namespace: str, labels: dict[str, str],
                    annotations: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


def dns_egress() -> dict:
    """Egress to the cluster DNS (CoreDNS answers as ``k8s-app: kube-dns`` in kube-system)."""
    return {
        "to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
    }


# --- Consul KV layout (config-cli's contract) ------------------------------------------------------
CONFIG_FOLDER = "config/"
MAINTENANCE_FOLDER = "maintenance/"
ENV_FOLDER = "env/"
FILES_FOLDER = "files/"
GENERATION_KEY = "credentials-generation"
CHECK_KEY = "service/check"
READONLY_VARIABLE = "REGISTRY_STORAGE_MAINTENANCE_READONLY"
# Distribution panics on ``..._READONLY_ENABLED=true``; the map form is the only one that works.
READONLY_ON = '{"enabled":true}'
READONLY_OFF = '{"enabled":false}'
MAINTENANCE_VARIABLES = (READONLY_VARIABLE,)


# The token service's secrets beside the registry's own (``<mount>/registry/<env>``), written by
# ``python -m token_service.keys``: the private signing keys (only the token service reads them) and the
# public trust material (JWKS and certificates: what config-cli hands the registry).
TOKEN_SIGNING_SECRET = "token-signing"
TOKEN_TRUST_SECRET = "token-trust"

# --- the token service (components/token_service.py) ------------------------------------------------
TOKEN_SERVICE_PORT = token_contract.HTTP_PORT  # /token, behind the mesh sidecar
TOKEN_SERVICE_OPS_PORT = token_contract.OPS_PORT  # /healthz, /readyz, /metrics, outside the mesh
# config-cli's profile that exports the token service's settings and starts ``python -m token_service``.
TOKEN_SERVICE_CONFIG_CLI_COMMAND = ("config-cli", "run", "token-service")


def kv_prefix(environment: str) -> str:
    return program_names(environment).kv_prefix


def config_kv_prefix(environment: str) -> str:
    return program_names(environment).config_kv_prefix


def readonly_kv_key(environment: str) -> str:
    return program_names(environment).readonly_kv_key


# --- pull credentials --------------------------------------------------------------------------------
# Robots' own secrets live under ``<mount>/registry/<env>/clients/<user>`` (RegistryNames.client_secret_path).
CLIENTS_FOLDER = "clients"
PULL_CREDENTIALS_COMPONENT = "pull-credentials"
