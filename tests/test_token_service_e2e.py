"""The token service started the way its Deployment starts it, and a developer pulling with an OIDC ID token.

From the staging plan (``tokenRealm`` and ``tokenOidcIssuer`` pointed at this machine, as ``prepare_stack`` does
for the realm): the plan's Vault objects applied to OpenBao (the token service's own policy and Kubernetes auth
role among them); Vault's Kubernetes auth checking the pod's projected token with the real kube-apiserver's
TokenReview (the account the Deployment runs as, in a control plane of its own); the recorded
KV tree under ``registry-token-service/staging/config/`` loaded by the one config-cli stand-in; the container's
recorded environment beside it; ``python -m token_service`` started with that, nothing else but the
``DEPLOYMENT_OVERRIDES`` below. The registry boots from its own recorded KV. crane (go-containerregistry) is the
client: the CI robot pushes, a developer of a mapped group pulls with the issuer's ID token as password.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offline_plan.render import plain_numbers
from tests.support.config_cli import load
from tests.support.crane import Crane, basic_auth, build_crane, layer_tarball
from tests.support.openbao import start_openbao
from tests.support.processes import free_port
from tests.support.stack_registry import prepare_stack
from tests.support.kube_cluster import grant_token_review, service_account_token
from tests.support.token_service import OidcIssuer, http, start_token_service
from tests.support.vault_plan import ROLE_TYPE
from tests.test_token_service_deploy import TOKEN, stack_value
from token_service import contract as c

pytest_plugins = ["tests.support.fixtures", "tests.support.peer_fixtures"]
# One control plane, staging's, for the API server's TokenReview of the service's projected token.
pytestmark = pytest.mark.parametrize("kube_cluster", ["staging"], indirect=True)

STACK = "staging"
KV_TYPE = "consul:index/keyPrefix:KeyPrefix"
# Every difference between what the Deployment's pod gets and what runs here, each with its reason.
DEPLOYMENT_OVERRIDES = {
    "VAULT_ADDR": "the OpenBao on 127.0.0.1 instead of https://vault.vault.svc:8200",
    c.ENV_VAULT_JWT_FILE: "a temp file holding the projected token (the kubelet mounts it at /var/run/secrets/vault)",
    c.ENV_LISTEN_HOST: "127.0.0.1 instead of every address of the pod",
    c.ENV_LISTEN_PORT: "the realm's free port instead of 5050",
    c.ENV_OPS_PORT: "a free port instead of 5051",
}


@pytest.fixture(scope="session")
def crane() -> str:
    return build_crane()


@pytest.fixture(scope="module")
def token_reviewer(kube_cluster) -> str:
    """The account the Deployment runs as, and a TokenReview reviewer for Vault's auth method (its token)."""
    namespace = stack_value(STACK, "namespace", "cicd")
    # The session's control plane may hold the account already (a test that applied the plan's manifests).
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": TOKEN, "namespace": namespace}}))
    return grant_token_review(kube_cluster, "token-e2e-vault-reviewer", namespace)


@pytest.fixture
def deployed(tmp_path: Path, registry_factory, kube_cluster, token_reviewer):
    """(setup, registry, token service, OIDC issuer) for the staging plan, the token service as deployed."""
    audience = stack_value(STACK, "tokenOidcAudience")
    issuer = OidcIssuer(audience=audience)
    openbao = start_openbao(tmp_path / "openbao", name="openbao-e2e")
    setup = service = None
    try:
        # An issuer on loopback needs no CIDRs (the settings accept that only for 127.0.0.1/localhost).
        setup = prepare_stack(STACK, openbao, tmp_path / "stack", start_own_token_service=False, extra_overrides={
            "registry:tokenOidcIssuer": issuer.url, "registry:tokenOidcIssuerCidrs": None})
        plan, root = setup.plan, openbao.client()
        role = plain_numbers(plan.one(ROLE_TYPE, f"{TOKEN}-auth-role").plain_inputs)
        # The cluster's Kubernetes auth method, checking tokens with the real API server's TokenReview.
        namespace, reviewer_jwt = stack_value(STACK, "namespace", "cicd"), token_reviewer
        root.write(f"auth/{role['backend']}/config", kubernetes_host=kube_cluster.url, disable_local_ca_jwt=True,
                   kubernetes_ca_cert=kube_cluster.ca_file.read_text(), token_reviewer_jwt=reviewer_jwt)
        projected = tmp_path / "vault-token"
        projected.write_text(service_account_token(kube_cluster, TOKEN, namespace, audience=role["audience"]))

        # config-cli's work for `config-cli run token-service`: the recorded tree (no Vault reference in it).
        kv = plan.one(KV_TYPE, f"{TOKEN}-kv").plain_inputs
        loaded = load(kv["subkeys"], None, tmp_path / "token-service-run")
        container = plan.one("kubernetes:apps/v1:Deployment", f"{TOKEN}-deployment").plain_inputs[
            "spec"]["template"]["spec"]["containers"][0]
        pod_env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
        realm_port = int(setup.token_realm.rsplit(":", 1)[1].split("/")[0])
        overrides = {"VAULT_ADDR": openbao.url, c.ENV_VAULT_JWT_FILE: str(projected), c.ENV_LISTEN_HOST: "127.0.0.1",
                     c.ENV_LISTEN_PORT: str(realm_port), c.ENV_OPS_PORT: str(free_port())}
        assert set(overrides) == set(DEPLOYMENT_OVERRIDES)
        env = {**pod_env, **loaded.environment, **overrides}
        assert env[c.ENV_VAULT_AUTH] == "kubernetes" and c.ENV_VAULT_TOKEN not in env, "the pod has no Vault token"
        service = start_token_service(env, tmp_path, name="deployed-token-service", port=realm_port)
        registry = setup.boot(registry_factory)
        assert registry.env["REGISTRY_AUTH_TOKEN_REALM"] == setup.token_realm
        yield setup, registry, service, issuer, root
    finally:
        if service:
            service.stop()
        if setup:
            setup.close()
        openbao.stop()
        issuer.stop()


def test_a_developer_of_a_mapped_group_pulls_with_an_oidc_token_through_the_deployed_service(deployed, crane,
                                                                                            tmp_path):
    setup, registry, service, issuer, root = deployed
    host = registry.base_url.removeprefix("http://")
    # The service logged in to Vault with the pod's projected token: the identity Vault bound its token to is
    # the account the API server's TokenReview reported.
    logins = []
    for accessor in root.list("auth/token/accessors")["data"]["keys"]:
        meta = (root.auth.token.lookup_accessor(accessor)["data"].get("meta") or {})
        if "service_account_name" in meta:
            logins.append((meta["service_account_namespace"], meta["service_account_name"]))
    assert logins and set(logins) == {(stack_value(STACK, "namespace", "cicd"), TOKEN)}, logins
    group, role = stack_value(STACK, "tokenOidcGroupRoles")[0].split(":")
    assert role in (c.ROLE_PULL, c.ROLE_PUSH)

    ci_user = setup.users(c.ROLE_PUSH)[0]
    ci = Crane(crane, host, tmp_path / "docker-ci", basic_auth(ci_user, setup.accounts[ci_user].password))
    ci("append", "-f", str(layer_tarball(tmp_path, b"built by CI\n")), "-t", ci.ref("ci/app:1"))

    id_token = issuer.mint(issuer.claims("alice", [group]))
    developer = Crane(crane, host, tmp_path / "docker-alice", basic_auth("alice", id_token))
    pulled = tmp_path / "pulled.tar"
    developer("pull", developer.ref("ci/app:1"), str(pulled))
    assert pulled.stat().st_size > 0
    assert developer("digest", developer.ref("ci/app:1")).stdout == ci("digest", ci.ref("ci/app:1")).stdout
    issued = [e for e in service.log_events() if e.get("event") == "token_issued"]
    assert any(e.get("subject") == "alice" for e in issued), issued

    # No mapped group: a login, but no right at all; the wrong audience: no token.
    outsider = Crane(crane, host, tmp_path / "docker-bob", basic_auth("bob", issuer.mint(issuer.claims("bob", ["sales"]))))
    refused = outsider("pull", outsider.ref("ci/app:1"), str(tmp_path / "bob.tar"), check=False)
    assert refused.returncode != 0 and "UNAUTHORIZED" in refused.stderr, refused.stderr[-1000:]
    forged = issuer.mint(issuer.claims("carol", [group], aud="another-service"))
    carol = Crane(crane, host, tmp_path / "docker-carol", basic_auth("carol", forged))
    refused = carol("pull", carol.ref("ci/app:1"), str(tmp_path / "carol.tar"), check=False)
    assert refused.returncode != 0, refused.stderr[-1000:]


def test_the_ops_port_serves_health_and_metrics_and_never_tokens(deployed):
    _, _, service, _, _ = deployed
    ops = f"http://127.0.0.1:{service.env[c.ENV_OPS_PORT]}"
    session = http()
    assert session.get(ops + c.HEALTH_PATH, timeout=5).status_code == 200
    assert session.get(ops + c.READY_PATH, timeout=5).status_code == 200
    assert c.METRIC_VAULT_UP in session.get(ops + c.METRICS_PATH, timeout=5).text
    for path in (c.TOKEN_PATH, c.JWKS_PATH):
        assert session.get(ops + path, timeout=5).status_code == 404, path
    assert session.get(service.url + c.JWKS_PATH, timeout=5).status_code == 200
