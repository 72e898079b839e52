"""Behaviour of registry v3.1.1 that the deployment relies on, pinned against the real binary.

If one of these fails after a version bump, re-check the Pulumi program's probes, env settings and IAM policy.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from tests.support.moto_server import start_moto_server
from tests.support.oci import OciClient, RegistryError, make_image
from tests.support.processes import ProcessStartError
from tests.support.registry_server import start_registry, write_htpasswd

pytest_plugins = ["tests.support.fixtures"]

BASE_ENV = {"REGISTRY_HTTP_SECRET": "s", "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
            "OTEL_TRACES_EXPORTER": "none", "REGISTRY_HTTP_DRAINTIMEOUT": "25s"}
FAST_HEALTH = {"REGISTRY_HEALTH_STORAGEDRIVER_ENABLED": "true", "REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL": "1s",
               "REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD": "1"}
HTTP = requests.Session()
HTTP.trust_env = False


def fs_htpasswd_env(tmp_path):
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"ci": "pw"}, rounds=4)
    return {"REGISTRY_STORAGE": "filesystem", "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
            "REGISTRY_AUTH": "htpasswd", "REGISTRY_AUTH_HTPASSWD_REALM": "Registry",
            "REGISTRY_AUTH_HTPASSWD_PATH": str(htpasswd)}


def wait_status(url, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (resp := HTTP.get(url, timeout=5)).status_code != status and time.monotonic() < deadline:
        time.sleep(0.2)
    return resp


def test_root_path_is_200_without_credentials_and_503_when_storage_health_fails(registry_factory, tmp_path):
    registry = registry_factory({**BASE_ENV, **fs_htpasswd_env(tmp_path), **FAST_HEALTH})
    OciClient(registry.base_url, "ci", "pw").push_image("t/x", make_image(b"x"), tag="v1")
    assert HTTP.get(registry.base_url + "/").status_code == 200          # no auth challenge on /
    assert HTTP.get(registry.base_url + "/v2/").status_code == 401
    assert HTTP.get(registry.debug_url + "/debug/health").json() == {}

    # Root ignores chmod, so break Stat("/") with a symlink loop (a plain file in its place still passes).
    data = tmp_path / "data"
    os.rename(data, tmp_path / "data.moved")
    os.symlink(data, data)
    broken = wait_status(registry.base_url + "/", 503)
    assert broken.status_code == 503 and broken.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert HTTP.get(registry.base_url + "/v2/").status_code == 503       # health gate runs before auth
    health = HTTP.get(registry.debug_url + "/debug/health")
    assert health.status_code == 503 and "storagedriver_filesystem" in health.json()
    metrics = HTTP.get(registry.debug_url + "/metrics")
    assert metrics.status_code == 200
    counted = [line for line in metrics.text.splitlines() if line.startswith("registry_http_requests_total")]
    assert counted and not [line for line in counted if 'code="503"' in line], counted  # health 503s are not counted


@pytest.mark.parametrize("drain_timeout,expected_exit", [(None, -15), ("0s", -15), ("25s", 0)])
def test_sigterm_is_only_graceful_with_a_drain_timeout(registry_factory, tmp_path, drain_timeout, expected_exit):
    env = {**BASE_ENV, **fs_htpasswd_env(tmp_path)}
    env.pop("REGISTRY_HTTP_DRAINTIMEOUT")
    if drain_timeout:
        env["REGISTRY_HTTP_DRAINTIMEOUT"] = drain_timeout
    registry = registry_factory(env, expected_exit=expected_exit)
    assert registry.stop() == expected_exit


def test_htpasswd_realm_and_path_alone_enable_auth(registry_factory, tmp_path):
    env = fs_htpasswd_env(tmp_path)
    del env["REGISTRY_AUTH"]
    registry = registry_factory({**BASE_ENV, **env})
    assert HTTP.get(registry.base_url + "/v2/").status_code == 401
    assert OciClient(registry.base_url, "ci", "pw").ping().status_code == 200


@pytest.mark.parametrize("key,value,panic", [
    ("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true", "readonly config key must contain additional keys"),
    ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED", "false",
     "uploadpurging config key must contain additional keys"),
])
def test_scalar_maintenance_keys_panic(registry_binary, tmp_path, key, value, panic):
    with pytest.raises(ProcessStartError, match=panic):
        start_registry(registry_binary, {**BASE_ENV, **fs_htpasswd_env(tmp_path), key: value}, tmp_path, timeout=10)


def test_maintenance_map_forms_are_accepted(registry_factory, tmp_path):
    registry = registry_factory({**BASE_ENV, **fs_htpasswd_env(tmp_path),
                                 "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING": json.dumps(
                                     {"enabled": True, "age": "168h", "interval": "24h", "dryrun": False}),
                                 "REGISTRY_STORAGE_MAINTENANCE_READONLY": '{"enabled":false}'})
    OciClient(registry.base_url, "ci", "pw").push_image("t/x", make_image(b"x"), tag="v1")
    assert "Starting upload purge in" in registry.log_text()


def iam_policy(bucket, moto_workaround):
    bucket_actions = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    if moto_workaround:
        # moto authorizes multi-object DeleteObjects as s3:DeleteObject on the *bucket* ARN; AWS checks each key.
        bucket_actions.append("s3:DeleteObject")
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": bucket_actions, "Resource": f"arn:aws:s3:::{bucket}"},
        {"Effect": "Allow", "Resource": f"arn:aws:s3:::{bucket}/*",
         "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListMultipartUploadParts",
                    "s3:AbortMultipartUpload"]}]}


@pytest.mark.parametrize("moto_workaround", [False, True])
def test_documented_s3_policy_under_moto_iam_enforcement(registry_factory, tmp_path, moto_workaround):
    bucket = "registry-iam"
    # 5 unauthenticated setup actions: CreateBucket, PutBucketVersioning, CreateUser, PutUserPolicy, CreateAccessKey
    moto = start_moto_server(tmp_path, initial_no_auth_action_count=5)
    try:
        moto.create_bucket(bucket, versioning=True)
        access_key, secret_key = moto.create_user_with_inline_policy("registry", iam_policy(bucket, moto_workaround))
        with pytest.raises(Exception, match="AccessDenied"):
            moto.client("s3", access_key, secret_key).list_buckets()  # enforcement really is on
        registry = registry_factory({
            **BASE_ENV, "REGISTRY_STORAGE": "s3", "REGISTRY_STORAGE_S3_BUCKET": bucket,
            "REGISTRY_STORAGE_S3_REGION": "us-east-1", "REGISTRY_STORAGE_S3_REGIONENDPOINT": moto.url,
            "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true", "REGISTRY_STORAGE_S3_ACCESSKEY": access_key,
            "REGISTRY_STORAGE_S3_SECRETKEY": secret_key, "REGISTRY_STORAGE_REDIRECT_DISABLE": "true"})
        client = OciClient(registry.base_url)
        image = make_image(os.urandom(11 << 20))
        if not moto_workaround:
            # Completing an upload moves _uploads/<id>/data to blobs/ (CopyObject + DeleteObjects): the delete fails.
            with pytest.raises(RegistryError) as denied:
                client.push_blob("t/x", image.config.data)
            assert denied.value.status == 500 and "AccessDenied" in denied.value.body
            return
        for blob in image.blobs:
            client.push_blob("t/x", blob.data, chunk_size=5 << 20)
        client.push_manifest("t/x", "v1", image.manifest)
        assert [b.data for b in client.pull_image("t/x", "v1").blobs] == [b.data for b in image.blobs]
    finally:
        moto.stop()
