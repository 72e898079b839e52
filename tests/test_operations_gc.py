"""The garbage-collection script, run for real against registry v3.1.1 (filesystem and S3 on moto).

Only Kubernetes and Consul are stand-ins (tests/support/fake_cluster.py): the StatefulSet's pods are
real registry processes restarted from a KV file, each environment loaded by THE config-cli stand-in from
the KV laid out as the program lays it out (``config/env/...``), so the read-only flag works only if the
script writes the key config-cli reads. The client Service is the list of endpoints that pass their
readiness probe. The registry, `registry garbage-collect`, curl and the script are real.

Each storage runs with its stack's collection mode: filesystem as staging (``gcDeleteUntagged`` false),
S3 as prod (true).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from components.consul_config import health_check
from components.names import (CHECK_KEY, ENV_FOLDER, FILES_FOLDER, GENERATION_KEY, READONLY_OFF, READONLY_ON,
                              readonly_kv_key)
from components.registry_config import HTPASSWD_FILE, HTPASSWD_PATH
from tests.conftest import settings_for
from tests.support.config_cli import as_tree
from tests.support.fake_cluster import FakeCluster
from tests.support.oci import (OCI_INDEX, Image, Manifest, OciClient, RegistryError, canonical_json,
                               cosign_signature_tag, make_cosign_signature, make_image, make_referrer_artifact,
                               make_referrers_index, referrers_tag)

pytest_plugins = ["tests.support.fixtures"]

SCRIPT = Path(__file__).resolve().parents[1] / "components" / "scripts" / "registry-gc.sh"
ENVIRONMENT = "staging"
KV_PREFIX = f"registry/{ENVIRONMENT}/"
USER, PASSWORD = "ci", "ci-" + uuid.uuid4().hex[:12]
POD_HOST_TEMPLATE = "@POD@.registry-headless.cicd.svc.cluster.local:5000"
TAGGED_IMAGES = 60


# --- storage: filesystem directory or S3 bucket on moto ---------------------------------------------


class StorageView:
    """The registry's objects as relative paths under docker/registry/v2/, read from the storage itself."""

    def keys(self) -> set[str]:
        raise NotImplementedError

    def blob_stored(self, digest: str) -> bool:
        hex_ = digest.split(":", 1)[1]
        return f"blobs/sha256/{hex_[:2]}/{hex_}/data" in self.keys()

    def revision_stored(self, repo: str, digest: str) -> bool:
        return f"repositories/{repo}/_manifests/revisions/sha256/{digest.split(':', 1)[1]}/link" in self.keys()


class FilesystemView(StorageView):
    def __init__(self, root: Path):
        self.root = root / "docker" / "registry" / "v2"

    def keys(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}


class S3View(StorageView):
    def __init__(self, s3, bucket: str, root: str):
        self.s3, self.bucket, self.prefix = s3, bucket, root.strip("/") + "/docker/registry/v2/"

    def keys(self) -> set[str]:
        keys = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            keys.update(o["Key"][len(self.prefix):] for o in page.get("Contents", []))
        return keys


# The stack whose settings each storage runs with (its collection mode above all).
STACK_OF_STORAGE = {"filesystem": "staging", "s3": "prod"}


@dataclass
class Storage:
    mode: str
    env: dict[str, str]
    view: StorageView
    s3: object = None
    bucket: str = ""
    root: str = ""
    data_dir: Path | None = None

    @property
    def delete_untagged(self) -> bool:
        return settings_for(STACK_OF_STORAGE[self.mode]).gc_delete_untagged


@pytest.fixture(params=["filesystem", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "filesystem":
        data = tmp_path / "volume"
        return Storage("filesystem", {"REGISTRY_STORAGE": "filesystem",
                                      "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(data)},
                       FilesystemView(data), data_dir=data)
    moto = request.getfixturevalue("moto_server")
    bucket = f"registry-gc-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket, versioning=True)
    s3 = moto.client("s3")
    root = "/registry"
    # Without IAM enforcement: moto checks batch DeleteObjects against the bucket ARN and the registry
    # ignores per-key errors, so under enforcement GC would "succeed" and delete nothing.
    env = {"REGISTRY_STORAGE": "s3", "REGISTRY_STORAGE_S3_BUCKET": bucket, "REGISTRY_STORAGE_S3_REGION": "us-east-1",
           "REGISTRY_STORAGE_S3_REGIONENDPOINT": moto.url, "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
           "REGISTRY_STORAGE_S3_ROOTDIRECTORY": root, "REGISTRY_STORAGE_S3_ACCESSKEY": "testing",
           "REGISTRY_STORAGE_S3_SECRETKEY": "testing", "REGISTRY_STORAGE_REDIRECT_DISABLE": "true"}
    return Storage("s3", env, S3View(s3, bucket, root), s3=s3, bucket=bucket, root=root)


def registry_kv(storage: Storage) -> dict[str, str]:
    """The KV tree under ``registry/<env>/`` as config-cli finds it: the test's storage and auth as ``config/``
    keys (plain values: no Vault in these tests), the read-only flag at rest."""
    htpasswd = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    variables = {
        **storage.env,
        "REGISTRY_HTTP_SECRET": "shared-by-every-replica",
        "REGISTRY_HTTP_DRAINTIMEOUT": "25s",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_STORAGE_MAINTENANCE_READONLY": READONLY_OFF,
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "Registry",
        "REGISTRY_AUTH_HTPASSWD_PATH": HTPASSWD_PATH,
        "REGISTRY_LOG_LEVEL": "warn",
        "OTEL_TRACES_EXPORTER": "none",
    }
    config_kv = {f"{ENV_FOLDER}{name}": value for name, value in variables.items()}
    config_kv[f"{FILES_FOLDER}{HTPASSWD_FILE}"] = f"{USER}:{htpasswd}\n"
    config_kv[GENERATION_KEY] = "1"
    config_kv[CHECK_KEY] = json.dumps(health_check(settings_for(STACK_OF_STORAGE[storage.mode])))
    return as_tree(config_kv)


# --- content: what must survive and what must go -----------------------------------------------------


@dataclass
class Content:
    tagged: dict[tuple[str, str], Image] = field(default_factory=dict)
    signatures: dict[tuple[str, str], Manifest] = field(default_factory=dict)  # (repo, tag) -> manifest
    untagged_manifests: list[tuple[str, str]] = field(default_factory=list)
    garbage_blobs: list[str] = field(default_factory=list)  # unreferenced once untagged manifests are deleted
    unreferenced_blobs: list[str] = field(default_factory=list)  # no manifest ever referred to them
    kept_blobs: set[str] = field(default_factory=set)
    index: tuple[str, str, list[Image]] | None = None  # repo, tag, children
    never_tagged: Image | None = None  # pushed by digest to team0/scratch, which has no tags at all


def populate(client: OciClient, images: int = TAGGED_IMAGES) -> Content:
    content = Content()
    for i in range(images):
        repo, image = f"team{i % 5}/app{i}", make_image(os.urandom(2048) + f"image {i}".encode())
        client.push_image(repo, image, tag="v1")
        content.tagged[(repo, "v1")] = image
        content.kept_blobs.update(b.digest for b in image.blobs)

    # A tag moved to a new build: the old manifest becomes untagged, its layer unreferenced.
    for i in range(0, images, 10):
        repo = f"team{i % 5}/app{i}"
        old = make_image(os.urandom(2048) + b"superseded build")
        client.push_image(repo, old, tag="v2")
        new = make_image(os.urandom(2048) + b"current build")
        client.push_image(repo, new, tag="v2")
        content.tagged[(repo, "v2")] = new
        content.kept_blobs.update(b.digest for b in new.blobs)
        content.untagged_manifests.append((repo, old.digest))
        content.garbage_blobs.append(old.layers[0].digest)

    # Pushed by digest only, never tagged; and a blob whose manifest never came.
    orphan = make_image(os.urandom(4096) + b"never tagged")
    client.push_image("team0/app0", orphan)
    content.untagged_manifests.append(("team0/app0", orphan.digest))
    content.garbage_blobs.append(orphan.layers[0].digest)
    abandoned = client.push_blob("team0/app0", os.urandom(3000) + b"abandoned upload")
    content.garbage_blobs.append(abandoned)
    content.unreferenced_blobs.append(abandoned)
    # A repository that never had any tag.
    content.never_tagged = make_image(os.urandom(4096) + b"repository without tags")
    client.push_image("team0/scratch", content.never_tagged)

    # Signatures beside a tagged image, in both tag schemes.
    repo, image = "team1/app1", content.tagged[("team1/app1", "v1")]
    cosign = make_cosign_signature(image.digest, f"registry.example/{repo}")
    client.push_image(repo, cosign, tag=cosign_signature_tag(image.digest))
    content.signatures[(repo, cosign_signature_tag(image.digest))] = cosign.manifest
    sbom = make_referrer_artifact(image.manifest, "application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')
    client.push_image(repo, sbom)  # by digest, as OCI 1.1 clients push referrers
    referrers = make_referrers_index([sbom])
    client.push_manifest(repo, referrers_tag(image.digest), referrers)
    content.signatures[(repo, referrers_tag(image.digest))] = referrers
    content.kept_blobs.update(b.digest for b in [*cosign.blobs, *sbom.blobs])

    # A multi-platform image: an index whose platform manifests are pushed by digest.
    children = [make_image(os.urandom(2048), architecture=arch) for arch in ("amd64", "arm64")]
    for child in children:
        client.push_image("team2/multi", child)
    index = Manifest(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        child.manifest.descriptor(platform={"architecture": arch, "os": "linux"})
        for child, arch in zip(children, ("amd64", "arm64"))]}), OCI_INDEX)
    client.push_manifest("team2/multi", "v1", index)
    content.index = ("team2/multi", "v1", children)
    return content


# --- clients of the Service ----------------------------------------------------------------------------


class _RetryCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.retries: list[str] = []

    def emit(self, record):
        if record.getMessage().startswith("Retrying"):
            self.retries.append(record.getMessage())


def pulling_client(endpoint: str) -> OciClient:
    """A client that, like Go's net/http in containerd and Docker, resends an idempotent request once
    when a reused keep-alive connection closes before any response (a registry closes idle
    connections when SIGTERM starts its drain). A broken response body is never retried."""
    client = OciClient(endpoint, USER, PASSWORD, timeout=10)
    retry = Retry(total=1, connect=1, read=1, status=0, other=0, redirect=0, allowed_methods={"GET", "HEAD"})
    client.session.mount("http://", HTTPAdapter(max_retries=retry))
    return client


class PullLoop:
    """Threads pulling tagged images through the Service, each verified byte for byte."""

    def __init__(self, cluster: FakeCluster, content: Content, threads: int = 4):
        self.cluster, self.content, self.threads = cluster, content, threads
        self.results: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]
        self._retry_counter = _RetryCounter()

    @property
    def retries(self) -> list[str]:
        return self._retry_counter.retries

    def __enter__(self):
        logging.getLogger("urllib3.connectionpool").addHandler(self._retry_counter)
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
        logging.getLogger("urllib3.connectionpool").removeHandler(self._retry_counter)

    def _run(self, seed: int) -> None:
        items = sorted(self.content.tagged.items())
        n = seed
        while not self._stop.is_set():
            (repo, tag), image = items[n % len(items)]
            n += self.threads
            endpoint = self.cluster.pick_endpoint()
            if endpoint is None:
                self.results.append((time.monotonic(), False, "no ready endpoint behind the Service"))
                time.sleep(0.01)
                continue
            try:
                pulled = pulling_client(endpoint).pull_image(repo, tag)
                ok = pulled.manifest.data == image.manifest.data and [b.data for b in pulled.blobs] == [
                    b.data for b in image.blobs]
                self.results.append((time.monotonic(), ok, "" if ok else f"{repo}:{tag} differs"))
            except Exception as exc:  # any failure of a pull is what we count
                self.results.append((time.monotonic(), False, f"{endpoint} {repo}:{tag}: {exc}"[:300]))

    def between(self, start: float, end: float) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if start <= r[0] <= end]


def service_client(cluster: FakeCluster) -> OciClient:
    endpoint = cluster.pick_endpoint()
    assert endpoint, "no ready endpoint behind the Service"
    return OciClient(endpoint, USER, PASSWORD)


def push_status_through_service(cluster: FakeCluster) -> int:
    try:
        service_client(cluster).push_image("team9/during-gc", make_image(os.urandom(1024)), tag="v1")
        return 201
    except RegistryError as exc:
        return exc.status


# --- running the script --------------------------------------------------------------------------------


class ScriptRun:
    """registry-gc.sh as the CronJob's container runs it, stubs first on PATH; its log lines timed."""

    def __init__(self, cluster: FakeCluster, storage_env: dict[str, str], tmp_path: Path, *,
                 collect_command: str | None = None, registry_config: Path | None = None,
                 extra_env: dict[str, str] | None = None):
        credentials = tmp_path / "probe-credentials"
        credentials.write_text(f"{USER}:{PASSWORD}")
        os.symlink(cluster.binary, cluster.bin_dir / "registry") if not (cluster.bin_dir / "registry").exists() else None
        delete_untagged = settings_for(STACK_OF_STORAGE["s3" if "REGISTRY_STORAGE_S3_BUCKET" in storage_env
                                                        else "filesystem"]).gc_delete_untagged
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_", "http_", "https_",
                                                                        "HTTP_", "HTTPS_", "ALL_", "all_"))},
            **storage_env,
            "PATH": f"{cluster.bin_dir}:{os.environ['PATH']}",
            "NAMESPACE": cluster.namespace,
            "STATEFULSET": cluster.statefulset,
            "READONLY_KV_KEY": readonly_kv_key(ENVIRONMENT),
            "GC_CONFIG_FILE": str(registry_config or cluster.config_path),
            "GC_REPLICA_URL": f"http://127.0.0.1:{cluster.job_replica_port}",
            "GC_DRAIN_MARKER": str(cluster.drain_marker),
            "GC_POD_URL_TEMPLATE": "http://" + POD_HOST_TEMPLATE,
            "GC_PROBE_CREDENTIALS_FILE": str(credentials),
            "CURL_HOME": str(cluster.pod_url_curlrc(POD_HOST_TEMPLATE)),
            "POD_NAME": cluster.job_pod_name,
            "GC_SETTLE_SECONDS": "1",
            "GC_POLL_SECONDS": "0.2",
            "GC_POD_TIMEOUT_SECONDS": "60",
            "GC_DELETE_UNTAGGED": "true" if delete_untagged else "false",
        }
        if collect_command:
            env["GC_COLLECT_COMMAND"] = collect_command
        env.update(extra_env or {})
        self.lines: list[tuple[float, str]] = []
        # Its own session: whatever it leaves behind (its replica, a collector) is stopped with it.
        self.process = subprocess.Popen(["sh", str(SCRIPT)], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        cluster.cleanups.append(self.close)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def close(self) -> None:
        """Kill the script's process group (the script, its replica, its collector) if anything is left."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def time_of(self, text: str) -> float:
        found = [t for t, line in self.lines if text in line]
        assert found, f"no log line with {text!r}:\n{self.log()}"
        return found[0]

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)


def paused_collector(tmp_path: Path) -> tuple[str, Path, Path]:
    """A GC command that waits for the test before running the real `registry garbage-collect`."""
    paused, resume = tmp_path / "gc-paused", tmp_path / "gc-resume"
    wrapper = tmp_path / "collect.sh"
    wrapper.write_text(f'#!/bin/sh\ntouch "{paused}"\nwhile [ ! -e "{resume}" ]; do sleep 0.05; done\n'
                       '[ "$GC_DELETE_UNTAGGED" = true ] && set -- --delete-untagged\n'
                       'exec registry garbage-collect "$@" "$GC_CONFIG_FILE"\n')
    wrapper.chmod(0o755)
    return str(wrapper), paused, resume


def wait_for(path: Path, run: ScriptRun, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert run.process.poll() is None, f"script exited {run.process.returncode}:\n{run.log()}"
        assert time.monotonic() < deadline, f"timed out waiting for {path}:\n{run.log()}"
        time.sleep(0.05)


@pytest.fixture
def cluster(registry_binary, storage, tmp_path):
    replicas = 1 if storage.mode == "filesystem" else 3
    fake = FakeCluster(registry_binary, tmp_path / "cluster", registry_kv(storage), replicas=replicas,
                       kv_prefix=KV_PREFIX)
    fake.start()
    yield fake
    for cleanup in fake.cleanups:
        cleanup()
    fake.stop()


def pod_processes_alive(cluster: FakeCluster) -> bool:
    return all(p.process and p.process.alive() for p in cluster.pods.values())


# --- the tests -----------------------------------------------------------------------------------------


def test_gc_keeps_pulls_serving_refuses_pushes_and_removes_only_garbage(cluster, storage, tmp_path, record_property):
    content = populate(service_client(cluster))
    for repo, digest in content.untagged_manifests:
        assert storage.view.revision_stored(repo, digest)
    assert all(storage.view.blob_stored(d) for d in content.garbage_blobs)
    before = {(repo, tag): service_client(cluster).get_manifest(repo, tag).data
              for repo, tag in [*content.tagged, *content.signatures]}

    collect, paused, resume = paused_collector(tmp_path)
    with PullLoop(cluster, content) as pulls:
        time.sleep(0.5)
        run = ScriptRun(cluster, storage.env, tmp_path, collect_command=collect)
        wait_for(paused, run)
        # Every replica and the Job's own replica now serve read-only: a push through the Service gets 405.
        assert cluster.kv()[readonly_kv_key(ENVIRONMENT)] == READONLY_ON
        assert all(p.read_only_history[-1] for p in cluster.pods.values())
        assert push_status_through_service(cluster) == 405
        assert len(cluster.ready_endpoints()) == len(cluster.pods) + 1
        resume.touch()
        code = run.wait()
        time.sleep(0.5)
    assert code == 0, run.log()

    opened, closed = run.time_of("read-only window opened"), run.time_of("read-only window closed")
    during = pulls.between(opened, closed)
    failures = [r for r in pulls.results if not r[1]]
    record_property("read_only_window_seconds", round(closed - opened, 2))
    record_property("pulls_during_window", len(during))
    record_property("failed_pulls_during_window", len([r for r in during if not r[1]]))
    print(f"\n[{storage.mode}] images={len(content.tagged)} replicas={len(cluster.pods)} "
          f"read-only window={closed - opened:.2f}s pulls during it={len(during)} "
          f"failed={len([r for r in during if not r[1]])} pulls in total={len(pulls.results)} "
          f"requests resent on a closed keep-alive connection={len(pulls.retries)}")
    assert len(during) > 50
    assert not failures, failures[:5]

    # Afterwards: write mode on every replica, the Job's replica gone from the Service.
    assert cluster.kv()[readonly_kv_key(ENVIRONMENT)] == READONLY_OFF
    assert all(p.read_only_history == [False, True, False] for p in cluster.pods.values())
    assert sorted(cluster.ready_endpoints()) == sorted(p.url for p in cluster.pods.values())
    assert not cluster.job_replica_ready

    # Garbage is gone from the storage itself; everything tagged is still there.
    if storage.delete_untagged:
        for repo, digest in content.untagged_manifests:
            assert not storage.view.revision_stored(repo, digest), (repo, digest)
        for digest in content.garbage_blobs:
            assert not storage.view.blob_stored(digest), digest
    else:
        # Without --delete-untagged an untagged manifest is kept, and so is everything it refers to.
        for repo, digest in content.untagged_manifests:
            assert storage.view.revision_stored(repo, digest), (repo, digest)
        for digest in set(content.garbage_blobs) - set(content.unreferenced_blobs):
            assert storage.view.blob_stored(digest), digest
    for digest in content.unreferenced_blobs:
        assert not storage.view.blob_stored(digest), digest
    for digest in content.kept_blobs:
        assert storage.view.blob_stored(digest), digest

    client = service_client(cluster)
    for (repo, tag), image in content.tagged.items():
        pulled = client.pull_image(repo, tag)
        assert pulled.manifest.data == image.manifest.data and [b.data for b in pulled.blobs] == [
            b.data for b in image.blobs]
    for (repo, tag), manifest in content.signatures.items():
        assert client.get_manifest(repo, tag).data == manifest.data == before[(repo, tag)]
    cosign_repo, cosign_tag = next(k for k in content.signatures if k[1].endswith(".sig"))
    assert [b.data for b in client.pull_image(cosign_repo, cosign_tag).blobs]
    referrers = client.get_manifest("team1/app1", referrers_tag(content.tagged[("team1/app1", "v1")].digest))
    for entry in referrers.json["manifests"]:  # the referrer itself was pushed untagged: it stays
        assert client.pull_image("team1/app1", entry["digest"]).manifest.digest == entry["digest"]

    # Pinned v3.1.1 behaviour (also with --delete-untagged): the platform manifests an index refers to stay.
    repo, tag, children = content.index
    assert client.get_manifest(repo, tag).media_type == OCI_INDEX
    for child in children:
        assert [b.data for b in client.pull_image(repo, child.digest).blobs] == [b.data for b in child.blobs]

    stranded = content.never_tagged
    assert storage.view.revision_stored("team0/scratch", stranded.digest)
    if storage.delete_untagged:
        # Pinned v3.1.1 behaviour: in a repository that never had a tag, --delete-untagged skips the manifests
        # ("manifest tags path of repository ... does not exist") but, having marked nothing, deletes their blobs.
        assert not any(storage.view.blob_stored(b.digest) for b in [stranded.manifest, *stranded.blobs])
    else:
        assert client.pull_image("team0/scratch", stranded.digest).manifest.data == stranded.manifest.data

    # Pushes work again.
    assert push_status_through_service(cluster) == 201


def test_failing_collection_still_restores_write_mode(cluster, storage, tmp_path):
    content = populate(service_client(cluster), images=5)
    with PullLoop(cluster, content) as pulls:
        run = ScriptRun(cluster, storage.env, tmp_path, registry_config=tmp_path / "missing-config.yml")
        code = run.wait()
        time.sleep(0.3)
    assert code != 0, run.log()
    assert "garbage collection finished" not in run.log()
    assert "read-only window closed: write mode restored" in run.log()
    assert cluster.kv()[readonly_kv_key(ENVIRONMENT)] == READONLY_OFF
    assert all(p.read_only_history == [False, True, False] for p in cluster.pods.values())
    assert pod_processes_alive(cluster) and not cluster.job_replica_ready
    assert push_status_through_service(cluster) == 201
    assert pulls.results and not [r for r in pulls.results if not r[1]], [r for r in pulls.results if not r[1]][:5]


def test_sigterm_during_collection_stops_it_and_restores_write_mode(cluster, storage, tmp_path):
    """activeDeadlineSeconds ends the Job with SIGTERM: the trap must not wait for the collection."""
    content = populate(service_client(cluster), images=3)
    collect, paused, _ = paused_collector(tmp_path)  # never resumed: a collection that outlives the deadline
    run = ScriptRun(cluster, storage.env, tmp_path, collect_command=collect)
    wait_for(paused, run)
    assert push_status_through_service(cluster) == 405
    run.process.terminate()
    assert run.wait(timeout=120) == 143, run.log()
    assert "stopping the garbage collection" in run.log()
    assert cluster.kv()[readonly_kv_key(ENVIRONMENT)] == READONLY_OFF
    assert all(p.read_only_history == [False, True, False] for p in cluster.pods.values())
    assert push_status_through_service(cluster) == 201
    repo, tag = next(iter(content.tagged))
    assert service_client(cluster).pull_image(repo, tag).manifest.data == content.tagged[(repo, tag)].manifest.data


def test_script_uses_only_what_its_role_allows(cluster, storage, tmp_path):
    from components.operations import gc_role_rules

    populate(service_client(cluster), images=2)  # GC of a registry without any repository fails
    cluster.acl_token, cluster.acl_login_method = uuid.uuid4().hex, "registry-staging-kubernetes"
    token = tmp_path / "service-account-token"
    token.write_text("projected-token")
    run = ScriptRun(cluster, storage.env, tmp_path, extra_env={
        "GC_CONSUL_LOGIN_METHOD": "registry-staging-kubernetes", "GC_SERVICE_ACCOUNT_TOKEN": str(token)})
    assert run.wait() == 0, run.log()
    rules = gc_role_rules("registry", len(cluster.pods))
    kubectl_calls = [c[1:] for c in cluster.calls if c[0] == "kubectl"]
    assert kubectl_calls
    for call in kubectl_calls:
        args = call[2:] if call[:1] == ["-n"] else call
        verb, kind, name = args[0], args[1], args[2]
        resource = {"pod": "pods", "statefulset": "statefulsets"}[kind]
        assert any(resource in r["resources"] and verb in r["verbs"]
                   and name in r.get("resourceNames", [name]) for r in rules), call
    consul_calls = [c[1:] for c in cluster.calls if c[0] == "consul"]
    assert consul_calls[0][0] == "login" and f"-bearer-token-file={token}" in consul_calls[0]
    assert [c[:3] for c in consul_calls[1:]] == [["kv", "put", readonly_kv_key(ENVIRONMENT)]] * 2
    assert cluster.kv()[readonly_kv_key(ENVIRONMENT)] == READONLY_OFF


def test_without_the_consul_token_nothing_is_touched(cluster, storage, tmp_path):
    cluster.acl_token, cluster.acl_login_method = uuid.uuid4().hex, "registry-staging-kubernetes"
    run = ScriptRun(cluster, storage.env, tmp_path)  # no login: the KV write is refused
    assert run.wait() != 0
    assert readonly_kv_key(ENVIRONMENT) not in cluster.kv()
    assert not [c for c in cluster.calls if c[:2] == ["kubectl", "-n"] and "delete" in c]
    assert all(p.restarts == 0 for p in cluster.pods.values()) and not cluster.job_replica_ready
