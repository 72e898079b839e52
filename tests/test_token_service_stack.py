"""The staging stack's registry, booted from its recorded configuration, through the real token service.

``prepare_stack`` records the plan with ``tokenRealm`` overridden to the service's local URL; the registry trusts
the keys the keys command published in ``registry/staging/token-trust`` through the plan's own Vault reference. The plan's own Vault objects give the robots (their hashes in
``registry/staging``, their passwords in ``.../clients/<user>``); config-cli's stand-in loads the recorded KV
and the registry starts from it. The token service reads the same secret with the registry's read policy.
"""

from __future__ import annotations

import json

import pytest

from offline_plan.recorder import stack_config
from tests.support.openbao import start_openbao
from tests.support.processes import free_port
from tests.support.stack_registry import prepare_stack
from tests.support.token_service import provision_vault, start_token_service
from tests.support.vault_plan import POLICY_TYPE, REGISTRY_POLICY, SECRET_TYPE
from tests.support.crane import Crane, basic_auth, build_crane, layer_tarball
from token_service import contract as c

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session")
def crane() -> str:
    return build_crane()

STACK = "staging"


@pytest.fixture
def staging_through_the_token_service(tmp_path, registry_factory):
    openbao = start_openbao(tmp_path / "openbao", name="openbao-staging")
    setup = service = None
    try:
        root = openbao.client()
        # The trust and signing secrets where the plan's Vault reference and policy expect them.
        layout = provision_vault(root, openbao.url, {}, prefix="registry/staging")
        port = free_port()
        realm = f"http://localhost:{port}{c.TOKEN_PATH}"  # a host name: crane refuses loopback IP realms
        setup = prepare_stack(STACK, openbao, tmp_path / "stack", extra_overrides={"registry:tokenRealm": realm})
        _, config, _ = stack_config(STACK)
        robots_secret = setup.plan.one(SECRET_TYPE, "registry-secrets-secret").plain_inputs["name"]
        token = root.auth.token.create(
            policies=[f"{layout.prefix}-token-service", setup.plan.one(POLICY_TYPE, REGISTRY_POLICY).plain_inputs["name"]],
            no_default_policy=True, ttl="1h")["auth"]["client_token"]
        service = start_token_service({
            c.ENV_ISSUER: config["registry:tokenIssuer"], c.ENV_REGISTRY_SERVICE: config["registry:tokenService"],
            c.ENV_REGISTRY_TRUST: "jwks", **layout.environment(openbao.url),
            c.ENV_VAULT_TOKEN: token, c.ENV_VAULT_ROBOTS_PATH: robots_secret,
        }, tmp_path, port=port)
        registry = setup.boot(registry_factory)
        assert registry.env["REGISTRY_AUTH_TOKEN_REALM"] == realm
        yield setup, registry, service
    finally:
        if service:
            service.stop()
        if setup:
            setup.close()
        openbao.stop()


def test_the_stacks_robots_push_and_pull_with_crane_as_the_stack_allows(staging_through_the_token_service,
                                                                          crane, tmp_path):
    setup, registry, service = staging_through_the_token_service
    host = registry.base_url.removeprefix("http://")

    def crane_for(user: str) -> Crane:
        return Crane(crane, host, tmp_path / f"docker-{user}", basic_auth(user, setup.accounts[user].password))

    pushers, pullers = setup.users(c.ROLE_PUSH), setup.users(c.ROLE_PULL)
    assert pushers and pullers, setup.accounts
    ci, kubelet = crane_for(pushers[0]), crane_for(pullers[0])
    ci("append", "-f", str(layer_tarball(tmp_path, b"staging artifact\n")), "-t", ci.ref("ci/app:1"))
    assert kubelet("digest", kubelet.ref("ci/app:1")).stdout == ci("digest", ci.ref("ci/app:1")).stdout

    refused = kubelet("append", "-f", str(layer_tarball(tmp_path, b"pull robot\n")), "-t", kubelet.ref("ci/app:2"), check=False)
    assert refused.returncode != 0 and "UNAUTHORIZED" in refused.stderr, refused.stderr[-1000:]
    digest = ci("digest", ci.ref("ci/app:1")).stdout.strip()
    # The stack has no cleanup identity yet: nobody may delete.
    for client in (ci, kubelet):
        denied = client("delete", client.ref(f"ci/app@{digest}"), check=False)
        assert denied.returncode != 0 and "UNAUTHORIZED" in denied.stderr, denied.stderr[-1000:]
    issued = [json.loads(line) for line in service.log_text().splitlines() if '"token_issued"' in line]
    assert {e["subject"] for e in issued} >= {pushers[0], pullers[0]}
