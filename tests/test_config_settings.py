"""Settings of the configuration and secrets flow: auth modes, users, mesh sources, MinIO secrets."""

from __future__ import annotations

import json

import pytest
import yaml

from components.settings import (KNOWN_KEYS, SECRET_KEYS, TOKEN_KEYS, HtpasswdAuth, RegistryUser, SettingsError, TokenAuth,
                                 parse_settings)
from offline_plan.recorder import PROJECT_DIR
from tests.conftest import settings_for

HTPASSWD_ONLY = {
    "authMode": "htpasswd", **dict.fromkeys(TOKEN_KEYS),
    "htpasswdUsers": json.dumps(["ci-runner:push"]),
    # Pull Secrets need a pull-only robot, which htpasswd mode cannot have.
    "pullSecretNamespaces": "[]",
}
MINIO = {
    "storageMode": "minio", "replicas": "3", "s3Bucket": "registry-data", "minioEndpoint": "https://minio.storage.svc:9000",
    "s3StorageBudget": "2Ti", "storageClass": None, "snapshotClass": None,  # filesystem-only settings of staging
}


def error_for(stack: str = "staging", **overrides) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        settings_for(stack, **overrides)
    return caught.value


def test_every_setting_but_the_optional_secrets_is_declared_in_pulumi_yaml():
    # The CLI refuses a `secret: true` key whose value is not encrypted, defaults included, so a declared
    # secret would have to be set (encrypted) in every stack: the MinIO keys, needed in minio mode only,
    # stay undeclared and the program checks their encryption itself.
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(KNOWN_KEYS) - set(SECRET_KEYS)
    assert not [key for key, spec in declared.items() if spec.get("secret")]
    header = (PROJECT_DIR / "Pulumi.yaml").read_text().split("\nconfig:", 1)[0]
    assert all(f"registry:{key}" in header for key in SECRET_KEYS), "Pulumi.yaml must say where the secrets went"


def test_stacks_use_token_auth_with_a_pusher_a_pull_only_user_and_a_cleanup_identity():
    for stack in ("staging", "prod"):
        settings = settings_for(stack)
        assert isinstance(settings.auth, TokenAuth)
        assert {user.access for user in settings.users} == {"push", "pull", "cleanup"}


def test_htpasswd_is_the_default_mode():
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    assert declared["authMode"]["default"] == "htpasswd"
    assert isinstance(settings_for("staging", **HTPASSWD_ONLY).auth, HtpasswdAuth)


def test_htpasswd_mode_refuses_a_pull_only_user_it_cannot_enforce():
    error = error_for(**{**HTPASSWD_ONLY, "htpasswdUsers": json.dumps(["ci-runner:push", "viewer:pull"])})
    assert error.key == "registry:htpasswdUsers" and error.value == ["viewer"]
    assert "pull and cleanup users need authMode token" in str(error)


def test_htpasswd_mode_refuses_a_cleanup_user_too():
    error = error_for(**{**HTPASSWD_ONLY, "htpasswdUsers": json.dumps(["ci-runner:push", "gc:cleanup"])})
    assert error.key == "registry:htpasswdUsers" and error.value == ["gc"]


def test_htpasswd_mode_refuses_token_settings_so_only_one_mode_is_configured():
    error = error_for(**{**HTPASSWD_ONLY, "tokenIssuer": "issuer"})
    assert error.key == "registry:tokenIssuer" and "only used with authMode token" in str(error)


@pytest.mark.parametrize("missing", ["tokenRealm", "tokenService", "tokenIssuer"])
def test_token_mode_names_each_missing_setting(missing):
    error = error_for(**{missing: None})
    assert error.key == f"registry:{missing}" and "required" in str(error)


def test_token_mode_rejects_a_plain_http_realm():
    assert error_for(tokenRealm="http://auth.example.com/token").key == "registry:tokenRealm"


def test_no_stack_file_carries_a_certificate_any_more():
    """The registry trusts the token service's keys from Vault (its trust secret), so a key rotation changes no
    stack file, and no placeholder certificate with a discarded key can reach a cluster."""
    for stack in ("staging", "prod"):
        assert "BEGIN" not in (PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text()


def test_token_mode_needs_a_pull_only_user_and_every_mode_a_pusher():
    assert "pull-only user" in str(error_for(htpasswdUsers=json.dumps(["ci-runner:push"])))
    assert "pushing user" in str(error_for(htpasswdUsers=json.dumps(["viewer:pull"])))
    assert "pushing user" in str(error_for(htpasswdUsers=None))


@pytest.mark.parametrize("entry", ["ci-runner", "ci-runner:admin", "CI:push", "a:b:push", ":push"])
def test_user_entries_are_name_colon_push_or_pull(entry):
    error = error_for(htpasswdUsers=json.dumps([entry, "viewer:pull"]))
    assert error.key == "registry:htpasswdUsers" and error.value == entry


def test_a_user_name_appears_once():
    assert error_for(htpasswdUsers=json.dumps(["ci:push", "ci:pull"])).key == "registry:htpasswdUsers"


def test_users_keep_their_order_and_access():
    settings = settings_for("staging", htpasswdUsers=json.dumps(["ci:push", "kubelet:pull", "dev:pull"]),
                            pullSecretNamespaces="[]")  # pull Secrets take exactly one pull robot
    assert settings.users == (RegistryUser("ci", "push"), RegistryUser("kubelet", "pull"), RegistryUser("dev", "pull"))


@pytest.mark.parametrize("sources", [None, "[]", '["*"]', '["registry"]', '["Bad_Name"]'])
def test_intention_sources_are_named_services_and_at_least_one(sources):
    assert error_for(consulIntentionSources=sources).key == "registry:consulIntentionSources"


def test_credentials_generation_is_a_positive_integer():
    assert settings_for("staging", credentialsGeneration="7").credentials_generation == 7
    assert error_for(credentialsGeneration="0").key == "registry:credentialsGeneration"


def test_minio_mode_requires_both_secret_keys_and_keeps_them_as_given():
    error = error_for(**MINIO, minioSecretKey="s")
    assert error.key == "registry:minioAccessKey" and "--secret" in str(error)
    settings = settings_for("staging", **MINIO, minioAccessKey="a", minioSecretKey="s")
    assert (settings.minio_credentials.access_key, settings.minio_credentials.secret_key) == ("a", "s")


def test_minio_keys_are_refused_outside_minio_mode_without_showing_them():
    error = error_for(minioAccessKey="AKIA-not-shown")
    assert error.key == "registry:minioAccessKey" and "AKIA-not-shown" not in str(error)


def test_secret_settings_are_read_from_the_secrets_mapping():
    _, config, _ = __import__("offline_plan.recorder", fromlist=["stack_config"]).stack_config("staging")
    raw = {key.split(":", 1)[1]: value for key, value in config.items()}
    raw.update(MINIO)
    settings = parse_settings(raw, "staging", secrets={"minioAccessKey": "from-secret", "minioSecretKey": "too"})
    assert settings.minio_credentials.access_key == "from-secret"
