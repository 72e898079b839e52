"""The garbage-collection Job under load, against the real peers, in each stack's own mode.

Each stack's recorded plan is applied to a real control plane (kube-apiserver v1.35.4 with its controller
manager), Consul 1.14.4 and OpenBao, and its pods run under the harness of tests/support/kubelet.py
(tests/support/gc_peers.py says what is real and what the harness plays): staging with one replica on a volume
directory and ``gcDeleteUntagged`` false, prod with three replicas on S3 (moto, the plan's IAM policy enforced)
and ``gcDeleteUntagged`` true, both with token auth through the project's token service.

A test starts a Job from the ``registry-gc`` CronJob; the real Job controller creates its pod, the harness runs
the script as its container. Clients pull and push through the ``registry`` Service, which follows the
EndpointSlices the real controller writes from the pods' readiness and deletion. The tests wait on events (a
file the paused collector writes, a pod's readiness, a Job's condition), never on fixed sleeps.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from components.names import READONLY_OFF, READONLY_ON, readonly_kv_key
from tests.conftest import settings_for
from tests.support.gc_peers import SCRIPT_TIMINGS, GcPeers, JobSettings, start_gc_peers
from tests.support.kube_cluster import NAMESPACE
from tests.support.kubelet import eventually
from tests.support.oci import (OCI_INDEX, Image, Manifest, OciClient, RegistryError, canonical_json,
                               cosign_signature_tag, make_cosign_signature, make_image, make_referrer_artifact,
                               make_referrers_index, referrers_tag)

pytest_plugins = ["tests.support.fixtures", "tests.support.peer_fixtures"]

TAGGED_IMAGES = 60


# --- storage: the volume directory or the S3 bucket on moto ---------------------------------------------


class StorageView:
    """The registry's objects as relative paths under docker/registry/v2/, read from the storage itself.

    ``snapshot()`` reads them once (a whole bucket listing per question would dominate the test on S3)."""

    def keys(self) -> set[str]:
        raise NotImplementedError

    def snapshot(self) -> "StoredKeys":
        return StoredKeys(self.keys())


@dataclass(frozen=True)
class StoredKeys:
    keys: set[str]

    def blob_stored(self, digest: str) -> bool:
        hex_ = digest.split(":", 1)[1]
        return f"blobs/sha256/{hex_[:2]}/{hex_}/data" in self.keys

    def revision_stored(self, repo: str, digest: str) -> bool:
        return f"repositories/{repo}/_manifests/revisions/sha256/{digest.split(':', 1)[1]}/link" in self.keys


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


def storage_view(peers: GcPeers) -> StorageView:
    root = peers.storage_root()
    if root is not None:
        return FilesystemView(root)
    backend = peers.setup.backend
    return S3View(backend.client(), backend.bucket, peers.setup.kv["env/REGISTRY_STORAGE_S3_ROOTDIRECTORY"])


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


def pulling_client(peers: GcPeers) -> OciClient:
    """A pull robot's client of the Service that, like Go's net/http in containerd and Docker, resends an
    idempotent request once when a reused keep-alive connection closes before any response (a registry closes
    idle connections when SIGTERM starts its drain). A broken response body is never retried."""
    client = peers.client("pull", timeout=30)
    retry = Retry(total=1, connect=1, read=1, status=0, other=0, redirect=0, allowed_methods={"GET", "HEAD"})
    client.session.mount("http://", HTTPAdapter(max_retries=retry))
    return client


class PullLoop:
    """Threads pulling tagged images through the Service, each verified byte for byte."""

    def __init__(self, peers: GcPeers, content: Content, threads: int = 4):
        self.peers, self.content, self.threads = peers, content, threads
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
        eventually("the first pulls", lambda: len(self.results) >= self.threads)
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
            try:
                pulled = pulling_client(self.peers).pull_image(repo, tag)
                ok = pulled.manifest.data == image.manifest.data and [b.data for b in pulled.blobs] == [
                    b.data for b in image.blobs]
                self.results.append((time.monotonic(), ok, "" if ok else f"{repo}:{tag} differs"))
            except Exception as exc:  # any failure of a pull is what we count
                self.results.append((time.monotonic(), False, f"{repo}:{tag}: {exc}"[:300]))

    def between(self, start: float, end: float) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if start <= r[0] <= end]

    def wait_for_one_after(self, moment: float) -> None:
        eventually("a pull finished after the window", lambda: any(t > moment for t, _, _ in self.results))


def push_status_through_service(peers: GcPeers) -> int:
    try:
        peers.client("push").push_image("team9/during-gc", make_image(os.urandom(1024)), tag="v1")
        return 201
    except RegistryError as exc:
        return exc.status


# --- running the Job --------------------------------------------------------------------------------------


def paused_collector(tmp_path: Path) -> tuple[str, Path, Path]:
    """A GC command that waits for the test before running the real `registry garbage-collect`."""
    paused, resume = tmp_path / "gc-paused", tmp_path / "gc-resume"
    wrapper = tmp_path / "collect.sh"
    wrapper.write_text(f'#!/bin/sh\ntouch "{paused}"\nwhile [ ! -e "{resume}" ]; do sleep 0.05; done\n'
                       '[ "$GC_DELETE_UNTAGGED" = true ] && set -- --delete-untagged\n'
                       'exec registry garbage-collect "$@" "$GC_CONFIG_FILE"\n')
    wrapper.chmod(0o755)
    return str(wrapper), paused, resume


@pytest.fixture(scope="module", params=["staging", "prod"])
def gc_peers(request, kube_binaries, consul_binary, registry_binary, tmp_path_factory):
    peers = start_gc_peers(request.param, kube_binaries, consul_binary, registry_binary,
                           tmp_path_factory.mktemp(f"gc-{request.param}"))
    yield peers
    peers.stop()


@pytest.fixture
def peers(gc_peers: GcPeers):
    """The stack's peers with every replica Ready behind the Service, in write mode, as each test starts."""
    key = readonly_kv_key(gc_peers.stack)
    assert gc_peers.kv_value(key) in (None, READONLY_OFF)
    for pod in gc_peers.pod_names():
        gc_peers.kubelet.wait_ready(pod)
    eventually("every replica behind the Service", lambda: gc_peers.proxy.ready_pods() == set(gc_peers.pod_names()),
               check=gc_peers.kubelet.check)
    yield gc_peers
    for job in gc_peers.jobs.values():
        if job.run is not None:
            job.run.kill()
    gc_peers.kubelet.check()
    gc_peers.check_drained()


def delete_untagged(peers: GcPeers) -> bool:
    return settings_for(peers.stack).gc_delete_untagged


def restarted_read_only_then_writable(peers: GcPeers) -> dict[str, list[str]]:
    """Each replica started twice during a run: read-only for the window, then writable."""
    return {pod: [READONLY_ON, READONLY_OFF] for pod in peers.pod_names()}


# --- the tests -----------------------------------------------------------------------------------------


def test_gc_keeps_pulls_serving_refuses_pushes_and_removes_only_garbage(peers, tmp_path, record_property):
    storage = storage_view(peers)
    key = readonly_kv_key(peers.stack)
    content = populate(peers.client("push"))
    stored = storage.snapshot()
    for repo, digest in content.untagged_manifests:
        assert stored.revision_stored(repo, digest)
    assert all(stored.blob_stored(d) for d in content.garbage_blobs)
    reader = peers.client("pull")
    before = {(repo, tag): reader.get_manifest(repo, tag).data for repo, tag in [*content.tagged, *content.signatures]}
    since = len(peers.starts)
    uids = {pod: peers.live(pod).uid for pod in peers.pod_names()}

    collect, paused, resume = paused_collector(tmp_path)
    with PullLoop(peers, content) as pulls:
        job = peers.start_job(JobSettings(collect_command=collect))
        job.wait_for_file(paused)
        # Every replica was restarted read-only, and the Job's own replica serves beside them: a push through the
        # Service gets 405 whichever replica it reaches.
        assert peers.kv_value(key) == READONLY_ON
        assert peers.registry_starts(since) == {pod: [READONLY_ON] for pod in peers.pod_names()}
        assert peers.proxy.ready_pods() == {*peers.pod_names(), job.pod}
        assert push_status_through_service(peers) == 405
        for pod in peers.pod_names():  # each one a new pod object (the StatefulSet controller's), serving pulls
            replaced = peers.live(pod)
            assert replaced.uid != uids[pod]
            direct = peers.client("pull", base_url="http://%s:%d" % replaced.container.address)
            repo, tag = next(iter(content.tagged))
            assert direct.pull_image(repo, tag).manifest.data == content.tagged[(repo, tag)].manifest.data
        resume.touch()
        code = job.wait()
        run = job.script()
        pulls.wait_for_one_after(run.time_of("finished with exit status"))
    assert code == 0, run.log()

    opened, closed = run.time_of("read-only window opened"), run.time_of("read-only window closed")
    during = pulls.between(opened, closed)
    failures = [r for r in pulls.results if not r[1]]
    record_property("read_only_window_seconds", round(closed - opened, 2))
    record_property("pulls_during_window", len(during))
    record_property("failed_pulls_during_window", len([r for r in during if not r[1]]))
    print(f"\n[{peers.stack}] images={len(content.tagged)} replicas={peers.replicas} "
          f"read-only window={closed - opened:.2f}s pulls during it={len(during)} "
          f"failed={len([r for r in during if not r[1]])} pulls in total={len(pulls.results)} "
          f"requests resent on a closed keep-alive connection={len(pulls.retries)} "
          f"connections without a backend={len(peers.proxy.refused)}\n"
          + "\n".join(line for line in run.timeline().splitlines() if " registry-gc: " in line))
    assert len(during) > 50
    assert not failures, (failures[:5], peers.proxy.refused[:5])

    # Afterwards: write mode on every replica, the Job complete and its pod out of the Service.
    assert peers.kv_value(key) == READONLY_OFF
    assert peers.registry_starts(since) == restarted_read_only_then_writable(peers)
    assert "Complete" in job.conditions()
    eventually("only the StatefulSet's pods behind the Service",
               lambda: peers.proxy.ready_pods() == set(peers.pod_names()))
    # The Job's replica left the Service before the script stopped it (its settle covered the propagation).
    job_ip = next(r.ip for r in peers.kubelet.records if r.name == job.pod)
    assert peers.proxy.left_at[job_ip] <= run.time_of("own read-only replica leaves the Service") + float(
        SCRIPT_TIMINGS["GC_SETTLE_SECONDS"])

    # Garbage is gone from the storage itself; everything tagged is still there.
    stored = storage.snapshot()
    if delete_untagged(peers):
        for repo, digest in content.untagged_manifests:
            assert not stored.revision_stored(repo, digest), (repo, digest)
        for digest in content.garbage_blobs:
            assert not stored.blob_stored(digest), digest
    else:
        # Without --delete-untagged an untagged manifest is kept, and so is everything it refers to.
        for repo, digest in content.untagged_manifests:
            assert stored.revision_stored(repo, digest), (repo, digest)
        for digest in set(content.garbage_blobs) - set(content.unreferenced_blobs):
            assert stored.blob_stored(digest), digest
    for digest in content.unreferenced_blobs:
        assert not stored.blob_stored(digest), digest
    for digest in content.kept_blobs:
        assert stored.blob_stored(digest), digest

    client = peers.client("pull")
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
    assert stored.revision_stored("team0/scratch", stranded.digest)
    if delete_untagged(peers):
        # Pinned v3.1.1 behaviour: in a repository that never had a tag, --delete-untagged skips the manifests
        # ("manifest tags path of repository ... does not exist") but, having marked nothing, deletes their blobs.
        assert not any(stored.blob_stored(b.digest) for b in [stranded.manifest, *stranded.blobs])
    else:
        assert client.pull_image("team0/scratch", stranded.digest).manifest.data == stranded.manifest.data

    # Pushes work again.
    assert push_status_through_service(peers) == 201


# The trap's paths do not depend on the stack; each prod run costs a minute more (three replicas restarted twice,
# the StatefulSet controller waiting minReadySeconds before each next one), and its restore round is the main test's.
STAGING_ONLY = pytest.mark.parametrize("gc_peers", ["staging"], indirect=True)


@STAGING_ONLY
def test_failing_collection_restores_write_mode_and_fails_the_job(peers, tmp_path):
    content = populate(peers.client("push"), images=5)
    since = len(peers.starts)
    with PullLoop(peers, content) as pulls:
        job = peers.start_job(JobSettings(config_file=tmp_path / "missing-config.yml"))
        code = job.wait()
        run = job.script()
        pulls.wait_for_one_after(run.time_of("finished with exit status"))
    assert code != 0, run.log()
    assert "garbage collection finished" not in run.log()
    assert "read-only window closed: write mode restored" in run.log()
    assert "Failed" in job.conditions()
    assert peers.kv_value(readonly_kv_key(peers.stack)) == READONLY_OFF
    assert peers.registry_starts(since) == restarted_read_only_then_writable(peers)
    assert push_status_through_service(peers) == 201
    assert pulls.results and not [r for r in pulls.results if not r[1]], [r for r in pulls.results if not r[1]][:5]


@STAGING_ONLY
def test_the_jobs_deadline_stops_the_collection_and_restores_write_mode(peers, tmp_path):
    """activeDeadlineSeconds ends the Job: the Job controller deletes its pod, the kubelet sends SIGTERM, and the
    trap must not wait for the collection."""
    content = populate(peers.client("push"), images=3)
    since = len(peers.starts)
    collect, paused, _ = paused_collector(tmp_path)  # never resumed: a collection that outlives the deadline
    job = peers.start_job(JobSettings(collect_command=collect))
    job.wait_for_file(paused)
    assert push_status_through_service(peers) == 405
    api = peers.kubelet.api
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job.name}"
    started = time.mktime(time.strptime(api.call("GET", path)["status"]["startTime"], "%Y-%m-%dT%H:%M:%SZ"))
    elapsed = int(time.mktime(time.gmtime()) - started)
    api.call("PATCH", path, {"spec": {"activeDeadlineSeconds": elapsed + 1}}, "application/merge-patch+json")
    run = job.script()
    assert run.wait(timeout=300) == 143, run.log()
    assert "interrupted" in run.log() and "stopping the garbage collection" in run.log()
    # The controller marks the Job Failed once its pod is gone (FailureTarget first, since Kubernetes 1.31).
    failed = eventually("the Job failed by its deadline", lambda: [
        c for c in api.call("GET", path)["status"].get("conditions", []) if c["type"] == "Failed"
        and c["status"] == "True"], check=peers.kubelet.check)
    assert failed[0]["reason"] == "DeadlineExceeded", failed
    assert peers.kv_value(readonly_kv_key(peers.stack)) == READONLY_OFF
    assert peers.registry_starts(since) == restarted_read_only_then_writable(peers)
    for pod in peers.pod_names():
        peers.kubelet.wait_ready(pod)
    assert push_status_through_service(peers) == 201
    repo, tag = next(iter(content.tagged))
    assert peers.client("pull").pull_image(repo, tag).manifest.data == content.tagged[(repo, tag)].manifest.data


def test_without_a_consul_login_nothing_is_touched(peers):
    """Consul's ACLs refuse the key write of a script that did not log in: no pod is restarted, the Job fails."""
    key = readonly_kv_key(peers.stack)
    value_before = peers.kv_value(key)
    since = len(peers.starts)
    uids = {pod: peers.live(pod).uid for pod in peers.pod_names()}
    job = peers.start_job(JobSettings(consul_login=False))
    code = job.wait()
    run = job.script()
    assert code != 0, run.log()
    assert "Permission denied" in run.log() and "read-only window opened" not in run.log()
    assert "Failed" in job.conditions()
    assert peers.kv_value(key) == value_before
    assert peers.registry_starts(since) == {}
    assert {pod: peers.live(pod).uid for pod in peers.pod_names()} == uids
