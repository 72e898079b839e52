"""Pull credentials for the kubelets: the pull-only robot's username and password, synchronised from Vault into a
``kubernetes.io/dockerconfigjson`` Secret in each consuming namespace by the External Secrets Operator.

No credential is in any manifest, plan or output: the program declares only where the credential comes from and
how the Secret is shaped. The operator (installed by the platform, like the Prometheus Operator; a prerequisite)
logs in to Vault with a short-lived token of this component's own service account, reads the robot's client
secret ``<mount>/registry/<env>/clients/<robot>`` (the clear copy its clients use; the token service checks the
bcrypt hash in the registry's own secret), and renders the Secret from the template below.

What is created:
- a ServiceAccount in the registry's namespace that nothing runs as (the operator requests its tokens, with the
  Vault audience, through the TokenRequest API);
- a Vault policy that reads exactly that robot's client secret, and a Kubernetes auth role bound to that one
  account, 5-minute tokens, no default policy;
- a ClusterSecretStore on Vault with that role, usable only from the consuming namespaces (``conditions``);
- in each consuming namespace an ExternalSecret whose template renders ``.dockerconfigjson`` for the registry
  host(s) the kubelets pull from (the Ingress).

Why the External Secrets Operator and not HashiCorp's Vault Secrets Operator: docs/security.md, "Pull credentials".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_vault as vault

from .names import PULL_CREDENTIALS_COMPONENT, RegistryNames, object_metadata
from .vault_secrets import FIELD_CLIENT_PASSWORD, FIELD_CLIENT_USERNAME, vault_kubernetes_role

EXTERNAL_SECRETS_API = "external-secrets.io/v1"
DOCKER_CONFIG_JSON_TYPE = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
# How often the operator re-reads Vault: a rotation (credentialsGeneration) reaches the namespaces within this.
REFRESH_INTERVAL = "1h"
TEMPLATE_ENGINE = "v2"


@dataclass(frozen=True, kw_only=True)
class RegistryPullCredentialsArgs:
    """The Kubernetes and Vault providers come in through ``opts``."""

    names: RegistryNames
    namespace: str  # the registry's: where the store's service account lives
    pull_secret_namespaces: tuple[str, ...]  # where the dockerconfigjson Secret is rendered
    registry_hosts: tuple[str, ...]  # the hosts the kubelets pull from (the Ingress host)
    pull_robot: str  # the pull-only robot whose client secret is handed out
    vault_addr: str
    vault_kv_mount: str
    vault_kubernetes_auth_path: str
    vault_auth_audience: str


def robot_secret_path(args: RegistryPullCredentialsArgs) -> str:
    """The robot's client secret inside the KV v2 mount (written by the Vault secrets component)."""
    return args.names.client_secret_path(args.pull_robot)


def vault_role_name(args: RegistryPullCredentialsArgs) -> str:
    return args.names.vault_role(args.names.pull_credentials_account)


def vault_policy(args: RegistryPullCredentialsArgs) -> str:
    """HCL reading exactly the pull robot's client secret: no list, no metadata, no other robot."""
    return f'path "{args.vault_kv_mount}/data/{robot_secret_path(args)}" {{\n  capabilities = ["read"]\n}}\n'


def kubernetes_auth_role(args: RegistryPullCredentialsArgs) -> dict[str, Any]:
    """The store's Kubernetes auth role, bound to its own account and holding only its own policy."""
    return vault_kubernetes_role(args.vault_kubernetes_auth_path, vault_role_name(args),
                                 args.names.pull_credentials_account, args.namespace, args.vault_auth_audience,
                                 vault_role_name(args))


def labels(args: RegistryPullCredentialsArgs) -> dict[str, str]:
    return args.names.operations_labels(PULL_CREDENTIALS_COMPONENT)


def service_account(args: RegistryPullCredentialsArgs) -> dict:
    return {"metadata": object_metadata(args.names.pull_credentials_account, args.namespace, labels(args))}


def cluster_secret_store(args: RegistryPullCredentialsArgs) -> dict:
    """The operator's way into Vault: this component's role, and only from the consuming namespaces."""
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ClusterSecretStore",
        "metadata": {"name": args.names.pull_credentials_store, "labels": labels(args)},
        "spec": {
            "provider": {"vault": {
                "server": args.vault_addr,
                "path": args.vault_kv_mount,
                "version": "v2",
                "auth": {"kubernetes": {
                    "mountPath": args.vault_kubernetes_auth_path,
                    "role": vault_role_name(args),
                    "serviceAccountRef": {"name": args.names.pull_credentials_account, "namespace": args.namespace,
                                          "audiences": [args.vault_auth_audience]},
                }},
            }},
            # Without conditions every namespace's ExternalSecret could use the store.
            "conditions": [{"namespaces": sorted(args.pull_secret_namespaces)}],
        },
    }


def docker_config_template(hosts: tuple[str, ...]) -> str:
    """The operator's template (engine v2: Go text/template with Sprig) for ``.dockerconfigjson``.

    The JSON is built by ``dict``/``toJson``, not by pasting strings, so no password character can break it;
    ``auth`` is base64 of ``username:password``, as ``docker login`` writes it and containerd's CRI reads it.
    """
    entry = (f'(dict "username" .{FIELD_CLIENT_USERNAME} "password" .{FIELD_CLIENT_PASSWORD} '
             f'"auth" (printf "%s:%s" .{FIELD_CLIENT_USERNAME} .{FIELD_CLIENT_PASSWORD} | b64enc))')
    auths = " ".join(f"{json.dumps(host)} {entry}" for host in sorted(hosts))
    return f'{{{{ dict "auths" (dict {auths}) | toJson }}}}'


def external_secret(args: RegistryPullCredentialsArgs, namespace: str) -> dict:
    """The ExternalSecret in one consuming namespace: the robot's two fields in, a dockerconfigjson Secret out."""
    remote = robot_secret_path(args)
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ExternalSecret",
        "metadata": object_metadata(args.names.pull_secret, namespace, labels(args)),
        "spec": {
            "refreshInterval": REFRESH_INTERVAL,
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": args.names.pull_credentials_store},
            "target": {
                "name": args.names.pull_secret,
                "creationPolicy": "Owner",
                # Vault unreachable or the role revoked: the nodes keep pulling with what they have.
                "deletionPolicy": "Retain",
                "template": {
                    "type": DOCKER_CONFIG_JSON_TYPE,
                    "engineVersion": TEMPLATE_ENGINE,
                    "mergePolicy": "Replace",
                    "metadata": {"labels": labels(args)},
                    "data": {DOCKER_CONFIG_JSON_KEY: docker_config_template(args.registry_hosts)},
                },
            },
            "data": [{"secretKey": field, "remoteRef": {"key": remote, "property": field}}
                     for field in (FIELD_CLIENT_USERNAME, FIELD_CLIENT_PASSWORD)],
        },
    }


class RegistryPullCredentials(pulumi.ComponentResource):
    """The pull robot's credentials, delivered from Vault into each consuming namespace by the operator."""

    policy: vault.Policy
    auth_role: vault.kubernetes.AuthBackendRole
    store: k8s.apiextensions.CustomResource
    external_secrets: dict[str, k8s.apiextensions.CustomResource]  # by namespace
    pull_secret_name: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryPullCredentialsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:pull:RegistryPullCredentials", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = service_account(args)
        k8s.core.v1.ServiceAccount(f"{name}-service-account", metadata=account["metadata"],
                                   automount_service_account_token=False, opts=child)
        self.policy = vault.Policy(f"{name}-policy", name=vault_role_name(args), policy=vault_policy(args), opts=child)
        self.auth_role = vault.kubernetes.AuthBackendRole(
            f"{name}-auth-role", **{**kubernetes_auth_role(args), "token_policies": [self.policy.name]}, opts=child)
        store = cluster_secret_store(args)
        self.store = k8s.apiextensions.CustomResource(
            f"{name}-store", api_version=store["apiVersion"], kind=store["kind"], metadata=store["metadata"],
            spec=store["spec"], opts=pulumi.ResourceOptions(parent=self, depends_on=[self.auth_role]))
        self.external_secrets = {}
        for namespace in args.pull_secret_namespaces:
            manifest = external_secret(args, namespace)
            self.external_secrets[namespace] = k8s.apiextensions.CustomResource(
                f"{name}-{namespace}", api_version=manifest["apiVersion"], kind=manifest["kind"],
                metadata=manifest["metadata"], spec=manifest["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.store]))
        self.pull_secret_name = pulumi.Output.from_input(args.names.pull_secret)
        self.register_outputs({"pull_secret_name": self.pull_secret_name, "store": args.names.pull_credentials_store,
                               "namespaces": list(args.pull_secret_namespaces)})
