"""Scraping and alerting: the plan's ServiceMonitor and metrics Service, and its alert rules run through
promtool and checked against the metrics a real registry (Distribution v3.1.1) serves after real traffic."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from components import monitoring
from components.names import DEBUG_PORT, HTTP_PORT, TOKEN_SERVICE_NAME
from components.settings import SettingsError
from offline_plan.render import plain_numbers
from tests.alerting import cases as alert_cases
from tests.alerting.promql import exposition_series, metric_names, selector_labels
from tests.conftest import settings_for
from tests.support.oci import OciClient, make_image
from tests.support.registry_server import start_registry, write_htpasswd

pytest_plugins = ["tests.support.fixtures"]

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RUNBOOKS = Path(__file__).parent.parent / "docs" / "runbooks.md"
SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
PROMETHEUS_RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
SERVICE = "kubernetes:core/v1:Service"
# Labels Prometheus and the Prometheus Operator attach to every scraped series: not the registry's own.
TARGET_LABELS = {"job", "namespace", "instance", "pod", "service", "endpoint", "container"}


def rules_from_plan(plan) -> dict:
    return plain_numbers(plan.one(PROMETHEUS_RULE, "registry-monitoring-rules").plain_inputs["spec"])


def alerts(rules: dict) -> list[dict]:
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def unknown_metrics(rules: dict, served: set[str]) -> dict[str, set[str]]:
    """Alert -> metric names that neither the registry serves nor an external exporter is declared for."""
    unknown = {}
    for rule in alerts(rules):
        missing = metric_names(rule["expr"]) - served - set(monitoring.EXTERNAL_METRICS)
        if missing:
            unknown[rule["alert"]] = missing
    return unknown


# --- the real registry's /metrics ---------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_metrics(registry_binary, tmp_path_factory) -> dict[str, set[str]]:
    """Series names (and their label names) on the debug port of a real registry after pushes, misses and 401s."""
    workdir = tmp_path_factory.mktemp("metrics-registry")
    htpasswd = write_htpasswd(workdir / "htpasswd", {"ci": "ci-password"}, rounds=4)
    registry = start_registry(registry_binary, {
        "REGISTRY_STORAGE": "filesystem",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(workdir / "data"),
        "REGISTRY_HTTP_SECRET": "metrics-test-secret",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
        "REGISTRY_HTTP_DRAINTIMEOUT": "5s",
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "Registry",
        "REGISTRY_AUTH_HTPASSWD_PATH": str(htpasswd),
        "OTEL_TRACES_EXPORTER": "none",
    }, workdir)
    try:
        assert requests.get(registry.base_url + "/v2/", timeout=10).status_code == 401
        client = OciClient(registry.base_url, "ci", "ci-password")
        assert client.ping().status_code == 200
        client.request("GET", "/v2/team/app/manifests/missing", expect=(404,))
        client.push_image("team/app", make_image(os.urandom(4096)), tag="v1")
        page = requests.get(registry.debug_url + monitoring.METRICS_PATH, timeout=10)
        assert page.status_code == 200
        return exposition_series(page.text)
    finally:
        assert registry.stop() == 0, registry.log_tail(20)


def test_real_registry_serves_request_metrics_with_status_codes(registry_metrics):
    # The fixture's traffic itself: a 401 challenge, a 404, and a push.
    assert {"code", "handler", "method"} <= registry_metrics["registry_http_requests_total"]
    assert "registry_http_request_duration_seconds_bucket" in registry_metrics


def test_every_metric_in_the_rules_is_served_by_the_registry_or_a_declared_exporter(plans, registry_metrics):
    for stack, plan in plans.items():
        assert unknown_metrics(rules_from_plan(plan), set(registry_metrics)) == {}, stack


def test_a_misspelt_metric_fails_the_check(prod_plan, registry_metrics):
    rules = rules_from_plan(prod_plan)
    for rule in alerts(rules):
        rule["expr"] = rule["expr"].replace("registry_http_requests_total", "registry_http_request_total")
        rule["expr"] = rule["expr"].replace("kube_job_owner", "kube_job_owners")
    unknown = unknown_metrics(rules, set(registry_metrics))
    assert unknown == {
        "Registry5xxRatioHigh": {"registry_http_request_total"},
        "RegistryAuthFailureSpike": {"registry_http_request_total"},
        "RegistryGarbageCollectionFailed": {"kube_job_owners"},
    }


def test_registry_metric_selectors_use_labels_the_registry_serves(plans, registry_metrics):
    for stack, plan in plans.items():
        for rule in alerts(rules_from_plan(plan)):
            for metric, labels in selector_labels(rule["expr"]).items():
                if metric in registry_metrics:
                    assert labels - TARGET_LABELS <= registry_metrics[metric], (stack, rule["alert"], metric)


def test_metric_names_are_found_past_functions_keywords_and_label_names():
    expr = (
        'sum by (namespace, code) (rate(a_total{code=~"5..", x="y}"}[5m] offset 1h)) / on (namespace) '
        'group_left (owner) max without (le) (b_bucket) > bool 0.05 and absent(up == 1) or vector(1e3) '
        "unless time() - c:recorded:ratio > inf"
    )
    assert metric_names(expr) == {"a_total", "b_bucket", "up", "c:recorded:ratio"}
    assert selector_labels(expr) == {"a_total": {"code", "x"}}


# --- promtool on the rules the plan registers --------------------------------------------------


@pytest.fixture
def rules_dir(stack_plan, tmp_path) -> Path:
    """The stack's rules as a rule file, with the promtool unit tests that apply to the stack beside it."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules_from_plan(stack_plan), sort_keys=False))
    alert_cases.render(settings_for(stack_plan.stack), tmp_path)
    return tmp_path


def test_planned_rules_pass_promtool_check(rules_dir):
    result = promtool("check", "rules", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_planned_rules_pass_their_promtool_unit_tests(rules_dir, stack_plan):
    result = promtool("test", "rules", *alert_cases.test_files(settings_for(stack_plan.stack)), cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test(stack_plan, tmp_path):
    firing, silent = set(), set()
    for name in alert_cases.render(settings_for(stack_plan.stack), tmp_path):
        for case in yaml.safe_load((tmp_path / name).read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    firing.add(check["alertname"])
                elif case["input_series"]:
                    silent.add(check["alertname"])
    names = {rule["alert"] for rule in alerts(rules_from_plan(stack_plan))}
    assert names - firing == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent on present series"


def test_minio_storage_alert_reads_minio_bucket_usage_and_passes_promtool(tmp_path):
    settings = settings_for(
        "staging", storageMode="minio", s3Bucket="registry-staging", minioEndpoint="https://minio.storage.svc:9000",
        s3StorageBudget="2Ti", minioAccessKey="test-access-key", minioSecretKey="test-secret-key",
        storageClass=None, snapshotClass=None,
    )
    rules = monitoring.alert_rules(settings)
    storage = next(rule for rule in alerts(rules) if rule["alert"] == "RegistryStorageAlmostFull")
    assert metric_names(storage["expr"]) == {"minio_bucket_usage_total_bytes"}
    assert 'bucket="registry-staging"' in storage["expr"] and str(2 << 40) in storage["expr"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- runbooks ------------------------------------------------------------------------------------


def test_alerts_carry_severity_summary_description_and_runbook(stack_plan):
    for rule in alerts(rules_from_plan(stack_plan)):
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, rule["alert"]


def test_every_runbook_url_points_at_a_runbook_heading(stack_plan):
    headings = re.findall(r"^## (.+?)\s*$", RUNBOOKS.read_text(), re.M)
    anchors = {monitoring.github_anchor(heading) for heading in headings}
    base = settings_for(stack_plan.stack).runbook_base_url
    # The URL names the document these headings are read from.
    assert base.endswith("/blob/main/" + RUNBOOKS.relative_to(RUNBOOKS.parents[1]).as_posix()), base
    for rule in alerts(rules_from_plan(stack_plan)):
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(base + "#"), url
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no '## {rule['alert']}' in {RUNBOOKS.name}"


def test_github_anchor_matches_githubs_heading_ids():
    assert monitoring.github_anchor("RegistryDown") == "registrydown"
    assert monitoring.github_anchor("Registry5xxRatioHigh") == "registry5xxratiohigh"
    assert monitoring.github_anchor("Garbage collection: the S3 case") == "garbage-collection-the-s3-case"
    assert monitoring.github_anchor("read_only mode") == "read_only-mode"


# --- what the plan registers ---------------------------------------------------------------------


def _services(plan) -> dict[str, dict]:
    services = {}
    for registration in plan.of_type(SERVICE):
        inputs = plain_numbers(registration.plain_inputs)
        services[inputs["metadata"]["name"]] = inputs
    return services


def test_plan_has_a_metrics_service_exposing_only_the_debug_port(stack_plan):
    metrics = _services(stack_plan)[monitoring.METRICS_SERVICE_NAME]
    assert [(port["name"], port["port"]) for port in metrics["spec"]["ports"]] == [("debug", DEBUG_PORT)]
    workload = stack_plan.one("kubernetes:apps/v1:StatefulSet").plain_inputs["spec"]
    assert metrics["spec"]["selector"] == workload["selector"]["matchLabels"]


def test_client_services_never_carry_the_debug_port(stack_plan):
    for name, service in _services(stack_plan).items():
        # The token service's two Services are its own ports (tests/test_token_service_deploy.py).
        if name != monitoring.METRICS_SERVICE_NAME and not name.startswith(TOKEN_SERVICE_NAME):
            assert [port["port"] for port in service["spec"]["ports"]] == [HTTP_PORT], name


def test_service_monitor_scrapes_metrics_from_the_metrics_service_alone(stack_plan):
    monitor = plain_numbers(stack_plan.one(SERVICE_MONITOR, "registry-monitoring-service-monitor").plain_inputs)
    assert monitor["metadata"]["namespace"] == settings_for(stack_plan.stack).namespace
    assert monitor["spec"]["endpoints"] == [
        {"port": "debug", "path": "/metrics", "scheme": "http", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        name for name, service in _services(stack_plan).items()
        if wanted.items() <= service["metadata"]["labels"].items()
    ]
    assert selected == [monitoring.METRICS_SERVICE_NAME]


def test_plan_registers_the_alert_rules_under_the_monitoring_component(stack_plan):
    rule = stack_plan.one(PROMETHEUS_RULE, "registry-monitoring-rules")
    component = stack_plan.one("registry:monitoring:RegistryMonitoring")
    assert rule.parent == component.urn
    assert stack_plan.one(SERVICE_MONITOR, "registry-monitoring-service-monitor").parent == component.urn
    settings = settings_for(stack_plan.stack)
    assert rules_from_plan(stack_plan) == monitoring.alert_rules(settings)


# --- settings ------------------------------------------------------------------------------------


def test_bucket_storage_requires_a_budget():
    with pytest.raises(SettingsError) as error:
        settings_for("prod", s3StorageBudget=None)
    assert error.value.key == "registry:s3StorageBudget"
    assert settings_for("prod").s3_storage_budget_bytes == 20 << 40
    assert settings_for("staging").s3_storage_budget_bytes is None


@pytest.mark.parametrize("budget", ["20TB", "0Gi", "2048Ti", "lots"])
def test_bucket_budget_rejects_bad_sizes(budget):
    with pytest.raises(SettingsError) as error:
        settings_for("prod", s3StorageBudget=budget)
    assert error.value.key == "registry:s3StorageBudget" and error.value.value == budget


@pytest.mark.parametrize("url", ["http://git.example.com/readme", "https://git.example.com/README.md#runbooks", "git.example.com"])
def test_runbook_base_url_must_be_https_without_fragment(url):
    with pytest.raises(SettingsError) as error:
        settings_for("staging", runbookBaseUrl=url)
    assert error.value.key == "registry:runbookBaseUrl"
