"""The registry workload: what runs, how it is probed, secured, spread and exposed."""

from __future__ import annotations

import json

import pytest

from components.workload import pod_spec, stateful_set
from tests.conftest import settings_for


def _statefulset(plan) -> dict:
    return plan.one("kubernetes:apps/v1:StatefulSet").plain_inputs


def _container(plan) -> dict:
    (container,) = _statefulset(plan)["spec"]["template"]["spec"]["containers"]
    return container


def test_container_runs_config_cli_from_the_stacks_image(stack_plan):
    container = _container(stack_plan)
    assert container["command"] == ["config-cli", "run", "docker-registry"]
    assert container["image"] == settings_for(stack_plan.stack).image
    assert "@sha256:" in container["image"]
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {("http", 5000), ("debug", 5001)}


def test_registry_settings_are_not_baked_into_the_pod(stack_plan):
    names = {variable["name"] for variable in _container(stack_plan)["env"]}
    assert not [name for name in names if name.startswith("REGISTRY_")]
    assert {"CONFIG_CLI_KV_PREFIX", "CONSUL_HTTP_ADDR", "VAULT_ADDR"} <= names


def test_readiness_uses_the_registry_port_and_liveness_survives_a_storage_outage(stack_plan):
    container = _container(stack_plan)
    # "/" on 5000 turns 503 when the storage health check fails (tests/test_registry_facts.py shows it):
    # right for readiness, wrong for liveness, which would restart every pod during an S3 outage.
    assert container["readinessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["port"] == "debug"
    assert liveness["path"] not in ("/", "/v2/", "/debug/health")


def test_pod_security_is_restricted(stack_plan):
    pod = _statefulset(stack_plan)["spec"]["template"]["spec"]
    container = _container(stack_plan)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] >= 10000
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["enableServiceLinks"] is False


def test_requests_and_limits_come_from_the_stack(plans):
    assert _container(plans["staging"])["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"},
    }
    assert _container(plans["prod"])["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "4", "memory": "2Gi"},
    }


def test_prod_replicas_spread_across_nodes_and_staging_needs_no_spread(plans):
    prod = _statefulset(plans["prod"])["spec"]
    assert prod["replicas"] == 3
    by_key = {c["topologyKey"]: c for c in prod["template"]["spec"]["topologySpreadConstraints"]}
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_key["kubernetes.io/hostname"]["labelSelector"]["matchLabels"] == prod["selector"]["matchLabels"]
    assert "topologySpreadConstraints" not in _statefulset(plans["staging"])["spec"]["template"]["spec"]


def test_rolling_update_has_a_canary_partition_and_sequential_pods(stack_plan):
    spec = _statefulset(stack_plan)["spec"]
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["podManagementPolicy"] == "OrderedReady"


def test_partition_setting_reaches_the_statefulset():
    settings = settings_for("prod", updatePartition="2")
    assert stateful_set(settings)["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 2


def test_grace_period_outlasts_the_pre_stop_wait_and_the_registry_drain(stack_plan):
    from components.registry_config import DRAIN_TIMEOUT_SECONDS

    grace = _statefulset(stack_plan)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = _container(stack_plan)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 1
    assert grace >= pre_stop + DRAIN_TIMEOUT_SECONDS + 10, "config-cli needs time to deregister before the drain"


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_disruption_budget_lets_single_replica_nodes_drain(stack_plan):
    budget = stack_plan.one("kubernetes:policy/v1:PodDisruptionBudget", "registry-pdb").plain_inputs["spec"]
    assert budget["maxUnavailable"] == 1
    pod_labels = _statefulset(stack_plan)["spec"]["template"]["metadata"]["labels"]
    assert _matches(budget["selector"]["matchLabels"], pod_labels)


def test_disruption_budget_never_selects_the_gc_jobs_pod(stack_plan):
    """Seen on a real kube-controller-manager: a PDB matching a Job's pod reports "jobs.batch does not implement
    the scale subresource" and allows 0 disruptions, so every drain stalls while a collection runs. The Job's
    pod must still be an endpoint of the client Service (it serves pulls during the window)."""
    budget = stack_plan.one("kubernetes:policy/v1:PodDisruptionBudget", "registry-pdb").plain_inputs["spec"]["selector"]["matchLabels"]
    cron_jobs = [r.plain_inputs for r in stack_plan.of_type("kubernetes:batch/v1:CronJob")]
    assert cron_jobs
    for cron_job in cron_jobs:
        labels = cron_job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert not _matches(budget, labels), cron_job["metadata"]["name"]
    service = next(r.plain_inputs for r in stack_plan.of_type("kubernetes:core/v1:Service")
                   if r.plain_inputs["metadata"]["name"] == "registry")
    gc_labels = next(c for c in cron_jobs if c["metadata"]["name"] == "registry-gc")[
        "spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert _matches(service["spec"]["selector"], gc_labels)


def test_mesh_sidecar_is_injected_and_the_debug_port_bypasses_it(stack_plan):
    annotations = _statefulset(stack_plan)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["consul.hashicorp.com/connect-inject"] == "true"
    assert annotations["consul.hashicorp.com/connect-service-port"] == "5000"
    assert annotations["consul.hashicorp.com/transparent-proxy"] == "true"
    assert annotations["consul.hashicorp.com/transparent-proxy-exclude-inbound-ports"] == "5001"


def test_client_and_headless_services_expose_only_the_registry_port(stack_plan):
    services = {r.plain_inputs["metadata"]["name"]: r.plain_inputs for r in stack_plan.of_type("kubernetes:core/v1:Service")}
    for name in ("registry", "registry-headless"):
        assert [port["port"] for port in services[name]["spec"]["ports"]] == [5000], name
    assert services["registry-headless"]["spec"]["clusterIP"] == "None"
    assert _statefulset(stack_plan)["spec"]["serviceName"] == "registry-headless"


def test_vault_token_is_projected_for_the_vault_audience(stack_plan):
    volumes = {v["name"]: v for v in _statefulset(stack_plan)["spec"]["template"]["spec"]["volumes"]}
    (source,) = volumes["vault-token"]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "vault"
    assert source["serviceAccountToken"]["expirationSeconds"] <= 3600


@pytest.mark.parametrize("replicas,spread", [(1, False), (2, True)])
def test_spread_constraints_follow_the_replica_count(replicas, spread):
    settings = settings_for("prod", replicas=str(replicas))
    assert ("topologySpreadConstraints" in pod_spec(settings)) is spread


def test_manifests_carry_no_secret_material(stack_plan):
    for registration in stack_plan.of_type("kubernetes:apps/v1:StatefulSet"):
        text = json.dumps(registration.plain_inputs)
        assert "password" not in text.lower()
        assert "secretKeyRef" not in text


def _pod_templates(plan) -> dict[str, dict]:
    templates = {"statefulset/registry": _statefulset(plan)["spec"]["template"]}
    for cron_job in plan.of_type("kubernetes:batch/v1:CronJob"):
        inputs = cron_job.plain_inputs
        templates[f"cronjob/{inputs['metadata']['name']}"] = inputs["spec"]["jobTemplate"]["spec"]["template"]
    return templates


def test_no_pod_of_the_registry_needs_the_registry_to_start(stack_plan):
    """A cold start, a node loss or a disaster recovery must not wait for the registry itself: every image is
    pinned by digest (a node that has it never asks again) and comes from a registry this stack does not serve."""
    settings = settings_for(stack_plan.stack)
    served = {f"registry.{settings.namespace}.svc", f"registry.{settings.namespace}.svc.cluster.local"}
    if settings.ingress_host:
        served.add(settings.ingress_host)
    containers = [(where, c) for where, template in _pod_templates(stack_plan).items()
                  for c in [*template["spec"].get("initContainers", []), *template["spec"]["containers"]]]
    assert len(containers) >= 3  # the registry; the GC Job and its tools init container (+ snapshots in staging)
    for where, container in containers:
        image = container["image"]
        assert "@sha256:" in image, f"{where}/{container['name']}: {image}"
        assert container["imagePullPolicy"] == "IfNotPresent", f"{where}/{container['name']}"
        assert image.split("/", 1)[0].split(":")[0] not in served, f"{where}/{container['name']} pulls from itself"
