"""A real Consul agent (v1.14.4, built by scripts/install-consul.sh) in dev mode on 127.0.0.1, ACLs default deny.

Every port is a free loopback port or disabled (-1), so the agent never collides with another test or a Consul
on the machine; it is stopped by its own pid.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import requests

from .processes import LOOPBACK, ManagedProcess, clean_env, free_port, start_process, wait_for_http
from .vault_plan import throwaway_ca_certificate

MANAGEMENT_TOKEN = "d3b07384-d113-4ec6-a5c6-6b1d6e1f7a10"


class ConsulError(RuntimeError):
    """Consul answered a call made with the management token with an error."""


@dataclass
class ConsulAgent:
    process: ManagedProcess
    url: str
    management_token: str = MANAGEMENT_TOKEN

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> int:
        return self.process.stop(timeout=timeout)

    def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> requests.Response:
        """One HTTP API call (``path`` after /v1) with ``token`` (default: the management token)."""
        session = requests.Session()
        session.trust_env = False  # loopback only
        headers = {"X-Consul-Token": token if token is not None else self.management_token}
        return session.request(method, f"{self.url}/v1{path}", headers=headers, timeout=10, **kwargs)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A management call that must succeed; returns the decoded JSON body (or None)."""
        response = self.request(method, path, **kwargs)
        if response.status_code != 200:
            raise ConsulError(f"{method} /v1{path}: HTTP {response.status_code}: {response.text.strip()}")
        return response.json() if response.text.strip() else None

    def create_token(self, policy_names: list[str], description: str = "test") -> str:
        body = {"Description": description, "Policies": [{"Name": name} for name in policy_names]}
        return self.call("PUT", "/acl/token", json=body)["SecretID"]


def _agent_config(ports: dict[str, int]) -> dict:
    return {
        "acl": {
            "enabled": True,
            "default_policy": "deny",
            "enable_token_persistence": False,
            "tokens": {"initial_management": MANAGEMENT_TOKEN, "agent": MANAGEMENT_TOKEN},
        },
        "ports": ports,
        "connect": {"enabled": True},
        "disable_update_check": True,
        "log_level": "info",
    }


def start_consul(binary: str, workdir: str | Path, name: str = "consul", timeout: float = 30.0) -> ConsulAgent:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    ports = {"http": http_port, "serf_lan": free_port(), "serf_wan": free_port(), "server": free_port(),
             "dns": -1, "https": -1, "grpc": -1, "grpc_tls": -1}
    config_file = workdir / "agent.json"
    config_file.write_text(json.dumps(_agent_config(ports), indent=2))
    argv = [binary, "agent", "-dev", "-bind", LOOPBACK, "-client", LOOPBACK, "-node", name,
            "-config-file", str(config_file)]
    # HOME in workdir: nothing of the real user's (~/.consul.d, token files) is read or written.
    env = clean_env({"HOME": str(workdir)}, drop=("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL"))
    proc = start_process(name, argv, workdir / f"{name}.log", env=env, cwd=workdir)
    url = f"http://{LOOPBACK}:{http_port}"
    agent = ConsulAgent(process=proc, url=url)
    try:
        wait_for_http(proc, url + "/v1/status/leader", ok_statuses=(200,), timeout=timeout)
        deadline = time.monotonic() + timeout
        # A leader exists once /v1/status/leader names one; ACL bootstrap of the management token follows it.
        while agent.request("GET", "/acl/token/self").status_code != 200:
            if not proc.alive() or time.monotonic() > deadline:
                raise proc.failure("the management token was not accepted in time")
            time.sleep(0.05)
    except Exception:
        proc.stop(timeout=5)
        raise
    return agent


KV_TYPE = "consul:index/keyPrefix:KeyPrefix"
ACL_POLICY_TYPE = "consul:index/aclPolicy:AclPolicy"
ACL_ROLE_TYPE = "consul:index/aclRole:AclRole"
BINDING_RULE_TYPE = "consul:index/aclBindingRule:AclBindingRule"
CONFIG_ENTRY_TYPE = "consul:index/configEntry:ConfigEntry"


# Consul 1.14 requires a reviewer JWT in the method's config; never sent anywhere in these tests.
UNUSED_REVIEWER_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW06cmV2aWV3In0.c2ln"


def ensure_kubernetes_auth_method(agent: "ConsulAgent", name: str, host: str = "https://127.0.0.1:6443",
                                  ca_pem: Optional[str] = None, reviewer_jwt: str = UNUSED_REVIEWER_JWT) -> None:
    """The platform's Kubernetes auth method (a prerequisite the program binds rules to, never creates).

    Without a real API server the method is never logged in to: any CA certificate does for its validation."""
    if agent.request("GET", f"/acl/auth-method/{name}").status_code == 200:
        return
    agent.call("PUT", "/acl/auth-method", json={
        "Name": name, "Type": "kubernetes", "Description": "the platform's (test: created by the fixture)",
        "Config": {"Host": host, "CACert": ca_pem or throwaway_ca_certificate(), "ServiceAccountJWT": reviewer_jwt}})


def apply_recorded_consul(agent: ConsulAgent, plan) -> dict[str, int]:
    """Apply every ``consul:`` resource of a recorded plan through the HTTP API, as the Consul provider does.

    Returns how many resources of each type were applied. A ``consul:`` type this function does not know is an
    error: a resource the program adds must not silently escape the real Consul.
    """
    from offline_plan.recorder import _fake_id

    applied: dict[str, int] = {}
    policy_ids: dict[str, str] = {}  # the plan's (mock) policy ID -> the ID this Consul gave it
    # Policies first: a role refers to them by the ID Consul gives them.
    for registration in sorted(plan.resources, key=lambda r: r.type != ACL_POLICY_TYPE):
        if not registration.type.startswith("consul:"):
            continue
        inputs = registration.plain_inputs
        if registration.type == KV_TYPE:
            prefix = inputs["pathPrefix"]
            for key, value in inputs["subkeys"].items():
                if agent.call("PUT", f"/kv/{prefix}{key}", data=value.encode()) is not True:
                    raise ConsulError(f"PUT /v1/kv/{prefix}{key} was not applied")
        elif registration.type == ACL_POLICY_TYPE:
            created = agent.call("PUT", "/acl/policy", json={"Name": inputs["name"], "Rules": inputs["rules"],
                                                             "Description": inputs.get("description", "")})
            policy_ids[f"{registration.name}-{_fake_id(registration.name + registration.type)[:8]}"] = created["ID"]
        elif registration.type == ACL_ROLE_TYPE:
            agent.call("PUT", "/acl/role", json={"Name": inputs["name"], "Description": inputs.get("description", ""),
                                                 "Policies": [{"ID": policy_ids[p]} for p in inputs["policies"]]})
        elif registration.type == BINDING_RULE_TYPE:
            ensure_kubernetes_auth_method(agent, inputs["authMethod"])
            agent.call("PUT", "/acl/binding-rule", json={
                "AuthMethod": inputs["authMethod"], "Selector": inputs["selector"], "BindType": inputs["bindType"],
                "BindName": inputs["bindName"], "Description": inputs.get("description", "")})
        elif registration.type == CONFIG_ENTRY_TYPE:
            entry = {"Kind": inputs["kind"], "Name": inputs["name"], **json.loads(inputs["configJson"])}
            if agent.call("PUT", "/config", json=entry) is not True:
                raise ConsulError(f"config entry {inputs['kind']}/{inputs['name']} was not applied")
        else:
            raise ConsulError(f"{registration.type} ({registration.name}): no Consul API mapping in the tests")
        applied[registration.type] = applied.get(registration.type, 0) + 1
    return applied
