"""Push and pull throughput of the registry booted from each stack's configuration, against its raw backend.

Not a test: run it by hand (``python benchmarks/throughput.py [--size-mib 256] [--runs 3]``) on a quiet machine.

For each stack, the registry is booted exactly as the end-to-end tests boot it (recorded plan -> OpenBao ->
config-cli stand-in -> registry v3.1.1, tests/support/stack_registry.py), and a single-layer image whose layer
is ``--size-mib`` MiB of random bytes is pushed (POST, one streamed PATCH, PUT, then the manifest) and pulled
(manifest, then the blob streamed to a file and verified) by the CI user through the token server. The same
file is then written and read directly on the backend: a file copy into and out of the storage directory for
filesystem (staging), boto3 ``put_object``/``get_object`` with the registry's IAM user on the same moto server
for S3 (prod). Everything streams from and to files; memory stays small (moto keeps objects in temp files).
Figures are MiB/s, the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.fixtures import INSTALL_SCRIPT, RegistryFactory  # noqa: E402
from tests.support.moto_server import start_moto_server  # noqa: E402
from tests.support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Blob, Manifest, canonical_json  # noqa: E402
from tests.support.openbao import start_openbao  # noqa: E402
from tests.support.stack_registry import S3_SETUP_ACTIONS, S3Backend, StackSetup, prepare_stack  # noqa: E402

MIB = 1 << 20
COPY_BUFFER = 4 * MIB


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their sha256 digest."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(COPY_BUFFER, remaining))
            digest.update(chunk)
            handle.write(chunk)
            remaining -= len(chunk)
    return "sha256:" + digest.hexdigest()


def stream_to_file(chunks, path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for chunk in chunks:
            digest.update(chunk)
            handle.write(chunk)
    return "sha256:" + digest.hexdigest()


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def registry_round(setup: StackSetup, registry, layer: Path, digest: str, size: int, sink: Path, repo: str
                   ) -> tuple[float, float]:
    client = setup.client(registry, setup.users("push")[0], timeout=600)
    config = Blob(canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                                  "rootfs": {"type": "layers", "diff_ids": [digest]}}), OCI_CONFIG)
    manifest = Manifest(canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                                        "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": size}]}),
                        OCI_MANIFEST)

    def push() -> None:
        client.push_blob(repo, config.data)
        started = client.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        with layer.open("rb") as body:
            patched = client.request("PATCH", started.headers["Location"], expect=(202,), data=body,
                                     headers={"Content-Type": "application/octet-stream"})
        client.request("PUT", patched.headers["Location"], expect=(201,), params={"digest": digest},
                       headers={"Content-Type": "application/octet-stream", "Content-Length": "0"})
        client.push_manifest(repo, "bench", manifest)

    def pull() -> None:
        pulled = client.get_manifest(repo, "bench")
        (entry,) = pulled.json["layers"]
        response = client.request("GET", f"/v2/{repo}/blobs/{entry['digest']}", stream=True)
        with response:
            assert stream_to_file(response.iter_content(COPY_BUFFER), sink) == digest

    return timed(push), timed(pull)


def backend_round(setup: StackSetup, layer: Path, digest: str, sink: Path, name: str) -> tuple[float, float]:
    backend = setup.backend
    if isinstance(backend, S3Backend):
        s3 = backend.client()
        key = f"benchmark/{name}"

        def write() -> None:
            with layer.open("rb") as body:
                s3.put_object(Bucket=backend.bucket, Key=key, Body=body)

        def read() -> None:
            body = s3.get_object(Bucket=backend.bucket, Key=key)["Body"]
            assert stream_to_file(body.iter_chunks(COPY_BUFFER), sink) == digest

        return timed(write), timed(read)
    target = backend.root / "benchmark" / name
    target.parent.mkdir(parents=True, exist_ok=True)

    # No fsync on either side: the registry's filesystem driver does not sync either.
    return timed(lambda: shutil.copyfile(layer, target)), timed(lambda: shutil.copyfile(target, sink))


def registry_binary() -> str:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MIB

    workdir = Path(tempfile.mkdtemp(prefix="registry-benchmark-"))
    openbao = start_openbao(workdir / "openbao")
    moto = start_moto_server(workdir / "moto", initial_no_auth_action_count=S3_SETUP_ACTIONS)
    factory = RegistryFactory(registry_binary(), workdir / "registries")
    setups: list[StackSetup] = []
    rows = []
    try:
        layer = workdir / "layer.bin"
        digest = random_file(layer, size)
        sink = workdir / "pulled.bin"
        for stack in ("staging", "prod"):
            setup = prepare_stack(stack, openbao, workdir / stack, moto=moto if stack == "prod" else None)
            setups.append(setup)
            registry = setup.boot(factory, name=f"{stack}-benchmark")
            figures: dict[str, list[float]] = {"push": [], "pull": [], "write": [], "read": []}
            for run in range(args.runs):
                push, pull = registry_round(setup, registry, layer, digest, size, sink, f"bench/{stack}-{run}")
                write, read = backend_round(setup, layer, digest, sink, f"{stack}-{run}")
                for name, seconds in (("push", push), ("pull", pull), ("write", write), ("read", read)):
                    figures[name].append(size / MIB / seconds)
            exit_code = registry.stop()
            assert exit_code == 0, f"{stack} registry exited {exit_code}"
            median = {name: statistics.median(values) for name, values in figures.items()}
            backend = "S3 (moto, IAM enforced)" if isinstance(setup.backend, S3Backend) else "filesystem (file copy)"
            rows.append((stack, backend, median["push"], median["write"], median["pull"], median["read"]))
    finally:
        for setup in setups:
            setup.close()
        factory.stop_all()
        moto.stop()
        openbao.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"{args.size_mib} MiB single-layer image, median of {args.runs} runs, MiB/s; "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| stack | backend | registry push | backend write | push ratio | registry pull | backend read | pull ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for stack, backend, push, write, pull, read in rows:
        print(f"| {stack} | {backend} | {push:.0f} | {write:.0f} | {push / write:.2f} | {pull:.0f} | {read:.0f} "
              f"| {pull / read:.2f} |")


if __name__ == "__main__":
    main()
