"""The offline plan: the real program under the mock runtime, recorded, printed and written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from offline_plan import record_plan
from tests.conftest import STACKS
from offline_plan.render import display_type

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_plan_command_prints_every_stack_and_writes_their_manifests(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "offline_plan", "--out", str(tmp_path)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for stack in STACKS:
        assert f"Offline plan of stack registry/{stack}" in result.stdout
        assert f"{stack}: policies: 0 mandatory violations" in result.stdout
        manifests = list((tmp_path / stack / "kubernetes").glob("*.yaml"))
        assert any(yaml.safe_load(m.read_text())["kind"] == "StatefulSet" for m in manifests)
        document = json.loads((tmp_path / stack / "plan.json").read_text())
        assert document["stack"] == stack and document["resources"]
    assert list((tmp_path / "prod" / "resources").glob("aws_s3_Bucket-*.json"))
    assert not list((tmp_path / "staging" / "resources").glob("aws_*.json"))
    assert "aws:s3:BucketVersioning" in result.stdout
    assert "protect" in result.stdout


def test_recorder_keeps_parent_protect_and_dependencies(prod_plan):
    component = prod_plan.one("registry:storage:S3BucketStorage")
    bucket = prod_plan.one("aws:s3/bucket:Bucket", "registry-storage-bucket")
    policy = prod_plan.one("aws:s3/bucketPolicy:BucketPolicy", "registry-storage-tls-only")

    assert bucket.parent == component.urn
    assert bucket.protect is True
    assert bucket.urn in policy.dependencies
    assert prod_plan.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "registry-storage-public-access").urn in policy.dependencies


def test_secure_config_values_are_secrets_with_unknown_plaintext(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: probe\nruntime: python\n")
    (project / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": {"probe:token": {"secure": "v1:AAAA"}}}))
    (project / "__main__.py").write_text(
        "import pulumi\npulumi.export('token', pulumi.Config().require_secret('token'))\n"
    )
    plan = record_plan("dev", project_dir=project)

    assert plan.error is None
    value, secret = plan.outputs["token"]
    assert secret is True
    assert "v1:AAAA" not in json.dumps(value)
    assert plan.secret_config_keys == ("probe:token",)


def test_a_duplicate_resource_is_an_error_as_in_the_engine(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: probe\nruntime: python\n")
    (project / "Pulumi.dev.yaml").write_text("config: {}\n")
    (project / "__main__.py").write_text(
        "import pulumi_kubernetes as k8s\n"
        "for _ in range(2):\n"
        "    k8s.core.v1.ConfigMap('same', metadata={'name': 'same'})\n"
    )
    plan = record_plan("dev", project_dir=project)
    assert plan.error and "duplicate resource URN" in plan.error


def test_display_type_shortens_like_the_cli():
    assert display_type("aws:s3/bucketPolicy:BucketPolicy") == "aws:s3:BucketPolicy"
    assert display_type("kubernetes:apps/v1:StatefulSet") == "kubernetes:apps/v1:StatefulSet"


def test_the_settings_table_is_the_one_generated_from_pulumi_yaml():
    from offline_plan.settings_table import SETTINGS_DOCUMENT, settings_table

    assert settings_table() in SETTINGS_DOCUMENT.read_text(), (
        "docs/settings.md's settings table is stale: run `python -m offline_plan.settings_table --write`"
    )


def test_a_first_preview_leaves_only_provider_computed_values_unknown_and_violates_no_policy(policy_analyzer):
    from pulumi.runtime import rpc

    plan = record_plan("prod", preview=True)
    subkeys = plan.one("consul:index/keyPrefix:KeyPrefix", "registry-consul-kv").plain_inputs["subkeys"]
    unknown = {key for key, value in subkeys.items() if value == rpc.UNKNOWN}
    assert unknown == {"env/REGISTRY_STORAGE_S3_KEYID"}
    assert plan.one("aws:iam/rolePolicy:RolePolicy", "registry-storage-access").plain_inputs["policy"] == rpc.UNKNOWN

    report = policy_analyzer.analyze(plan)
    assert report.mandatory == []
    assert report.advisory, "unknown values that matter must be reported, not passed silently"
    assert all("during preview" in d.message for d in report.advisory)
