"""The pack reads a Vault policy as Vault does: each policy is loaded into a real OpenBao server, and the
capabilities OpenBao grants a token holding it are compared with what ``vault-policy-read-only`` parsed.

This is the ground truth behind the HCL parser: the regular expression the pack used before read no rule
from a block that held a map-valued attribute, and no capability from the ``policy = "..."`` shorthand,
although OpenBao grants both."""

from __future__ import annotations

import hvac
import pytest

from policies.rules import POLICIES
from policies.rules.config_secrets import check_vault_policy_read_only, vault_policy_rules
from policies.rules.support import Resource, Violation, config_defaults
from tests.plan_mutations import SUDO_BEHIND_A_MAP

pytest_plugins = ["tests.support.fixtures"]

OWN_SECRET = 'path "secret/data/registry/prod" {\n  capabilities = ["read"]\n}\n'
OWN_PATH = "secret/data/registry/prod"
# case -> (policy text, the paths it names)
POLICIES_READ_BY_BOTH = {
    "the registry's own": (OWN_SECRET, {OWN_PATH}),
    "sudo behind a map": (OWN_SECRET + SUDO_BEHIND_A_MAP, {OWN_PATH, "sys/*"}),
    "the write shorthand": ('path "secret/data/registry/prod" {\n  policy = "write"\n}\n', {OWN_PATH}),
    "the JSON form": ('{"path": {"secret/data/registry/prod": {"capabilities": ["read", "list"]}}}', {OWN_PATH}),
    "comments and one line": ('# the registry\npath "secret/data/registry/prod" { capabilities = ["read"] }\n',
                              {OWN_PATH}),
}


def _vault_path(policy_path: str) -> str:
    """A concrete path a policy path (possibly a glob) applies to."""
    return policy_path.replace("+", "any").rstrip("*") + ("anything" if policy_path.endswith("*") else "")


def _granted(root: hvac.Client, name: str, path: str) -> set[str]:
    token = root.auth.token.create(policies=[name], no_default_policy=True, ttl="5m")["auth"]["client_token"]
    response = root.adapter.post("/v1/sys/capabilities", json={"token": token, "paths": [path]})
    return set(response["data"][path] if "data" in response else response[path]) - {"deny"}


@pytest.mark.parametrize("case", list(POLICIES_READ_BY_BOTH))
def test_the_pack_reads_each_path_s_capabilities_as_openbao_grants_them(openbao, case):
    text, paths = POLICIES_READ_BY_BOTH[case]
    root = openbao.client()
    name = f"ground-truth-{list(POLICIES_READ_BY_BOTH).index(case)}"
    root.sys.create_or_update_policy(name=name, policy=text)
    rules, unreadable = vault_policy_rules(text)
    assert {path for path, _ in rules} == paths and unreadable == []
    for path, capabilities in rules:
        assert _granted(root, name, _vault_path(path)) == set(capabilities), path


def test_a_nested_path_block_is_refused_by_openbao_and_by_the_pack(openbao):
    text = ('path "secret/data/registry/prod" {\n  capabilities = ["read"]\n  path "sys/*" {\n'
            '    capabilities = ["sudo"]\n  }\n}\n')
    with pytest.raises(hvac.exceptions.InvalidRequest):
        openbao.client().sys.create_or_update_policy(name="nested", policy=text)
    resource = Resource(type="vault:index/policy:Policy", name="nested", urn="urn:nested",
                        props={"name": "nested", "policy": text})
    config = config_defaults(next(p for p in POLICIES if p.name == "vault-policy-read-only"))
    findings = list(check_vault_policy_read_only(resource, config))
    assert findings and all(isinstance(f, Violation) for f in findings)
