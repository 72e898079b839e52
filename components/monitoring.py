"""Metrics scraping and alerting: the metrics Service, the ServiceMonitor and the PrometheusRule.

The registry serves Prometheus metrics on its debug port, which must never be reachable through the
client Service; a separate headless ``registry-metrics`` Service exposes only that port, and the
ServiceMonitor selects it alone. ``alert_rules()`` computes the PrometheusRule spec as plain data
(the same document ``promtool check rules`` reads); ``RegistryMonitoring`` registers the three objects.

The rules read the registry's own metrics and a few from exporters every cluster of ours runs; those
are declared in ``EXTERNAL_METRICS`` with where each one is documented, so a misspelt metric name
(a rule that silently never fires) fails a test instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from .names import COMPONENT_LABEL, DEBUG_PORT, GC_NAME, WORKLOAD_NAME, data_claim_name
from .settings import FilesystemStorage, MinioStorage, S3Storage, Settings
from .workload import common_labels, selector_labels

MONITORING_API_VERSION = "monitoring.coreos.com/v1"
METRICS_SERVICE_NAME = f"{WORKLOAD_NAME}-metrics"
METRICS_PATH = "/metrics"
METRICS_COMPONENT = "metrics"
# The Prometheus Operator names the job after the Service unless the ServiceMonitor sets jobLabel.
SCRAPE_JOB = METRICS_SERVICE_NAME
SCRAPE_INTERVAL = "30s"

# The garbage-collection CronJob (components/operations.py): its Jobs are found through kube_job_owner.
GC_CRONJOB_NAME = GC_NAME

ERROR_RATIO_THRESHOLD = 0.05
STORAGE_FULL_THRESHOLD = 0.80
# Every unauthenticated request gets a 401 challenge, so the 401 rate is never zero: a spike is a
# multiple of the rate an hour earlier, and only above a floor that ordinary logins stay under.
AUTH_FAILURE_SPIKE_FACTOR = 3
AUTH_FAILURE_FLOOR_PER_SECOND = 1
GC_STALE_SECONDS = 26 * 3600

# Metrics the rules read that the registry does not serve, and where each is documented.
EXTERNAL_METRICS = {
    "up": "Prometheus, one per scrape target (prometheus.io/docs/concepts/jobs_instances)",
    "kubelet_volume_stats_used_bytes": "kubelet volume stats (kubernetes.io/docs/reference/instrumentation/metrics)",
    "kubelet_volume_stats_capacity_bytes": "kubelet volume stats (kubernetes.io/docs/reference/instrumentation/metrics)",
    "kube_job_failed": "kube-state-metrics (docs/metrics/workload/job-metrics.md)",
    "kube_job_owner": "kube-state-metrics (docs/metrics/workload/job-metrics.md)",
    "kube_cronjob_created": "kube-state-metrics (docs/metrics/workload/cronjob-metrics.md)",
    "kube_cronjob_status_last_successful_time": "kube-state-metrics (docs/metrics/workload/cronjob-metrics.md)",
    "aws_s3_bucket_size_bytes_average": "prometheus/cloudwatch_exporter, AWS/S3 BucketSizeBytes, statistic Average",
    "minio_bucket_usage_total_bytes": "MinIO cluster metrics v2 (docs/metrics/prometheus/list.md)",
}


# --- scraping ---------------------------------------------------------------------------------


def metrics_labels(settings: Settings) -> dict[str, str]:
    """The metrics Service's labels; the component label sets it apart from the client Services."""
    return {**common_labels(settings), COMPONENT_LABEL: METRICS_COMPONENT}


def metrics_service(settings: Settings) -> dict:
    """Headless: Prometheus scrapes each pod through the endpoints, so no virtual IP is needed."""
    return {
        "metadata": {"name": METRICS_SERVICE_NAME, "namespace": settings.namespace, "labels": metrics_labels(settings)},
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(settings),
            "ports": [{"name": "debug", "port": DEBUG_PORT, "targetPort": "debug", "protocol": "TCP", "appProtocol": "http"}],
        },
    }


def service_monitor(settings: Settings) -> dict:
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": {"name": WORKLOAD_NAME, "namespace": settings.namespace, "labels": common_labels(settings)},
        "spec": {
            "selector": {"matchLabels": {**selector_labels(settings), COMPONENT_LABEL: METRICS_COMPONENT}},
            "namespaceSelector": {"matchNames": [settings.namespace]},
            "endpoints": [
                {"port": "debug", "path": METRICS_PATH, "scheme": "http", "interval": SCRAPE_INTERVAL, "scrapeTimeout": "10s"}
            ],
        },
    }


# --- alerting ---------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The fragment GitHub (and GitLab) give a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_url(settings: Settings, alert: str) -> str:
    return f"{settings.runbook_base_url}#{github_anchor(alert)}"


def _selector(**matchers: str) -> str:
    """``{a="x",b=~"y"}``: a value starting with ``~`` is a regular-expression match."""
    parts = []
    for label, value in matchers.items():
        operator, value = ("=~", value[1:]) if value.startswith("~") else ("=", value)
        parts.append(f'{label}{operator}"{value}"')
    return "{" + ",".join(parts) + "}"


def _alert(
    settings: Settings, name: str, expr: str, duration: Optional[str], severity: str, summary: str, description: str
) -> dict:
    rule = {"alert": name, "expr": expr}
    if duration:
        rule["for"] = duration
    rule["labels"] = {"severity": severity, "namespace": settings.namespace}
    rule["annotations"] = {"summary": summary, "description": description, "runbook_url": runbook_url(settings, name)}
    return rule


def _availability_rules(settings: Settings) -> list[dict]:
    up = f"up{_selector(job=SCRAPE_JOB, namespace=settings.namespace)}"
    rules = [
        _alert(
            settings, "RegistryDown",
            # absent(... == 1) also fires when there is no target at all (no pods, or no scraping).
            f"absent({up} == 1)",
            "5m", "critical",
            f"No registry instance in {settings.namespace} is up.",
            f"Prometheus has scraped no healthy registry pod of job {SCRAPE_JOB} in namespace {settings.namespace} "
            "for 5 minutes: image pushes and pulls from CI and the clusters are failing.",
        )
    ]
    if settings.replicas > 1:
        rules.append(_alert(
            settings, "RegistryInstanceDown",
            f"{up} == 0",
            "10m", "warning",
            "A registry instance is down.",
            "Registry pod {{ $labels.pod }} has not answered its metrics scrape for 10 minutes; "
            "the other replicas keep serving.",
        ))
    return rules


def _http_rules(settings: Settings) -> list[dict]:
    requests = "registry_http_requests_total"
    scope = {"job": SCRAPE_JOB, "namespace": settings.namespace}
    server_errors = f"sum(rate({requests}{_selector(**scope, code='~5..')}[5m]))"
    all_requests = f"sum(rate({requests}{_selector(**scope)}[5m]))"
    challenges_now = f"sum(rate({requests}{_selector(**scope, code='401')}[5m]))"
    # The hour before last; "or vector(0)" lets a new deployment with no history still alert above the floor.
    challenges_before = f"(sum(rate({requests}{_selector(**scope, code='401')}[1h] offset 1h)) or vector(0))"
    return [
        _alert(
            settings, "Registry5xxRatioHigh",
            f"{server_errors}\n/\n{all_requests}\n> {ERROR_RATIO_THRESHOLD}",
            "10m", "critical",
            "The registry answers more than 5% of requests with a server error.",
            "{{ $value | humanizePercentage }} of the registry's requests in "
            f"{settings.namespace} ended in a 5xx over the last 5 minutes, for 10 minutes.",
        ),
        _alert(
            settings, "RegistryAuthFailureSpike",
            f"{challenges_now}\n> {AUTH_FAILURE_SPIKE_FACTOR} * {challenges_before}\n"
            f"and\n{challenges_now} > {AUTH_FAILURE_FLOOR_PER_SECOND}",
            "10m", "warning",
            "Authentication failures at the registry spiked.",
            "The registry in " + settings.namespace + " answers {{ $value | humanize }} requests per second with 401, "
            f"more than {AUTH_FAILURE_SPIKE_FACTOR} times the rate an hour earlier: broken CI credentials after a "
            "rotation, or someone guessing passwords.",
        ),
    ]


def _storage_usage(settings: Settings) -> tuple[str, str]:
    """(PromQL ratio of used storage, what it measures) for the stack's storage mode."""
    storage = settings.storage
    if isinstance(storage, FilesystemStorage):
        # The StatefulSet's claim of its only pod: <template name>-<set name>-<ordinal>.
        claim = _selector(namespace=settings.namespace, persistentvolumeclaim=data_claim_name())
        return (
            f"kubelet_volume_stats_used_bytes{claim}\n/\nkubelet_volume_stats_capacity_bytes{claim}",
            f"volume {data_claim_name()}",
        )
    budget = settings.s3_storage_budget_bytes
    if isinstance(storage, S3Storage):
        # S3 reports bucket size once a day; the last value of the day is the current size.
        size = f"sum(last_over_time(aws_s3_bucket_size_bytes_average{_selector(bucket_name=storage.bucket)}[1d]))"
    else:
        assert isinstance(storage, MinioStorage)
        # Every MinIO node reports the same cluster-wide bucket usage.
        size = f"max(minio_bucket_usage_total_bytes{_selector(bucket=storage.bucket)})"
    return f"{size}\n/\n{budget}", f"bucket {storage.bucket} against its budget of {budget} bytes"


def _storage_rules(settings: Settings) -> list[dict]:
    usage, measured = _storage_usage(settings)
    return [
        _alert(
            settings, "RegistryStorageAlmostFull",
            f"{usage}\n> {STORAGE_FULL_THRESHOLD}",
            "15m", "warning",
            "Registry storage is more than 80% full.",
            f"The registry's storage ({measured}) is " "{{ $value | humanizePercentage }} full.",
        )
    ]


def _garbage_collection_rules(settings: Settings) -> list[dict]:
    namespace = settings.namespace
    gc_jobs = _selector(namespace=namespace, owner_kind="CronJob", owner_name=GC_CRONJOB_NAME)
    cronjob = _selector(namespace=namespace, cronjob=GC_CRONJOB_NAME)
    return [
        _alert(
            settings, "RegistryGarbageCollectionFailed",
            f"sum by (namespace, job_name) (kube_job_failed{_selector(namespace=namespace, condition='true')})\n"
            f"* on (namespace, job_name) group_left (owner_name)\n"
            f"max by (namespace, job_name, owner_name) (kube_job_owner{gc_jobs})\n> 0",
            None, "warning",
            "A registry garbage-collection Job failed.",
            "Job {{ $labels.job_name }} of CronJob " f"{GC_CRONJOB_NAME} in {namespace} failed; unreferenced layers "
            "stay on storage until a run succeeds.",
        ),
        _alert(
            settings, "RegistryGarbageCollectionStale",
            f"time() - max by (namespace, cronjob) (kube_cronjob_status_last_successful_time{cronjob}) > {GC_STALE_SECONDS}\n"
            "or\n"
            f"(\n  time() - max by (namespace, cronjob) (kube_cronjob_created{cronjob}) > {GC_STALE_SECONDS}\n"
            f"  unless on (namespace, cronjob) kube_cronjob_status_last_successful_time{cronjob}\n)",
            None, "warning",
            "Registry garbage collection has not succeeded for more than 26 hours.",
            f"CronJob {GC_CRONJOB_NAME} in {namespace} last succeeded " "{{ $value | humanizeDuration }} ago "
            "(or never, since its creation); storage keeps growing with unreferenced layers.",
        ),
    ]


def alert_rules(settings: Settings) -> dict:
    """The PrometheusRule spec: one group per concern."""
    return {
        "groups": [
            {"name": "registry-availability", "rules": _availability_rules(settings)},
            {"name": "registry-http", "rules": _http_rules(settings)},
            {"name": "registry-storage", "rules": _storage_rules(settings)},
            {"name": "registry-garbage-collection", "rules": _garbage_collection_rules(settings)},
        ]
    }


def prometheus_rule(settings: Settings) -> dict:
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "PrometheusRule",
        "metadata": {"name": WORKLOAD_NAME, "namespace": settings.namespace, "labels": common_labels(settings)},
        "spec": alert_rules(settings),
    }


# --- component --------------------------------------------------------------------------------


@dataclass
class RegistryMonitoringArgs:
    settings: Settings


class RegistryMonitoring(pulumi.ComponentResource):
    """The registry's metrics Service, its ServiceMonitor and its alert rules (Prometheus Operator)."""

    def __init__(self, name: str, args: RegistryMonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:monitoring:RegistryMonitoring", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        service = metrics_service(settings)
        k8s.core.v1.Service(f"{name}-metrics-service", metadata=service["metadata"], spec=service["spec"], opts=child)
        for suffix, manifest in (("service-monitor", service_monitor(settings)), ("rules", prometheus_rule(settings))):
            k8s.apiextensions.CustomResource(
                f"{name}-{suffix}",
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                metadata=manifest["metadata"],
                spec=manifest["spec"],
                opts=child,
            )

        self.metrics_service_name = pulumi.Output.from_input(METRICS_SERVICE_NAME)
        self.register_outputs({"metrics_service_name": self.metrics_service_name})
