"""The plan's Vault objects applied to a real OpenBao server: accepted as recorded, and least privilege in effect."""

from __future__ import annotations

import json

import hvac
import pytest

from tests.support.vault_plan import (APPLIED_TYPES, MOUNT_TYPE, POLICY_TYPE, REGISTRY_POLICY, ROLE_TYPE, SECRET_TYPE,
                                     apply_vault_objects)

# The registry's own role; the plan holds others (the GC job's, the pull credentials' store).
REGISTRY_ROLE = "registry-secrets-auth-role"

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture
def applied(openbao, stack_plan):
    root = openbao.client()
    unhandled = {r.type for r in stack_plan.resources if r.type.startswith("vault:")} - set(APPLIED_TYPES)
    assert not unhandled, f"the test does not know how to apply {unhandled}"
    return root, apply_vault_objects(root, stack_plan)


def test_server_accepts_the_policy_secret_and_auth_role_as_recorded(applied, stack_plan):
    root, objects = applied
    assert objects[MOUNT_TYPE] == []  # the shared KV v2 mount is the platform's, not created by this stack
    # The registry's policy and role, and (token mode) the token service's: each bound to its own account.
    accounts = {"registry-secrets": "registry", "registry-token-service": "registry-token-service"}
    for component, account in accounts.items():
        policies = [r.plain_inputs for r in objects[POLICY_TYPE] if r.name == f"{component}-policy"]
        if not policies:
            assert component == "registry-token-service" and stack_plan.one(
                "consul:index/keyPrefix:KeyPrefix", "registry-consul-kv").plain_inputs["subkeys"][
                "env/REGISTRY_AUTH"] != "token"
            continue
        policy = policies[0]
        assert root.sys.read_policy(policy["name"])["data"]["rules"] == policy["policy"]
        role = next(r.plain_inputs for r in objects[ROLE_TYPE] if r.name == f"{component}-auth-role")
        stored = root.read(f"auth/{role['backend']}/role/{role['roleName']}")["data"]
        assert stored["bound_service_account_names"] == [account]
        assert stored["bound_service_account_namespaces"] == ["cicd"]
        assert stored["audience"] == "vault"
        assert (stored["token_ttl"], stored["token_max_ttl"]) == (300, 900)
        assert stored["token_policies"] == [policy["name"]] and stored["token_no_default_policy"] is True

    for secret in objects[SECRET_TYPE]:
        inputs = secret.plain_inputs
        read = root.secrets.kv.v2.read_secret_version(path=inputs["name"], mount_point=inputs["mount"],
                                                      raise_on_deleted_version=True)
        assert read["data"]["data"] == json.loads(inputs["dataJson"])


def test_a_token_with_only_the_registry_policy_reads_its_secret_and_nothing_else(applied, stack_plan, openbao):
    root, objects = applied
    policy_name = next(r for r in objects[POLICY_TYPE] if r.name == "registry-secrets-policy").plain_inputs["name"]
    secret = stack_plan.one(SECRET_TYPE, "registry-secrets-secret").plain_inputs
    mount, path = secret["mount"], secret["name"]
    sibling = f"registry/other-{stack_plan.stack}"
    root.secrets.kv.v2.create_or_update_secret(path=sibling, secret={"http_secret": "sibling"}, mount_point=mount)

    token = root.auth.token.create(policies=[policy_name], no_default_policy=True, ttl="5m")["auth"]["client_token"]
    assert root.auth.token.lookup(token)["data"]["policies"] == [policy_name]
    registry = openbao.client(token)
    kv = registry.secrets.kv.v2

    read = kv.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
    assert read["data"]["data"] == json.loads(secret["dataJson"])

    denied = {
        "sibling environment": lambda: kv.read_secret_version(path=sibling, mount_point=mount,
                                                              raise_on_deleted_version=True),
        "client passwords": lambda: kv.read_secret_version(path=f"{path}/clients/ci-runner", mount_point=mount,
                                                           raise_on_deleted_version=True),
        "write": lambda: kv.create_or_update_secret(path=path, secret={"http_secret": "x"}, mount_point=mount),
        "patch": lambda: kv.patch(path=path, secret={"http_secret": "x"}, mount_point=mount),
        "delete": lambda: kv.delete_latest_version_of_secret(path=path, mount_point=mount),
        "metadata": lambda: kv.read_secret_metadata(path=path, mount_point=mount),
        "list": lambda: kv.list_secrets(path="registry", mount_point=mount),
        "policy change": lambda: registry.sys.create_or_update_policy(policy_name, 'path "*" { capabilities = ["sudo"] }'),
    }
    outcomes = {}
    for action, attempt in denied.items():
        try:
            attempt()
            outcomes[action] = "allowed"
        except hvac.exceptions.Forbidden:
            outcomes[action] = "denied"
    assert outcomes == {action: "denied" for action in denied}
    # The policy is unchanged and the secret still holds the plan's data.
    assert root.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)[
        "data"]["data"] == json.loads(secret["dataJson"])
