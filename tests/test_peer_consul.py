"""The recorded Consul resources applied to a real Consul (1.14.4, dev agent, ACLs default deny).

The plan's own tests check the KV keys, the ACL rules and the intentions as data; only a real Consul parses
the HCL rules, evaluates a token against them and decides which source an intention admits. The expected
values come from the contract (docs/config-cli.md: policy ``registry-<env>`` reads ``registry/<env>/`` and
writes services ``registry`` and ``registry-sidecar-proxy``, nothing else; the program owns
``registry/<env>/config/``; role ``registry-gc-<env>`` may also write exactly
``registry/<env>/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY``) and the stack files, not from the
functions that build them.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.config_cli import consul_tree, load_tree
from tests.support.consul_agent import (ACL_POLICY_TYPE, ACL_ROLE_TYPE, BINDING_RULE_TYPE, CONFIG_ENTRY_TYPE, KV_TYPE,
                                        ConsulAgent, apply_recorded_consul)

pytest_plugins = ["tests.support.peer_fixtures", "tests.support.fixtures", "tests.support.stack_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE = "registry"
SIDECAR = "registry-sidecar-proxy"
# docs/config-cli.md "The token service's tree": its own prefix, policy/role, service and sidecar.
TOKEN = "registry-token-service"
TOKEN_SIDECAR = "registry-token-service-sidecar-proxy"
STACKS = ("staging", "prod")


def stack_file_value(stack: str, key: str):
    return yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"][f"registry:{key}"]


def kv_prefix(stack: str) -> str:
    return f"registry/{stack}/"


def config_prefix(stack: str) -> str:
    return f"registry/{stack}/config/"


def readonly_key(stack: str) -> str:
    return f"registry/{stack}/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY"


@pytest.fixture
def applied(consul_agent: ConsulAgent, stack_plan):
    """Consul with the stack's recorded resources applied, plus keys of neighbours the token must not see."""
    counts = apply_recorded_consul(consul_agent, stack_plan)
    other = next(s for s in STACKS if s != stack_plan.stack)
    for neighbour in (f"{config_prefix(other)}env/REGISTRY_HTTP_SECRET", f"registry/{stack_plan.stack}-old/env/X",
                      "registry/shared-setting", "vault/root-token"):
        consul_agent.call("PUT", f"/kv/{neighbour}", data=b"not for the registry")
    return consul_agent, stack_plan, counts


def registry_token(agent: ConsulAgent, stack: str) -> str:
    return agent.create_token([f"registry-{stack}"], description=f"config-cli {stack}")


def role_token(agent: ConsulAgent, role: str) -> str:
    """What a login through a binding rule to ``role`` yields."""
    return agent.call("PUT", "/acl/token", json={"Description": role, "Roles": [{"Name": role}]})["SecretID"]


def token_mode(stack: str) -> bool:
    return stack_file_value(stack, "authMode") == "token"


def test_consul_accepts_and_stores_every_recorded_resource(applied):
    agent, plan, counts = applied
    # The registry's (and in token mode the token service's: one more KV tree, policy, role, rule, two entries).
    extra = 1 if token_mode(plan.stack) else 0
    assert counts == {KV_TYPE: 1 + extra, ACL_POLICY_TYPE: 2 + extra, ACL_ROLE_TYPE: 2 + extra,
                      BINDING_RULE_TYPE: 2 + extra, CONFIG_ENTRY_TYPE: 2 + 2 * extra}
    recorded = plan.one(KV_TYPE, "registry-consul-kv").plain_inputs
    assert recorded["pathPrefix"] == config_prefix(plan.stack)
    stored = {entry["Key"][len(config_prefix(plan.stack)):]: base64.b64decode(entry["Value"] or b"").decode()
              for entry in agent.call("GET", f"/kv/{config_prefix(plan.stack)}?recurse=true")}
    assert stored == recorded["subkeys"]
    policy = agent.call("GET", f"/acl/policy/name/registry-{plan.stack}")
    assert policy["Rules"] == plan.one(ACL_POLICY_TYPE, "registry-consul-acl-policy").plain_inputs["rules"]
    rules = agent.call("GET", "/acl/binding-rules")
    assert sorted(r["BindName"] for r in rules) == sorted([f"registry-{plan.stack}", f"registry-gc-{plan.stack}"]
                                                          + [f"{TOKEN}-{plan.stack}"] * extra)
    assert agent.call("GET", f"/config/service-defaults/{SERVICE}")["Protocol"] == "http"
    assert agent.call("GET", f"/config/service-intentions/{SERVICE}")["Sources"]


def test_registry_token_reads_every_key_of_its_prefix(applied):
    agent, plan, _ = applied
    token = registry_token(agent, plan.stack)
    subkeys = plan.one(KV_TYPE, "registry-consul-kv").plain_inputs["subkeys"]
    refused = {key: agent.request("GET", f"/kv/{config_prefix(plan.stack)}{key}", token=token).status_code
               for key in subkeys}
    assert {key: code for key, code in refused.items() if code != 200} == {}
    listed = agent.request("GET", f"/kv/{kv_prefix(plan.stack)}?keys=true", token=token)
    assert listed.status_code == 200
    assert sorted(listed.json()) == sorted(config_prefix(plan.stack) + key for key in subkeys)


def test_registry_token_reads_nothing_outside_its_prefix(applied):
    agent, plan, _ = applied
    token = registry_token(agent, plan.stack)
    other = next(s for s in STACKS if s != plan.stack)
    for key in (f"{config_prefix(other)}env/REGISTRY_HTTP_SECRET", f"registry/{plan.stack}-old/env/X",
                "registry/shared-setting", "vault/root-token"):
        assert agent.request("GET", f"/kv/{key}", token=token).status_code == 403, key
    # A recursive read above the prefix returns only what the token may read.
    above = agent.request("GET", "/kv/registry/?keys=true", token=token)
    assert above.status_code == 200
    assert all(key.startswith(kv_prefix(plan.stack)) for key in above.json()), above.json()


def test_registry_token_cannot_write_or_delete_any_key(applied):
    agent, plan, _ = applied
    token = registry_token(agent, plan.stack)
    own_key = f"{config_prefix(plan.stack)}env/REGISTRY_LOG_LEVEL"
    assert agent.request("PUT", f"/kv/{own_key}", token=token, data=b"debug").status_code == 403
    assert agent.request("PUT", f"/kv/{kv_prefix(plan.stack)}new-key", token=token, data=b"x").status_code == 403
    assert agent.request("DELETE", f"/kv/{own_key}", token=token).status_code == 403
    assert agent.request("DELETE", f"/kv/{kv_prefix(plan.stack)}?recurse=true", token=token).status_code == 403
    assert agent.request("PUT", "/kv/registry/other", token=token, data=b"x").status_code == 403
    assert agent.request("PUT", f"/kv/{readonly_key(plan.stack)}", token=token, data=b'{"enabled":true}').status_code == 403


def test_the_gc_role_writes_exactly_the_read_only_key(applied):
    agent, plan, _ = applied
    token = role_token(agent, f"registry-gc-{plan.stack}")
    assert agent.request("PUT", f"/kv/{readonly_key(plan.stack)}", token=token,
                         data=b'{"enabled":true}').status_code == 200
    for key in (f"{config_prefix(plan.stack)}env/REGISTRY_STORAGE_MAINTENANCE_READONLY",
                f"{kv_prefix(plan.stack)}maintenance/REGISTRY_LOG_LEVEL", f"{readonly_key(plan.stack)}-other",
                f"registry/{next(s for s in STACKS if s != plan.stack)}/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY"):
        assert agent.request("PUT", f"/kv/{key}", token=token, data=b"x").status_code == 403, key
    # It is the registry too: it reads the settings its replica starts with.
    assert agent.request("GET", f"/kv/{config_prefix(plan.stack)}env/REGISTRY_LOG_LEVEL", token=token).status_code == 200


def test_config_cli_reads_this_consul_and_sees_the_gc_jobs_flip(applied, tmp_path):
    """The one config-cli stand-in, reading the tree over Consul's HTTP API with the registry's token: the
    environment it builds is the plan's, and once the GC role wrote the key, the registry starts read-only."""
    agent, plan, _ = applied
    registry, gc = registry_token(agent, plan.stack), role_token(agent, f"registry-gc-{plan.stack}")
    # No secret matters here: Vault references become placeholders, so no Vault is needed.
    for key, value in plan.one(KV_TYPE, "registry-consul-kv").plain_inputs["subkeys"].items():
        if value.startswith("vault:"):
            agent.call("PUT", f"/kv/{config_prefix(plan.stack)}{key}", data=b"placeholder")
    before = load_tree(consul_tree(agent.url, kv_prefix(plan.stack), registry), None, tmp_path / "before")
    assert before.environment["REGISTRY_STORAGE_MAINTENANCE_READONLY"] == '{"enabled":false}'
    assert before.environment["REGISTRY_LOG_LEVEL"] == plan.one(KV_TYPE, "registry-consul-kv").plain_inputs["subkeys"]["env/REGISTRY_LOG_LEVEL"]
    agent.request("PUT", f"/kv/{readonly_key(plan.stack)}", token=gc, data=b'{"enabled":true}').raise_for_status()
    during = load_tree(consul_tree(agent.url, kv_prefix(plan.stack), registry), None, tmp_path / "during")
    assert during.environment["REGISTRY_STORAGE_MAINTENANCE_READONLY"] == '{"enabled":true}'


def test_registry_token_registers_only_its_own_service_and_sidecar(applied):
    agent, plan, _ = applied
    token = registry_token(agent, plan.stack)
    own = {"ID": f"{SERVICE}-0", "Name": SERVICE, "Port": 5000, "Address": "127.0.0.1"}
    sidecar = {"ID": f"{SERVICE}-0-sidecar-proxy", "Name": SIDECAR, "Kind": "connect-proxy", "Port": 20000,
               "Proxy": {"DestinationServiceName": SERVICE, "DestinationServiceID": f"{SERVICE}-0",
                         "LocalServicePort": 5000}}
    for service in (own, sidecar):
        response = agent.request("PUT", "/agent/service/register", token=token, json=service)
        assert response.status_code == 200, f"{service['Name']}: {response.status_code} {response.text}"
    for name in ("vault", "registry-evil", "ci-runner"):
        response = agent.request("PUT", "/agent/service/register", token=token,
                                 json={"ID": name, "Name": name, "Port": 5000})
        assert response.status_code == 403, f"{name}: {response.status_code} {response.text}"
    registered = agent.call("GET", "/agent/services")
    assert sorted(s["Service"] for s in registered.values()) == sorted([SERVICE, SIDECAR])
    assert agent.request("PUT", f"/agent/service/deregister/{SERVICE}-0", token=token).status_code == 200


def test_intentions_allow_exactly_the_listed_sources(applied):
    agent, plan, _ = applied
    listed = stack_file_value(plan.stack, "consulIntentionSources")
    assert listed, "the stack file lists no intention source"
    every_stack_source = {s for stack in STACKS for s in stack_file_value(stack, "consulIntentionSources")}
    unlisted = sorted((every_stack_source - set(listed)) | {"attacker", "registry-gc-evil", SERVICE})
    verdicts = {source: agent.call("GET", f"/connect/intentions/check?source={source}&destination={SERVICE}")
                ["Allowed"] for source in listed + unlisted}
    assert verdicts == {**{s: True for s in listed}, **{s: False for s in unlisted}}
    matched = agent.call("GET", f"/connect/intentions/match?by=destination&name={SERVICE}")[SERVICE]
    assert sorted(i["SourceName"] for i in matched) == sorted(listed + ["*"])


# --- config-cli's path through this Consul ----------------------------------------------------------------------

def test_config_cli_boots_the_registry_from_this_consul_and_the_agent_runs_its_check(
        consul_agent: ConsulAgent, stack_setup, registry_factory):
    """The stand-in config-cli reads the KV through Consul with the registry's token (not from the plan), the
    registry boots from it, and the service registered with the KV's own check definition goes passing once
    Consul's agent has called the registry's /debug/health."""
    setup = stack_setup("staging")
    apply_recorded_consul(consul_agent, setup.plan)
    token = registry_token(consul_agent, setup.stack)
    kv = consul_tree(consul_agent.url, config_prefix(setup.stack), token=token)
    assert kv == setup.kv

    registry = setup.boot(registry_factory, kv=kv, name="from-consul")
    check = json.loads(kv["service/check"])
    # The pod's IP and ports become the registry's loopback addresses (TEST_OVERRIDES): 5000 -> its HTTP
    # address, 5001 -> its debug address.
    target = urlsplit(check["HTTP"].replace("${POD_IP}", "pod-ip"))
    assert target.hostname == "pod-ip"
    local = {5000: urlsplit(registry.base_url), 5001: urlsplit(registry.debug_url)}[target.port]
    check["HTTP"] = f"http://{local.hostname}:{local.port}{target.path}"
    port = urlsplit(registry.base_url).port
    service = {"ID": f"{SERVICE}-0", "Name": SERVICE, "Address": "127.0.0.1", "Port": port, "Check": check}
    response = consul_agent.request("PUT", "/agent/service/register", token=token, json=service)
    assert response.status_code == 200, response.text

    def check_status():
        checks = consul_agent.call("GET", "/agent/checks")
        return next((c for c in checks.values() if c["ServiceID"] == f"{SERVICE}-0" and c["Status"] == "passing"),
                    None)

    deadline = time.monotonic() + 30
    while not (passing := check_status()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert passing, consul_agent.call("GET", "/agent/checks")
    assert "200 OK" in passing["Output"]
    assert consul_agent.request("PUT", f"/agent/service/deregister/{SERVICE}-0", token=token).status_code == 200
    assert consul_agent.call("GET", "/agent/services") == {}


# --- the token service's identity (authMode token) ----------------------------------------------------------


def token_prefix(stack: str) -> str:
    return f"{TOKEN}/{stack}/"


@pytest.fixture
def token_applied(applied):
    agent, plan, _ = applied
    if not token_mode(plan.stack):
        pytest.skip("no token service outside authMode token")
    return agent, plan, role_token(agent, f"{TOKEN}-{plan.stack}")


def test_the_token_services_role_reads_its_own_tree_and_nothing_of_the_registrys(token_applied, tmp_path):
    agent, plan, token = token_applied
    recorded = plan.one(KV_TYPE, f"{TOKEN}-kv").plain_inputs
    assert recorded["pathPrefix"] == f"{token_prefix(plan.stack)}config/"
    tree = consul_tree(agent.url, token_prefix(plan.stack), token)
    assert tree == {f"config/{key}": value for key, value in recorded["subkeys"].items()}
    # config-cli's stand-in accepts the tree as it accepts the registry's (docs/config-cli.md).
    loaded = load_tree(tree, None, tmp_path / "token-service")
    assert loaded.environment["TOKEN_SERVICE_ISSUER"] == stack_file_value(plan.stack, "tokenIssuer")
    for key in (f"{config_prefix(plan.stack)}env/REGISTRY_HTTP_SECRET", f"{config_prefix(plan.stack)}env/REGISTRY_AUTH",
                f"{TOKEN}/{next(s for s in STACKS if s != plan.stack)}/config/credentials-generation",
                "vault/root-token"):
        assert agent.request("GET", f"/kv/{key}", token=token).status_code == 403, key
    own = f"{token_prefix(plan.stack)}config/env/TOKEN_SERVICE_LOG_LEVEL"
    assert agent.request("PUT", f"/kv/{own}", token=token, data=b"debug").status_code == 403
    # And the registry's token does not read the token service's tree.
    assert agent.request("GET", f"/kv/{own}", token=registry_token(agent, plan.stack)).status_code == 403


def test_the_token_services_role_registers_only_its_own_service_and_sidecar(token_applied):
    agent, plan, token = token_applied
    own = {"ID": f"{TOKEN}-a", "Name": TOKEN, "Port": 5050, "Address": "127.0.0.1"}
    sidecar = {"ID": f"{TOKEN}-a-sidecar-proxy", "Name": TOKEN_SIDECAR, "Kind": "connect-proxy", "Port": 20000,
               "Proxy": {"DestinationServiceName": TOKEN, "DestinationServiceID": f"{TOKEN}-a", "LocalServicePort": 5050}}
    for service in (own, sidecar):
        response = agent.request("PUT", "/agent/service/register", token=token, json=service)
        assert response.status_code == 200, f"{service['Name']}: {response.status_code} {response.text}"
    for name in (SERVICE, SIDECAR, "vault"):
        response = agent.request("PUT", "/agent/service/register", token=token, json={"ID": name, "Name": name, "Port": 1})
        assert response.status_code == 403, name


def test_the_token_services_intentions_admit_the_registrys_sources_only(token_applied):
    agent, plan, _ = token_applied
    assert agent.call("GET", f"/config/service-defaults/{TOKEN}")["Protocol"] == "http"
    listed = stack_file_value(plan.stack, "consulIntentionSources")
    verdicts = {source: agent.call("GET", f"/connect/intentions/check?source={source}&destination={TOKEN}")["Allowed"]
                for source in [*listed, "attacker", SERVICE]}
    assert verdicts == {**{s: True for s in listed}, "attacker": False, SERVICE: False}
