"""The rendered manifests validate against the Kubernetes schemas and pass checkov, both offline."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import STACKS
from offline_plan.render import write_plan

# The cluster's Kubernetes minor version: the schemas the manifests must satisfy.
KUBERNETES_VERSION = "1.35"
# Custom resources have no schema in kubernetes-validate; tests/test_alerting.py checks their content, and the real
# API server judges them against their CRDs (tests/test_peer_kubernetes.py).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "VolumeSnapshot", "ExternalSecret", "ClusterSecretStore"}
CHECKOV = Path(os.environ.get("CHECKOV", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                              / "registry-iac" / "checkov" / "bin" / "checkov"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, plans) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("build")
    return {stack: write_plan(plan, out) / "kubernetes" for stack, plan in plans.items()}


def _manifests(directory: Path) -> list[tuple[Path, dict]]:
    return [(path, yaml.safe_load(path.read_text())) for path in sorted(directory.glob("*.yaml"))]


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_validate_against_the_kubernetes_schemas(rendered, stack):
    checked = 0
    for path, manifest in _manifests(rendered[stack]):
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 8


def test_schema_validation_can_fail(rendered):
    path, manifest = next((p, m) for p, m in _manifests(rendered["staging"]) if m["kind"] == "StatefulSet")
    manifest["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def _checkov(directory: Path) -> dict:
    if not CHECKOV.exists():
        pytest.fail(f"checkov not found at {CHECKOV}: run scripts/setup.sh test (or set CHECKOV)")
    result = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "--skip-download", "-o", "json", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=directory,
    )
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_no_failed_kubernetes_check_and_every_skip_is_justified(rendered, stack):
    report = _checkov(rendered[stack])
    summary = report.get("summary", {})
    failed = report.get("results", {}).get("failed_checks", []) if "results" in report else []

    assert summary.get("failed", 0) == 0, [(c["check_id"], c["resource"]) for c in failed]
    assert summary.get("passed", 0) > 50
    for skipped in report.get("results", {}).get("skipped_checks", []):
        assert skipped.get("suppress_comment"), f"{skipped['check_id']} skipped without a reason"


def test_checkov_fails_a_root_container(rendered, tmp_path):
    path, manifest = next((p, m) for p, m in _manifests(rendered["staging"]) if m["kind"] == "StatefulSet")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"].update({"runAsNonRoot": False, "runAsUser": 0})
    manifest["spec"]["template"]["spec"]["securityContext"].update({"runAsNonRoot": False, "runAsUser": 0})
    (tmp_path / path.name).write_text(yaml.safe_dump(manifest))

    assert _checkov(tmp_path)["summary"]["failed"] > 0
