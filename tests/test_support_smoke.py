"""Smoke tests of the real-component harness against the real registry v3.1.1 (env-only config, as deployed)."""

from __future__ import annotations

import os
import re
import uuid

import pytest
import requests

from tests.support.oci import (OCI_INDEX, OCI_MANIFEST, OciClient, RegistryError, cosign_signature_tag, make_cosign_signature,
                               make_image, make_referrer_artifact, make_referrers_index, referrers_tag)
from tests.support.registry_server import write_htpasswd

pytest_plugins = ["tests.support.fixtures"]

CI_USER, CI_PASSWORD = "ci", "ci-password-" + uuid.uuid4().hex[:8]
COMMON_ENV = {
    "REGISTRY_HTTP_SECRET": "harness-shared-secret",
    "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
    "REGISTRY_LOG_LEVEL": "info",
    "OTEL_TRACES_EXPORTER": "none",
    # Without a drain timeout v3.1.1 installs no SIGTERM handler at all and dies by the signal (exit -15).
    "REGISTRY_HTTP_DRAINTIMEOUT": "25s",
}


def htpasswd_env(tmp_path) -> dict[str, str]:
    path = write_htpasswd(tmp_path / "htpasswd", {CI_USER: CI_PASSWORD}, rounds=4)  # low cost: bcrypt runs per request
    return {"REGISTRY_AUTH": "htpasswd", "REGISTRY_AUTH_HTPASSWD_REALM": "Registry",
            "REGISTRY_AUTH_HTPASSWD_PATH": str(path)}


def filesystem_env(tmp_path) -> dict[str, str]:
    return {"REGISTRY_STORAGE": "filesystem",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
            "REGISTRY_STORAGE_DELETE_ENABLED": "true"}


def assert_round_trip(client: OciClient, repo: str, tag: str, layer: bytes, chunk_size: int | None = None) -> str:
    image = make_image(layer)
    for blob in image.blobs:
        client.push_blob(repo, blob.data, chunk_size=chunk_size)
    digest = client.push_manifest(repo, tag, image.manifest)
    assert digest == image.digest

    by_tag = client.get_manifest(repo, tag)
    assert (by_tag.data, by_tag.digest, by_tag.media_type) == (image.manifest.data, image.digest, OCI_MANIFEST)
    pulled = client.pull_image(repo, digest)
    assert [b.data for b in pulled.blobs] == [b.data for b in image.blobs]
    assert tag in client.list_tags(repo)
    head = client.head_blob(repo, image.layers[0].digest)
    assert head is not None and int(head.headers["Content-Length"]) == len(image.layers[0].data)
    return digest


def test_filesystem_htpasswd_push_pull_auth_metrics_and_clean_sigterm(registry_factory, tmp_path):
    registry = registry_factory({**COMMON_ENV, **filesystem_env(tmp_path), **htpasswd_env(tmp_path)})
    client = OciClient(registry.base_url, CI_USER, CI_PASSWORD)

    assert client.ping().status_code == 200
    assert_round_trip(client, "team/app", "v1", os.urandom(64 * 1024))

    anonymous = OciClient(registry.base_url)
    with pytest.raises(RegistryError) as no_creds:
        anonymous.list_tags("team/app")
    assert no_creds.value.status == 401
    assert "UNAUTHORIZED" in no_creds.value.error_codes
    assert no_creds.value.headers.get("WWW-Authenticate", "").startswith('Basic realm="Registry"')

    with pytest.raises(RegistryError) as wrong_password:
        OciClient(registry.base_url, CI_USER, "wrong").get_manifest("team/app", "v1")
    assert wrong_password.value.status == 401

    metrics = requests.get(registry.debug_url + "/metrics", timeout=10).text
    assert re.search(r'^registry_http_requests_total\{code="201",handler="manifest",method="put"\} 1$', metrics, re.M)
    assert re.search(r'^registry_http_requests_total\{code="401",[^}]*\} [1-9]', metrics, re.M)

    assert registry.stop() == 0, registry.log_tail(15)


def test_s3_on_moto_push_pull(registry_factory, moto_server):
    bucket = "registry-" + uuid.uuid4().hex[:12]
    moto_server.create_bucket(bucket, versioning=True)
    registry = registry_factory({
        **COMMON_ENV,
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STORAGE_S3_BUCKET": bucket,
        "REGISTRY_STORAGE_S3_REGION": "us-east-1",
        "REGISTRY_STORAGE_S3_REGIONENDPOINT": moto_server.url,
        "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
        "REGISTRY_STORAGE_S3_ACCESSKEY": "testing",
        "REGISTRY_STORAGE_S3_SECRETKEY": "testing",
        "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/registry",
    })
    client = OciClient(registry.base_url)
    assert_round_trip(client, "team/app", "small", os.urandom(32 * 1024))
    # 11 MiB in 5 MiB PATCH chunks: exercises the S3 driver's multipart upload path.
    assert_round_trip(client, "team/big", "v1", os.urandom(11 * 1024 * 1024), chunk_size=5 * 1024 * 1024)

    keys = [o["Key"] for o in moto_server.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("registry/docker/registry/v2/") for k in keys), keys[:5]
    assert registry.stop() == 0, registry.log_tail(15)


def test_cosign_and_referrers_tag_signatures(registry_factory, tmp_path):
    registry = registry_factory({**COMMON_ENV, **filesystem_env(tmp_path), **htpasswd_env(tmp_path)})
    client = OciClient(registry.base_url, CI_USER, CI_PASSWORD)
    repo = "team/signed"
    image = make_image(b"signed layer")
    image_digest = client.push_image(repo, image, tag="v1")

    # Cosign (tag scheme): sha256-<hex>.sig holds a manifest whose layer is the simple-signing payload.
    signature = make_cosign_signature(image_digest, f"{registry.base_url.split('//')[1]}/{repo}")
    sig_tag = cosign_signature_tag(image_digest)
    assert re.fullmatch(r"sha256-[0-9a-f]{64}\.sig", sig_tag)
    client.push_image(repo, signature, tag=sig_tag)
    fetched = client.get_manifest(repo, sig_tag)
    assert fetched.data == signature.manifest.data
    payload = client.get_blob(repo, fetched.json["layers"][0]["digest"])
    assert f'"docker-manifest-digest":"{image_digest}"' in payload.decode()

    # OCI 1.1 referrers tag schema: sha256-<hex> holds an index of manifests whose subject is the image.
    artifact = make_referrer_artifact(image.manifest, "application/vnd.dev.sigstore.bundle.v0.3+json", b'{"x":1}')
    client.push_image(repo, artifact)  # by digest, untagged
    index = make_referrers_index([artifact])
    ref_tag = referrers_tag(image_digest)
    client.push_manifest(repo, ref_tag, index)
    fetched_index = client.get_manifest(repo, ref_tag)
    assert (fetched_index.data, fetched_index.media_type) == (index.data, OCI_INDEX)
    [entry] = fetched_index.json["manifests"]
    referrer = client.get_manifest(repo, entry["digest"])
    assert referrer.json["subject"]["digest"] == image_digest

    assert set(client.list_tags(repo)) == {"v1", sig_tag, ref_tag}
    client.delete_manifest(repo, signature.digest)
    assert set(client.list_tags(repo)) == {"v1", ref_tag}
