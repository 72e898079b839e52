"""The garbage-collection Job's identity: its read-only replica runs config-cli, so it must be able to log in to
Vault and Consul as itself, and its Consul token may additionally write exactly the read-only key.

Every expectation below is read from the other side of the seam: the Vault role the pod names must exist and be
bound to the pod's service account; the token file the pod names must be a projected token of the role's audience;
the Consul auth method the script logs in with must be the one the binding rules are on; the key the ACL policy
lets it write must be the key the script flips.
"""

from __future__ import annotations

import pytest

from components.names import GC_NAME, SERVICE_ACCOUNT_NAME, TOKEN_SERVICE_NAME, readonly_kv_key
from tests.conftest import settings_for
from tests.test_operations_plan import env_of, gc_pod

VAULT_ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"
BINDING_RULE = "consul:index/aclBindingRule:AclBindingRule"
ACL_ROLE = "consul:index/aclRole:AclRole"
ACL_POLICY = "consul:index/aclPolicy:AclPolicy"


def _vault_roles(plan) -> dict[str, dict]:
    return {r.plain_inputs["roleName"]: r.plain_inputs for r in plan.of_type(VAULT_ROLE)}


def _container_and_volumes(plan):
    template = gc_pod(plan)
    return template["spec"]["containers"][0], {v["name"]: v for v in template["spec"]["volumes"]}


def test_the_gc_replica_logs_in_to_vault_with_a_role_bound_to_its_own_account_only(stack_plan):
    container, _ = _container_and_volumes(stack_plan)
    env = env_of(container)
    roles = _vault_roles(stack_plan)
    assert env["CONFIG_CLI_VAULT_ROLE"] in roles, f"the pod names Vault role {env['CONFIG_CLI_VAULT_ROLE']}, not created"
    role = roles[env["CONFIG_CLI_VAULT_ROLE"]]
    assert role["boundServiceAccountNames"] == [gc_pod(stack_plan)["spec"]["serviceAccountName"]] == [GC_NAME]
    assert role["boundServiceAccountNamespaces"] == ["cicd"]
    # The registry's own role stays bound to the registry's account alone.
    registry_role = next(r for r in roles.values() if r is not role and r["roleName"] == f"{SERVICE_ACCOUNT_NAME}-{stack_plan.stack}")
    assert registry_role["boundServiceAccountNames"] == [SERVICE_ACCOUNT_NAME]


def test_the_gc_replica_has_the_projected_vault_token_its_config_cli_reads(stack_plan):
    container, volumes = _container_and_volumes(stack_plan)
    token_path = env_of(container)["CONFIG_CLI_VAULT_TOKEN_PATH"]
    role = _vault_roles(stack_plan)[env_of(container)["CONFIG_CLI_VAULT_ROLE"]]
    mounts = [m for m in container["volumeMounts"] if token_path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"nothing mounted at {token_path}"
    (source,) = volumes[mounts[0]["name"]]["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["path"] == token_path[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
    assert token["audience"] == role["audience"], "Vault refuses a token minted for another audience"


def test_the_gc_script_logs_in_to_consul_where_the_binding_rules_are(stack_plan):
    settings = settings_for(stack_plan.stack)
    container, _ = _container_and_volumes(stack_plan)
    env = env_of(container)
    rules = [r.plain_inputs for r in stack_plan.of_type(BINDING_RULE)]
    assert {r["authMethod"] for r in rules} == {env["GC_CONSUL_LOGIN_METHOD"]} == {env["CONFIG_CLI_CONSUL_AUTH_METHOD"]}
    selectors = {r["selector"]: r["bindName"] for r in rules}
    assert selectors == {
        f'serviceaccount.namespace=="cicd" and serviceaccount.name=="{GC_NAME}"': f"{GC_NAME}-{settings.environment}",
        f'serviceaccount.namespace=="cicd" and serviceaccount.name=="{SERVICE_ACCOUNT_NAME}"':
            f"{SERVICE_ACCOUNT_NAME}-{settings.environment}",
        # The token service's own (authMode token, both stacks), bound to its own account alone.
        f'serviceaccount.namespace=="cicd" and serviceaccount.name=="{TOKEN_SERVICE_NAME}"':
            f"{TOKEN_SERVICE_NAME}-{settings.environment}",
    }
    assert all(r["bindType"] == "role" for r in rules)
    roles = {r.plain_inputs["name"] for r in stack_plan.of_type(ACL_ROLE)}
    assert set(selectors.values()) <= roles


def test_the_gc_token_may_write_exactly_the_key_the_script_flips(stack_plan):
    env = env_of(_container_and_volumes(stack_plan)[0])
    policies = {r.plain_inputs["name"]: r.plain_inputs["rules"] for r in stack_plan.of_type(ACL_POLICY)}
    gc_rules = policies[f"{GC_NAME}-{stack_plan.stack}"]
    assert gc_rules == f'key "{env["READONLY_KV_KEY"]}" {{\n  policy = "write"\n}}\n'
    assert env["READONLY_KV_KEY"] == readonly_kv_key(stack_plan.stack)
    # The registry's own policy writes no key at all.
    assert "write" not in policies[f"registry-{stack_plan.stack}"].split("service")[0]


@pytest.mark.parametrize("kind", ["registry", "gc"])
def test_each_consul_role_carries_the_registry_policy(stack_plan, kind):
    """The GC replica is the registry too: it reads the same settings and registers the same service."""
    roles = {r.name: r.plain_inputs for r in stack_plan.of_type(ACL_ROLE)}
    role = next(v for k, v in roles.items() if k.endswith(f"-{kind}-acl-role"))
    assert len(role["policies"]) == (1 if kind == "registry" else 2)
