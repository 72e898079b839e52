"""The real registry v3.1.1 booted from each stack's recorded Consul KV and its Vault secret read back from OpenBao.

Staging: filesystem storage in a temp dir. Prod: S3 on a moto server with IAM enforcement on, the bucket
versioned and encrypted as the plan says, and the registry holding an IAM user's keys whose only policy is the
plan's role policy, with two moto-only changes made and checked in ``moto_policy()``: the plan's KMS key ARN is
replaced by a key created in moto, and ``s3:DeleteObject`` is added on the bucket ARN because moto authorizes
batch DeleteObjects against the bucket (AWS checks each object ARN, which the plan allows).

Token auth goes through the project's own token service (token_service/, a process on 127.0.0.1) checking the
plan's robots against the hashes in the plan's own Vault secret; the stack's root certificate and realm are
overridden with that service's published certificates and local URL (``plan_overrides``).
Every other difference from the plan is in ``TEST_OVERRIDES`` and asserted minimal below.
"""

from __future__ import annotations

import os

import pytest

from components.registry_config import SECRETS_DIRECTORY
from tests.conftest import STACKS, settings_for
from tests.support.config_cli import ConfigCliError, load, parse_vault_reference
from tests.support.oci import (OCI_MANIFEST, cosign_signature_tag, make_cosign_signature, make_image,
                               make_referrer_artifact, make_referrers_index, referrers_tag)
from tests.support.registry_checks import behaviour_failures
from tests.support.stack_registry import TEST_OVERRIDES

pytest_plugins = ["tests.support.fixtures", "tests.support.stack_fixtures"]

HARNESS_OVERRIDES = {"REGISTRY_HTTP_ADDR", "REGISTRY_HTTP_DEBUG_ADDR"}
BACKEND_OVERRIDES = {  # by storage mode
    "filesystem": {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"},
    "s3": {"REGISTRY_STORAGE_S3_REGIONENDPOINT", "REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "REGISTRY_STORAGE_S3_SECURE",
             "REGISTRY_STORAGE_S3_ACCESSKEY", "REGISTRY_STORAGE_S3_SECRETKEY", "REGISTRY_STORAGE_S3_KEYID"},
}


@pytest.mark.parametrize("stack", STACKS)
def test_registry_from_the_stack_config_serves_pushes_pulls_auth_metrics_and_stops_cleanly(
        stack_setup, registry_factory, stack):
    """Push and pull back byte-identical as the CI user; the pull-only user pulls and cannot push; no credentials
    and a wrong password get 401; a second instance finishes an upload the first started; /metrics counts;
    /debug/health is 200; blobs sit where (and, in S3, encrypted how) the plan says; JSON logs; SIGTERM exits 0."""
    assert behaviour_failures(stack_setup(stack), registry_factory, label=f"{stack}-e2e") == {}


@pytest.mark.parametrize("stack", STACKS)
def test_large_layer_and_signature_tags_round_trip(stack_setup, registry_factory, stack):
    setup = stack_setup(stack)
    registry = setup.boot(registry_factory, name=f"{stack}-signatures")
    ci = setup.client(registry, setup.users("push")[0])
    repo = "team/app"
    # 12 MiB: chunked upload, and in S3 a multipart upload and copy.
    image = make_image(os.urandom(12 << 20), compress=False)
    ci.push_image(repo, image, tag="1.0")

    signature = make_cosign_signature(image.digest, f"registry.internal.example.com/{repo}")
    ci.push_image(repo, signature, tag=cosign_signature_tag(image.digest))
    sbom = make_referrer_artifact(image.manifest, "application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')
    ci.push_image(repo, sbom)
    index = make_referrers_index([sbom])
    ci.push_manifest(repo, referrers_tag(image.digest), index)

    reader = setup.client(registry, setup.users("pull")[0])
    pulled = reader.pull_image(repo, "1.0")
    assert pulled.manifest.data == image.manifest.data
    assert [blob.data for blob in pulled.blobs] == [blob.data for blob in image.blobs]
    fetched_signature = reader.pull_image(repo, cosign_signature_tag(image.digest))
    assert fetched_signature.manifest.data == signature.manifest.data
    assert [blob.data for blob in fetched_signature.blobs] == [blob.data for blob in signature.blobs]
    fetched_index = reader.get_manifest(repo, referrers_tag(image.digest))
    assert fetched_index.data == index.data
    (entry,) = fetched_index.json["manifests"]
    fetched_sbom = reader.pull_image(repo, entry["digest"])
    assert fetched_sbom.manifest.json["subject"]["digest"] == image.digest
    assert fetched_sbom.manifest.media_type == OCI_MANIFEST
    assert set(reader.list_tags(repo)) == {"1.0", cosign_signature_tag(image.digest), referrers_tag(image.digest)}
    assert registry.stop() == 0


def test_htpasswd_mode_pushes_with_the_ci_password_and_refuses_a_wrong_one(stack_setup, registry_factory):
    """authMode htpasswd (no pull users: htpasswd cannot enforce pull-only), htpasswd file written from Vault."""
    setup = stack_setup("staging", "htpasswd")
    assert setup.kv["files/htpasswd"].startswith("vault:")
    assert behaviour_failures(setup, registry_factory, label="staging-htpasswd") == {}


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_listed_overrides_separate_the_test_from_the_plan(stack_setup, registry_factory, stack):
    setup = stack_setup(stack)
    loaded = setup.load(name=f"{stack}-overrides")
    # config-cli's output is the KV verbatim, but for resolved Vault references and the relocated files.
    for key, value in setup.kv.items():
        if not key.startswith("env/"):
            continue
        name, exported = key[len("env/"):], loaded.environment[key[len("env/"):]]
        if value.startswith("vault:"):
            mount, path, field = parse_vault_reference(value)
            assert exported == setup.vault.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True)["data"]["data"][field]
        elif value.startswith(SECRETS_DIRECTORY + "/"):
            assert exported == str(loaded.files[value.rsplit("/", 1)[1]])
        else:
            assert exported == value, name
    assert set(loaded.environment) == {key[len("env/"):] for key in setup.kv if key.startswith("env/")}

    tested = setup.environment_for_test(loaded)
    changed = {key for key in set(tested) | set(loaded.environment) if tested.get(key) != loaded.environment.get(key)}
    assert changed == BACKEND_OVERRIDES[settings_for(stack).storage.mode]
    registry = setup.boot(registry_factory, name=f"{stack}-overrides")  # loads into the same run directory
    booted = {key for key in set(registry.env) | set(tested) if registry.env.get(key) != tested.get(key)}
    assert booted == HARNESS_OVERRIDES
    assert changed | booted <= set(TEST_OVERRIDES)


def test_the_plan_overrides_change_only_the_token_realm(stack_setup, plans):
    for stack in STACKS:
        recorded = plans[stack].one("consul:index/keyPrefix:KeyPrefix", "registry-consul-kv").plain_inputs["subkeys"]
        tested = stack_setup(stack).kv
        differing = {key for key in set(recorded) | set(tested) if recorded.get(key) != tested.get(key)}
        # The registry's trust (files/token-jwks.json) is the plan's own Vault reference, unchanged.
        assert differing == {"env/REGISTRY_AUTH_TOKEN_REALM"}


def test_no_secret_reaches_the_registry_logs(stack_setup, registry_factory):
    setup = stack_setup("prod")
    registry = setup.boot(registry_factory, name="prod-log-secrets")
    setup.client(registry, "ci-runner").push_image("team/logs", make_image(b"log scan"), tag="v1")
    assert registry.stop() == 0
    log = registry.log_text()
    secrets = [account.password for account in setup.accounts.values()]
    secrets += [registry.env["REGISTRY_HTTP_SECRET"], registry.env["REGISTRY_STORAGE_S3_SECRETKEY"]]
    assert [secret for secret in secrets if secret in log] == []


def test_config_cli_refuses_unknown_keys_and_missing_or_unreadable_secrets(stack_setup, tmp_path):
    setup = stack_setup("staging")
    cases = {
        "unknown folder": {**setup.kv, "enviroment/REGISTRY_LOG_LEVEL": "info"},
        "nested env key": {**setup.kv, "env/extra/REGISTRY_LOG_LEVEL": "info"},
        "missing field": {**setup.kv, "env/REGISTRY_HTTP_SECRET": "vault:secret/registry/staging#no_such_field"},
        "other secret": {**setup.kv, "env/REGISTRY_HTTP_SECRET": "vault:secret/registry/staging/clients/ci-runner#password"},
        "missing file": {key: value for key, value in setup.kv.items() if not key.startswith("files/")},
    }
    outcomes = {}
    for case, kv in cases.items():
        try:
            load(kv, setup.vault, tmp_path / case.replace(" ", "-"))
            outcomes[case] = "loaded"
        except ConfigCliError:
            outcomes[case] = "refused"
    assert outcomes == {case: "refused" for case in cases}
    loaded = load(setup.kv, setup.vault, tmp_path / "ok")
    assert {path.stat().st_mode & 0o777 for path in loaded.files.values()} == {0o400}
