"""Stack settings: every bad input is refused with the key, the value and what is allowed."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.settings import KNOWN_KEYS, SECRET_KEYS, FilesystemStorage, S3Storage, SettingsError
from offline_plan import record_plan
from tests.conftest import settings_for

PROJECT_DIR = Path(__file__).resolve().parent.parent
TAG_ONLY_IMAGE = "registry.internal.example.com/platform/docker-registry:3.1.1-cli1.8.0"

# (stack, key to change, bad value, the key the error must name, words the message must contain)
BAD_CONFIG = [
    ("staging", "storageMode", "nfs", "registry:storageMode", "filesystem, s3, minio"),
    ("staging", "replicas", "2", "registry:replicas", "filesystem storage allows exactly 1 replica"),
    ("prod", "image", TAG_ONLY_IMAGE, "registry:image", "pinned by digest"),
    ("prod", "image", f"registry.internal.example.com/platform/docker-registry:latest@sha256:{'a' * 64}",
     "registry:image", "the tag 'latest' is never allowed"),
    ("prod", "nodeCidrs", ["10.60.0.0/33"], "registry:nodeCidrs", "CIDR"),
    ("prod", "developerCidrs", ["10.8.16.1/22"], "registry:developerCidrs", "CIDR"),
    ("prod", "developerCidrs", ["0.0.0.0/0"], "registry:developerCidrs", "not /0"),
    ("staging", "storageSize", "200GB", "registry:storageSize", "Kubernetes quantity of whole bytes"),
    ("staging", "storageSize", "512Mi", "registry:storageSize", "1Gi to 64Ti"),
    ("staging", "storageSize", "65Ti", "registry:storageSize", "1Gi to 64Ti"),
    ("prod", "replicas", "0", "registry:replicas", "1 to 10"),
    ("prod", "replicas", "11", "registry:replicas", "1 to 10"),
    ("prod", "updatePartition", "3", "registry:updatePartition", "0 to 2"),
    ("prod", "s3Region", None, "registry:s3Region", "AWS region"),
    ("prod", "s3Region", "Ireland", "registry:s3Region", "AWS region"),
    ("prod", "s3OidcProviderArn", "arn:aws:iam::123:role/x", "registry:s3OidcProviderArn", "OIDC provider ARN"),
    ("prod", "storageEndpointCidrs", None, "registry:storageEndpointCidrs", "VPC interface endpoints"),
    ("prod", "s3Bucket", "Bad_Bucket", "registry:s3Bucket", "S3 bucket name"),
    ("staging", "storageClass", None, "registry:storageClass", "StorageClass"),
    ("staging", "memoryLimit", "128Mi", "registry:memoryLimit", "at least memoryRequest"),
    ("staging", "cpuRequest", "lots", "registry:cpuRequest", "CPU quantity"),
    ("staging", "logLevel", "verbose", "registry:logLevel", "error, warn, info, debug"),
    ("staging", "terminationGracePeriodSeconds", "5", "registry:terminationGracePeriodSeconds", "10 to 600"),
    ("staging", "ciRunnerNamespaces", ["CI_Runners"], "registry:ciRunnerNamespaces", "namespace"),
    ("staging", "consulHttpAddr", "https://10.0.0.5:8501", "registry:consulHttpAddr", "in-cluster service URL"),
    ("prod", "ingressTlsSecretName", None, "registry:ingressTlsSecretName", "TLS Secret"),
    ("staging", "replica", "2", "registry:replica", "unknown setting"),
    # The registry's own images from the registry itself: a cold start would wait for itself.
    ("prod", "image", f"registry.internal.example.com/platform/docker-registry:3.1.1@sha256:{'a' * 64}",
     "registry:image", "an image outside this registry"),
    ("prod", "operationsToolsImage", f"registry.internal.example.com/platform/ops-tools:1.0@sha256:{'b' * 64}",
     "registry:operationsToolsImage", "an image outside this registry"),
    ("staging", "image", f"registry.cicd.svc.cluster.local:5000/platform/docker-registry:3.1.1@sha256:{'a' * 64}",
     "registry:image", "an image outside this registry"),
    ("staging", "consulAuthMethod", "has spaces", "registry:consulAuthMethod", "Kubernetes auth method"),
]


def _case_id(case) -> str:
    stack, key, value, *_ = case
    return f"{stack}-{key}={value if isinstance(value, str) or value is None else json.dumps(value)}"


@pytest.mark.parametrize("stack,key,value,named,allowed", BAD_CONFIG, ids=[_case_id(c) for c in BAD_CONFIG])
def test_bad_config_stops_the_program_before_any_resource(stack, key, value, named, allowed):
    plan = record_plan(stack, overrides={f"registry:{key}": value})

    assert plan.error is not None, f"{key}={value!r} was accepted"
    assert plan.error.startswith(f"{named}: "), plan.error
    assert allowed in plan.error
    assert "\n" not in plan.error
    if value is not None:
        assert (value if isinstance(value, str) else value[0]) in plan.error
    assert plan.resources == [], "nothing may be registered when the settings are bad"


# Values the Pulumi CLI already refuses (tests/test_cli_config_rules.py), refused by the program too, for
# a CLI run with --skip-config-validation or a config set through the environment.
@pytest.mark.parametrize("key,value,allowed", [
    ("replicas", "three", "integer"),
    ("requireImageDigest", "yes", "true or false"),
    ("gcDeleteUntagged", "sometimes", "true or false"),
    ("developerCidrs", "10.8.16.0/22", "expected a list"),
    ("image", None, "required"),
])
def test_the_program_refuses_what_the_cli_refuses_too(key, value, allowed):
    with pytest.raises(SettingsError) as error:
        settings_for("prod", **{key: value})
    assert error.value.key == f"registry:{key}" and allowed in str(error.value)


def test_ingress_without_developer_ranges_is_refused_rather_than_open_to_everybody():
    with pytest.raises(SettingsError) as error:
        settings_for("prod", developerCidrs="[]")
    assert error.value.key == "registry:developerCidrs"
    assert "admit everybody" in str(error.value)


def test_minio_without_endpoint_names_the_missing_key():
    with pytest.raises(SettingsError) as error:
        settings_for("staging", storageMode="minio", s3Bucket="registry-staging", storageClass=None, snapshotClass=None)
    assert error.value.key == "registry:minioEndpoint"


def test_minio_in_cluster_endpoint_needs_no_cidrs_and_defaults_the_region():
    settings = settings_for(
        "staging", storageMode="minio", s3Bucket="registry-staging", minioEndpoint="https://minio.storage.svc:9000",
        s3StorageBudget="2Ti", storageClass=None, snapshotClass=None, minioAccessKey="test-access-key", minioSecretKey="test-secret-key",
    )
    assert settings.storage.mode == "minio"
    assert settings.storage.region == "us-east-1"


def test_stacks_parse_into_the_documented_shape():
    staging = settings_for("staging")
    prod = settings_for("prod")

    assert isinstance(staging.storage, FilesystemStorage)
    assert staging.replicas == 1
    assert staging.namespace == prod.namespace == "cicd"
    assert isinstance(prod.storage, S3Storage)
    assert prod.replicas >= 2
    assert "@sha256:" in prod.image
    assert prod.storage.oidc_provider_host_path.startswith("oidc.eks.eu-west-1.amazonaws.com/id/")
    assert ipaddress.ip_network("10.8.16.0/22") in prod.developer_cidrs


def test_settings_are_immutable():
    settings = settings_for("staging")
    with pytest.raises(AttributeError):
        settings.replicas = 3  # type: ignore[misc]


def test_every_setting_is_declared_in_pulumi_yaml_with_type_and_description():
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]

    # The secret keys cannot be declared: Pulumi.yaml's header says why.
    assert set(declared) == set(KNOWN_KEYS) - set(SECRET_KEYS)
    for key, declaration in declared.items():
        assert declaration.get("type") in ("string", "integer", "boolean", "array"), key
        assert declaration.get("description"), key


def test_stack_files_use_only_known_settings_and_provider_options():
    import pulumi_consul.config
    import pulumi_vault.config

    providers = {"consul": pulumi_consul.config, "vault": pulumi_vault.config}
    for stack in ("staging", "prod"):
        config = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
        for key in config:
            namespace, _, name = key.partition(":")
            if namespace == "registry":
                assert name in KNOWN_KEYS, f"{stack}: {key}"
            else:
                # Provider options are read by the provider, not by the program: they must be real ones.
                assert namespace in providers, f"{stack}: {key}"
                assert hasattr(providers[namespace], re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()), f"{stack}: {key}"


@pytest.mark.parametrize("override,key", [
    ("registry:storageMode=nfs", "registry:storageMode"),
    ("registry:replicas=2", "registry:replicas"),
])
def test_offline_plan_command_exits_nonzero_with_one_line_naming_the_key(tmp_path, override, key):
    result = subprocess.run(
        [sys.executable, "-m", "offline_plan", "staging", "--config", override, "--out", str(tmp_path)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert not (tmp_path / "staging").exists(), "a refused stack must not leave a plan behind"
