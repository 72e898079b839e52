"""The token service as a real process (uvicorn on 127.0.0.1) against OpenBao and an OIDC issuer double.

Each bad input of the issue is a case here: malformed scopes, unknown scope types, repository names with
``..`` or upper case, oversized headers, expired/forged/``alg: none``/wrong-audience OIDC tokens, a robot
asking for delete, brute-force bursts per identity and per source, Vault or the issuer unreachable.
Expected values come from the token specification and the rules written in this file, and every token
is verified against the JWKS the keys command published, never decoded on trust.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import signal
import subprocess
import sys
import time

import hvac
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.support.kube_cluster import grant_token_review, revoke_token_review, service_account_token
from tests.support.openbao import start_openbao
from tests.support.processes import clean_env, free_port
from tests.support.token_service import (ISSUER, KV_MOUNT, REPO_ROOT, SERVICE, OidcIssuer, http,
                                         provision_vault,
                                         read_trust, run_keys, service_environment, start_token_service, wait_until,
                                         write_robots)
from token_service import contract as c

pytest_plugins = ["tests.support.fixtures", "tests.support.peer_fixtures"]

ROBOTS = {"ci-push": c.ROLE_PUSH, "kubelet-pull": c.ROLE_PULL, "retention-cleanup": c.ROLE_CLEANUP,
          "rotating-robot": c.ROLE_PULL}
DEVELOPER_GROUP = "platform-developers"
RULES = copy.deepcopy(c.DEFAULT_ACCESS_RULES)
RULES["roles"]["developer"] = [{"type": "repository", "names": ["**"], "actions": ["pull"]},
                               {"type": "repository", "names": ["dev/*"], "actions": ["pull", "push"]}]
RULES["groups"] = {DEVELOPER_GROUP: ["developer"]}
# The shared service never trips its limits: the limits have their own service below.
GENEROUS_LIMITS = {c.ENV_FAILURES_PER_IDENTITY: "1000", c.ENV_FAILURES_PER_SOURCE: "10000"}
FAST_VAULT = {c.ENV_VAULT_REFRESH: "1", c.ENV_VAULT_MAX_STALENESS: "3"}


@pytest.fixture(scope="module")
def issuer():
    double = OidcIssuer(audience="registry-developers")
    yield double
    double.stop()


@pytest.fixture(scope="module")
def layout(openbao):
    return provision_vault(openbao.client(), openbao.url, ROBOTS)


@pytest.fixture(scope="module")
def service(layout, openbao, issuer, tmp_path_factory):
    env = service_environment(layout, openbao.url, issuer, **{c.ENV_ACCESS_RULES: json.dumps(RULES)},
                              **GENEROUS_LIMITS, **FAST_VAULT)
    running = start_token_service(env, tmp_path_factory.mktemp("token-service"))
    yield running
    # uvicorn drains, shuts the application down, then re-raises the SIGTERM it caught (exit -15 by design).
    assert running.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in running.log_text(), "SIGTERM must stop the service gracefully"


@pytest.fixture(scope="module")
def published_keys(openbao, layout) -> KeySet:
    return KeySet.import_key_set(json.loads(read_trust(openbao.client(), layout)[c.TRUST_JWKS_FIELD]))


def get_token(service, user=None, password=None, scopes=(), **params):
    query = [("service", SERVICE), *(("scope", s) for s in scopes), *params.items()]
    return http().get(service.token_url, params=query, auth=(user, password) if user is not None else None)


def robot_token(service, layout, user, *scopes, **params):
    return get_token(service, user, layout.robots[user].password, scopes, **params)


def verified(token: str, keys: KeySet) -> dict:
    """The claims, after checking the signature with a published key and the claims the registry checks."""
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": SERVICE},
                          exp={"essential": True}).validate(decoded.claims)
    return decoded.claims


def access_of(answer, keys) -> dict[str, list[str]]:
    assert answer.status_code == 200, answer.text
    return {f"{a['type']}:{a['name']}": a["actions"] for a in verified(answer.json()["token"], keys)["access"]}


def refused_without_token(answer, status: int, error: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert "token" not in body and "access_token" not in body
    if error:
        assert body["error"] == error, body


# --- what each identity gets ---------------------------------------------------------------------------------


def test_pull_robot_gets_a_pull_only_token_as_the_spec_describes_it(service, layout, published_keys):
    answer = robot_token(service, layout, "kubelet-pull", "repository:apps/web:pull,push")
    body = answer.json()
    claims = verified(body["token"], published_keys)
    assert claims["sub"] == "kubelet-pull"
    assert claims["access"] == [{"type": "repository", "name": "apps/web", "actions": ["pull"]}]
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] <= claims["iat"] and claims["jti"]
    assert body["access_token"] == body["token"]
    assert body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])
    assert body["scope"] == "repository:apps/web:pull"
    assert "refresh_token" not in body
    assert answer.headers["Cache-Control"] == "no-store"


def test_several_scope_parameters_each_holding_several_scopes(service, layout, published_keys):
    answer = robot_token(service, layout, "ci-push", "repository:team/a:pull repository:team/b:pull,push",
                         "repository:team/c:push")
    assert access_of(answer, published_keys) == {"repository:team/a": ["pull"], "repository:team/b": ["pull", "push"],
                                                 "repository:team/c": ["push"]}


def test_a_robot_asking_for_delete_gets_everything_but_delete(service, layout, published_keys):
    answer = robot_token(service, layout, "ci-push", "repository:ci/app:pull,push,delete")
    assert access_of(answer, published_keys) == {"repository:ci/app": ["pull", "push"]}
    wildcard = robot_token(service, layout, "kubelet-pull", "repository:ci/app:*")
    assert access_of(wildcard, published_keys) == {"repository:ci/app": ["pull"]}


def test_only_the_cleanup_identity_may_delete_and_list_the_catalog(service, layout, published_keys):
    cleanup = robot_token(service, layout, "retention-cleanup", "repository:ci/app:pull,delete", "registry:catalog:*")
    assert access_of(cleanup, published_keys) == {"repository:ci/app": ["pull", "delete"], "registry:catalog": ["*"]}
    ci = robot_token(service, layout, "ci-push", "registry:catalog:*")
    assert access_of(ci, published_keys) == {}


def test_anonymous_requests_get_401_and_no_token(service):
    answer = get_token(service, scopes=["repository:apps/web:pull"])
    refused_without_token(answer, 401, "unauthorized")
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")


@pytest.mark.parametrize("user, password", [
    ("ci-push", "wrong-password"),
    ("ci-push", ""),
    ("nobody", "whatever"),
    ("nobody", "a.b.c"),  # shaped like a JWT, not one
    ("", "x"),
], ids=["bad-password", "empty-password", "unknown-user", "unknown-user-jwt-shaped", "empty-user"])
def test_unknown_identity_or_bad_password_gets_401_never_a_token(service, user, password):
    refused_without_token(get_token(service, user, password, ["repository:apps/web:pull"]), 401, "unauthorized")


def test_malformed_basic_credentials_get_401(service):
    for header in ("Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer abc", "Basic"):
        answer = http().get(service.token_url, params={"service": SERVICE}, headers={"Authorization": header})
        refused_without_token(answer, 401, "unauthorized")


def test_a_token_for_another_service_is_refused(service, layout):
    answer = http().get(service.token_url, params={"service": "other-registry"},
                        auth=("ci-push", layout.robots["ci-push"].password))
    refused_without_token(answer, 400, "invalid_request")
    missing = http().get(service.token_url, auth=("ci-push", layout.robots["ci-push"].password))
    refused_without_token(missing, 400, "invalid_request")


# --- bad scopes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [
    "repository", "repository:apps/web", "repository::pull", "repository:apps/web:", ":apps/web:pull",
    "Repository:apps/web:pull", "repo sitory:apps/web:pull", "repository:apps/web:PULL", "repository:apps/web:pull;rm",
    "repository:apps/web:pull,,push", "repository:" + "a" * 300 + ":pull",
])
def test_malformed_scopes_are_refused_with_400(service, layout, scope):
    answer = robot_token(service, layout, "ci-push", scope)
    refused_without_token(answer, 400, "invalid_scope")


@pytest.mark.parametrize("name", [
    "apps/../secrets", "..", "apps/..", "a..b", "Apps/web", "apps/Web", "apps//web", "/apps/web", "apps/web/",
    "apps/web-", "_apps", "apps/we b",
])
def test_repository_names_with_dotdot_upper_case_or_empty_components_are_refused(service, layout, name):
    answer = robot_token(service, layout, "ci-push", f"repository:{name}:pull")
    refused_without_token(answer, 400, "invalid_scope")
    assert "repository name" in answer.json()["error_description"] or "not type:name:actions" in \
        answer.json()["error_description"]


def test_unknown_scope_types_are_granted_nothing(service, layout, published_keys):
    answer = robot_token(service, layout, "retention-cleanup", "frobnicator:apps/web:pull", "helm:chart:push",
                         "repository:apps/web:pull")
    assert access_of(answer, published_keys) == {"repository:apps/web": ["pull"]}
    # A resource class is ignored by the registry: repository(plugin) is a repository.
    plugin = robot_token(service, layout, "kubelet-pull", "repository(plugin):apps/web:pull")
    assert access_of(plugin, published_keys) == {"repository:apps/web": ["pull"]}


def test_unknown_actions_are_not_granted(service, layout, published_keys):
    answer = robot_token(service, layout, "retention-cleanup", "repository:apps/web:pull,own,admin")
    assert access_of(answer, published_keys) == {"repository:apps/web": ["pull"]}


def test_too_many_scopes_are_refused(service, layout):
    many = " ".join(f"repository:apps/r{i}:pull" for i in range(40))
    refused_without_token(robot_token(service, layout, "ci-push", many), 400, "invalid_scope")


# --- oversized input --------------------------------------------------------------------------------------------


def test_an_oversized_authorization_header_is_refused_with_431(service, layout):
    header = "Basic " + base64.b64encode(b"ci-push:" + b"x" * 9000).decode()
    answer = http().get(service.token_url, params={"service": SERVICE}, headers={"Authorization": header})
    refused_without_token(answer, 431)


def test_an_oversized_request_head_is_refused_by_the_server_and_it_keeps_serving(service, layout):
    answer = http().get(service.token_url, params={"service": SERVICE}, headers={"X-Padding": "p" * 65536},
                        auth=("ci-push", layout.robots["ci-push"].password))
    assert answer.status_code in (400, 431) and "token" not in answer.text
    assert service.alive()
    assert robot_token(service, layout, "ci-push", "repository:apps/web:pull").status_code == 200


def test_an_oversized_form_is_refused(service):
    answer = http().post(service.token_url, data={"grant_type": "password", "service": SERVICE,
                                                  "username": "ci-push", "password": "x" * 20000})
    refused_without_token(answer, 413)


# --- developers with OIDC tokens ----------------------------------------------------------------------------------


def test_a_developer_token_maps_groups_to_roles(service, issuer, published_keys):
    token = issuer.mint(issuer.claims("alice", [DEVELOPER_GROUP, "unrelated"]))
    answer = get_token(service, "alice", token, ["repository:dev/tools:pull,push", "repository:ci/app:pull,push,delete"])
    assert access_of(answer, published_keys) == {"repository:dev/tools": ["pull", "push"],
                                                 "repository:ci/app": ["pull"]}
    assert verified(answer.json()["token"], published_keys)["sub"] == "alice"


def test_a_developer_without_a_mapped_group_gets_no_access(service, issuer, published_keys):
    answer = get_token(service, "bob", issuer.mint(issuer.claims("bob", ["sales"])), ["repository:dev/tools:pull"])
    assert access_of(answer, published_keys) == {}


def _alg_none(claims: dict) -> str:
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'issuer-key-1'})}.{part(claims)}."


def _hs256_with_public_key(issuer: OidcIssuer, claims: dict) -> str:
    # The classic confusion attack: the issuer's public key used as an HMAC secret.
    # joserfc refuses to build it, so it is built here by hand, as an attacker would.
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': 'issuer-key-1'})}.{part(claims)}"
    mac = hmac.new(issuer.key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


BAD_OIDC_TOKENS = {
    "expired": lambda i: i.mint(i.claims("alice", [DEVELOPER_GROUP], lifetime=-600)),
    "forged-signature": lambda i: i.mint(i.claims("alice", [DEVELOPER_GROUP]), key=RSAKey.generate_key(2048)),
    "alg-none": lambda i: _alg_none(i.claims("alice", [DEVELOPER_GROUP])),
    "hs256-with-public-key": lambda i: _hs256_with_public_key(i, i.claims("alice", [DEVELOPER_GROUP])),
    "es256-not-pinned": lambda i: i.mint(i.claims("alice", [DEVELOPER_GROUP]), key=ECKey.generate_key("P-256"),
                                         alg="ES256"),
    "wrong-audience": lambda i: i.mint(i.claims("alice", [DEVELOPER_GROUP], aud="some-other-app")),
    "wrong-issuer": lambda i: i.mint(i.claims("alice", [DEVELOPER_GROUP], iss="https://evil.example.com")),
    "no-expiry": lambda i: i.mint(i.claims("alice", [DEVELOPER_GROUP], exp=None)),
    "not-yet-valid": lambda i: i.mint(i.claims("alice", [DEVELOPER_GROUP], nbf=int(time.time()) + 3600)),
    "other-username": lambda i: i.mint(i.claims("mallory", [DEVELOPER_GROUP])),
    "tampered-groups": lambda i: _tamper(i.mint(i.claims("alice", ["sales"])), {"groups": [DEVELOPER_GROUP]}),
}


def _tamper(token: str, changes: dict) -> str:
    header, claims, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    data.update(changes)
    return ".".join([header, base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode(), signature])


@pytest.mark.parametrize("case", sorted(BAD_OIDC_TOKENS))
def test_bad_oidc_tokens_get_401_never_a_token(service, issuer, case):
    token = BAD_OIDC_TOKENS[case](issuer)
    refused_without_token(get_token(service, "alice", token, ["repository:dev/tools:pull"]), 401, "unauthorized")
    logged = [e for e in service.log_events() if e.get("event") == "login_failed" and e.get("username") == "alice"]
    assert logged and logged[-1]["reason"] == "oidc_rejected"


def test_the_good_token_of_the_bad_token_cases_is_accepted(service, issuer, published_keys):
    """The cases above fail for the reason they name: the same claims, unbroken, are accepted."""
    answer = get_token(service, "alice", issuer.mint(issuer.claims("alice", [DEVELOPER_GROUP])),
                       ["repository:dev/tools:pull"])
    assert access_of(answer, published_keys) == {"repository:dev/tools": ["pull"]}


def test_the_issuers_key_rotation_is_followed_and_its_old_key_dropped(layout, openbao, tmp_path, published_keys):
    issuer = OidcIssuer(audience="registry-developers")
    env = service_environment(layout, openbao.url, issuer, **{c.ENV_ACCESS_RULES: json.dumps(RULES),
                                                             c.ENV_OIDC_JWKS_REFRESH: "2"})
    running = start_token_service(env, tmp_path)
    try:
        def login(token):
            return get_token(running, "alice", token, ["repository:dev/tools:pull"])

        before = issuer.mint(issuer.claims("alice", [DEVELOPER_GROUP]))
        assert access_of(login(before), published_keys) == {"repository:dev/tools": ["pull"]}
        requests_before = issuer.jwks_requests
        issuer.rotate()
        time.sleep(2.5)  # past the refetch interval
        after = issuer.mint(issuer.claims("alice", [DEVELOPER_GROUP]))
        assert access_of(login(after), published_keys) == {"repository:dev/tools": ["pull"]}
        assert issuer.jwks_requests > requests_before
        refused_without_token(login(before), 401)  # signed by a key the issuer no longer publishes
    finally:
        running.stop()
        issuer.stop()


# --- docker login: the OAuth2 form, refresh tokens ----------------------------------------------------------------


def _login(service, user, password, **extra):
    return http().post(service.token_url, data={"grant_type": "password", "username": user, "password": password,
                                                "service": SERVICE, "client_id": "docker", **extra})


def test_docker_login_gets_a_refresh_token_that_buys_scoped_tokens(service, layout, published_keys):
    robot = layout.robots["ci-push"]
    login = _login(service, robot.name, robot.password, access_type="offline")
    assert login.status_code == 200, login.text
    assert login.json()["scope"] == "" and verified(login.json()["token"], published_keys)["access"] == []
    refresh = login.json()["refresh_token"]
    answer = http().post(service.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh,
                                                  "service": SERVICE, "client_id": "docker",
                                                  "scope": "repository:ci/app:pull,push,delete"})
    assert access_of(answer, published_keys) == {"repository:ci/app": ["pull", "push"]}
    assert answer.json()["refresh_token"] == refresh  # the spec: the same refresh token, not a new one


def test_the_password_grant_takes_a_space_separated_scope_list_as_containerd_sends_it(service, layout,
                                                                                     published_keys):
    robot = layout.robots["kubelet-pull"]
    answer = _login(service, robot.name, robot.password, client_id="containerd-client", access_type="online",
                    scope="repository:apps/web:pull repository:apps/api:pull,push")
    assert access_of(answer, published_keys) == {"repository:apps/web": ["pull"], "repository:apps/api": ["pull"]}
    assert "refresh_token" not in answer.json()


def test_get_with_offline_token_returns_a_refresh_token(service, layout):
    answer = robot_token(service, layout, "kubelet-pull", "repository:apps/web:pull", offline_token="true")
    assert answer.status_code == 200 and answer.json()["refresh_token"]


def test_online_login_gets_no_refresh_token(service, layout):
    robot = layout.robots["ci-push"]
    assert "refresh_token" not in _login(service, robot.name, robot.password).json()


@pytest.mark.parametrize("mutate", ["garbage", "tampered", "bearer-token-as-refresh"])
def test_a_bad_refresh_token_gets_401(service, layout, mutate):
    robot = layout.robots["ci-push"]
    refresh = _login(service, robot.name, robot.password, access_type="offline").json()["refresh_token"]
    candidate = {
        "garbage": "not.a.token",
        "tampered": _tamper(refresh, {"sub": "retention-cleanup"}),
        # A bearer token is signed by the same key but is not a refresh token.
        "bearer-token-as-refresh": robot_token(service, layout, "ci-push", "repository:ci/app:pull").json()["token"],
    }[mutate]
    answer = http().post(service.token_url, data={"grant_type": "refresh_token", "refresh_token": candidate,
                                                  "service": SERVICE, "scope": "repository:ci/app:pull"})
    refused_without_token(answer, 401, "unauthorized")


def test_a_robots_refresh_token_dies_with_its_password(service, layout, openbao):
    robot = layout.robots["rotating-robot"]
    refresh = _login(service, robot.name, robot.password, access_type="offline").json()["refresh_token"]
    rotated = {**layout.robots, robot.name: type(robot)(robot.name, "a-brand-new-password-0123456789ab", robot.role)}
    write_robots(openbao.client(), layout.robots_path, rotated)

    def refused() -> bool:
        answer = http().post(service.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh,
                                                      "service": SERVICE})
        return answer.status_code == 401

    wait_until(refused, timeout=10, message="the old refresh token refused after the password rotation")
    assert _login(service, robot.name, "a-brand-new-password-0123456789ab").status_code == 200
    assert _login(service, robot.name, robot.password).status_code == 401
    write_robots(openbao.client(), layout.robots_path, layout.robots)


@pytest.mark.parametrize("form, status, error", [
    ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ({"grant_type": "password", "username": "ci-push"}, 400, "invalid_request"),
    ({"username": "ci-push", "password": "x"}, 400, "invalid_request"),
    ({"grant_type": "password", "username": "ci-push", "password": "x", "client_id": "bad\x01id"}, 400,
     "invalid_request"),
])
def test_malformed_oauth_forms_are_refused(service, form, status, error):
    answer = http().post(service.token_url, data={"service": SERVICE, **form})
    refused_without_token(answer, status, error)


def test_a_post_that_is_not_a_form_is_refused(service):
    answer = http().post(service.token_url, json={"grant_type": "password"})
    refused_without_token(answer, 415)


# --- health, readiness, metrics -----------------------------------------------------------------------------------


def test_health_readiness_jwks_and_metrics(service, layout, published_keys):
    assert http().get(service.url + c.HEALTH_PATH).status_code == 200
    ready = http().get(service.url + c.READY_PATH)
    assert ready.status_code == 200 and ready.json()["signing_key"] in {k.kid for k in published_keys.keys}
    assert {k["kid"] for k in http().get(service.url + c.JWKS_PATH).json()["keys"]} == \
        {k.kid for k in published_keys.keys}
    robot_token(service, layout, "ci-push", "repository:ci/app:delete")
    get_token(service, "ci-push", "wrong", ["repository:ci/app:pull"])
    metrics = http().get(service.url + c.METRICS_PATH).text
    for name in (c.METRIC_TOKENS_ISSUED, c.METRIC_LOGIN_FAILURES, c.METRIC_DENIED_ACTIONS, c.METRIC_REQUESTS):
        assert re.search(rf"^{name}{{[^}}]*}} [1-9]", metrics, re.M), f"{name} not counted:\n{metrics[:3000]}"
    assert re.search(rf'^{c.METRIC_DENIED_ACTIONS}{{action="delete"}} [1-9]', metrics, re.M)
    assert re.search(rf"^{c.METRIC_VAULT_UP} 1\.0$", metrics, re.M)


def test_no_secret_reaches_the_log(service, layout, issuer):
    developer_token = issuer.mint(issuer.claims("alice", [DEVELOPER_GROUP]))
    get_token(service, "alice", developer_token, ["repository:dev/tools:pull"])
    robot_token(service, layout, "ci-push", "repository:ci/app:pull")
    log = service.log_text()
    for secret in (layout.robots["ci-push"].password, developer_token, developer_token.split(".")[2]):
        assert secret not in log


# --- brute force ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_service(layout, openbao, tmp_path_factory):
    env = service_environment(layout, openbao.url, **{c.ENV_FAILURES_PER_IDENTITY: "3",
                                                      c.ENV_FAILURES_PER_SOURCE: "6", c.ENV_FAILURE_WINDOW: "60",
                                                      c.ENV_TRUSTED_PROXIES: "127.0.0.1"})
    running = start_token_service(env, tmp_path_factory.mktemp("token-service-limited"))
    yield running
    running.stop()


def _from(source: str) -> dict:
    # The limited service believes X-Forwarded-For from 127.0.0.1 (TOKEN_SERVICE_TRUSTED_PROXIES): a proxy there.
    return {"X-Forwarded-For": source}


def _attempt(service, user, password, source):
    return http().get(service.token_url, params={"service": SERVICE, "scope": "repository:ci/app:pull"},
                      auth=(user, password), headers=_from(source))


def test_a_burst_of_guesses_at_one_identity_is_limited_even_for_the_right_password(limited_service, layout):
    robot = layout.robots["kubelet-pull"]
    for _ in range(3):
        assert _attempt(limited_service, robot.name, "guess", "10.0.0.1").status_code == 401
    answer = _attempt(limited_service, robot.name, robot.password, "10.0.0.1")
    refused_without_token(answer, 429, "too_many_requests")
    assert 1 <= int(answer.headers["Retry-After"]) <= 61
    # The same identity from another source is still limited; another identity is not.
    refused_without_token(_attempt(limited_service, robot.name, robot.password, "10.0.0.9"), 429)
    other = layout.robots["ci-push"]
    assert _attempt(limited_service, other.name, other.password, "10.0.0.1").status_code == 200


def test_guesses_at_a_robots_name_do_not_lock_out_the_robot_itself(limited_service, layout):
    robot = layout.robots["retention-cleanup"]
    assert _attempt(limited_service, robot.name, robot.password, "10.0.7.1").status_code == 200
    for _ in range(3):
        assert _attempt(limited_service, robot.name, "guess", "10.0.7.66").status_code == 401
    refused_without_token(_attempt(limited_service, robot.name, "guess", "10.0.7.66"), 429)
    # The robot's own pods, with the password this replica verified a moment ago, still get tokens.
    assert _attempt(limited_service, robot.name, robot.password, "10.0.7.2").status_code == 200


def test_a_burst_of_guesses_from_one_source_is_limited_across_identities(limited_service, layout):
    for number in range(6):
        assert _attempt(limited_service, f"guessed-user-{number}", "guess", "10.0.1.1").status_code == 401
    robot = layout.robots["ci-push"]
    refused_without_token(_attempt(limited_service, robot.name, robot.password, "10.0.1.1"), 429, "too_many_requests")
    assert _attempt(limited_service, robot.name, robot.password, "10.0.1.2").status_code == 200
    events = [e for e in limited_service.log_events() if e.get("event") == "rate_limited"]
    assert {e["limit"] for e in events} >= {"source"}


def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_change_the_source(layout, openbao, tmp_path):
    env = service_environment(layout, openbao.url, **{c.ENV_FAILURES_PER_IDENTITY: "100",
                                                      c.ENV_FAILURES_PER_SOURCE: "4"})
    running = start_token_service(env, tmp_path)
    try:
        for number in range(4):
            assert _attempt(running, f"guessed-{number}", "guess", f"10.9.0.{number}").status_code == 401
        robot = layout.robots["ci-push"]
        refused_without_token(_attempt(running, robot.name, robot.password, "10.9.9.9"), 429, "too_many_requests")
        limited = [e for e in running.log_events() if e.get("event") == "rate_limited"]
        assert limited and limited[-1]["source"] == "127.0.0.1"
    finally:
        running.stop()


# --- dependencies down: fail closed ---------------------------------------------------------------------------------


def _events(service, event: str) -> list[dict]:
    return [e for e in service.log_events() if e.get("event") == event]


@pytest.fixture
def own_openbao(tmp_path):
    """An OpenBao of the test's own, to stop, or to hold what the session's must not be changed for."""
    server = start_openbao(tmp_path / "openbao", name="openbao-own")
    yield server
    server.stop()


def test_vault_becoming_unreachable_fails_closed_with_a_clear_log_line(own_openbao, tmp_path):
    vault = own_openbao
    layout = provision_vault(vault.client(), vault.url, {"ci-push": c.ROLE_PUSH})
    running = start_token_service(service_environment(layout, vault.url, **FAST_VAULT), tmp_path)
    try:
        robot = layout.robots["ci-push"]
        assert _attempt(running, robot.name, robot.password, "10.0.2.1").status_code == 200
        vault.stop()
        wait_until(lambda: http().get(running.url + c.READY_PATH).status_code == 503, timeout=15,
                   message="readiness failing once Vault is gone")
        refused_without_token(_attempt(running, robot.name, robot.password, "10.0.2.1"), 503, "temporarily_unavailable")
        assert http().get(running.url + c.HEALTH_PATH).status_code == 200  # alive: not restarted in a loop
        unavailable = _events(running, "vault_unavailable")
        assert unavailable and vault.url.split("//")[1] in unavailable[0]["message"]
        assert any(e.get("dependency") == "vault" for e in _events(running, "fail_closed"))
    finally:
        running.stop()


def test_vault_unreachable_at_start_serves_no_token(layout, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    running = start_token_service(service_environment(layout, dead, **FAST_VAULT), tmp_path, wait_ready=False)
    try:
        wait_until(lambda: _events(running, "vault_unavailable"), timeout=10, message="the Vault error logged")
        assert http().get(running.url + c.READY_PATH).status_code == 503
        robot = layout.robots["ci-push"]
        refused_without_token(_attempt(running, robot.name, robot.password, "10.0.3.1"), 503)
    finally:
        running.stop()


def test_oidc_issuer_unreachable_fails_closed_for_developers_only(layout, openbao, issuer, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    env = service_environment(layout, openbao.url, **{c.ENV_OIDC_ISSUER: dead, c.ENV_OIDC_AUDIENCE: issuer.audience})
    running = start_token_service(env, tmp_path)
    try:
        token = issuer.mint(issuer.claims("alice", [DEVELOPER_GROUP], iss=dead))
        refused_without_token(get_token(running, "alice", token, ["repository:dev/tools:pull"]), 503,
                              "temporarily_unavailable")
        closed = [e for e in _events(running, "fail_closed") if e.get("dependency") == "oidc"]
        assert closed and dead in closed[0]["message"]
        robot = layout.robots["kubelet-pull"]
        assert get_token(running, robot.name, robot.password, ["repository:apps/web:pull"]).status_code == 200
    finally:
        running.stop()


# --- settings -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable, value, allowed", [
    (c.ENV_TOKEN_TTL, "10", "an integer from 60 to 3600"),
    (c.ENV_REGISTRY_TRUST, "x5u", "allowed: jwks, rootcertbundle"),
    (c.ENV_OIDC_ALGORITHMS, "none", "never none or HS*"),
    (c.ENV_OIDC_ALGORITHMS, "RS256,HS256", "never none or HS*"),
    (c.ENV_ACCESS_RULES, '{"roles": {"push": [{"names": ["**"], "actions": ["pull", "own"]}]}}', "repository actions"),
    (c.ENV_ACCESS_RULES, '{"roles": {"pull": [{"names": ["Apps/**"], "actions": ["pull"]}]}}', "globs of lowercase"),
    (c.ENV_ACCESS_RULES, '{"roles": {}, "groups": {"devs": ["admin"]}}', "roles defined under roles"),
    (c.ENV_ACCESS_RULES, "{not json", "JSON"),
    (c.ENV_OIDC_ISSUER, "http://idp.example.com", "https (plain http only for a loopback address)"),
    (c.ENV_VAULT_TRUST_PATH, "tokensvc/same", "the private key must stay out of its reach"),
])
def test_bad_settings_stop_the_service_with_one_line_naming_the_setting(layout, openbao, variable, value, allowed):
    env = service_environment(layout, openbao.url, **{c.ENV_OIDC_ISSUER: "https://idp.example.com",
                                                       c.ENV_OIDC_AUDIENCE: "registry"})
    if variable == c.ENV_VAULT_TRUST_PATH:
        env[c.ENV_VAULT_SIGNING_PATH] = value
    env[variable] = value
    result = subprocess.run([sys.executable, "-m", "token_service"], env=clean_env(env), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=15)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"token-service: {variable}: ") and allowed in lines[0], lines[0]


# --- key rotation ---------------------------------------------------------------------------------------------------


def test_signing_key_rotation_publishes_before_signing_and_keeps_the_old_key_until_its_tokens_expire(
        openbao, tmp_path):
    root = openbao.client()
    layout = provision_vault(root, openbao.url, {"ci-push": c.ROLE_PUSH})
    running = start_token_service(service_environment(layout, openbao.url, **FAST_VAULT), tmp_path)
    try:
        def token_kid() -> str:
            token = _attempt(running, "ci-push", layout.robots["ci-push"].password, "10.0.4.1").json()["token"]
            return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]

        def published() -> set[str]:
            return {k["kid"] for k in json.loads(read_trust(root, layout)[c.TRUST_JWKS_FIELD])["keys"]}

        first = token_kid()
        assert published() == {first}
        staged = run_keys(layout, openbao.url, root.token, "stage")
        assert staged.returncode == 0, staged.stderr
        second = (published() - {first}).pop()
        time.sleep(2.5)  # past the service's Vault refresh: staging alone must not change what signs
        assert token_kid() == first

        assert run_keys(layout, openbao.url, root.token, "activate").returncode == 0
        wait_until(lambda: token_kid() == second, timeout=10, message="the new key signing")
        assert published() == {first, second}  # tokens signed by the old key are still in circulation

        early = run_keys(layout, openbao.url, root.token, "retire")
        assert early.returncode == 0 and published() == {first, second}, early.stdout
        assert run_keys(layout, openbao.url, root.token, "activate").returncode == 2  # nothing staged
        forced = run_keys(layout, openbao.url, root.token, "retire", "--force")
        assert forced.returncode == 0 and published() == {second}
        certificates = read_trust(root, layout)[c.TRUST_CERTIFICATES_FIELD]
        assert certificates.count("BEGIN CERTIFICATE") == 1
        assert token_kid() == second
    finally:
        running.stop()


def test_a_signing_key_missing_from_the_trust_bundle_is_never_used(openbao, tmp_path):
    root = openbao.client()
    layout = provision_vault(root, openbao.url, {"ci-push": c.ROLE_PUSH})
    trust = read_trust(root, layout)
    root.secrets.kv.v2.create_or_update_secret(path=layout.trust_path, mount_point=KV_MOUNT, secret={
        **trust, c.TRUST_JWKS_FIELD: json.dumps({"keys": []}), c.TRUST_CERTIFICATES_FIELD: ""})
    running = start_token_service(service_environment(layout, openbao.url, **FAST_VAULT), tmp_path, wait_ready=False)
    try:
        wait_until(lambda: _events(running, "vault_unavailable"), timeout=10, message="the unpublished key logged")
        assert "not in the trust secret" in _events(running, "vault_unavailable")[0]["message"]
        refused_without_token(_attempt(running, "ci-push", layout.robots["ci-push"].password, "10.0.5.1"), 503)
    finally:
        running.stop()


# --- the robots the program itself generates ------------------------------------------------------------------------


def test_the_robots_the_stack_generates_log_in_with_the_access_the_stack_gives_them(own_openbao, tmp_path):
    """The staging plan's own Vault secret (hashes and access list as components/vault_secrets.py writes them)
    and its client secrets (the passwords), applied to OpenBao as recorded, then used by the service.
    Its own OpenBao: the session's holds ``registry/staging`` as other tests' stack variants wrote it."""
    from offline_plan import record_plan
    from tests.support.stack_registry import robot_accounts
    from tests.support.vault_plan import POLICY_TYPE, REGISTRY_POLICY, SECRET_TYPE, apply_vault_objects

    plan = record_plan("staging")
    assert plan.error is None, plan.error
    openbao = own_openbao
    root = openbao.client()
    apply_vault_objects(root, plan)
    secret = plan.one(SECRET_TYPE, "registry-secrets-secret").plain_inputs
    assert secret["mount"] == KV_MOUNT
    layout = provision_vault(root, openbao.url, {})
    # The service may read the stack's secret through the registry's own read-only policy, nothing more.
    token = root.auth.token.create(policies=[f"{layout.prefix}-token-service", plan.one(POLICY_TYPE, REGISTRY_POLICY).plain_inputs["name"]],
                                   no_default_policy=True, ttl="1h")["auth"]["client_token"]
    env = service_environment(layout, openbao.url, **{c.ENV_VAULT_ROBOTS_PATH: secret["name"], c.ENV_VAULT_TOKEN: token})
    running = start_token_service(env, tmp_path)
    try:
        keys = KeySet.import_key_set(json.loads(read_trust(root, layout)[c.TRUST_JWKS_FIELD]))
        accounts = robot_accounts(root, plan)
        assert {a.access for a in accounts.values()} == {c.ROLE_PUSH, c.ROLE_PULL, c.ROLE_CLEANUP}
        granted = {c.ROLE_PUSH: ["pull", "push"], c.ROLE_PULL: ["pull"], c.ROLE_CLEANUP: ["pull", "delete"]}
        for name, account in accounts.items():
            answer = get_token(running, name, account.password, ["repository:ci/app:pull,push,delete"])
            expected = granted[account.access]
            assert access_of(answer, keys) == {"repository:ci/app": expected}, name
            refused_without_token(get_token(running, name, account.password + "x", ["repository:ci/app:pull"]), 401)
    finally:
        running.stop()


# --- Vault's Kubernetes auth, as the pod logs in ------------------------------------------------------------------


def _kubernetes_logins(root, auth_path: str, seen: dict) -> list[dict]:
    """The Vault tokens that logins through ``auth_path`` created, as OpenBao knows them (each looked up once)."""
    for accessor in root.list("auth/token/accessors")["data"]["keys"]:
        if accessor not in seen:
            try:
                seen[accessor] = root.auth.token.lookup_accessor(accessor)["data"]
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):  # expired meanwhile
                seen[accessor] = {}
    return [token for token in seen.values() if token.get("path") == f"auth/{auth_path}/login"]


@pytest.mark.parametrize("kube_cluster", ["staging"], indirect=True)
def test_the_service_logs_in_with_its_projected_service_account_token_and_again_when_it_expires(
        openbao, kube_cluster, tmp_path):
    """Vault's Kubernetes auth method checks the service's token with the real API server's TokenReview."""
    root = openbao.client()
    layout = provision_vault(root, openbao.url, {"ci-push": c.ROLE_PUSH})
    namespace, other_namespace = layout.prefix, f"{layout.prefix}-other"
    auth_path = f"{layout.prefix}-kubernetes"
    for name in (namespace, other_namespace):
        kube_cluster.kubectl("create", "namespace", name)
        kube_cluster.kubectl("create", "serviceaccount", "token-service", "-n", name)
    try:
        reviewer_jwt = grant_token_review(kube_cluster, "vault-auth-reviewer", namespace)
        root.sys.enable_auth_method("kubernetes", path=auth_path)
        root.write(f"auth/{auth_path}/config", kubernetes_host=kube_cluster.url, disable_local_ca_jwt=True,
                   kubernetes_ca_cert=kube_cluster.ca_file.read_text(), token_reviewer_jwt=reviewer_jwt)
        # Tokens that expire within seconds: the service must log in again by itself.
        root.write(f"auth/{auth_path}/role/token-service", bound_service_account_names=["token-service"],
                   bound_service_account_namespaces=[namespace], audience="vault", token_no_default_policy=True,
                   token_policies=[f"{layout.prefix}-token-service"], token_ttl=2, token_max_ttl=2)
        projected = tmp_path / "vault-token"
        projected.write_text(service_account_token(kube_cluster, "token-service", namespace, audience="vault"))
        env = service_environment(layout, openbao.url, **FAST_VAULT, **{
            c.ENV_VAULT_AUTH: "kubernetes", c.ENV_VAULT_ROLE: "token-service", c.ENV_VAULT_AUTH_PATH: auth_path,
            c.ENV_VAULT_JWT_FILE: str(projected)})
        env.pop(c.ENV_VAULT_TOKEN)
        running = start_token_service(env, tmp_path)
        seen: dict = {}
        try:
            robot = layout.robots["ci-push"]
            assert _attempt(running, robot.name, robot.password, "10.0.6.1").status_code == 200
            logins = wait_until(lambda: len(_kubernetes_logins(root, auth_path, seen)) >= 3 and
                                _kubernetes_logins(root, auth_path, seen), timeout=20, interval=0.2,
                                message="logins again after the Vault token expired")
            assert http().get(running.url + c.READY_PATH).status_code == 200
            assert _attempt(running, robot.name, robot.password, "10.0.6.1").status_code == 200
            # The identity Vault bound each token to is the one the API server's TokenReview reported.
            uid = kube_cluster.kubectl("get", "serviceaccount", "token-service", "-n", namespace,
                                       "-o", "jsonpath={.metadata.uid}").stdout
            assert {(t["meta"]["service_account_namespace"], t["meta"]["service_account_name"],
                     t["meta"]["service_account_uid"]) for t in logins} == {(namespace, "token-service", uid)}
        finally:
            running.stop()

        # A real token of an account the role does not bind (same name, another namespace) is refused.
        projected.write_text(service_account_token(kube_cluster, "token-service", other_namespace, audience="vault"))
        refused = start_token_service(env, tmp_path, name="token-service-wrong-account", wait_ready=False)
        try:
            wait_until(lambda: _events(refused, "vault_unavailable"), timeout=10, message="the refused login logged")
            assert "Vault refused the Kubernetes login" in _events(refused, "vault_unavailable")[0]["message"]
            assert http().get(refused.url + c.READY_PATH).status_code == 503
            refused_without_token(_attempt(refused, "ci-push", layout.robots["ci-push"].password, "10.0.6.2"), 503)
        finally:
            refused.stop()
    finally:
        revoke_token_review(kube_cluster, "vault-auth-reviewer", namespace)
        for name in (namespace, other_namespace):
            kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_keys_status_command_shows_what_signs_and_what_is_published(openbao):
    root = openbao.client()
    layout = provision_vault(root, openbao.url, {})
    assert run_keys(layout, openbao.url, root.token, "stage").returncode == 0
    status = run_keys(layout, openbao.url, root.token, "status")
    shown = json.loads(status.stdout)
    assert shown["active"] and shown["next"] and shown["active"] != shown["next"]
    assert set(shown["published"]) == {shown["active"], shown["next"]} and shown["retiring"] == {}
    again = run_keys(layout, openbao.url, root.token, "init")
    assert again.returncode == 2 and again.stderr.strip() == \
        "error: a signing key exists already: rotate with stage, activate, retire"
    no_token = run_keys(layout, openbao.url, "", "status")
    assert no_token.returncode == 2 and "VAULT_TOKEN" in no_token.stderr and "Traceback" not in no_token.stderr
