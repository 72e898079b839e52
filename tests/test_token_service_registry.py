"""The real registry (Distribution v3.1.1) trusting the token service's key, driven by a real client (crane).

The registry is started with ``REGISTRY_AUTH=token`` and the trust file the keys command published into
Vault (its JWKS, or its certificate bundle), written where config-cli would write it. Both ways the
registry can trust a key are booted: ``jwks`` (tokens carry ``kid``) and ``rootcertbundle`` (tokens
carry ``x5c``).
"""

from __future__ import annotations

import base64
import json
import re
import tarfile
from pathlib import Path

import pytest

from tests.support.crane import Crane, basic_auth, build_crane, layer_tarball
from tests.support.oci import OciClient, make_image
from tests.support.token_client import RegistryTokenAuth
from tests.support.token_service import (ISSUER, SERVICE, http, provision_vault, read_trust, service_environment,
                                         start_token_service)
from token_service import contract as c

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session")
def crane() -> str:
    return build_crane()

ROBOTS = {"ci-push": c.ROLE_PUSH, "kubelet-pull": c.ROLE_PULL, "retention-cleanup": c.ROLE_CLEANUP}


@pytest.fixture(scope="module")
def vault_layout(openbao):
    return provision_vault(openbao.client(), openbao.url, ROBOTS)


@pytest.fixture(scope="module", params=sorted(c.REGISTRY_TRUST_FILES))
def trust_mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def token_service(trust_mode, vault_layout, openbao, tmp_path_factory):
    env = service_environment(vault_layout, openbao.url, **{c.ENV_REGISTRY_TRUST: trust_mode})
    service = start_token_service(env, tmp_path_factory.mktemp(f"token-{trust_mode}"))
    yield service
    service.stop()


def _boot(registry_factory, token_service, trust_mode, vault_layout, openbao, tmp_path, algorithms=None):
    variable, field, filename = c.REGISTRY_TRUST_FILES[trust_mode]
    trust_file = tmp_path / "run" / filename
    trust_file.parent.mkdir(exist_ok=True)
    trust_file.write_text(read_trust(openbao.client(), vault_layout)[field])
    algorithms = algorithms or c.REGISTRY_SIGNING_ALGORITHMS
    return registry_factory({
        "REGISTRY_AUTH": "token",
        # A host name, as in production: go-containerregistry refuses a realm that is an IP literal in a
        # private or loopback range (unless it equals the registry's own host:port).
        "REGISTRY_AUTH_TOKEN_REALM": token_service.token_url.replace("127.0.0.1", "localhost"),
        "REGISTRY_AUTH_TOKEN_SERVICE": SERVICE,
        "REGISTRY_AUTH_TOKEN_ISSUER": ISSUER,
        variable: str(trust_file),
        "REGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS": f"[{','.join(algorithms)}]",
        "REGISTRY_STORAGE": "filesystem",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_HTTP_DRAINTIMEOUT": "5s",  # without it SIGTERM kills the registry instead of draining it
        "OTEL_TRACES_EXPORTER": "none",
    }, name=f"registry-{trust_mode}-{'-'.join(algorithms).lower()}")


@pytest.fixture
def registry(registry_factory, token_service, trust_mode, vault_layout, openbao, tmp_path):
    """The registry trusting what the keys command published, as config-cli would hand it over."""
    return _boot(registry_factory, token_service, trust_mode, vault_layout, openbao, tmp_path)


def test_the_registry_takes_its_algorithm_pin_from_the_environment(registry_factory, token_service, trust_mode,
                                                                   vault_layout, openbao, tmp_path):
    """With the pin set to another algorithm our tokens are refused: the variable is in effect."""
    robot = vault_layout.robots["ci-push"]
    token = http().get(token_service.token_url, params={"service": SERVICE, "scope": "repository:ci/pin:pull"},
                       auth=(robot.name, robot.password)).json()["token"]
    for algorithms, allowed in ((("RS256",), False), (c.REGISTRY_SIGNING_ALGORITHMS, True)):
        pinned = _boot(registry_factory, token_service, trust_mode, vault_layout, openbao, tmp_path, algorithms)
        answer = http().get(pinned.base_url + "/v2/ci/pin/tags/list", headers={"Authorization": f"Bearer {token}"})
        assert (answer.status_code != 401) == allowed, (algorithms, answer.status_code, answer.text)


def _crane_for(crane: str, registry, vault_layout, user: str, tmp_path: Path) -> Crane:
    host = registry.base_url.removeprefix("http://")
    return Crane(crane, host, tmp_path / f"docker-{user}", basic_auth(user, vault_layout.robots[user].password))


def test_ci_robot_pushes_and_pull_robot_pulls_with_crane(crane, registry, vault_layout, tmp_path):
    ci = _crane_for(crane, registry, vault_layout, "ci-push", tmp_path)
    ci("append", "-f", str(layer_tarball(tmp_path, b"built by CI\n")), "-t", ci.ref("ci/app:1"))
    kubelet = _crane_for(crane, registry, vault_layout, "kubelet-pull", tmp_path)
    kubelet("export", kubelet.ref("ci/app:1"), str(tmp_path / "filesystem.tar"))
    with tarfile.open(tmp_path / "filesystem.tar") as tar:
        assert tar.extractfile("hello.txt").read() == b"built by CI\n"


def test_pull_robot_is_refused_push(crane, registry, vault_layout, tmp_path):
    kubelet = _crane_for(crane, registry, vault_layout, "kubelet-pull", tmp_path)
    refused = kubelet("append", "-f", str(layer_tarball(tmp_path, b"not allowed\n")), "-t", kubelet.ref("ci/app:evil"),
                      check=False)
    assert refused.returncode != 0
    assert "UNAUTHORIZED" in refused.stderr or "DENIED" in refused.stderr, refused.stderr[-1000:]
    ci = _crane_for(crane, registry, vault_layout, "ci-push", tmp_path)
    assert "evil" not in ci("ls", ci.ref("ci/app"), check=False).stdout.split()


def test_two_scopes_in_one_parameter_allow_a_cross_repository_mount(registry, vault_layout):
    robot = vault_layout.robots["ci-push"]
    client = OciClient(registry.base_url)
    client.session.auth = RegistryTokenAuth(robot.name, robot.password)
    image = make_image(b"mounted layer")
    client.push_image("team/source", image, tag="v1")
    layer = image.layers[0].digest

    # The registry challenges a mount with one scope parameter naming both repositories; the client passes
    # it on as it is, so the token must grant both or the registry answers 202 (a fresh upload) instead.
    client.session.auth = RegistryTokenAuth(robot.name, robot.password)
    mounted = client.request("POST", f"/v2/team/target/blobs/uploads/?mount={layer}&from=team/source",
                             expect=(201, 202))
    challenge = mounted.history[0].headers["WWW-Authenticate"] if mounted.history else ""
    scope = re.search(r'scope="([^"]*)"', challenge)
    assert scope, challenge
    # Distribution writes the scopes (and their actions) in map order: compare them as sets.
    asked = {item.rpartition(":")[0]: set(item.rpartition(":")[2].split(",")) for item in scope.group(1).split(" ")}
    assert asked == {"repository:team/target": {"pull", "push"}, "repository:team/source": {"pull"}}, challenge
    assert mounted.status_code == 201, f"not mounted: {mounted.status_code} {mounted.headers}"
    assert mounted.headers["Docker-Content-Digest"] == layer


def test_crane_copy_between_repositories(crane, registry, vault_layout, tmp_path):
    ci = _crane_for(crane, registry, vault_layout, "ci-push", tmp_path)
    ci("append", "-f", str(layer_tarball(tmp_path, b"copied\n")), "-t", ci.ref("ci/copy-source:1"))
    ci("copy", ci.ref("ci/copy-source:1"), ci.ref("ci/copy-target:1"))
    assert ci("digest", ci.ref("ci/copy-target:1")).stdout == ci("digest", ci.ref("ci/copy-source:1")).stdout


def test_only_the_cleanup_identity_deletes(crane, registry, vault_layout, tmp_path):
    ci = _crane_for(crane, registry, vault_layout, "ci-push", tmp_path)
    ci("append", "-f", str(layer_tarball(tmp_path, b"old artifact\n")), "-t", ci.ref("ci/old:1"))
    digest = ci("digest", ci.ref("ci/old:1")).stdout.strip()
    refused = ci("delete", ci.ref(f"ci/old@{digest}"), check=False)
    assert refused.returncode != 0 and "UNAUTHORIZED" in refused.stderr, refused.stderr[-1000:]
    cleanup = _crane_for(crane, registry, vault_layout, "retention-cleanup", tmp_path)
    cleanup("delete", cleanup.ref(f"ci/old@{digest}"))
    gone = ci("digest", ci.ref(f"ci/old@{digest}"), check=False)
    assert gone.returncode != 0 and "MANIFEST_UNKNOWN" in gone.stderr, gone.stderr[-1000:]


def test_docker_login_refresh_token_works_for_crane_and_is_refused_by_the_registry(
        crane, registry, token_service, vault_layout, tmp_path):
    robot = vault_layout.robots["ci-push"]
    # What `docker login` does: the OAuth2 password grant asking for offline access, no scope.
    login = http().post(token_service.token_url, data={
        "grant_type": "password", "username": robot.name, "password": robot.password, "service": SERVICE,
        "client_id": "docker", "access_type": "offline"})
    assert login.status_code == 200, login.text
    refresh = login.json()["refresh_token"]
    assert login.json()["scope"] == ""

    # crane (go-containerregistry) uses a stored identity token with the OAuth2 refresh_token grant.
    host = registry.base_url.removeprefix("http://")
    with_refresh = Crane(crane, host, tmp_path / "docker-refresh", {"identitytoken": refresh,
                                                                      "auth": base64.b64encode(b"<token>:").decode()})
    with_refresh("append", "-f", str(layer_tarball(tmp_path, b"via refresh\n")), "-t", with_refresh.ref("ci/refresh:1"))

    # The refresh token is signed by the same key, but is not a bearer token for the registry.
    answer = http().get(registry.base_url + "/v2/ci/refresh/tags/list", headers={"Authorization": f"Bearer {refresh}"})
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]


def test_the_registry_refuses_tampered_tokens_and_the_service_other_audiences(registry, token_service, vault_layout):
    robot = vault_layout.robots["ci-push"]
    answer = http().get(token_service.token_url, params={"service": "another-registry"},
                        auth=(robot.name, robot.password))
    assert answer.status_code == 400
    good = http().get(token_service.token_url, params={"service": SERVICE, "scope": "repository:ci/app:pull"},
                      auth=(robot.name, robot.password)).json()["token"]
    accepted = http().get(registry.base_url + "/v2/ci/app/tags/list", headers={"Authorization": f"Bearer {good}"})
    assert accepted.status_code in (200, 404), accepted.text  # authorised (404: nothing pushed there yet)
    header, claims, signature = good.split(".")
    forged_claims = base64.urlsafe_b64encode(json.dumps(
        {**json.loads(base64.urlsafe_b64decode(claims + "==")), "access": [
            {"type": "repository", "name": "ci/app", "actions": ["pull", "push", "delete"]}]}).encode()).rstrip(b"=")
    forged = f"{header}.{forged_claims.decode()}.{signature}"
    answer = http().get(registry.base_url + "/v2/ci/app/tags/list", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401
