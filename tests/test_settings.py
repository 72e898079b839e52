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

from components.settings import KNOWN_KEYS, SECRET_KEYS, TOKEN_KEYS, FilesystemStorage, S3Storage, SettingsError
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


PROD_OIDC_ISSUER = "oidc.eks.eu-west-1.amazonaws.com/id/5C1E9A7B3D2F4E6A8B0C1D2E3F4A5B6C"

# Realistic bad settings the first version accepted with exit 0 (or crashed on), from issue 12: the plan
# refuses each with the one-line message. (stack, overrides, the key the error names, words it must contain)
REALISTIC_BAD = [
    # Bucket names AWS refuses (S3 User Guide, "General purpose bucket naming rules").
    ("prod", {"s3Bucket": "example-cicd..registry-prod"}, "s3Bucket", "S3 bucket name"),
    ("prod", {"s3Bucket": "192.168.5.4"}, "s3Bucket", "not formatted as an IP address"),
    ("prod", {"s3Bucket": "xn--registry-prod"}, "s3Bucket", "AWS reserves"),
    ("prod", {"s3Bucket": "sthree-registry-prod"}, "s3Bucket", "AWS reserves"),
    ("prod", {"s3Bucket": "registry-prod-s3alias"}, "s3Bucket", "AWS reserves"),
    ("prod", {"s3Bucket": "registry-prod--ol-s3"}, "s3Bucket", "AWS reserves"),
    ("prod", {"drBucket": "registry-prod-dr--x-s3"}, "drBucket", "AWS reserves"),
    ("prod", {"s3Bucket": "ab"}, "s3Bucket", "3-63"),
    ("prod", {"s3Bucket": "r" * 64}, "s3Bucket", "3-63"),
    ("prod", {"s3Bucket": "example.cicd.registry.prod"}, "s3Bucket", "without dots"),
    # Trailing newlines, surrounding spaces and invisible Unicode, copied into Kubernetes objects and Consul KV.
    ("staging", {"namespace": "cicd\n"}, "namespace", "no surrounding whitespace"),
    ("staging", {"ingressHost": "registry.staging.internal.example.com\n"}, "ingressHost", "no surrounding whitespace"),
    ("prod", {"s3Bucket": "example-cicd-registry-prod-eu-west-1\r\n"}, "s3Bucket", "no surrounding whitespace"),
    ("staging", {"ingressTlsSecretName": " registry-staging-internal-example-com-tls"}, "ingressTlsSecretName",
     "no surrounding whitespace"),
    ("prod", {"ingressHost": "registry.internal.example.com\u200b"}, "ingressHost", "printable ASCII only (found U+200B"),
    ("staging", {"tokenIssuer": "registry-token-issuer-staging\ufeff"}, "tokenIssuer", "U+FEFF"),
    ("staging", {"tokenService": "docker-registry\u00a0staging"}, "tokenService", "U+00A0"),
    ("staging", {"namespace": "c\u0456cd"}, "namespace", "U+0456"),  # a Cyrillic i
    ("staging", {"ciRunnerNamespaces": ["ci-runners\u200b"]}, "ciRunnerNamespaces", "U+200B"),
    ("staging", {"consulIntentionSources": ["ci-runner", "registry-ingress\n"]}, "consulIntentionSources",
     "no surrounding whitespace"),
    ("staging", {"htpasswdUsers": ["ci-runner:push", "cluster-pull:pull\u200e"]}, "htpasswdUsers", "U+200E"),
    # http:// where config-cli sends its Vault token, its Consul ACL token or the MinIO keys.
    ("staging", {"vaultAddr": "http://vault.vault.svc:8200"}, "vaultAddr", "https://"),
    ("staging", {"consulHttpAddr": "http://consul-server.consul.svc:8500"}, "consulHttpAddr", "https://"),
    ("staging", {"storageMode": "minio", "storageClass": None, "snapshotClass": None, "s3Bucket": "registry-staging",
                 "s3StorageBudget": "2Ti", "minioEndpoint": "http://minio.storage.svc:9000"}, "minioEndpoint", "https://"),
    ("staging", {"vaultAddr": "https://vault.vault.svc:99999"}, "vaultAddr", "port from 1 to 65535"),  # was a traceback
    ("staging", {"consulHttpAddr": "https://acl:token@consul-server.consul.svc:8501"}, "consulHttpAddr",
     "without user name or password"),
    ("staging", {"runbookBaseUrl": "http://git.internal.example.com/platform/registry-iac/blob/main/README.md"},
     "runbookBaseUrl", "https://"),
    ("staging", {"tokenRealm": "https://registry-auth.staging.internal.example.com:0/token"}, "tokenRealm",
     "port from 1 to 65535"),
    # CIDR sets that together admit (half) the internet: judged on the union, not per entry.
    ("prod", {"developerCidrs": ["0.0.0.0/1", "128.0.0.0/1"]}, "developerCidrs", "public address space"),
    ("prod", {"storageEndpointCidrs": ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2"]},
     "storageEndpointCidrs", "public address space"),
    ("prod", {"kubernetesApiCidrs": ["2000::/4", "3000::/4"]}, "kubernetesApiCidrs", "public address space"),
    ("prod", {"nodeCidrs": ["10.60.0.0/16", "8.0.0.0/7"]}, "nodeCidrs", "public address space"),
    ("prod", {"developerCidrs": ["11.0.0.0/17", "11.0.128.0/17", "11.1.0.0/17"]}, "developerCidrs",
     "public address space in all (98304 public IPv4 addresses here)"),
    # Each list alone within the limit, but the Ingress admits developers and nodes together.
    ("prod", {"developerCidrs": ["198.18.0.0/17"], "nodeCidrs": ["198.51.0.0/16"]}, "developerCidrs", "with nodeCidrs"),
    ("prod", {"kubernetesApiCidrs": ["169.254.169.254/32"]}, "kubernetesApiCidrs", "link-local/metadata"),
    ("prod", {"developerCidrs": ["::ffff:0.0.0.0/97"]}, "developerCidrs", "IPv4-in-IPv6"),
    # Cron schedules that never fire, or that the CronJob controller (robfig/cron) refuses.
    ("staging", {"gcSchedule": "0 0 31 2 *"}, "gcSchedule", "never occurs"),
    ("staging", {"snapshotSchedule": "0 2 30 2 *"}, "snapshotSchedule", "never occurs"),
    ("prod", {"gcSchedule": "0 0 31 4,6,9,11 *"}, "gcSchedule", "never occurs"),
    ("staging", {"gcSchedule": "60 3 * * 0"}, "gcSchedule", "minute field allows 0-59"),
    ("staging", {"gcSchedule": "17 3 * * 7"}, "gcSchedule", "day of week field allows 0-6"),
    ("staging", {"gcSchedule": "17 3 * * 5-1"}, "gcSchedule", "ranges low-high"),
    ("staging", {"gcSchedule": "@weekly"}, "gcSchedule", "five-field cron schedule"),
    # The role's trust in an OIDC provider of another account, or of another partition.
    ("prod", {"s3OidcProviderArn": f"arn:aws:iam::210987654321:oidc-provider/{PROD_OIDC_ISSUER}"},
     "s3OidcProviderArn", "this stack's account awsAccountId (123456789012)"),
    ("prod", {"s3OidcProviderArn": f"arn:aws-cn:iam::123456789012:oidc-provider/{PROD_OIDC_ISSUER}"},
     "s3OidcProviderArn", "partition of s3Region"),
    ("prod", {"awsAccountId": "12345678901"}, "awsAccountId", "12-digit AWS account"),
    ("prod", {"awsAccountId": None}, "awsAccountId", "required in s3 mode"),
    # Settings silently ignored because the one they depend on is missing.
    ("prod", {"drBucket": None}, "drRegion", "only used with drBucket"),
    ("prod", {"ingressHost": None}, "ingressTlsSecretName", "only used with ingressHost"),
    ("prod", {"ingressHost": None, "ingressTlsSecretName": None, "authMode": "htpasswd", "htpasswdUsers": ["ci-runner:push"],
              **dict.fromkeys(TOKEN_KEYS)}, "developerCidrs", "only used with ingressHost or authMode token"),
    ("staging", {"awsAccountId": "123456789012"}, "awsAccountId", "only used with storageMode s3"),
    ("staging", {"s3OidcProviderArn": f"arn:aws:iam::123456789012:oidc-provider/{PROD_OIDC_ISSUER}"},
     "s3OidcProviderArn", "only used with storageMode s3"),
    ("staging", {"storageMode": "minio", "s3Bucket": "registry-staging", "s3StorageBudget": "2Ti",
                 "minioEndpoint": "https://minio.storage.svc:9000"}, "storageClass", "only used with storageMode filesystem"),
    ("prod", {"storageClass": "gp3"}, "storageClass", "only used with storageMode filesystem"),
    ("prod", {"snapshotClass": "ebs-snapshots"}, "snapshotClass", "only used with storageMode filesystem"),
    ("staging", {"minioEndpoint": "https://minio.storage.svc:9000"}, "minioEndpoint", "only used with storageMode minio"),
    ("staging", {"s3Bucket": "registry-staging"}, "s3Bucket", "only used with storageMode s3 or minio"),
    ("staging", {"s3Region": "eu-west-1"}, "s3Region", "only used with storageMode s3 or minio"),
    ("staging", {"s3StorageBudget": "2Ti"}, "s3StorageBudget", "only used with storageMode s3 or minio"),
    # Image references the kubelet could never pull.
    ("staging", {"image": f"registry.example.com:99999/platform/docker-registry:3.1.1@sha256:{'a' * 64}"}, "image",
     "registry port from 1 to 65535"),
    ("staging", {"operationsToolsImage": f"registry.example.com/{'p' * 250}/ops-tools:1.0@sha256:{'b' * 64}"},
     "operationsToolsImage", "255 characters at most"),
    # Quantities: the Kubernetes grammar, whole millicores and bytes, within bounds.
    ("staging", {"cpuRequest": "1" + "0" * 400}, "cpuRequest", "whole millicores"),  # was an OverflowError traceback
    ("staging", {"cpuRequest": "0.0001"}, "cpuRequest", "whole millicores"),
    ("staging", {"memoryLimit": "1.5"}, "memoryLimit", "whole bytes"),
    ("staging", {"cpuLimit": "2 "}, "cpuLimit", "no surrounding whitespace"),
    # The token service's deployment (authMode token): its image, replicas, realm and developer logins.
    ("staging", {"tokenServiceImage": None}, "tokenServiceImage", "required with authMode token"),
    ("staging", {"tokenServiceImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform/registry-token-service:0.1.0"},
     "tokenServiceImage", "pinned by digest"),
    ("staging", {"tokenServiceImage": f"registry.staging.internal.example.com/platform/registry-token-service:0.1.0@sha256:{'c' * 64}"},
     "tokenServiceImage", "bootstrap registry"),
    ("staging", {"tokenServiceReplicas": 1}, "tokenServiceReplicas", "from 2 to 10"),
    ("prod", {"tokenRealm": "https://registry.internal.example.com/token"}, "tokenRealm", "a host other than ingressHost"),
    ("staging", {"tokenRealm": "https://registry-auth.staging.internal.example.com/v2/token"}, "tokenRealm",
     "answers at /token"),
    ("staging", {"tokenRealm": "https://registry-auth.staging.internal.example.com:8443/token"}, "tokenRealm", "on port 443"),
    ("staging", {"tokenRealmTlsSecretName": None}, "tokenRealmTlsSecretName", "required with authMode token"),
    ("staging", {"tokenOidcIssuer": None}, "tokenOidcAudience", "only used with tokenOidcIssuer"),
    ("staging", {"tokenOidcIssuer": "http://login.internal.example.com/realms/platform"}, "tokenOidcIssuer", "https://"),
    ("staging", {"tokenOidcIssuerCidrs": None}, "tokenOidcIssuerCidrs", "outside the cluster needs its CIDRs"),
    ("staging", {"tokenOidcGroupRoles": ["platform-developers:cleanup"]}, "tokenOidcGroupRoles", "group:pull or group:push"),
    ("staging", {"authMode": "htpasswd", "htpasswdUsers": ["ci-runner:push"], "tokenRealm": None, "tokenService": None,
                 "tokenIssuer": None}, "tokenServiceImage", "only used with authMode token"),
]


def _shown(value) -> str:
    """How the one-line message shows a value: its repr (newlines and invisible characters escaped), long ones cut."""
    return repr(value) if len(repr(value)) <= 160 else repr(value)[:120]


@pytest.mark.parametrize("stack,changes,named,allowed", REALISTIC_BAD,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(REALISTIC_BAD)])
def test_realistic_bad_settings_are_refused_in_one_line_before_any_resource(stack, changes, named, allowed):
    plan = record_plan(stack, overrides={f"registry:{key}": value for key, value in changes.items()})

    assert plan.error is not None, f"{changes} was accepted"
    assert plan.error.startswith(f"registry:{named}: "), plan.error
    assert allowed in plan.error, plan.error
    assert "\n" not in plan.error and " is not allowed; " in plan.error
    value = changes.get(named)
    if isinstance(value, str):
        assert _shown(value) in plan.error, plan.error
    elif isinstance(value, list):
        assert any(_shown(entry) in plan.error for entry in value) or _shown(value) in plan.error, plan.error
    assert plan.resources == [], "nothing may be registered when the settings are bad"


def test_the_strict_rules_still_accept_what_the_stacks_and_kubernetes_allow():
    accepted = {
        "staging": {"cpuRequest": "0.5", "memoryLimit": "1G", "gcSchedule": "*/30 1-5 * * 1,3,5",
                    "snapshotSchedule": "0 0 29 2 *", "developerCidrs": ["10.0.0.0/8", "172.16.0.0/12", "203.0.113.0/24"],
                    "vaultAddr": "https://vault.vault.svc.cluster.local:8200/"},
        "prod": {"s3OidcProviderArn": f"arn:aws:iam::123456789012:oidc-provider/{PROD_OIDC_ISSUER}",
                 "gcSchedule": "0 0 31 2 1", "storageSize": "100Gi"},
    }
    for stack, changes in accepted.items():
        plan = record_plan(stack, overrides={f"registry:{key}": value for key, value in changes.items()})
        assert plan.error is None, plan.error


# Values the Pulumi CLI already refuses (tests/test_cli_config_rules.py), refused by the program too, for
# a CLI run with --skip-config-validation or a config set through the environment.
@pytest.mark.parametrize("key,value,allowed", [
    ("replicas", "three", "integer"),
    ("requireImageDigest", "yes", "true or false"),
    ("gcDeleteUntagged", "sometimes", "true or false"),
    ("developerCidrs", "10.8.16.0/22", "expected a list"),
    ("gcDeleteUntagged", "True", "true or false"),
    ("replicas", "\u0661", "U+0661"),  # an Arabic-Indic 1, which int() would read as 1
    ("replicas", "+3", "integer"),
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
    ("registry:vaultAddr=http://vault.vault.svc:8200", "registry:vaultAddr"),
    ("registry:namespace=cicd\n", "registry:namespace"),
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
