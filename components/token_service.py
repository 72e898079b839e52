"""The token service (token_service/) deployed beside the registry: everything it needs to run in the cluster.

The registry in ``authMode: token`` sends every client to ``tokenRealm``; this component is what answers
there. Pure functions compute the desired state as plain data (its environment in Consul KV, its Vault policy
and Kubernetes auth role, its Consul ACL, mesh entries, manifests, NetworkPolicies and alert rules);
``TokenService`` registers them:

- a Deployment of ``tokenServiceReplicas`` (2 or more) started by ``config-cli run token-service``, with the
  registry's pod security, a projected Vault token and the mesh sidecar; its own ServiceAccount, a client
  Service (the token port, in the mesh) and a headless metrics Service (the ops port, outside it);
- a PodDisruptionBudget with ``minAvailable`` one less than the replicas: one pod at a time may be evicted;
- Consul KV under ``<base>-token-service/<env>/config/`` (``RegistryNames.token_service_kv_prefix``, the
  config-cli contract of docs/config-cli.md), service-defaults, service-intentions, an ACL policy and role
  with a binding rule for its service account;
- a Vault policy reading exactly the robots' secret (``<mount>/registry/<env>``: the bcrypt hashes and
  roles), the signing secret and the trust secret, and a Kubernetes auth role bound to its service account;
- default-deny NetworkPolicies with the registry's client paths (mesh: CI runner namespaces and the ingress
  controller), the ops port for monitoring and the nodes' Consul agents, and egress to DNS, Consul, Vault and
  the OIDC issuer;
- a ServiceMonitor and a PrometheusRule over the metrics the service exports (token_service/contract.py);
- the Ingress at the token realm's host for developers and kubelets (outside the mesh), limited to their
  ranges, exactly as the registry's.

Secrets: none here. The signing key is generated into Vault by ``python -m token_service.keys`` (an operator's
step, docs/token-service.md); the robots' hashes are the registry's secret (components/vault_secrets.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_consul as consul
import pulumi_kubernetes as k8s
import pulumi_vault as vault

from token_service import contract

from .consul_config import POD_IP_PLACEHOLDER, binding_rule_selector, service_defaults
from .monitoring import MONITORING_API_VERSION, SCRAPE_INTERVAL, _selector, github_anchor
from .names import (CHECK_KEY, COMPONENT_LABEL, CONSUL_GRPC_PORT, ENV_FOLDER, GENERATION_KEY, HTTPS_PORT,
                    MESH_INBOUND_PORT, TOKEN_SERVICE_COMPONENT, TOKEN_SERVICE_CONFIG_CLI_COMMAND, TOKEN_SERVICE_OPS_PORT, TOKEN_SERVICE_PORT,
                    dns_egress, object_metadata)
from .network import Network, _namespaces, _tcp, service_endpoint
from .settings import OidcIssuer, Resources, TokenAuth
from .vault_secrets import vault_kubernetes_role
from .workload import (PRE_STOP_SECONDS, TOKEN_SKIP_ANNOTATION, VAULT_TOKEN_DIRECTORY, VAULT_TOKEN_MOUNT, RegistryPod,
                       config_cli_environment, container_resources, container_security_context, image_pull_policy,
                       pod_security_context, vault_token_volume)

# A token request is one bcrypt check and one signature: a tenth of a core serves hundreds a second (the
# robot cache, docs/token-service.md); the limit leaves room for a burst of nodes pulling at once.
TOKEN_SERVICE_RESOURCES = Resources(cpu_request="100m", cpu_limit="1", memory_request="128Mi", memory_limit="256Mi")
# uvicorn's graceful shutdown (10 s, token_service/__main__.py) plus config-cli's deregistration and the preStop.
TERMINATION_GRACE_SECONDS = 30
# What the realm's Ingress admits per request: the token service refuses forms above 16 KiB anyway.
INGRESS_BODY_LIMIT = "16k"
METRICS_COMPONENT = f"{TOKEN_SERVICE_COMPONENT}-metrics"
LOG_LEVELS = {"error": "error", "warn": "warning", "info": "info", "debug": "debug"}  # registry's -> the service's
TRUSTED_SIDECAR = "127.0.0.1"  # the mesh sidecar (protocol http) appends the client's address to X-Forwarded-For

ERROR_RATIO_THRESHOLD = 0.05
LOGIN_FAILURE_SPIKE_FACTOR = 3
LOGIN_FAILURE_FLOOR_PER_SECOND = 1
# kube-state-metrics' Deployment series the availability alert reads (kube-state-metrics docs/metrics/workload/
# deployment-metrics.md); every other metric is the service's own (token_service/contract.py).
EXTERNAL_METRICS = {
    "up": "Prometheus, one per scrape target (prometheus.io/docs/concepts/jobs_instances)",
    "kube_deployment_status_replicas_available": "kube-state-metrics (docs/metrics/workload/deployment-metrics.md)",
    "kube_deployment_spec_replicas": "kube-state-metrics (docs/metrics/workload/deployment-metrics.md)",
}


@dataclass(frozen=True, kw_only=True)
class TokenServiceArgs(RegistryPod):
    """What the token service's objects are computed from. ``image``, ``replicas`` and ``resources`` are the token
    service's own (not the registry's); the rest is shared with the registry's pods and network."""

    replicas: int
    vault_kv_mount: str
    auth: TokenAuth  # the registry's realm, service and issuer: the tokens' aud and iss
    realm_host: str  # the token realm's host: the Ingress host
    realm_tls_secret_name: str
    log_level: str  # the registry's level (error, warn, info, debug)
    credentials_generation: int
    consul_intention_sources: tuple[str, ...]
    ci_runner_namespaces: tuple[str, ...]
    monitoring_namespace: str
    ingress_class_name: str
    ingress_controller_namespace: str
    developer_cidrs: tuple[Network, ...]
    node_cidrs: tuple[Network, ...] = ()
    runbook_base_url: str
    oidc: Optional[OidcIssuer] = None

    @property
    def consul_kv_prefix(self) -> str:
        """What its config-cli reads: the token service's prefix, not the registry's."""
        return self.names.token_service_kv_prefix


def _metadata(args: TokenServiceArgs, name: str, annotations: Optional[dict] = None) -> dict:
    return object_metadata(name, args.namespace, args.names.token_service_labels(), annotations)


# --- configuration: Consul KV, read by config-cli ----------------------------------------------------------


def vault_role(args: TokenServiceArgs) -> str:
    return args.names.vault_role(args.names.token_service)


def access_rules(args: TokenServiceArgs) -> dict:
    """The default least-privilege rules, with the stack's OIDC groups mapped to their roles."""
    groups: dict[str, list[str]] = {}
    for group, role in (args.oidc.group_roles if args.oidc else ()):
        groups.setdefault(group, []).append(role)
    return {**contract.DEFAULT_ACCESS_RULES, "groups": groups}


def token_service_environment(args: TokenServiceArgs) -> dict[str, str]:
    """Every ``TOKEN_SERVICE_*`` variable config-cli exports (``VAULT_ADDR`` is config-cli's own, in the pod)."""
    names = args.names
    env = {
        contract.ENV_ISSUER: args.auth.issuer,
        contract.ENV_REGISTRY_SERVICE: args.auth.service,
        # The registry is given the JWKS (components/registry_config.py): tokens carry kid.
        contract.ENV_REGISTRY_TRUST: "jwks",
        contract.ENV_LISTEN_PORT: str(TOKEN_SERVICE_PORT),
        contract.ENV_OPS_PORT: str(TOKEN_SERVICE_OPS_PORT),
        contract.ENV_TRUSTED_PROXIES: TRUSTED_SIDECAR,
        contract.ENV_LOG_LEVEL: LOG_LEVELS[args.log_level],
        contract.ENV_ACCESS_RULES: json.dumps(access_rules(args), sort_keys=True, separators=(",", ":")),
        contract.ENV_VAULT_AUTH: "kubernetes",
        contract.ENV_VAULT_ROLE: vault_role(args),
        contract.ENV_VAULT_AUTH_PATH: args.vault_kubernetes_auth_path,
        contract.ENV_VAULT_JWT_FILE: f"{VAULT_TOKEN_DIRECTORY}/token",
        contract.ENV_VAULT_KV_MOUNT: args.vault_kv_mount,
        contract.ENV_VAULT_ROBOTS_PATH: names.vault_secret_path,
        contract.ENV_VAULT_SIGNING_PATH: names.token_signing_secret_path,
        contract.ENV_VAULT_TRUST_PATH: names.token_trust_secret_path,
    }
    if args.oidc is not None:
        env[contract.ENV_OIDC_ISSUER] = args.oidc.url
        env[contract.ENV_OIDC_AUDIENCE] = args.oidc.audience
    return env


def health_check(args: TokenServiceArgs) -> dict:
    """The check config-cli registers with the service instance: readiness on the ops port, which the mesh's
    inbound redirect leaves alone (the token port accepts only the sidecar's mTLS)."""
    return {
        "Name": f"{args.names.token_service} readiness",
        "Notes": "token service /readyz: 503 when Vault was not read within its staleness limit",
        "HTTP": f"http://{POD_IP_PLACEHOLDER}:{TOKEN_SERVICE_OPS_PORT}{contract.READY_PATH}",
        "Method": "GET",
        "Interval": "10s",
        "Timeout": "5s",
        "FailuresBeforeCritical": 3,
        "DeregisterCriticalServiceAfter": "10m",
    }


def kv_subkeys(args: TokenServiceArgs) -> dict[str, str]:
    """Every key under ``RegistryNames.token_service_config_kv_prefix``: the layout of the registry's own."""
    entries = {f"{ENV_FOLDER}{name}": value for name, value in token_service_environment(args).items()}
    entries[GENERATION_KEY] = str(args.credentials_generation)
    entries[CHECK_KEY] = json.dumps(health_check(args), sort_keys=True)
    return dict(sorted(entries.items()))


# --- Vault ---------------------------------------------------------------------------------------------------


def vault_read_paths(args: TokenServiceArgs) -> tuple[str, str, str]:
    """What token_service/vault.py reads: the robots' secret, the signing secret and the trust secret."""
    names = args.names
    return names.vault_secret_path, names.token_signing_secret_path, names.token_trust_secret_path


def vault_policy(args: TokenServiceArgs) -> str:
    """Read exactly those three secrets: no list, no metadata, no ``clients/`` passwords, no other stack."""
    return "".join(f'path "{args.vault_kv_mount}/data/{path}" {{\n  capabilities = ["read"]\n}}\n'
                   for path in vault_read_paths(args))


def kubernetes_auth_role(args: TokenServiceArgs) -> dict[str, Any]:
    """The Kubernetes auth role. The service re-reads Vault every 15 s for as long as it runs and logs in again
    when a read is refused, so a short token costs one login."""
    return vault_kubernetes_role(args.vault_kubernetes_auth_path, vault_role(args), args.names.token_service,
                                 args.namespace, args.vault_auth_audience, vault_role(args))


# --- Consul --------------------------------------------------------------------------------------------------


def service_intentions(args: TokenServiceArgs) -> dict:
    """The registry's own sources (its clients ask the token service first), every other service denied."""
    allowed = [{"Name": source, "Action": "allow", "Description": "named in consulIntentionSources"}
               for source in args.consul_intention_sources]
    return {"Sources": allowed + [{"Name": "*", "Action": "deny", "Description": "everything not listed"}]}


def acl_policy_rules(args: TokenServiceArgs) -> str:
    """Read its own KV prefix (the trailing slash keeps ``.../staging-old/`` out), register its own service."""
    names = args.names
    return (
        f'key_prefix "{names.token_service_kv_prefix}" {{\n  policy = "read"\n}}\n'
        f'service "{names.token_service}" {{\n  policy = "write"\n}}\n'
        f'service "{names.token_service_sidecar}" {{\n  policy = "write"\n}}\n'
    )


# --- Kubernetes ----------------------------------------------------------------------------------------------


def mesh_annotations(args: TokenServiceArgs) -> dict[str, str]:
    """Consul Connect as the registry's pods: the token port behind the sidecar, the ops port outside it."""
    return {
        "consul.hashicorp.com/connect-inject": "true",
        "consul.hashicorp.com/connect-service": args.names.token_service,
        "consul.hashicorp.com/connect-service-port": str(TOKEN_SERVICE_PORT),
        "consul.hashicorp.com/transparent-proxy": "true",
        "consul.hashicorp.com/transparent-proxy-overwrite-probes": "true",
        "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports": str(TOKEN_SERVICE_OPS_PORT),
        "consul.hashicorp.com/service-meta-environment": args.environment,
    }


def container(args: TokenServiceArgs) -> dict:
    def probe(path: str, **timing) -> dict:
        return {"httpGet": {"path": path, "port": "ops"}, **timing}

    return {
        "name": args.names.token_service,
        "image": args.image,
        "imagePullPolicy": image_pull_policy(args.image),
        "command": list(TOKEN_SERVICE_CONFIG_CLI_COMMAND),
        "env": config_cli_environment(args, args.names.token_service, service=args.names.token_service),
        "ports": [
            {"name": "http", "containerPort": TOKEN_SERVICE_PORT, "protocol": "TCP"},
            {"name": "ops", "containerPort": TOKEN_SERVICE_OPS_PORT, "protocol": "TCP"},
        ],
        # Ready while Vault was read within the staleness limit: a pod that would refuse every login leaves
        # the Service. Alive while the process answers at all: a Vault outage must not restart every pod.
        "readinessProbe": probe(contract.READY_PATH, periodSeconds=5, timeoutSeconds=3, failureThreshold=3),
        "livenessProbe": probe(contract.HEALTH_PATH, periodSeconds=20, timeoutSeconds=5, failureThreshold=3),
        "startupProbe": probe(contract.HEALTH_PATH, periodSeconds=2, failureThreshold=30),
        "resources": container_resources(args),
        "securityContext": container_security_context(args),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, VAULT_TOKEN_MOUNT],
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }


def deployment(args: TokenServiceArgs) -> dict:
    selector = args.names.token_service_selector_labels()
    spread = [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when, "labelSelector": {"matchLabels": selector}}
              for key, when in (("kubernetes.io/hostname", "DoNotSchedule"),
                                ("topology.kubernetes.io/zone", "ScheduleAnyway"))]
    return {
        "metadata": _metadata(args, args.names.token_service, TOKEN_SKIP_ANNOTATION),
        "spec": {
            "replicas": args.replicas,
            # Never below the budget during a rollout: one new pod first, then one old pod goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "minReadySeconds": 5,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": args.names.token_service_labels(), "annotations": mesh_annotations(args)},
                "spec": {
                    "serviceAccountName": args.names.token_service,
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": pod_security_context(args),
                    "containers": [container(args)],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, vault_token_volume(args)],
                    "topologySpreadConstraints": spread,
                },
            },
        },
    }


def service_account(args: TokenServiceArgs) -> dict:
    return {"metadata": _metadata(args, args.names.token_service), "automountServiceAccountToken": False}


def client_service(args: TokenServiceArgs) -> dict:
    """The token port only: health and metrics stay off the client path."""
    return {
        "metadata": _metadata(args, args.names.token_service),
        "spec": {"type": "ClusterIP", "selector": args.names.token_service_selector_labels(), "ports": [
            {"name": "http", "port": TOKEN_SERVICE_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}]},
    }


def metrics_labels(args: TokenServiceArgs) -> dict[str, str]:
    return {**args.names.token_service_labels(), COMPONENT_LABEL: METRICS_COMPONENT}


def metrics_service(args: TokenServiceArgs) -> dict:
    return {
        "metadata": object_metadata(args.names.token_service_metrics_service, args.namespace, metrics_labels(args)),
        "spec": {"clusterIP": "None", "selector": args.names.token_service_selector_labels(), "ports": [
            {"name": "ops", "port": TOKEN_SERVICE_OPS_PORT, "targetPort": "ops", "protocol": "TCP", "appProtocol": "http"}]},
    }


def pod_disruption_budget(args: TokenServiceArgs) -> dict:
    """minAvailable one less than the replicas: a drain evicts one pod at a time, and the rest keep issuing."""
    return {
        "metadata": _metadata(args, args.names.token_service),
        "spec": {"minAvailable": args.replicas - 1,
                 "selector": {"matchLabels": args.names.token_service_selector_labels()}},
    }


def ingress_source_ranges(args: TokenServiceArgs) -> list[str]:
    """Who may use the realm's Ingress: developers and the nodes' kubelets, as the registry's Ingress."""
    return [str(cidr) for cidr in (*args.developer_cidrs, *args.node_cidrs)]


def ingress(args: TokenServiceArgs) -> dict:
    """The token realm: ``https://<realm host>/token`` for developers and kubelets outside the mesh."""
    return {
        "metadata": _metadata(args, args.names.token_service, {
            "nginx.ingress.kubernetes.io/whitelist-source-range": ",".join(ingress_source_ranges(args)),
            "nginx.ingress.kubernetes.io/proxy-body-size": INGRESS_BODY_LIMIT,
            "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        }),
        "spec": {
            "ingressClassName": args.ingress_class_name,
            "tls": [{"hosts": [args.realm_host], "secretName": args.realm_tls_secret_name}],
            "rules": [{"host": args.realm_host, "http": {"paths": [{
                "path": contract.TOKEN_PATH,
                "pathType": "Exact",
                "backend": {"service": {"name": args.names.token_service, "port": {"number": TOKEN_SERVICE_PORT}}},
            }]}}],
        },
    }


def _policy(args: TokenServiceArgs, suffix: str, spec: dict) -> dict:
    return {
        "metadata": object_metadata(f"{args.names.token_service}-{suffix}", args.namespace,
                                    args.names.token_service_labels()),
        "spec": {"podSelector": {"matchLabels": args.names.token_service_selector_labels()}, **spec},
    }


def _egress_to_service(url: str, extra_ports: tuple[int, ...] = ()) -> dict:
    namespace, port = service_endpoint(url)
    if namespace is None:
        raise ValueError(f"{url} is not an in-cluster service address (<service>.<namespace>.svc)")
    return {"to": [_namespaces([namespace])], "ports": _tcp(port, *extra_ports)}


def oidc_egress(args: TokenServiceArgs) -> Optional[dict]:
    """The issuer's discovery document and JWKS: its namespace when in the cluster, else its CIDRs."""
    if args.oidc is None:
        return None
    namespace, port = service_endpoint(args.oidc.url)
    if namespace is not None:
        return {"to": [_namespaces([namespace])], "ports": _tcp(port)}
    if not args.oidc.cidrs:
        return None  # a loopback issuer (a test on this machine): nothing to open
    return {"to": [{"ipBlock": {"cidr": str(cidr)}} for cidr in args.oidc.cidrs], "ports": _tcp(port or HTTPS_PORT)}


def network_policies(args: TokenServiceArgs) -> list[dict]:
    """Default deny, then the registry's client paths, the ops port, and egress to what the service reads."""
    clients = set(args.ci_runner_namespaces) | {args.ingress_controller_namespace}
    ops_peers = [_namespaces([args.monitoring_namespace]),
                 *({"ipBlock": {"cidr": str(cidr)}} for cidr in args.node_cidrs)]
    egress = [dns_egress(), _egress_to_service(args.consul_http_addr, (CONSUL_GRPC_PORT,)),
              _egress_to_service(args.vault_addr)]
    issuer = oidc_egress(args)
    if issuer is not None:
        egress.append(issuer)
    return [
        _policy(args, "default-deny", {"policyTypes": ["Ingress", "Egress"]}),
        _policy(args, "allow-clients", {"policyTypes": ["Ingress"], "ingress": [
            {"from": [_namespaces(clients)], "ports": _tcp(TOKEN_SERVICE_PORT, MESH_INBOUND_PORT)}]}),
        # Prometheus, and the Consul agents on the nodes running the readiness check.
        _policy(args, "allow-ops", {"policyTypes": ["Ingress"], "ingress": [
            {"from": ops_peers, "ports": _tcp(TOKEN_SERVICE_OPS_PORT)}]}),
        _policy(args, "allow-egress", {"policyTypes": ["Egress"], "egress": egress}),
    ]


# --- monitoring ----------------------------------------------------------------------------------------------


def service_monitor(args: TokenServiceArgs) -> dict:
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": _metadata(args, args.names.token_service),
        "spec": {
            "selector": {"matchLabels": {**args.names.token_service_selector_labels(), COMPONENT_LABEL: METRICS_COMPONENT}},
            "namespaceSelector": {"matchNames": [args.namespace]},
            "endpoints": [{"port": "ops", "path": contract.METRICS_PATH, "scheme": "http", "interval": SCRAPE_INTERVAL,
                           "scrapeTimeout": "10s"}],
        },
    }


def _alert(args: TokenServiceArgs, name: str, expr: str, duration: Optional[str], severity: str, summary: str,
           description: str) -> dict:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration:
        rule["for"] = duration
    rule["labels"] = {"severity": severity, "namespace": args.namespace}
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": f"{args.runbook_base_url}#{github_anchor(name)}"}
    return rule


def alert_rules(args: TokenServiceArgs) -> dict:
    """One group per concern: availability, errors, logins."""
    ns = args.namespace
    scope = {"job": args.names.token_service_metrics_service, "namespace": ns}
    up = f"up{_selector(**scope)}"
    deployment_scope = _selector(namespace=ns, deployment=args.names.token_service)

    def rate(metric: str, window: str = "5m", **matchers: str) -> str:
        return f"sum(rate({metric}{_selector(**scope, **matchers)}[{window}]))"

    failures_now = rate(contract.METRIC_LOGIN_FAILURES)
    failures_before = f"(sum(rate({contract.METRIC_LOGIN_FAILURES}{_selector(**scope)}[1h] offset 1h)) or vector(0))"
    availability = [
        _alert(args, "TokenServiceDown", f"absent({up} == 1)", "5m", "critical",
               f"No token service instance in {ns} is up.",
               f"Prometheus has scraped no healthy token service pod of job {scope['job']} in namespace {ns} for "
               "5 minutes: no client can get a registry token, so every push and pull that needs one fails."),
        _alert(args, "TokenServiceReplicasUnavailable",
               f"kube_deployment_status_replicas_available{deployment_scope}\n<\n"
               f"kube_deployment_spec_replicas{deployment_scope}", "15m", "warning",
               "Token service replicas are unavailable.",
               "{{ $value }} of the token service's replicas in " + ns + " are available for 15 minutes: a node "
               "drain or one more failure leaves logins without redundancy."),
        _alert(args, "TokenServiceVaultUnreadable", f"min({contract.METRIC_VAULT_UP}{_selector(**scope)}) == 0",
               "5m", "critical", "A token service instance cannot read Vault.",
               f"A token service pod in {ns} has failed to read its Vault secrets for 5 minutes; past its staleness "
               "limit it refuses every login (fail closed) and leaves the Service."),
    ]
    if args.oidc is not None:
        availability.append(_alert(
            args, "TokenServiceOidcIssuerUnreachable", f"min({contract.METRIC_OIDC_UP}{_selector(**scope)}) == 0",
            "15m", "warning", "The token service cannot read the OIDC issuer's keys.",
            f"A token service pod in {ns} has not read the JWKS of {args.oidc.url} for 15 minutes: developer "
            "logins fail once its cached keys expire; robots are not affected."))
    http = [
        _alert(args, "TokenService5xxRatioHigh",
               f"{rate(contract.METRIC_REQUESTS, code='~5..')}\n/\n{rate(contract.METRIC_REQUESTS)}\n"
               f"> {ERROR_RATIO_THRESHOLD}", "10m", "critical",
               "The token service answers more than 5% of requests with a server error.",
               "{{ $value | humanizePercentage }} of the token service's requests in " + ns + " ended in a 5xx "
               "over the last 5 minutes, for 10 minutes (Vault or the OIDC issuer unusable: it fails closed)."),
    ]
    logins = [
        _alert(args, "TokenServiceLoginFailureSpike",
               f"{failures_now}\n> {LOGIN_FAILURE_SPIKE_FACTOR} * {failures_before}\n"
               f"and\n{failures_now} > {LOGIN_FAILURE_FLOOR_PER_SECOND}", "10m", "warning",
               "Refused logins at the token service spiked.",
               "The token service in " + ns + " refuses {{ $value | humanize }} logins per second, more than "
               f"{LOGIN_FAILURE_SPIKE_FACTOR} times the rate an hour earlier: broken credentials after a rotation, "
               "or someone guessing passwords."),
        _alert(args, "TokenServiceLockouts", f"{rate(contract.METRIC_RATE_LIMITED)} > 0", "10m", "warning",
               "The token service keeps locking identities or sources out.",
               "The token service in " + ns + " has answered 429 to repeated failed logins for 10 minutes "
               "({{ $value | humanize }} per second): a client retrying a wrong password, or a guessing attack."),
    ]
    return {"groups": [
        {"name": "token-service-availability", "rules": availability},
        {"name": "token-service-http", "rules": http},
        {"name": "token-service-logins", "rules": logins},
    ]}


def prometheus_rule(args: TokenServiceArgs) -> dict:
    return {"apiVersion": MONITORING_API_VERSION, "kind": "PrometheusRule",
            "metadata": _metadata(args, args.names.token_service), "spec": alert_rules(args)}


# --- component -----------------------------------------------------------------------------------------------


def _config_json(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


class TokenService(pulumi.ComponentResource):
    """The token service's Deployment and everything around it (see the module docstring).

    Providers come in through ``opts`` (``providers={"kubernetes": ..., "consul": ..., "vault": ...}``)."""

    deployment: k8s.apps.v1.Deployment
    ingress: k8s.networking.v1.Ingress
    key_prefix: consul.KeyPrefix
    vault_policy: vault.Policy
    auth_role: vault.kubernetes.AuthBackendRole
    realm: pulumi.Output[str]

    def __init__(self, name: str, args: TokenServiceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:token:TokenService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        names = args.names

        self.key_prefix = consul.KeyPrefix(f"{name}-kv", path_prefix=names.token_service_config_kv_prefix,
                                           subkeys=kv_subkeys(args), opts=child)
        consul.ConfigEntry(f"{name}-service-defaults", kind="service-defaults", name=names.token_service,
                           config_json=_config_json(service_defaults()), opts=child)
        consul.ConfigEntry(f"{name}-service-intentions", kind="service-intentions", name=names.token_service,
                           config_json=_config_json(service_intentions(args)), opts=child)
        acl_policy = consul.AclPolicy(
            f"{name}-acl-policy", name=vault_role(args), rules=acl_policy_rules(args),
            description=f"Registry token service ({args.environment}): read {names.token_service_kv_prefix}, "
                        "register its service", opts=child)
        acl_role = consul.AclRole(
            f"{name}-acl-role", name=vault_role(args), policies=[acl_policy.id],
            description=f"Service account {args.namespace}/{names.token_service} ({args.environment})", opts=child)
        consul.AclBindingRule(
            f"{name}-binding-rule", auth_method=args.consul_auth_method, bind_type="role", bind_name=acl_role.name,
            selector=binding_rule_selector(args.namespace, names.token_service),
            description=f"{args.namespace}/{names.token_service} logs in as role {vault_role(args)}", opts=child)

        self.vault_policy = vault.Policy(f"{name}-policy", name=vault_role(args), policy=vault_policy(args), opts=child)
        self.auth_role = vault.kubernetes.AuthBackendRole(
            f"{name}-auth-role", **{**kubernetes_auth_role(args), "token_policies": [self.vault_policy.name]},
            opts=child)

        account = service_account(args)
        k8s.core.v1.ServiceAccount(f"{name}-service-account", metadata=account["metadata"],
                                   automount_service_account_token=False, opts=child)
        for suffix, manifest in (("service", client_service(args)), ("metrics-service", metrics_service(args))):
            k8s.core.v1.Service(f"{name}-{suffix}", metadata=manifest["metadata"], spec=manifest["spec"], opts=child)
        workload = deployment(args)
        self.deployment = k8s.apps.v1.Deployment(f"{name}-deployment", metadata=workload["metadata"],
                                                 spec=workload["spec"], opts=child)
        budget = pod_disruption_budget(args)
        k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=budget["metadata"], spec=budget["spec"], opts=child)
        for policy in network_policies(args):
            short = policy["metadata"]["name"].removeprefix(f"{names.token_service}-")
            k8s.networking.v1.NetworkPolicy(f"{name}-{short}", metadata=policy["metadata"], spec=policy["spec"],
                                            opts=child)
        realm_ingress = ingress(args)
        self.ingress = k8s.networking.v1.Ingress(f"{name}-ingress", metadata=realm_ingress["metadata"],
                                                 spec=realm_ingress["spec"], opts=child)
        for suffix, manifest in (("service-monitor", service_monitor(args)), ("rules", prometheus_rule(args))):
            k8s.apiextensions.CustomResource(f"{name}-{suffix}", api_version=manifest["apiVersion"],
                                             kind=manifest["kind"], metadata=manifest["metadata"],
                                             spec=manifest["spec"], opts=child)

        self.realm = pulumi.Output.from_input(args.auth.realm)
        self.service_dns_name = pulumi.Output.from_input(f"{names.token_service}.{args.namespace}.svc.cluster.local")
        self.register_outputs({"realm": self.realm, "service_dns_name": self.service_dns_name})
