"""The token service as the program deploys it (components/token_service.py), judged from the recorded plan.

Expected values come from the stack files, the token service's own contract (token_service/contract.py, its
config parser) and the documents (docs/config-cli.md, docs/token-service.md), not from the component's functions.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from offline_plan.render import plain_numbers
from tests.support import netpol
from token_service import contract as c
from token_service.config import load_config

ROOT = Path(__file__).resolve().parents[1]
STACKS = ("staging", "prod")
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
SERVICE = "kubernetes:core/v1:Service"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
KV = "consul:index/keyPrefix:KeyPrefix"
VAULT_POLICY = "vault:index/policy:Policy"
VAULT_ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"
PROMETHEUS_RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TOKEN = "registry-token-service"  # the component's name in __main__.py: every child is named after it


def stack_value(stack: str, key: str, default=None):
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"].get(f"registry:{key}", default)


@pytest.fixture(params=STACKS)
def stack(request, plans):
    return request.param, plans[request.param]


def inputs(plan, type_token: str, name: str) -> dict:
    return plain_numbers(plan.one(type_token, name).plain_inputs)


def pod_spec(plan, type_token: str, name: str) -> dict:
    return inputs(plan, type_token, name)["spec"]["template"]["spec"]


def token_kv(plan) -> tuple[str, dict[str, str]]:
    recorded = inputs(plan, KV, f"{TOKEN}-kv")
    return recorded["pathPrefix"], recorded["subkeys"]


# --- the Deployment --------------------------------------------------------------------------------------------


def test_the_deployment_runs_the_stacks_image_and_replicas_under_config_cli(stack):
    name, plan = stack
    deployment = inputs(plan, DEPLOYMENT, f"{TOKEN}-deployment")
    assert deployment["spec"]["replicas"] == int(stack_value(name, "tokenServiceReplicas")) >= 2
    container, = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == stack_value(name, "tokenServiceImage")
    # docs/config-cli.md: the token service's profile of config-cli reads its own prefix.
    assert container["command"] == ["config-cli", "run", "token-service"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["CONFIG_CLI_KV_PREFIX"] == f"registry-token-service/{name}/"
    assert env["CONFIG_CLI_SERVICE_NAME"] == "registry-token-service"
    assert env["CONFIG_CLI_VAULT_ROLE"] == f"registry-token-service-{name}"
    assert env["VAULT_ADDR"] == stack_value(name, "vaultAddr", "https://vault.vault.svc:8200")


def test_the_deployment_has_the_registrys_pod_security_and_its_own_probes(stack):
    _, plan = stack
    token = pod_spec(plan, DEPLOYMENT, f"{TOKEN}-deployment")
    registry = pod_spec(plan, STATEFUL_SET, "registry-statefulset")
    assert token["securityContext"] == registry["securityContext"]
    assert token["containers"][0]["securityContext"] == registry["containers"][0]["securityContext"]
    assert token["automountServiceAccountToken"] is True and token["enableServiceLinks"] is False
    assert token["serviceAccountName"] == "registry-token-service" != registry["serviceAccountName"]
    container = token["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": c.HTTP_PORT, "ops": c.OPS_PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    # The projected Vault token, as the registry's pods have it (docs/config-cli.md "Logging in").
    volumes = {volume["name"]: volume for volume in token["volumes"]}
    projected = volumes["vault-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert projected == {"audience": "vault", "expirationSeconds": 600, "path": "token"}


def test_the_mesh_carries_the_token_port_and_leaves_the_ops_port_outside(stack):
    _, plan = stack
    annotations = inputs(plan, DEPLOYMENT, f"{TOKEN}-deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["consul.hashicorp.com/connect-inject"] == "true"
    assert annotations["consul.hashicorp.com/connect-service"] == "registry-token-service"
    assert annotations["consul.hashicorp.com/connect-service-port"] == str(c.HTTP_PORT)
    assert annotations["consul.hashicorp.com/transparent-proxy-exclude-inbound-ports"] == str(c.OPS_PORT)


def test_no_registry_object_selects_a_token_service_pod_and_the_budget_lets_one_go(stack):
    name, plan = stack
    labels = inputs(plan, DEPLOYMENT, f"{TOKEN}-deployment")["spec"]["template"]["metadata"]["labels"]
    for type_token, resource in ((SERVICE, "registry-service"), (SERVICE, "registry-headless"), (PDB, "registry-pdb")):
        selector = inputs(plan, type_token, resource)["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert not all(labels.get(k) == v for k, v in selector.items()), resource
    budget = inputs(plan, PDB, f"{TOKEN}-pdb")["spec"]
    assert budget["minAvailable"] == int(stack_value(name, "tokenServiceReplicas")) - 1 >= 1
    assert all(labels.get(k) == v for k, v in budget["selector"]["matchLabels"].items())
    registry_pod = inputs(plan, STATEFUL_SET, "registry-statefulset")["spec"]["template"]["metadata"]["labels"]
    assert not all(registry_pod.get(k) == v for k, v in budget["selector"]["matchLabels"].items())


# --- its settings in Consul KV, read by config-cli ---------------------------------------------------------------


def test_the_kv_is_what_the_service_itself_accepts_with_the_registrys_issuer_and_service(stack):
    name, plan = stack
    prefix, subkeys = token_kv(plan)
    assert prefix == f"registry-token-service/{name}/config/"
    env = {key.removeprefix("env/"): value for key, value in subkeys.items() if key.startswith("env/")}
    assert set(env) <= set(c.SETTING_NAMES), set(env) - set(c.SETTING_NAMES)
    assert not any(value.startswith("vault:") for value in subkeys.values()), "the service reads Vault itself"
    # VAULT_ADDR is config-cli's own (the pod's environment); the service's parser accepts the rest as they are.
    config = load_config({**env, "VAULT_ADDR": stack_value(name, "vaultAddr", "https://vault.vault.svc:8200")})
    assert config.issuer == stack_value(name, "tokenIssuer")
    assert config.registry_service == stack_value(name, "tokenService")
    assert (config.listen_port, config.ops_port) == (c.HTTP_PORT, c.OPS_PORT)
    assert config.vault.auth == "kubernetes" and config.vault.role == f"registry-token-service-{name}"
    assert (config.vault.robots_path, config.vault.signing_path, config.vault.trust_path) == (
        f"registry/{name}", f"registry/{name}/token-signing", f"registry/{name}/token-trust")
    assert config.vault.jwt_file == "/var/run/secrets/vault/token"
    assert config.oidc.issuer == stack_value(name, "tokenOidcIssuer")
    assert config.oidc.audience == stack_value(name, "tokenOidcAudience")
    mapped = dict(entry.split(":") for entry in stack_value(name, "tokenOidcGroupRoles"))
    assert {group: list(roles) for group, roles in config.rules.groups.items()} == \
        {group: [role] for group, role in mapped.items()}
    check = json.loads(subkeys["service/check"])
    assert check["HTTP"] == f"http://${{POD_IP}}:{c.OPS_PORT}/readyz"


def test_the_registrys_realm_is_the_token_services_ingress(stack):
    name, plan = stack
    registry_kv = inputs(plan, KV, "registry-consul-kv")["subkeys"]
    realm = registry_kv["env/REGISTRY_AUTH_TOKEN_REALM"]
    assert realm == stack_value(name, "tokenRealm")
    parts = urlsplit(realm)
    ingress = inputs(plan, INGRESS, f"{TOKEN}-ingress")
    rule, = ingress["spec"]["rules"]
    assert (parts.scheme, parts.port) == ("https", None)
    assert rule["host"] == parts.hostname and rule["http"]["paths"][0]["path"] == parts.path == c.TOKEN_PATH
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "registry-token-service",
                                                              "port": {"number": c.HTTP_PORT}}
    assert ingress["spec"]["tls"] == [{"hosts": [parts.hostname], "secretName": stack_value(name, "tokenRealmTlsSecretName")}]
    assert plan.outputs["token_realm"][0] == realm


def admitted_by_ingress(ingress: dict, address: str) -> bool:
    """ingress-nginx's whitelist-source-range: a client outside every listed CIDR gets 403."""
    ranges = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/whitelist-source-range"].split(",")
    assert ranges and all(ranges), "an empty allow-list would admit everybody"
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(cidr) for cidr in ranges)


def test_the_realm_ingress_admits_developers_and_nodes_and_nobody_else(stack):
    name, plan = stack
    ingress = inputs(plan, INGRESS, f"{TOKEN}-ingress")
    for cidr in (*stack_value(name, "developerCidrs"), *stack_value(name, "nodeCidrs")):
        network = ipaddress.ip_network(cidr)
        assert admitted_by_ingress(ingress, str(network[1])) and admitted_by_ingress(ingress, str(network[-2])), cidr
    developer_ranges = [ipaddress.ip_network(cidr) for cidr in stack_value(name, "developerCidrs")]
    for outsider in ("10.8.28.5", "192.168.1.20", "203.0.113.7", "10.9.0.1"):
        assert not any(ipaddress.ip_address(outsider) in net for net in developer_ranges)
        assert not admitted_by_ingress(ingress, outsider), outsider


# --- Vault ---------------------------------------------------------------------------------------------------


def test_the_vault_policy_reads_exactly_what_the_service_reads(stack):
    name, plan = stack
    policy = inputs(plan, VAULT_POLICY, f"{TOKEN}-policy")
    assert policy["name"] == f"registry-token-service-{name}"
    expected = "".join(f'path "secret/data/{path}" {{\n  capabilities = ["read"]\n}}\n'
                       for path in (f"registry/{name}", f"registry/{name}/token-signing", f"registry/{name}/token-trust"))
    assert policy["policy"] == expected
    registry_policy = inputs(plan, VAULT_POLICY, "registry-secrets-policy")["policy"]
    assert "token-signing" not in registry_policy, "only the token service reads the private key"
    role = inputs(plan, VAULT_ROLE, f"{TOKEN}-auth-role")
    assert role["boundServiceAccountNames"] == ["registry-token-service"]
    assert role["boundServiceAccountNamespaces"] == [stack_value(name, "namespace", "cicd")]
    assert role["audience"] == "vault" and role["tokenNoDefaultPolicy"] is True
    assert role["roleName"] == policy["name"]


# --- the network ---------------------------------------------------------------------------------------------


def test_the_network_policies_admit_the_registrys_clients_and_monitoring_only(stack):
    name, plan = stack
    policies = [inputs(plan, NETWORK_POLICY, r.name) for r in plan.of_type(NETWORK_POLICY) if r.name.startswith(TOKEN)]
    assert len(policies) == 4
    labels = inputs(plan, DEPLOYMENT, f"{TOKEN}-deployment")["spec"]["template"]["metadata"]["labels"]
    namespace = stack_value(name, "namespace", "cicd")
    pod = netpol.Peer(namespace=namespace, labels=labels)
    runner = netpol.Peer(namespace=stack_value(name, "ciRunnerNamespaces")[0], labels={"app": "runner"})
    ingress_controller = netpol.Peer(namespace="ingress-nginx", labels={"app": "controller"})
    monitoring = netpol.Peer(namespace="monitoring", labels={"app": "prometheus"})
    stranger = netpol.Peer(namespace="default", labels={"app": "x"})
    node = netpol.Peer(ip=str(ipaddress.ip_network(stack_value(name, "nodeCidrs")[0])[5]))
    for client in (runner, ingress_controller):
        assert netpol.ingress_allowed(policies, pod, client, c.HTTP_PORT)
        assert not netpol.ingress_allowed(policies, pod, client, c.OPS_PORT)
    assert netpol.ingress_allowed(policies, pod, monitoring, c.OPS_PORT)
    assert not netpol.ingress_allowed(policies, pod, monitoring, c.HTTP_PORT)
    assert netpol.ingress_allowed(policies, pod, node, c.OPS_PORT)  # the Consul agent's check
    assert not netpol.ingress_allowed(policies, pod, stranger, c.HTTP_PORT)
    vault = netpol.Peer(namespace="vault", labels={"app": "vault"})
    assert netpol.egress_allowed(policies, pod, vault, 8200)
    issuer = netpol.Peer(ip=str(ipaddress.ip_network(stack_value(name, "tokenOidcIssuerCidrs")[0])[1]))
    assert netpol.egress_allowed(policies, pod, issuer, 443)
    assert not netpol.egress_allowed(policies, pod, netpol.Peer(ip="203.0.113.7"), 443)
    assert not netpol.egress_allowed(policies, pod, stranger, 443)


# --- monitoring ----------------------------------------------------------------------------------------------


def test_prometheus_scrapes_the_ops_port_of_the_token_service_only(stack):
    _, plan = stack
    monitor = inputs(plan, SERVICE_MONITOR, f"{TOKEN}-service-monitor")
    service = inputs(plan, SERVICE, f"{TOKEN}-metrics-service")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    client = inputs(plan, SERVICE, f"{TOKEN}-service")
    assert not all(client["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert [p["port"] for p in service["spec"]["ports"]] == [c.OPS_PORT]
    assert [p["port"] for p in client["spec"]["ports"]] == [c.HTTP_PORT]
    assert monitor["spec"]["endpoints"][0]["port"] == "ops" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_alerts_read_only_metrics_the_service_exports_or_kube_state_metrics_serves(stack):
    from components.token_service import EXTERNAL_METRICS
    from tests.alerting.promql import metric_names

    _, plan = stack
    exported = {value for key, value in vars(c).items() if key.startswith("METRIC_")}
    rules = inputs(plan, PROMETHEUS_RULE, f"{TOKEN}-rules")["spec"]
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"TokenServiceDown", "TokenService5xxRatioHigh", "TokenServiceLockouts"} <= {a["alert"] for a in alerts}
    for alert in alerts:
        unknown = metric_names(alert["expr"]) - exported - set(EXTERNAL_METRICS)
        assert not unknown, (alert["alert"], unknown)
        assert alert["annotations"]["runbook_url"].endswith("#" + alert["alert"].lower())
        assert f"## {alert['alert']}" in (ROOT / "docs" / "runbooks.md").read_text(), alert["alert"]


@pytest.fixture
def token_rules_dir(stack, tmp_path) -> Path:
    from string import Template

    name, plan = stack
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(inputs(plan, PROMETHEUS_RULE, f"{TOKEN}-rules")["spec"],
                                                        sort_keys=False))
    template = (ROOT / "tests" / "alerting" / "token-service.test.yaml").read_text()
    (tmp_path / "token-service.test.yaml").write_text(Template(template).substitute(
        namespace=stack_value(name, "namespace", "cicd"), job="registry-token-service-metrics",
        deployment="registry-token-service",
        runbook_base_url=stack_value(name, "runbookBaseUrl",
                                     "https://git.internal.example.com/platform/registry-iac/blob/main/docs/runbooks.md"),
        issuer=stack_value(name, "tokenOidcIssuer")))
    return tmp_path


def test_the_token_service_alerts_pass_promtool_and_their_unit_tests(token_rules_dir):
    checked = subprocess.run([PROMTOOL, "check", "rules", "rules.yaml"], cwd=token_rules_dir, capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", "token-service.test.yaml"], cwd=token_rules_dir,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_token_service_alert_has_a_firing_and_a_silent_case(token_rules_dir):
    firing, silent = set(), set()
    for case in yaml.safe_load((token_rules_dir / "token-service.test.yaml").read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    rules = yaml.safe_load((token_rules_dir / "rules.yaml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names - firing == set() and names - silent == set()


# --- as a library ----------------------------------------------------------------------------------------------


def test_the_component_takes_every_name_from_registry_names_and_its_args_are_frozen():
    """Another program's registry (examples/second-registry's names) gets a token service of its own names."""
    import dataclasses

    from components.names import RegistryNames
    from components.token_service import (TOKEN_SERVICE_RESOURCES, TokenServiceArgs, deployment, ingress, kv_subkeys,
                                          network_policies, vault_policy)
    from tests.conftest import settings_for

    settings = settings_for("staging")
    shared = {f.name: getattr(settings, f.name) for f in dataclasses.fields(TokenServiceArgs) if hasattr(settings, f.name)}
    args = TokenServiceArgs(**{**shared, "names": RegistryNames("team-registry", "team-a"), "namespace": "team-a-registry",
                               "image": settings.token_service.image, "replicas": 2, "resources": TOKEN_SERVICE_RESOURCES,
                               "realm_host": "auth.team-a.example.com", "realm_tls_secret_name": "team-a-auth-tls",
                               "oidc": None})
    manifest = deployment(args)
    assert manifest["metadata"]["name"] == "team-registry-token-service"
    assert manifest["metadata"]["namespace"] == "team-a-registry"
    env = {e["name"]: e.get("value") for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CONFIG_CLI_KV_PREFIX"] == "team-registry-token-service/team-a/"
    assert env["CONFIG_CLI_VAULT_ROLE"] == "team-registry-token-service-team-a"
    assert kv_subkeys(args)[f"env/{c.ENV_VAULT_SIGNING_PATH}"] == "team-registry/team-a/token-signing"
    assert "secret/data/team-registry/team-a/token-trust" in vault_policy(args)
    assert "registry/staging" not in json.dumps([manifest, ingress(args), network_policies(args), kv_subkeys(args)])
    assert c.ENV_OIDC_ISSUER not in {k.removeprefix("env/") for k in kv_subkeys(args)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.replicas = 1  # type: ignore[misc]
