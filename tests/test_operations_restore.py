"""Restore drills against the real registry: lose a tagged image's data, bring it back, pull it byte-identical.

Each drill boots the registry from its stack's recorded configuration through the config-cli stand-in (staging:
filesystem, prod: S3 on moto with the plan's bucket, KMS key and versioning), in htpasswd mode so that the
operator's robot may delete (the incident deletes a manifest).

Filesystem: from a copy of the volume's directory taken as a VolumeSnapshot would be (the registry
running, a crash-consistent copy). S3: from the versioned bucket's noncurrent versions on moto.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support.oci import OciClient, RegistryError, make_image
from tests.support.stack_fixtures import VARIANTS
from tests.support.stack_registry import StackSetup, prepare_stack

pytest_plugins = ["tests.support.fixtures"]

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("s3_undelete", ROOT / "scripts" / "s3-undelete.py")
s3_undelete = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(s3_undelete)


@pytest.fixture
def drill(request, tmp_path):
    """A stack set up from its recorded plan (its own moto for prod: the drill reads noncurrent versions)."""
    stack = request.param
    moto = request.getfixturevalue("moto_server") if stack == "prod" else None
    setup = prepare_stack(stack, None, tmp_path / stack, moto=moto, extra_overrides=VARIANTS["htpasswd"])
    yield setup
    setup.close()


def pusher(setup: StackSetup, registry) -> OciClient:
    return setup.client(registry, setup.users("push")[0])


def lose_image(registry_binary: str, registry, client: OciClient, repo: str, tag: str, image) -> None:
    """The incident: the tagged manifest is deleted and garbage collection sweeps its blobs."""
    client.delete_manifest(repo, image.digest)
    config = registry.config_path
    result = subprocess.run([registry_binary, "garbage-collect", "--delete-untagged", str(config)],
                            env={**os.environ, **registry.env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with pytest.raises(RegistryError) as gone:
        client.pull_image(repo, tag)
    assert gone.value.status == 404


def assert_pulls_identical(client: OciClient, repo: str, tag: str, image) -> None:
    pulled = client.pull_image(repo, tag)
    assert pulled.manifest.data == image.manifest.data
    assert [b.data for b in pulled.blobs] == [b.data for b in image.blobs]


@pytest.mark.parametrize("drill", ["staging"], indirect=True)
def test_filesystem_restore_from_a_volume_snapshot_copy(registry_binary, registry_factory, drill, tmp_path):
    registry = drill.boot(registry_factory)
    volume = Path(registry.env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    client = pusher(drill, registry)
    lost, kept = make_image(os.urandom(64 * 1024)), make_image(os.urandom(64 * 1024))
    client.push_image("team/lost", lost, tag="v1")
    client.push_image("team/kept", kept, tag="v1")

    snapshot = tmp_path / "snapshot"  # what a VolumeSnapshot restored into a new claim would hold
    shutil.copytree(volume, snapshot, symlinks=True)
    later = make_image(os.urandom(64 * 1024))
    client.push_image("team/later", later, tag="v1")  # pushed after the snapshot: must survive the restore

    lose_image(registry_binary, registry, client, "team/lost", "v1", lost)
    lost_blob = volume / "docker/registry/v2/blobs/sha256" / lost.layers[0].digest[7:9] / lost.layers[0].digest[7:] / "data"
    assert not lost_blob.exists()

    # The runbook's copy: everything the snapshot has and the volume lacks, nothing overwritten.
    subprocess.run(["cp", "-a", "-n", f"{snapshot}/docker", f"{volume}/"], check=True)

    assert_pulls_identical(client, "team/lost", "v1", lost)
    assert_pulls_identical(client, "team/kept", "v1", kept)
    assert_pulls_identical(client, "team/later", "v1", later)


@pytest.mark.parametrize("drill", ["prod"], indirect=True)
def test_s3_restore_from_noncurrent_versions(registry_binary, registry_factory, moto_server, drill):
    registry = drill.boot(registry_factory)
    bucket, region = drill.backend.bucket, drill.backend.region
    root = registry.env["REGISTRY_STORAGE_S3_ROOTDIRECTORY"]
    s3 = moto_server.client("s3", region=region)  # the operator's credentials, not the registry's
    client = pusher(drill, registry)
    earlier = make_image(os.urandom(64 * 1024))
    client.push_image("team/earlier", earlier, tag="v1")
    client.delete_manifest("team/earlier", earlier.digest)  # deleted before the incident: stays deleted
    time.sleep(1.1)
    incident = datetime.now(timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    lost, kept = make_image(os.urandom(64 * 1024)), make_image(os.urandom(64 * 1024))
    client.push_image("team/lost", lost, tag="v1")
    client.push_image("team/kept", kept, tag="v1")

    lose_image(registry_binary, registry, client, "team/lost", "v1", lost)
    prefix = root.strip("/") + "/docker/registry/v2/"
    layer_key = f"{prefix}blobs/sha256/{lost.layers[0].digest[7:9]}/{lost.layers[0].digest[7:]}/data"
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key=layer_key)

    assert layer_key in s3_undelete.undelete(s3, bucket, prefix, incident, dry_run=True)
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key=layer_key)  # a dry run changes nothing
    restored = s3_undelete.undelete(s3, bucket, prefix, incident)
    assert layer_key in restored
    assert s3.get_object(Bucket=bucket, Key=layer_key)["Body"].read() == lost.layers[0].data

    assert_pulls_identical(client, "team/lost", "v1", lost)
    assert_pulls_identical(client, "team/kept", "v1", kept)
    with pytest.raises(RegistryError) as still_gone:
        client.get_manifest("team/earlier", earlier.digest)
    assert still_gone.value.status == 404
