"""What the registry finds in Consul: its KV settings, its mesh rules, its ACL identities and its health check.

Pure functions compute each piece as plain data; ``RegistryConsulConfig`` registers them. The key layout
under ``registry/<env>/`` is the contract with config-cli (components/names.py, docs/config-cli.md); the
program owns ``config/``:

- ``config/env/<NAME>``: one key per environment variable of ``registry_environment()``; the value is the
  variable's value verbatim, or a Vault reference ``vault:<mount>/<path>#<field>``;
- ``config/files/<name>``: a file config-cli writes to ``SECRETS_DIRECTORY/<name>`` (content or Vault reference);
- ``config/credentials-generation``: the rotation counter, so a rotation is a visible KV change;
- ``config/service/check``: the Consul check definition config-cli registers with the service (JSON).

``maintenance/`` belongs to the operations jobs: the garbage-collection job's token may write exactly the
read-only key there, and nothing here declares it, so ``pulumi up`` never undoes a running collection.

No value is a secret: secrets stay in Vault and only their references are written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_consul as consul

from . import names
from .names import (CHECK_KEY, CONSUL_SERVICE_NAME, DEBUG_PORT, ENV_FOLDER, FILES_FOLDER, GC_NAME, GENERATION_KEY,
                    SERVICE_ACCOUNT_NAME, SIDECAR_SERVICE_NAME)
from .registry_config import VAULT_REFERENCE_PREFIX, config_files, registry_environment
from .settings import Settings
# config-cli replaces this with its own POD_IP before registering the check.
POD_IP_PLACEHOLDER = "${POD_IP}"
HEALTH_PATH = "/debug/health"


def health_check(settings: Settings) -> dict:
    """The check config-cli registers for the registry's service instance.

    ``/v2/`` answers 401 to a caller without credentials, which Consul counts as critical, and putting
    a password in a check definition would publish it to everyone who can read the catalog.
    ``/debug/health`` on the debug port needs no credentials and reports the registry's own health
    checks: 200 while the storage driver answers, 503 (with the failing check in the body) once it
    does not, the same signal that turns ``/`` on the registry port to 503. The debug port is also
    outside the mesh's inbound redirect, so a plain HTTP check reaches it; the registry port accepts
    only mTLS from the sidecar.
    """
    return {
        "Name": f"{CONSUL_SERVICE_NAME} storage health",
        "Notes": "Distribution's /debug/health: 503 when the storage driver check fails",
        "HTTP": f"http://{POD_IP_PLACEHOLDER}:{DEBUG_PORT}{HEALTH_PATH}",
        "Method": "GET",
        "Interval": "10s",
        "Timeout": "5s",
        # As the readiness probe: a blip does not take the instance out, three failures in a row do.
        "FailuresBeforeCritical": 3,
        # A pod killed without deregistering (OOM, node loss) leaves the catalog on its own.
        "DeregisterCriticalServiceAfter": "10m",
    }


def kv_subkeys(settings: Settings, kms_key_arn: Optional[pulumi.Input[str]] = None) -> dict[str, Any]:
    """Every Consul key the program owns, relative to ``names.config_kv_prefix()``, and its value."""
    entries = {f"{ENV_FOLDER}{name}": value for name, value in registry_environment(settings, kms_key_arn).items()}
    entries.update({f"{FILES_FOLDER}{name}": content for name, content in config_files(settings).items()})
    entries[GENERATION_KEY] = str(settings.credentials_generation)
    entries[CHECK_KEY] = json.dumps(health_check(settings), sort_keys=True)
    return dict(sorted(entries.items()))


def vault_references(entries: dict[str, str]) -> dict[str, str]:
    """The KV entries whose value config-cli resolves from Vault, by key."""
    return {key: value for key, value in entries.items() if value.startswith(VAULT_REFERENCE_PREFIX)}


def service_defaults() -> dict:
    """``service-defaults``: HTTP, so intentions and metrics see requests, not just TCP streams."""
    return {"Protocol": "http"}


def service_intentions(settings: Settings) -> dict:
    """``service-intentions``: the listed sources may call the registry, every other service may not.

    The explicit ``*`` deny keeps the registry closed even where the cluster's default intention is
    allow (ACL default policy allow, or no ACLs at all).
    """
    allowed = [
        {"Name": source, "Action": "allow", "Description": "named in consulIntentionSources"}
        for source in settings.consul_intention_sources
    ]
    return {"Sources": allowed + [{"Name": "*", "Action": "deny", "Description": "everything not listed"}]}


def acl_policy_rules(settings: Settings) -> str:
    """HCL for the registry's Consul token: read its own KV prefix, register its own service and sidecar.

    ``key_prefix`` matches by string prefix, so the trailing slash keeps ``registry/staging-old/``
    out of ``registry/staging/``.
    """
    return (
        f'key_prefix "{settings.consul_kv_prefix}" {{\n  policy = "read"\n}}\n'
        f'service "{CONSUL_SERVICE_NAME}" {{\n  policy = "write"\n}}\n'
        f'service "{SIDECAR_SERVICE_NAME}" {{\n  policy = "write"\n}}\n'
    )


def gc_acl_policy_rules(settings: Settings) -> str:
    """HCL the garbage-collection job adds to the registry's own: write exactly the read-only key.

    ``key`` (not ``key_prefix``) matches one key only, so the job cannot touch any other setting.
    """
    return f'key "{names.readonly_kv_key(settings.environment)}" {{\n  policy = "write"\n}}\n'


def acl_policy_name(settings: Settings) -> str:
    return names.vault_role_name(SERVICE_ACCOUNT_NAME, settings.environment)


def gc_acl_policy_name(settings: Settings) -> str:
    return names.vault_role_name(GC_NAME, settings.environment)


def binding_rule_selector(namespace: str, account: str) -> str:
    """Consul's bexpr over the Kubernetes auth method's claims: one service account in one namespace."""
    return f'serviceaccount.namespace=="{namespace}" and serviceaccount.name=="{account}"'


def acl_identities(settings: Settings) -> list[dict[str, Any]]:
    """Who logs in to Consul with which policies: the registry's pods, and the GC Job, whose read-only
    replica is the registry too (same reads, same service) and which also flips the read-only key.

    Consul 1.14's binding rules bind a role (``bindType: policy`` arrived later), so each account gets a role
    named like its Vault role.
    """
    registry = acl_policy_name(settings)
    return [
        {"account": SERVICE_ACCOUNT_NAME, "role": registry, "policies": [registry]},
        {"account": GC_NAME, "role": gc_acl_policy_name(settings), "policies": [registry, gc_acl_policy_name(settings)]},
    ]


def _config_json(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class RegistryConsulConfigArgs:
    settings: Settings
    # The S3 bucket's KMS key (s3 mode): an Output, known only once the key exists.
    kms_key_arn: Optional[pulumi.Input[str]] = None


class RegistryConsulConfig(pulumi.ComponentResource):
    """The registry's KV settings, its service-defaults and service-intentions, and its ACL policy."""

    kv_prefix: pulumi.Output[str]
    acl_policy_name: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryConsulConfigArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:consul:RegistryConsulConfig", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        # KeyPrefix owns the whole prefix: a key dropped here (a setting removed, the other auth mode's
        # keys after a switch) is deleted from Consul, so config-cli never exports a stale variable.
        consul.KeyPrefix(
            f"{name}-kv",
            path_prefix=names.config_kv_prefix(settings.environment),
            # Only the KMS key ARN waits for AWS; every other value stays known during preview, so the
            # policy pack can check them before the key exists.
            subkeys=kv_subkeys(settings, args.kms_key_arn),
            opts=child,
        )
        consul.ConfigEntry(
            f"{name}-service-defaults", kind="service-defaults", name=CONSUL_SERVICE_NAME,
            config_json=_config_json(service_defaults()), opts=child,
        )
        consul.ConfigEntry(
            f"{name}-service-intentions", kind="service-intentions", name=CONSUL_SERVICE_NAME,
            config_json=_config_json(service_intentions(settings)), opts=child,
        )
        policy = consul.AclPolicy(
            f"{name}-acl-policy",
            name=acl_policy_name(settings),
            description=f"Docker registry ({settings.environment}): read {settings.consul_kv_prefix}, register its service",
            rules=acl_policy_rules(settings),
            opts=child,
        )
        gc_policy = consul.AclPolicy(
            f"{name}-gc-acl-policy",
            name=gc_acl_policy_name(settings),
            description=f"Docker registry ({settings.environment}) garbage collection: write the read-only key only",
            rules=gc_acl_policy_rules(settings),
            opts=child,
        )
        policy_ids = {acl_policy_name(settings): policy.id, gc_acl_policy_name(settings): gc_policy.id}
        for identity in acl_identities(settings):
            short = "gc" if identity["account"] == GC_NAME else "registry"
            role = consul.AclRole(
                f"{name}-{short}-acl-role",
                name=identity["role"],
                description=f"Service account {settings.namespace}/{identity['account']} ({settings.environment})",
                policies=[policy_ids[p] for p in identity["policies"]],
                opts=child,
            )
            consul.AclBindingRule(
                f"{name}-{short}-binding-rule",
                auth_method=settings.consul_auth_method,
                description=f"{settings.namespace}/{identity['account']} logs in as role {identity['role']}",
                selector=binding_rule_selector(settings.namespace, identity["account"]),
                bind_type="role",
                bind_name=role.name,
                opts=child,
            )

        self.kv_prefix = pulumi.Output.from_input(settings.consul_kv_prefix)
        self.acl_policy_name = policy.name
        self.register_outputs({"kv_prefix": self.kv_prefix, "acl_policy_name": self.acl_policy_name})
