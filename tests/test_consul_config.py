"""What the registry finds in Consul: KV layout, auth keys, intentions, ACL policy, health check."""

from __future__ import annotations

import json
import re

import pytest

from components.consul_config import (CHECK_KEY, GENERATION_KEY, acl_policy_rules, health_check, kv_subkeys,
                                      service_defaults, service_intentions, vault_references)
from components.registry_config import (HTPASSWD_PATH, SECRETS_DIRECTORY, TOKEN_JWKS_PATH, config_files,
                                        registry_environment)
from components.vault_secrets import registry_secret_data
from tests.conftest import settings_for
from tests.test_config_settings import HTPASSWD_ONLY, MINIO

KMS_ARN = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
VAULT_REFERENCE = re.compile(r"^vault:(?P<mount>[a-z0-9_-]+)/(?P<path>[a-z0-9/_-]+)#(?P<field>[a-z0-9_]+)$")


def env_keys(subkeys: dict[str, str]) -> dict[str, str]:
    return {key[len("env/"):]: value for key, value in subkeys.items() if key.startswith("env/")}


@pytest.mark.parametrize("stack,overrides", [
    ("staging", {}), ("staging", HTPASSWD_ONLY), ("prod", {}),
    ("staging", {**MINIO, "minioAccessKey": "a", "minioSecretKey": "s"}),
])
def test_every_registry_variable_is_one_key_under_env(stack, overrides):
    settings = settings_for(stack, **overrides)
    arn = KMS_ARN if stack == "prod" else None
    subkeys = kv_subkeys(settings, arn)
    assert env_keys(subkeys) == registry_environment(settings, arn)
    assert subkeys[GENERATION_KEY] == str(settings.credentials_generation)
    assert {key for key in subkeys if key.startswith("files/")} == {f"files/{name}" for name in config_files(settings)}


def test_token_mode_sets_only_token_auth_and_ships_the_certificates_as_a_file():
    settings = settings_for("staging")
    env = registry_environment(settings)
    assert {k: v for k, v in env.items() if k.startswith("REGISTRY_AUTH")} == {
        "REGISTRY_AUTH": "token",
        "REGISTRY_AUTH_TOKEN_REALM": "https://registry-auth.staging.internal.example.com/token",
        "REGISTRY_AUTH_TOKEN_SERVICE": "docker-registry-staging",
        "REGISTRY_AUTH_TOKEN_ISSUER": "registry-token-issuer-staging",
        "REGISTRY_AUTH_TOKEN_JWKS": "/run/registry/token-jwks.json",
        "REGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS": "[ES256]",
    }
    # The token service's public keys, from its trust secret beside the registry's own (never the signing keys).
    assert config_files(settings) == {"token-jwks.json": "vault:secret/registry/staging/token-trust#jwks"}
    assert TOKEN_JWKS_PATH.startswith(SECRETS_DIRECTORY + "/")


def test_htpasswd_mode_sets_only_htpasswd_auth_and_takes_the_file_from_vault():
    settings = settings_for("staging", **HTPASSWD_ONLY)
    env = registry_environment(settings)
    assert {k: v for k, v in env.items() if k.startswith("REGISTRY_AUTH")} == {
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "Registry",
        "REGISTRY_AUTH_HTPASSWD_PATH": HTPASSWD_PATH,
    }
    assert config_files(settings) == {"htpasswd": "vault:secret/registry/staging#htpasswd"}


@pytest.mark.parametrize("stack,overrides", [
    ("staging", HTPASSWD_ONLY), ("prod", {}), ("staging", {**MINIO, "minioAccessKey": "a", "minioSecretKey": "s"}),
])
def test_every_vault_reference_names_a_field_of_the_registry_secret_or_the_token_trust(stack, overrides):
    settings = settings_for(stack, **overrides)
    references = vault_references(kv_subkeys(settings, KMS_ARN if stack == "prod" else None))
    minio_keys = ("a", "s") if settings.minio_credentials else None
    fields = registry_secret_data(settings, "http", "htpasswd", minio_keys)
    assert references
    for key, reference in references.items():
        parts = VAULT_REFERENCE.match(reference)
        assert parts, (key, reference)
        if key == "files/token-jwks.json":
            # The token service's public keys (token_service/contract.py), never its signing secret.
            assert (parts["mount"], parts["path"], parts["field"]) == (
                settings.vault_kv_mount, f"{settings.vault_secret_path}/token-trust", "jwks")
            continue
        assert (parts["mount"], parts["path"]) == (settings.vault_kv_mount, settings.vault_secret_path)
        assert parts["field"] in fields, (key, reference)


def test_minio_credentials_are_references_not_values():
    settings = settings_for("staging", **MINIO, minioAccessKey="AKIA-plain", minioSecretKey="plain-secret")
    values = "\n".join(kv_subkeys(settings).values())
    assert "AKIA-plain" not in values and "plain-secret" not in values
    assert env_keys(kv_subkeys(settings))["REGISTRY_STORAGE_S3_SECRETKEY"] == "vault:secret/registry/staging#s3_secret_key"


def test_health_check_needs_no_credentials_and_reports_storage_health():
    check = health_check(settings_for("prod"))
    assert check["HTTP"] == "http://${POD_IP}:5001/debug/health"
    assert "/v2/" not in json.dumps(check) and "Header" not in check
    assert json.loads(kv_subkeys(settings_for("prod"), KMS_ARN)[CHECK_KEY]) == check


def test_service_defaults_speak_http():
    assert service_defaults() == {"Protocol": "http"}


def test_intentions_allow_the_named_sources_then_deny_everything_else():
    sources = service_intentions(settings_for("prod"))["Sources"]
    assert [(s["Name"], s["Action"]) for s in sources] == [
        ("ci-runner", "allow"), ("ci-runner-gpu", "allow"), ("registry-ingress", "allow"), ("*", "deny"),
    ]


def test_acl_policy_reads_only_its_own_prefix_and_writes_only_its_own_services():
    rules = acl_policy_rules(settings_for("staging"))
    stanzas = re.findall(r'^(\w+) "([^"]*)" \{\n  policy = "(\w+)"\n\}$', rules, re.M)
    assert stanzas == [
        ("key_prefix", "registry/staging/", "read"),
        ("service", "registry", "write"),
        ("service", "registry-sidecar-proxy", "write"),
    ]
    assert rules.count("{") == 3


def test_plan_writes_the_kv_prefix_config_entries_and_acl_policy(stack_plan):
    settings = settings_for(stack_plan.stack)
    prefix = stack_plan.one("consul:index/keyPrefix:KeyPrefix", "registry-consul-kv").plain_inputs
    kms = [r for r in stack_plan.of_type("aws:kms/key:Key")]
    arn = None
    if kms:
        arn = env_keys(prefix["subkeys"])["REGISTRY_STORAGE_S3_KEYID"]
        assert arn.startswith("arn:aws:kms:eu-west-1:")
    # The program owns config/ only: maintenance/ (the GC job's flag) is outside what a KeyPrefix deletes.
    assert prefix["pathPrefix"] == f"registry/{stack_plan.stack}/config/"
    assert prefix["subkeys"] == kv_subkeys(settings, arn)

    # The registry's own; the token service's entries and policy are tests/test_token_service_deploy.py's.
    entries = {r.plain_inputs["kind"]: r.plain_inputs for r in stack_plan.of_type("consul:index/configEntry:ConfigEntry")
               if r.plain_inputs["name"] == "registry"}
    assert json.loads(entries["service-defaults"]["configJson"]) == service_defaults()
    assert json.loads(entries["service-intentions"]["configJson"]) == service_intentions(settings)
    assert {entry["name"] for entry in entries.values()} == {"registry"}
    policies = {r.plain_inputs["name"]: r.plain_inputs for r in stack_plan.of_type("consul:index/aclPolicy:AclPolicy")
                if not r.name.startswith("registry-token-service")}
    assert set(policies) == {f"registry-{stack_plan.stack}", f"registry-gc-{stack_plan.stack}"}
    policy = policies[f"registry-{stack_plan.stack}"]
    assert policy["rules"] == acl_policy_rules(settings)
