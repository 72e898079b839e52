"""The pack's Consul ACL rule held to a real Consul (1.14.4, ACLs default deny): for each set of rules, the
pack reports a violation exactly when a token holding them may do something the registry and its GC job must
never do. The probes are the grants this project forbids (docs/policy-and-pipelines.md), asked of the server."""

from __future__ import annotations

import json

import pytest

from policies.rules import POLICIES
from policies.rules.consul import check_consul_acl_policy
from policies.rules.support import Resource, config_defaults
from tests.support.consul_agent import ConsulAgent

pytest_plugins = ["tests.support.peer_fixtures"]

READONLY_KEY = "registry/prod/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY"
GC_RULES = f'key_prefix "registry/prod/" {{\n  policy = "read"\n}}\nkey "{READONLY_KEY}" {{\n  policy = "write"\n}}\n'
# What no token of this project may do: (what, method, path after /v1, JSON body)
FORBIDDEN = [
    ("rewrite the registry's auth settings", "PUT", "/kv/registry/prod/config/env/REGISTRY_AUTH", "none"),
    ("read another team's keys", "GET", "/kv/vault/config", None),
    ("register a service that is not the registry's", "PUT", "/agent/service/register", {"Name": "web", "Port": 80}),
    ("read the raft configuration (operator)", "GET", "/operator/raft/configuration", None),
    ("list ACL policies (acl)", "GET", "/acl/policies", None),
]
# case -> rules; whether the pack must refuse them is not written here: the server's answers decide
RULES = {
    "the GC job's: read its folder, write the one flag": GC_RULES,
    "the same as JSON": json.dumps({"key_prefix": {"registry/prod/": {"policy": "read"}},
                                    "key": {READONLY_KEY: {"policy": "write"}}}),
    "write on the whole folder": 'key_prefix "registry/prod/" {\n  policy = "write"\n}\n',
    "write on one config key": 'key "registry/prod/config/env/REGISTRY_AUTH" {\n  policy = "write"\n}\n',
    "read on every key": 'key_prefix "" {\n  policy = "read"\n}\n',
    "operator read": GC_RULES + 'operator = "read"\n',
    "acl read": GC_RULES + 'acl = "read"\n',
    "write on every service": 'service_prefix "" {\n  policy = "write"\n}\n',
    "the registry's own services": 'service "registry" {\n  policy = "write"\n}\nservice "registry-sidecar-proxy" {\n'
                                   '  policy = "write"\n}\n',
}


def _granted(agent: ConsulAgent, token: str) -> list[str]:
    granted = []
    for what, method, path, body in FORBIDDEN:
        kwargs = {"json": body} if isinstance(body, dict) else {"data": body} if body else {}
        if agent.request(method, path, token=token, **kwargs).status_code != 403:
            granted.append(what)
    return granted


def test_the_pack_refuses_exactly_the_rules_that_grant_a_forbidden_request(consul_agent: ConsulAgent):
    config = config_defaults(next(p for p in POLICIES if p.name == "consul-acl-policy-least-privilege"))
    disagreements, refused = {}, 0
    for index, (case, rules) in enumerate(RULES.items()):
        name = f"ground-truth-{index}"
        consul_agent.call("PUT", "/acl/policy", json={"Name": name, "Rules": rules})
        granted = _granted(consul_agent, consul_agent.create_token([name]))
        resource = Resource(type="consul:index/aclPolicy:AclPolicy", name=name, urn=f"urn:{name}",
                            props={"name": name, "rules": rules})
        findings = [f.message for f in check_consul_acl_policy(resource, config)]
        refused += bool(granted)
        if bool(findings) != bool(granted):
            disagreements[case] = {"consul grants": granted, "pack reports": findings}
    assert disagreements == {}, json.dumps(disagreements, indent=1)
    assert 0 < refused < len(RULES), "the cases must include rules Consul refuses and rules it accepts"


def test_the_gc_job_s_rules_write_exactly_its_flag(consul_agent: ConsulAgent):
    consul_agent.call("PUT", "/acl/policy", json={"Name": "gc", "Rules": GC_RULES})
    token = consul_agent.create_token(["gc"])
    assert consul_agent.request("PUT", f"/kv/{READONLY_KEY}", token=token, data='{"enabled":true}').status_code == 200
    assert consul_agent.request("PUT", f"/kv/{READONLY_KEY}-other", token=token, data="x").status_code == 403
