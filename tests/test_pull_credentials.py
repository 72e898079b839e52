"""The kubelets' pull path: the pull robot's credentials from Vault into each consuming namespace's
``kubernetes.io/dockerconfigjson`` Secret (components/pull_credentials.py), then a real pull with them.

What the External Secrets Operator would do is done here with the real pieces it uses: the Vault read with a token
that carries only the store's policy (OpenBao, the plan's Vault objects applied), the ExternalSecret's template
rendered with the operator's template semantics (text/template + Sprig v3, scripts/install-eso-template.sh), and
the result handed to real clients: containerd (as a kubelet pulls, through the token service, from the registry
booted from the stack's recorded configuration) and crane reading it as its docker config. The operator itself
(its controller, its Vault client) does not run here: it needs a cluster with pods.
The objects' schemas are judged by the real API server with the operator's CRDs (tests/test_peer_kubernetes.py).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import hvac
import pytest
import yaml

from components import names
from components.pull_credentials import DOCKER_CONFIG_JSON_KEY, docker_config_template
from components.settings import TOKEN_KEYS
from offline_plan import record_plan
from tests.support.containerd import containerd, ctr  # noqa: F401  (containerd is a fixture)
from tests.support.crane import Crane, basic_auth, build_crane, layer_tarball
from tests.support.peers import installed_binaries
from tests.support.tls_front import tls_front
from tests.support.vault_plan import POLICY_TYPE, apply_vault_objects

pytest_plugins = ["tests.support.fixtures", "tests.support.stack_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
STACKS = ("staging", "prod")
EXTERNAL_SECRET = "kubernetes:external-secrets.io/v1:ExternalSecret"
STORE = "kubernetes:external-secrets.io/v1:ClusterSecretStore"
ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"


def stack_config(stack: str) -> dict:
    return yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


@pytest.fixture(scope="session")
def eso_template() -> str:
    return installed_binaries("install-eso-template.sh")["eso-template"]


@pytest.fixture(scope="session")
def crane() -> str:
    return build_crane()


def render(binary: str, template: str, data: dict[str, str], workdir: Path) -> str:
    """One template value rendered as the operator's engine v2 renders it."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "template"
    path.write_text(template)
    result = subprocess.run([binary, str(path)], input=json.dumps(data), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def store_token(root: hvac.Client, plan) -> str:
    """What the operator's Kubernetes-auth login with the store's role yields: that role's policies, no default."""
    store = plan.one(STORE).plain_inputs
    role_name = store["spec"]["provider"]["vault"]["auth"]["kubernetes"]["role"]
    role = next(r.plain_inputs for r in plan.of_type(ROLE) if r.plain_inputs["roleName"] == role_name)
    token = root.auth.token.create(policies=role["tokenPolicies"], no_default_policy=True, ttl="5m")
    return token["auth"]["client_token"]


def operator_data(vault: hvac.Client, plan, namespace: str) -> dict[str, str]:
    """The ExternalSecret's ``data``, fetched as the operator's Vault provider fetches it: KV v2 at the store's
    ``path``, one ``property`` of ``remoteRef.key`` per ``secretKey``."""
    mount = plan.one(STORE).plain_inputs["spec"]["provider"]["vault"]["path"]
    spec = next(r.plain_inputs["spec"] for r in plan.of_type(EXTERNAL_SECRET)
                if r.plain_inputs["metadata"]["namespace"] == namespace)
    data = {}
    for item in spec["data"]:
        secret = vault.secrets.kv.v2.read_secret_version(path=item["remoteRef"]["key"], mount_point=mount,
                                                         raise_on_deleted_version=True)["data"]["data"]
        data[item["secretKey"]] = secret[item["remoteRef"]["property"]]
    return data


def template_of(plan, namespace: str) -> str:
    spec = next(r.plain_inputs["spec"] for r in plan.of_type(EXTERNAL_SECRET)
                if r.plain_inputs["metadata"]["namespace"] == namespace)
    assert spec["target"]["template"]["type"] == "kubernetes.io/dockerconfigjson"
    return spec["target"]["template"]["data"][DOCKER_CONFIG_JSON_KEY]


# --- the objects, from the plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_each_consuming_namespace_gets_one_external_secret_and_nothing_holds_a_credential(plans, stack):
    plan = plans[stack]
    wanted = stack_config(stack)["registry:pullSecretNamespaces"]
    secrets = {r.plain_inputs["metadata"]["namespace"]: r.plain_inputs for r in plan.of_type(EXTERNAL_SECRET)}
    assert sorted(secrets) == sorted(wanted)
    assert {s["metadata"]["name"] for s in secrets.values()} == {s["spec"]["target"]["name"]
                                                                 for s in secrets.values()} == {"registry-pull"}
    store = plan.one(STORE).plain_inputs
    assert store["spec"]["conditions"] == [{"namespaces": sorted(wanted)}]
    assert not plan.of_type("kubernetes:core/v1:Secret"), "no Kubernetes Secret is written by the program"
    # The robot the ExternalSecrets read is the stack's pull-only robot, at the path its client secret is written.
    pull_robots = [u.split(":")[0] for u in stack_config(stack)["registry:htpasswdUsers"] if u.endswith(":pull")]
    client_paths = {r.plain_inputs["name"] for r in plan.of_type("vault:kv/secretV2:SecretV2")}
    for secret in secrets.values():
        keys = {item["remoteRef"]["key"] for item in secret["spec"]["data"]}
        assert keys == {f"registry/{stack}/clients/{pull_robots[0]}"} and keys <= client_paths


# --- Vault: the store's policy reads the pull robot and nothing else --------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_the_stores_vault_token_reads_the_pull_robot_and_nothing_else(openbao, plans, stack):
    plan = plans[stack]
    root = openbao.client()
    apply_vault_objects(root, plan)
    vault = openbao.client(store_token(root, plan))
    data = operator_data(vault, plan, stack_config(stack)["registry:pullSecretNamespaces"][0])
    assert sorted(data) == ["password", "username"] and data["username"] == "cluster-pull"
    mount = plan.one(STORE).plain_inputs["spec"]["provider"]["vault"]["path"]
    denied = {
        "the CI robot": f"registry/{stack}/clients/ci-runner",
        "the cleanup robot": f"registry/{stack}/clients/registry-cleanup",
        "the registry's secret (robots' hashes, HTTP secret)": f"registry/{stack}",
        "the token service's signing keys": f"registry/{stack}/{names.TOKEN_SIGNING_SECRET}",
    }
    outcomes = {}
    for what, path in denied.items():
        try:
            vault.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
            outcomes[what] = "read"
        except hvac.exceptions.Forbidden:
            outcomes[what] = "denied"
    assert outcomes == {what: "denied" for what in denied}
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.secrets.kv.v2.create_or_update_secret(path=f"registry/{stack}/clients/cluster-pull",
                                                    secret={"password": "x"}, mount_point=mount)
    assert plan.one(POLICY_TYPE, "registry-pull-credentials-policy").plain_inputs["name"] in \
        root.auth.token.lookup(vault.token)["data"]["policies"]


# --- the template, rendered with the operator's semantics --------------------------------------------------------


def test_the_template_renders_the_docker_config_format_for_any_password(eso_template, tmp_path):
    """Built by toJson, not pasted: quotes, backslashes and non-ASCII in a password stay one valid JSON value."""
    password = 'p"a\\ss wörd}{'
    rendered = render(eso_template, docker_config_template(("registry.example.com", "mirror.example.com")),
                      {"username": "cluster-pull", "password": password}, tmp_path)
    expected_auth = base64.b64encode(f"cluster-pull:{password}".encode()).decode()
    entry = {"username": "cluster-pull", "password": password, "auth": expected_auth}
    assert json.loads(rendered) == {"auths": {"registry.example.com": entry, "mirror.example.com": entry}}


def test_a_template_reading_a_field_the_store_did_not_fetch_fails_instead_of_rendering_empty(eso_template, tmp_path):
    result = subprocess.run([eso_template, "/dev/stdin"], input="", capture_output=True, text=True)
    assert result.returncode != 0
    template = tmp_path / "t"
    template.write_text(docker_config_template(("registry.example.com",)))
    missing = subprocess.run([eso_template, str(template)], input=json.dumps({"username": "cluster-pull"}),
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and 'no entry for key "password"' in missing.stderr


# --- the path, end to end: Vault -> template -> containerd / crane -> token service -> registry ------------------


@pytest.fixture(params=STACKS)
def booted(request, stack_setup, registry_factory):
    setup = stack_setup(request.param)
    registry = setup.boot(registry_factory)
    return setup, registry, registry.base_url.removeprefix("http://")


def kubelet_credentials(docker_config: str, image: str) -> tuple[str, str]:
    """What the kubelet takes from an image pull Secret for an image: the ``auths`` entry of the image's host."""
    host = image.split("/", 1)[0]
    user, _, password = base64.b64decode(json.loads(docker_config)["auths"][host]["auth"]).decode().partition(":")
    return user, password


def rendered_pull_secret(setup, eso_template: str, workdir: Path) -> tuple[str, dict[str, str]]:
    """(.dockerconfigjson, the data it was rendered from) of the first consuming namespace, as the operator makes it:
    Vault read with the store's token, then the ExternalSecret's template."""
    namespace = stack_config(setup.stack)["registry:pullSecretNamespaces"][0]
    root = setup.owned_openbao.client()
    data = operator_data(setup.owned_openbao.client(store_token(root, setup.plan)), setup.plan, namespace)
    return render(eso_template, template_of(setup.plan, namespace), data, workdir), data


def push_as_ci(setup, crane: str, address: str, workdir: Path) -> Crane:
    """``apps/web:1`` pushed by the CI robot: what the node will pull."""
    ci_name = next(name for name, account in setup.accounts.items() if account.access == "push")
    ci = Crane(crane, address, workdir / "crane-ci", basic_auth(ci_name, setup.accounts[ci_name].password))
    ci("append", "-f", str(layer_tarball(workdir, b"what the node runs\n")), "-t", ci.ref("apps/web:1"))
    return ci


def hosts_dir(directory: Path, registry_host: str, server: str, ca_file: Path | None = None) -> Path:
    """A containerd hosts directory (a node's /etc/containerd/certs.d) sending <registry_host> to ``server``."""
    (directory / registry_host).mkdir(parents=True)
    ca = f'  ca = "{ca_file}"\n' if ca_file else ""
    (directory / registry_host / "hosts.toml").write_text(
        f'server = "{server}"\n[host."{server}"]\n  capabilities = ["pull", "resolve", "push"]\n{ca}')
    return directory


def test_containerd_pulls_with_the_rendered_pull_secret_and_a_push_with_it_is_refused(
        booted, eso_template, crane, containerd, tmp_path):
    setup, _, address = booted
    ingress_host = stack_config(setup.stack)["registry:ingressHost"]
    docker_config, data = rendered_pull_secret(setup, eso_template, tmp_path / "render")
    assert list(json.loads(docker_config)["auths"]) == [ingress_host]
    ci = push_as_ci(setup, crane, address, tmp_path)

    # The node reaches the registry as <ingressHost>; here that name leads to the registry on loopback (a
    # containerd hosts.toml, as a node's /etc/containerd/certs.d would hold for a mirror).
    hosts_dir(tmp_path / "certs.d", ingress_host, f"http://{address}")
    image = f"{ingress_host}/apps/web:1"
    user, password = kubelet_credentials(docker_config, image)
    assert user == "cluster-pull"
    pulled = ctr(containerd, "images", "pull", "--hosts-dir", str(tmp_path / "certs.d"), "--snapshotter", "native",
                 "--user", f"{user}:{password}", image)
    assert pulled.returncode == 0, pulled.stderr
    assert image in ctr(containerd, "images", "ls", "-q").stdout.split()

    pushed = ctr(containerd, "images", "push", "--hosts-dir", str(tmp_path / "certs.d"), "--user",
                 f"{user}:{password}", f"{ingress_host}/apps/web:from-a-node", image)
    assert pushed.returncode != 0, pushed.stdout
    # crane reads the same rendered file as its docker config (rendered for the address it reaches here).
    home = tmp_path / "crane-node"
    home.mkdir()
    (home / "config.json").write_text(render(eso_template, docker_config_template((address,)), data, tmp_path / "r2"))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "DOCKER_CONFIG": str(home)}
    as_node = subprocess.run([crane, "digest", "--insecure", f"{address}/apps/web:1"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert as_node.returncode == 0 and as_node.stdout.strip() == ci("digest", ci.ref("apps/web:1")).stdout.strip()
    refused = subprocess.run([crane, "append", "--insecure", "-f", str(layer_tarball(tmp_path, b"from a node")),
                              "-t", f"{address}/apps/web:2"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and ("UNAUTHORIZED" in refused.stderr or "401" in refused.stderr), refused.stderr
    for tag in ("from-a-node", "2"):
        missing = ci("digest", ci.ref(f"apps/web:{tag}"), check=False)
        assert missing.returncode != 0 and "MANIFEST_UNKNOWN" in missing.stderr, missing.stderr


def test_containerd_pulls_over_https_only_from_an_ingress_whose_ca_the_node_trusts(
        booted, eso_template, crane, containerd, tmp_path):
    """The node's side of the prerequisite (docs/security.md): containerd verifies the Ingress certificate against
    the CA the node trusts for that host; a certificate from another CA stops the pull before any credential is
    sent. The TLS front stands in for the ingress controller (tests/support/tls_front.py)."""
    setup, registry, address = booted
    ingress_host = stack_config(setup.stack)["registry:ingressHost"]
    docker_config, _ = rendered_pull_secret(setup, eso_template, tmp_path / "render")
    push_as_ci(setup, crane, address, tmp_path)
    image = f"{ingress_host}/apps/web:1"
    user, password = kubelet_credentials(docker_config, image)
    upstream_port = int(address.rsplit(":", 1)[1])
    with tls_front(upstream_port, tmp_path / "tls", [ingress_host]) as front:
        server = f"https://127.0.0.1:{front.port}"
        distrusting = hosts_dir(tmp_path / "certs.d-other-ca", ingress_host, server, front.untrusted_ca_file)
        refused = ctr(containerd, "images", "pull", "--hosts-dir", str(distrusting), "--snapshotter", "native",
                      "--user", f"{user}:{password}", image)
        assert refused.returncode != 0 and "x509: certificate signed by unknown authority" in refused.stderr, refused.stderr
        trusting = hosts_dir(tmp_path / "certs.d", ingress_host, server, front.ca_file)
        pulled = ctr(containerd, "images", "pull", "--hosts-dir", str(trusting), "--snapshotter", "native",
                     "--user", f"{user}:{password}", image)
        assert pulled.returncode == 0, pulled.stderr
    assert image in ctr(containerd, "images", "ls", "-q").stdout.split()


# --- settings --------------------------------------------------------------------------------------------------

BAD = [
    ("staging", {"pullSecretNamespaces": ["Apps"]}, "pullSecretNamespaces", "Kubernetes namespace name"),
    ("staging", {"pullSecretNamespaces": ["apps", "apps"]}, "pullSecretNamespaces", "distinct entries"),
    ("prod", {"pullSecretNamespaces": ["apps\u200b"]}, "pullSecretNamespaces", "U+200B"),
    ("prod", {"ingressHost": None, "ingressTlsSecretName": None}, "pullSecretNamespaces", "only used with ingressHost"),
    # Every token setting dropped with the mode (TOKEN_KEYS), so the pull Secrets' rule is the one that speaks.
    ("staging", {"authMode": "htpasswd", "htpasswdUsers": ["ci-runner:push"], **{key: None for key in TOKEN_KEYS}},
     "pullSecretNamespaces", "needs authMode token"),
    ("prod", {"htpasswdUsers": ["ci-runner:push", "cluster-pull:pull", "mirror-pull:pull"]}, "htpasswdUsers",
     "exactly one pull-only robot"),
]


@pytest.mark.parametrize("stack,changes,named,allowed", BAD, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(BAD)])
def test_bad_pull_credential_settings_are_refused_in_one_line_before_any_resource(stack, changes, named, allowed):
    plan = record_plan(stack, overrides={f"registry:{key}": value for key, value in changes.items()})
    assert plan.error is not None, f"{changes} was accepted"
    assert plan.error.startswith(f"registry:{named}: ") and " is not allowed; " in plan.error, plan.error
    assert allowed in plan.error and "\n" not in plan.error, plan.error
    assert plan.resources == []


def test_without_consuming_namespaces_no_operator_object_and_no_extra_vault_grant_exists():
    plan = record_plan("staging", overrides={"registry:pullSecretNamespaces": []})
    assert plan.error is None, plan.error
    assert not [r for r in plan.registrations if "external-secrets.io" in r.type or "pull-credentials" in r.name]
