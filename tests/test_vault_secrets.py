"""The registry's credentials in Vault: generated, bcrypt-hashed deterministically, read-only for the registry."""

from __future__ import annotations

import json
import os

import bcrypt
import pytest

from components.vault_secrets import (BCRYPT_COST, GENERATION_ANNOTATION, bcrypt_salt, credentials_pod_annotations,
                                      htpasswd_content, kubernetes_auth_role, registry_secret_data, vault_policy)
from offline_plan.recorder import is_secret
from components.settings import TOKEN_KEYS
from tests.conftest import settings_for

PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"
BYTES_TYPE = "random:index/randomBytes:RandomBytes"
SECRET_TYPE = "vault:kv/secretV2:SecretV2"


def test_htpasswd_lines_verify_with_bcrypt_and_repeat_for_the_same_salt():
    salt = os.urandom(16).hex()
    content = htpasswd_content([("ci", "pw-one", salt), ("puller", "pw-two", os.urandom(16).hex())])
    lines = dict(line.split(":", 1) for line in content.splitlines())
    assert bcrypt.checkpw(b"pw-one", lines["ci"].encode()) and bcrypt.checkpw(b"pw-two", lines["puller"].encode())
    assert not bcrypt.checkpw(b"pw-two", lines["ci"].encode())
    assert lines["ci"].startswith(f"$2b${BCRYPT_COST}$")
    assert htpasswd_content([("ci", "pw-one", salt)]) == f"ci:{lines['ci']}\n"
    assert htpasswd_content([("ci", "pw-one", os.urandom(16).hex())]) != f"ci:{lines['ci']}\n"


def test_bcrypt_salt_uses_all_sixteen_bytes():
    assert bcrypt_salt(bytes(16)) != bcrypt_salt(bytes(15) + b"\x01")
    with pytest.raises(ValueError):
        bcrypt_salt(bytes(8))


def test_policy_reads_exactly_the_registry_secret_and_the_token_services_public_keys():
    assert vault_policy(settings_for("prod")) == (
        'path "secret/data/registry/prod" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/registry/prod/token-trust" {\n  capabilities = ["read"]\n}\n')
    htpasswd = settings_for("staging", authMode="htpasswd", **dict.fromkeys(TOKEN_KEYS),
                            htpasswdUsers='["ci-runner:push"]', pullSecretNamespaces="[]")
    assert vault_policy(htpasswd) == 'path "secret/data/registry/staging" {\n  capabilities = ["read"]\n}\n'


def test_auth_role_is_bound_to_the_service_account_with_an_audience_and_short_ttls():
    role = kubernetes_auth_role(settings_for("staging"))
    assert role["bound_service_account_names"] == ["registry"]
    assert role["bound_service_account_namespaces"] == ["cicd"]
    assert role["audience"] == "vault" and role["backend"] == "kubernetes"
    assert role["token_ttl"] <= 600 and role["token_max_ttl"] <= 3600
    assert role["token_policies"] == ["registry-staging"] and role["token_no_default_policy"] is True


def test_secret_data_has_the_http_secret_htpasswd_access_list_and_minio_keys_only_in_minio_mode():
    settings = settings_for("staging")
    data = registry_secret_data(settings, "h", "ci:$2b$...\n")
    assert set(data) == {"http_secret", "htpasswd", "access", "credentials_generation"}
    # Pulumi.staging.yaml's htpasswdUsers, as the token service grants by them.
    assert json.loads(data["access"]) == {"ci-runner": "push", "cluster-pull": "pull", "registry-cleanup": "cleanup"}
    assert {"s3_access_key", "s3_secret_key"} <= set(registry_secret_data(settings, "h", "x", ("a", "s")))


def test_generation_is_the_pod_annotation():
    assert credentials_pod_annotations(settings_for("staging", credentialsGeneration="4")) == {GENERATION_ANNOTATION: "4"}


def test_plan_generates_each_password_from_the_generation(stack_plan):
    passwords = {r.name: r.plain_inputs for r in stack_plan.of_type(PASSWORD_TYPE)}
    assert set(passwords) == {"registry-secrets-http-secret", "registry-secrets-ci-runner-password",
                              "registry-secrets-cluster-pull-password", "registry-secrets-registry-cleanup-password"}
    for inputs in [*passwords.values(), *(r.plain_inputs for r in stack_plan.of_type(BYTES_TYPE))]:
        assert inputs["keepers"] == {"credentialsGeneration": "1"}


def test_plan_stores_the_secret_as_a_pulumi_secret_whose_hashes_match_the_generated_passwords(stack_plan):
    secret = stack_plan.one(SECRET_TYPE, "registry-secrets-secret")
    assert is_secret(secret.inputs["dataJson"])
    assert (secret.plain_inputs["mount"], secret.plain_inputs["name"]) == ("secret", f"registry/{stack_plan.stack}")
    data = json.loads(secret.plain_inputs["dataJson"])
    hashes = dict(line.split(":", 1) for line in data["htpasswd"].splitlines())
    for user in ("ci-runner", "cluster-pull"):
        client = stack_plan.one(SECRET_TYPE, f"registry-secrets-{user}-client")
        assert is_secret(client.inputs["dataJson"])
        assert client.plain_inputs["name"] == f"registry/{stack_plan.stack}/clients/{user}"
        password = json.loads(client.plain_inputs["dataJson"])["password"]
        assert len(password) == 32 and bcrypt.checkpw(password.encode(), hashes[user].encode())
    assert len(data["http_secret"]) == 64


def test_plan_rolls_the_statefulset_on_the_generation(stack_plan):
    statefulset = stack_plan.one("kubernetes:apps/v1:StatefulSet").plain_inputs
    assert statefulset["spec"]["template"]["metadata"]["annotations"][GENERATION_ANNOTATION] == "1"
