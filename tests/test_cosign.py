"""cosign (sigstore, built with `go install`) signs an image in each stack's registry with a generated key, and the
signature still verifies after the stack's garbage collection and after a restore drill into fresh storage.

The registry is booted from the stack's recorded configuration through the project's token service (as in
tests/test_clients.py): crane pushes as the CI robot, cosign signs as the CI robot and verifies as the pull robot
(as an admission controller on a cluster would), the cleanup robot deletes. Signing is key-based and offline, as
a private registry's CI signs: no transparency log, no Fulcio, no TUF (`--use-signing-config=false
--tlog-upload=false`, verified with `--insecure-ignore-tlog`). cosign v3 writes its default format, a Sigstore
bundle stored as an OCI 1.1 referrer of the image; Distribution v3.1.1 has no referrers API, so cosign keeps the
referrer list in the fallback tag `sha256-<image hex>` (an index).

Garbage collection: `registry garbage-collect` with the stack's own mode (the GC CronJob's `GC_DELETE_UNTAGGED`
in the plan: staging without, prod with `--delete-untagged`) against the stopped registry's storage, as the
manual runbook does (the Job's read-only window around it is tests/test_operations_gc.py's subject). Garbage is
pushed first so that the collection is seen to delete.

Restore drills, after docs/runbooks.md: staging from a crash-consistent copy of the volume (what a VolumeSnapshot
holds) restored into a new volume; prod "region lost": the DR bucket's copy synced back into an emptied primary
bucket (moto does not replicate: the operator's copy into the DR bucket stands in for S3 replication). prod runs on
its own moto with IAM enforced for the registry; the operator has its own IAM user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest
from botocore.exceptions import ClientError

from components.names import GC_NAME
from tests.support.crane import Crane, basic_auth, build_crane, layer_tarball
from tests.support.moto_server import MotoServer, start_moto_server
from tests.support.peers import installed_binaries
from tests.support.processes import clean_env
from tests.support.registry_server import DROPPED_VARIABLES, RunningRegistry, start_registry
from tests.support.stack_registry import S3_SETUP_ACTIONS, FilesystemBackend, S3Backend, StackSetup, prepare_stack

pytest_plugins = ["tests.support.fixtures"]

STACKS = ("staging", "prod")
REPOSITORY = "ci/signed-app"
KEY_PASSWORD = "cosign-key-password"  # protects the generated private key (COSIGN_PASSWORD)
# The operator's IAM user on prod's moto is created before IAM enforcement starts (create_user,
# put_user_policy, create_access_key), then the stack's own setup actions.
OPERATOR_SETUP_ACTIONS = 3
OPERATOR_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "RestoreOperator", "Effect": "Allow", "Action": ["s3:*", "kms:*"], "Resource": "*"}]}
BUNDLE_ARTIFACT_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@pytest.fixture(scope="module")
def cosign() -> str:
    return installed_binaries("install-cosign.sh")["cosign"]


@pytest.fixture(scope="module")
def crane() -> str:
    return build_crane()


@dataclass
class Cosign:
    """The cosign binary with one robot's registry credentials (a DOCKER_CONFIG directory), offline."""

    binary: str
    home: Path
    credentials: Path

    def __call__(self, *args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.home), "DOCKER_CONFIG": str(self.credentials),
               "TUF_ROOT": str(self.home / "tuf"), "COSIGN_PASSWORD": KEY_PASSWORD}
        return subprocess.run([self.binary, *args], env=env, cwd=cwd or self.home, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)


@dataclass
class Signed:
    """One stack's registry holding an image that cosign signed, shared by this module's tests of that stack.

    Each boot listens on a new port: the clients are made for the registry that runs now."""

    setup: StackSetup
    registry_binary: str
    crane_binary: str
    cosign_binary: str
    workdir: Path
    keys: Path  # cosign.key / cosign.pub, and another pair in other/
    registry: Optional[RunningRegistry] = None
    image: str = ""  # repository@digest of the signed image
    moto: Optional[MotoServer] = None
    operator_keys: tuple[str, str] = ("", "")
    boots: int = 0

    @property
    def host(self) -> str:
        return self.registry.base_url.removeprefix("http://")

    def crane(self, role: str) -> Crane:
        name = self.setup.users(role)[0]
        return Crane(self.crane_binary, self.host, self.workdir / role,
                     basic_auth(name, self.setup.accounts[name].password))

    def cosign(self, role: str) -> Cosign:
        return Cosign(self.cosign_binary, self.workdir / f"cosign-{role}", Path(self.crane(role).env["DOCKER_CONFIG"]))

    def boot(self) -> None:
        """Start the stack's registry (again): the same token service, the storage ``setup.backend`` names."""
        assert self.registry is None or not self.registry.alive()
        self.boots += 1
        name = f"{self.setup.stack}-cosign-{self.boots}"
        self.registry = self.setup.boot(
            lambda env, name: start_registry(self.registry_binary, env, self.workdir / name, name=name), name=name)

    def stop(self) -> None:
        """Stop the registry, as scaling the StatefulSet to zero does; it must shut down cleanly."""
        if self.registry is not None and self.registry.alive():
            code = self.registry.stop()
            assert code == 0, f"the registry exited {code}\n{self.registry.log_tail()}"

    def sign(self, reference: str) -> None:
        """As CI signs: the CI robot's credentials, the generated key, no transparency log, no signing config."""
        result = self.cosign("push")("sign", "--key", str(self.keys / "cosign.key"), "--use-signing-config=false",
                                     "--tlog-upload=false", "--allow-http-registry", "--yes",
                                     f"{self.host}/{reference}")
        assert result.returncode == 0, result.stderr

    def verify(self, reference: Optional[str] = None, key: str = "cosign.pub") -> subprocess.CompletedProcess:
        """As a cluster's admission check verifies: the pull robot's credentials and the public key."""
        return self.cosign("pull")("verify", "--key", str(self.keys / key), "--insecure-ignore-tlog",
                                   "--allow-http-registry", f"{self.host}/{reference or self.image}")


def gc_delete_untagged(setup: StackSetup) -> bool:
    """The collection mode the stack's GC CronJob runs with, as the plan records it."""
    cron_job = next(r.plain_inputs for r in setup.plan.of_type("kubernetes:batch/v1:CronJob")
                    if r.plain_inputs["metadata"]["name"] == GC_NAME)
    container = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    value = {e["name"]: e.get("value") for e in container["env"]}["GC_DELETE_UNTAGGED"]
    assert value in ("true", "false"), value
    return value == "true"


def push(ci: Crane, workdir: Path, tag: str, content: bytes) -> str:
    """An image of one layer pushed as CI; returns its manifest digest."""
    ci("append", "-f", str(layer_tarball(workdir, content)), "-t", ci.ref(tag))
    return ci("digest", ci.ref(tag)).stdout.strip()


def layer_of(ci: Crane, reference: str) -> str:
    return json.loads(ci("manifest", ci.ref(reference)).stdout)["layers"][-1]["digest"]


def signature_manifests(ci: Crane, reference: str) -> list[dict]:
    """The Sigstore bundles cosign stored as referrers of ``repository@digest``: the fallback tag's index entries."""
    repository, _, digest = reference.partition("@")
    algorithm, _, hex_ = digest.partition(":")
    listed = ci("manifest", ci.ref(f"{repository}:{algorithm}-{hex_}"), check=False)
    if listed.returncode != 0:
        return []
    return [entry for entry in json.loads(listed.stdout)["manifests"]
            if entry.get("artifactType") == BUNDLE_ARTIFACT_TYPE]


def blob_stored(setup: StackSetup, digest: str) -> bool:
    try:
        setup.backend.stored_blob(setup.kv, digest)
        return True
    except (FileNotFoundError, ClientError):
        return False


def assert_verified(signed: Signed, reference: Optional[str] = None) -> None:
    reference = reference or signed.image
    verified = signed.verify(reference)
    assert verified.returncode == 0, verified.stderr
    claims = json.loads(verified.stdout.strip().splitlines()[-1])
    assert [c["critical"]["image"]["docker-manifest-digest"] for c in claims] == [reference.rsplit("@", 1)[1]]


# --- one signed registry per stack ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=STACKS)
def signed(request, registry_binary, cosign, crane, tmp_path_factory) -> Iterator[Signed]:
    stack = request.param
    workdir = tmp_path_factory.mktemp(f"cosign-{stack}")
    moto, operator_keys = None, ("", "")
    setup, signed = None, None
    try:
        if stack == "prod":
            moto = start_moto_server(workdir / "moto",
                                     initial_no_auth_action_count=OPERATOR_SETUP_ACTIONS + S3_SETUP_ACTIONS)
            operator_keys = moto.create_user_with_inline_policy("registry-restore-operator", OPERATOR_POLICY)
        setup = prepare_stack(stack, None, workdir, moto=moto)
        if moto is not None:
            with pytest.raises(ClientError):  # IAM is enforced from here on: unknown credentials are refused
                moto.client("s3").list_buckets()
        keys = workdir / "keys"
        (keys / "other").mkdir(parents=True)
        signed = Signed(setup=setup, registry_binary=registry_binary, crane_binary=crane, cosign_binary=cosign,
                        workdir=workdir, keys=keys, moto=moto, operator_keys=operator_keys)
        signed.boot()
        for directory in (keys, keys / "other"):
            generated = signed.cosign("push")("generate-key-pair", cwd=directory)
            assert generated.returncode == 0, generated.stderr
        digest = push(signed.crane("push"), workdir, f"{REPOSITORY}:1", os.urandom(4096) + b"signed build")
        signed.image = f"{REPOSITORY}@{digest}"
        signed.sign(signed.image)
        yield signed
        signed.stop()
    finally:
        if signed is not None and signed.registry is not None:
            signed.registry.stop()
        if setup is not None:
            setup.close()
        if moto is not None:
            moto.stop()


# --- tests ----------------------------------------------------------------------------------------------------


def test_cosign_verifies_the_signature_with_its_key_and_not_with_another(signed):
    assert_verified(signed)
    assert len(signature_manifests(signed.crane("pull"), signed.image)) == 1, \
        "cosign stores one Sigstore bundle as a referrer of the image"
    wrong = signed.verify(key="other/cosign.pub")
    assert wrong.returncode != 0, wrong.stdout
    assert "failed to verify signature" in wrong.stderr, wrong.stderr


def test_verification_fails_once_the_signature_is_deleted(signed, tmp_path):
    ci = signed.crane("push")
    digest = push(ci, tmp_path, "ci/revoked:1", os.urandom(4096) + b"signature to be deleted")
    reference = f"ci/revoked@{digest}"
    signed.sign(reference)
    assert_verified(signed, reference)
    bundles = signature_manifests(ci, reference)
    assert bundles, "cosign stored no referrer"
    cleanup = signed.crane("cleanup")
    for bundle in bundles:
        cleanup("delete", cleanup.ref(f"ci/revoked@{bundle['digest']}"))
    unsigned = signed.verify(reference)
    assert unsigned.returncode != 0 and "no signatures found" in unsigned.stderr, unsigned.stderr
    assert ci("digest", ci.ref("ci/revoked:1")).stdout.strip() == digest, "only the signature went"


def test_the_signature_survives_the_stacks_garbage_collection(signed, tmp_path):
    setup, ci, cleanup = signed.setup, signed.crane("push"), signed.crane("cleanup")
    delete_untagged = gc_delete_untagged(setup)
    assert delete_untagged == (setup.stack == "prod"), "the stacks' documented modes (docs/runbooks.md)"
    # Garbage either mode collects: the layer of a manifest the cleanup robot deleted.
    deleted = push(ci, tmp_path, "ci/deleted:1", os.urandom(4096) + b"deleted build")
    deleted_layer = layer_of(ci, "ci/deleted:1")
    cleanup("delete", cleanup.ref(f"ci/deleted@{deleted}"))
    # Garbage only --delete-untagged collects: a build whose tag moved on.
    push(ci, tmp_path, "ci/moved:1", os.urandom(4096) + b"superseded build")
    superseded_layer = layer_of(ci, "ci/moved:1")
    push(ci, tmp_path, "ci/moved:1", os.urandom(4096) + b"current build")
    bundles = signature_manifests(ci, signed.image)
    assert bundles and blob_stored(setup, deleted_layer) and blob_stored(setup, superseded_layer)

    signed.stop()
    collect_garbage(signed, delete_untagged)
    signed.boot()

    # It collected (moto lets a denied batch delete "succeed": the objects are checked, not the exit code) ...
    assert not blob_stored(setup, deleted_layer), "the collection did not run"
    assert blob_stored(setup, superseded_layer) != delete_untagged
    # ... and the signature, an untagged referrer listed by a tagged index, is still there and verifies.
    assert signature_manifests(signed.crane("pull"), signed.image) == bundles
    assert_verified(signed)


def collect_garbage(signed: Signed, delete_untagged: bool) -> None:
    """`registry garbage-collect` on the stopped registry's storage, with its configuration and environment."""
    registry = signed.registry
    env = {key: value for key, value in clean_env(registry.env, drop=DROPPED_VARIABLES).items()
           if not key.startswith("REGISTRY_") or key in registry.env}
    argv = [signed.registry_binary, "garbage-collect", *(["--delete-untagged"] if delete_untagged else []),
            str(registry.config_path)]
    collected = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert collected.returncode == 0, collected.stderr[-4000:]


def test_the_signature_verifies_after_a_restore_drill_into_fresh_storage(signed):
    bundles = signature_manifests(signed.crane("pull"), signed.image)
    assert bundles
    if isinstance(signed.setup.backend, FilesystemBackend):
        restore_volume(signed)
    else:
        restore_region(signed)
    signed.boot()
    assert signature_manifests(signed.crane("pull"), signed.image) == bundles
    assert_verified(signed)


def restore_volume(signed: Signed) -> None:
    """Staging, "whole volume": a snapshot (a crash-consistent copy, taken while the registry runs) restored into a
    new volume; the old volume is gone."""
    backend = signed.setup.backend
    assert isinstance(backend, FilesystemBackend)
    snapshot = signed.workdir / f"snapshot-{signed.boots}"
    shutil.copytree(backend.root, snapshot, symlinks=True)
    signed.stop()
    shutil.rmtree(backend.root)
    restored = signed.workdir / f"restored-volume-{signed.boots}"
    subprocess.run(["cp", "-a", str(snapshot), str(restored)], check=True)
    signed.setup.backend = FilesystemBackend(restored)


def restore_region(signed: Signed) -> None:
    """prod, "region lost": the DR bucket's copy synced back into the emptied primary bucket."""
    backend = signed.setup.backend
    assert isinstance(backend, S3Backend) and signed.moto is not None
    dr = signed.setup.plan.one("aws:s3/bucket:Bucket", "registry-storage-dr-bucket").plain_inputs["bucket"]
    s3 = signed.moto.client("s3", *signed.operator_keys, region=backend.region)
    s3.create_bucket(Bucket=dr, CreateBucketConfiguration={"LocationConstraint": backend.region})
    copy_bucket(s3, backend.bucket, dr)  # what replication keeps in the DR bucket
    signed.stop()
    empty_bucket(s3, backend.bucket)  # the primary is lost: every version and delete marker
    assert not s3.list_object_versions(Bucket=backend.bucket).get("Versions")
    copy_bucket(s3, dr, backend.bucket)  # `aws s3 sync s3://<drBucket> s3://<s3Bucket>`


def copy_bucket(s3, source: str, target: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", []):
            s3.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]})


def empty_bucket(s3, bucket: str) -> None:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
