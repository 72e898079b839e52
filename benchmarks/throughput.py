"""Push and pull throughput of each stack's registry with real clients, against its raw backend, in one run.

Not a test: run it by hand on a machine as quiet as you can get (the README's figures table has the commands):

    venv/bin/python benchmarks/throughput.py                    # 256 MiB layer and 50 x 1 MiB, c=1 and 8
    venv/bin/python benchmarks/throughput.py --large-mib 512 --runs 2 --json /tmp/throughput.json
    venv/bin/python benchmarks/throughput.py --stacks prod --registry-env REGISTRY_STORAGE_S3_CHUNKSIZE=33554432
    venv/bin/python benchmarks/throughput.py --stacks staging --workloads large --concurrency 1 --profile /tmp/prof

For each stack the registry is booted exactly as the end-to-end tests boot it (recorded plan -> OpenBao ->
config-cli stand-in -> Distribution v3.1.1, tests/support/stack_registry.py), token auth through the project's
token service (a process), storage as the stack says: a directory (staging) or S3 on moto with the plan's IAM
policy enforced (prod). ``--registry-env KEY=VALUE`` changes one registry variable for a tuning experiment.

Workloads, each at concurrency 1 and 8 (8 distinct images pushed, then pulled, at the same time; every image's
bytes are fresh random data, so nothing is deduplicated):

- ``large``: an image of one ``--large-mib`` MiB layer;
- ``small``: an image of ``--small-layers`` layers of 1 MiB.

Clients, as the CI robot (push) and the cluster's robot (pull), each through the token service:

- ``crane`` v0.22.1: ``crane push <OCI layout dir>`` (one streamed PATCH per blob, 4 blobs at a time) and
  ``crane pull --format=oci`` (every blob verified); one crane process per image;
- ``python``: the tests' own client (tests/support/oci.py): POST, one streamed PATCH, PUT per blob; pull streams
  each blob to a file and checks its digest; one thread per image.

The raw backend, interleaved with the registry runs, on the same files: filesystem: a userland streaming copy
(1 MiB buffer, no sendfile, no fsync per file: the registry's driver does not sync either; see below for
the one syncfs per round) of every blob into and out of
the storage directory; S3: boto3 ``upload_file`` (its default multipart: 8 MiB parts, 10 threads) and one
streamed ``get_object`` per blob, with the registry's own IAM user on the same moto server. Reads are hashed
(sha256) as they arrive, as crane and the Python client verify what they pull. Concurrency is the same: one
thread per image. Client-side files (the images, what is pulled) are on tmpfs (``--scratch``), so the disk is
written only by the registry or the backend copy.

Figures: MiB moved / wall seconds of the whole round (all images), median of ``--runs``; ratio = registry /
backend; the registry's peak resident memory (VmHWM, reset before each round through /proc/PID/clear_refs).
The load average is printed at the start and the end: the machine may be shared.

Writes are timed until they are on the disk. A 256 MiB copy into the page cache runs at memory speed (1.8 GiB/s
on the 2-core VM) and a 1 GiB one at the disk's writeback speed (150-330 MiB/s there), so a ratio against
unsynced writes says more about the dirty-page limits than about the registry. Every timed step starts with
the disk synced, and on filesystem storage a push and a backend write end with ``syncfs`` on the storage
directory's file system, inside the time (``--page-cache`` leaves the sync out of the time). Moto keeps its
objects in memory, so S3 rounds are not synced inside the time.

``--profile DIR`` saves a CPU profile of the registry (Go's pprof, from its debug port) over the first
``--profile-seconds`` of each push and pull in the first run of every row: ``go tool pprof -top FILE`` reads it.

CPU seconds per GiB moved, per round and per process, say who limits a round: the registry (from
/proc/PID/stat), the clients (crane processes: this process's reaped children; the Python client: this
process), and moto for S3. They hold on a loaded machine, where wall-clock figures do not.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.crane import CRANE_MODULE, CRANE_VERSION, Crane, basic_auth  # noqa: E402
from tests.support.fixtures import INSTALL_SCRIPT, RegistryFactory  # noqa: E402
from tests.support.moto_server import start_moto_server  # noqa: E402
from tests.support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, canonical_json  # noqa: E402
from tests.support.openbao import start_openbao  # noqa: E402
from tests.support.registry_server import RunningRegistry  # noqa: E402
from tests.support.stack_registry import S3_SETUP_ACTIONS, S3Backend, StackSetup, prepare_stack  # noqa: E402

MIB = 1 << 20
COPY_BUFFER = MIB
CLIENT_TIMEOUT = 1800


# --- images as OCI layouts on disk ----------------------------------------------------------------------------


@dataclass
class ImageFiles:
    """One image as an OCI image layout directory (what ``crane push DIR`` reads) and its blobs' paths."""

    layout: Path
    manifest: bytes
    blobs: list[tuple[str, Path, int, str]]  # (digest, path, size, media type), config first

    @property
    def size(self) -> int:
        return sum(size for _, _, size, _ in self.blobs)


def _write_blob(blobs_dir: Path, data_chunks: Callable[[], object]) -> tuple[str, Path, int]:
    digest, size = hashlib.sha256(), 0
    scratch = blobs_dir / f"writing-{os.getpid()}-{time.monotonic_ns()}"
    with scratch.open("wb") as handle:
        for chunk in data_chunks():
            digest.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    path = blobs_dir / digest.hexdigest()
    scratch.rename(path)
    return "sha256:" + digest.hexdigest(), path, size


def random_chunks(size: int):
    def chunks():
        remaining = size
        while remaining:
            chunk = os.urandom(min(4 * MIB, remaining))
            remaining -= len(chunk)
            yield chunk
    return chunks


def make_image(directory: Path, layer_sizes: Sequence[int]) -> ImageFiles:
    """An OCI layout with one image whose layers are fresh random bytes (uncompressed layer media type)."""
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True)
    layers = [(*_write_blob(blobs_dir, random_chunks(size)), OCI_LAYER) for size in layer_sizes]
    config = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [digest for digest, *_ in layers]}})
    config_blob = (*_write_blob(blobs_dir, lambda: [config]), OCI_CONFIG)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": config_blob[0], "size": config_blob[2]},
                               "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, _, s, _ in layers]})
    manifest_digest, _, _ = _write_blob(blobs_dir, lambda: [manifest])
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                                      "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest,
                                                                     "size": len(manifest)}]}))
    return ImageFiles(directory, manifest, [config_blob, *layers])


def copy_file(source: Path, target: Path, verify: bool = False) -> None:
    """Copy through a 1 MiB userland buffer (no sendfile); ``verify``: hash what is read, as a pulling client does."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256() if verify else None
    buffer = bytearray(COPY_BUFFER)
    view = memoryview(buffer)
    with source.open("rb", buffering=0) as src, target.open("wb", buffering=0) as dst:
        while count := src.readinto(buffer):
            if digest:
                digest.update(view[:count])
            dst.write(view[:count])
    if digest:
        assert digest.hexdigest() == source.name, f"{source} does not match its name"


# --- the clients ---------------------------------------------------------------------------------------------


def crane_binary() -> str:
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts/go-install.sh"), "crane", CRANE_MODULE, CRANE_VERSION],
                            capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    return result.stdout.strip().splitlines()[-1]


def run_all(commands: list[tuple[list[str], dict]]) -> None:
    """Start every command at once, wait for all; fail loudly if one fails."""
    started = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL) for argv, env in commands]
    failures = []
    for (argv, _), process in zip(commands, started):
        _, stderr = process.communicate(timeout=CLIENT_TIMEOUT)
        if process.returncode != 0:
            failures.append(f"{' '.join(argv)} exited {process.returncode}: {stderr[-1500:]}")
    if failures:
        raise RuntimeError("\n".join(failures))


def in_threads(actions: list[Callable[[], object]]) -> None:
    with ThreadPoolExecutor(max_workers=len(actions)) as pool:
        for future in [pool.submit(action) for action in actions]:
            future.result()


@dataclass
class Round:
    """The images of one round and where each lands (a repository per image)."""

    images: list[ImageFiles]
    repos: list[str]
    sinks: list[Path]

    @property
    def mib(self) -> float:
        return sum(image.size for image in self.images) / MIB


class CraneClient:
    name = "crane"

    def __init__(self, binary: str, setup: StackSetup, registry: RunningRegistry, home: Path):
        host = registry.base_url.removeprefix("http://")
        pusher, puller = setup.users("push")[0], setup.users("pull")[0]
        self.push_as = Crane(binary, host, home / "push", basic_auth(pusher, setup.accounts[pusher].password))
        self.pull_as = Crane(binary, host, home / "pull", basic_auth(puller, setup.accounts[puller].password))

    def push(self, round_: Round) -> None:
        run_all([([self.push_as.binary, "push", str(image.layout), self.push_as.ref(f"{repo}:bench"), "--insecure"],
                  self.push_as.env) for image, repo in zip(round_.images, round_.repos)])

    def pull(self, round_: Round) -> None:
        run_all([([self.pull_as.binary, "pull", "--format=oci", self.pull_as.ref(f"{repo}:bench"), str(sink),
                   "--insecure"], self.pull_as.env) for repo, sink in zip(round_.repos, round_.sinks)])
        for image, sink in zip(round_.images, round_.sinks):
            for digest, _, size, _ in image.blobs[1:]:
                assert (sink / "blobs" / "sha256" / digest.split(":")[1]).stat().st_size == size


class PythonClient:
    name = "python"

    def __init__(self, setup: StackSetup, registry: RunningRegistry):
        self.setup, self.registry = setup, registry

    def _client(self, role: str):
        return self.setup.client(self.registry, self.setup.users(role)[0], timeout=CLIENT_TIMEOUT)

    def push(self, round_: Round) -> None:
        def push_one(image: ImageFiles, repo: str) -> None:
            client = self._client("push")
            for digest, path, _, _ in image.blobs:
                started = client.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
                with path.open("rb") as body:
                    patched = client.request("PATCH", started.headers["Location"], expect=(202,), data=body,
                                             headers={"Content-Type": "application/octet-stream"})
                client.request("PUT", patched.headers["Location"], expect=(201,), params={"digest": digest},
                               headers={"Content-Type": "application/octet-stream", "Content-Length": "0"})
            client.request("PUT", f"/v2/{repo}/manifests/bench", expect=(201,), data=image.manifest,
                           headers={"Content-Type": OCI_MANIFEST})
        in_threads([lambda i=i, r=r: push_one(i, r) for i, r in zip(round_.images, round_.repos)])

    def pull(self, round_: Round) -> None:
        def pull_one(repo: str, sink: Path) -> None:
            client = self._client("pull")
            manifest = client.get_manifest(repo, "bench").json
            sink.mkdir(parents=True, exist_ok=True)
            for entry in [manifest["config"], *manifest["layers"]]:
                response = client.request("GET", f"/v2/{repo}/blobs/{entry['digest']}", stream=True)
                digest = hashlib.sha256()
                with response, (sink / entry["digest"].split(":")[1]).open("wb") as handle:
                    for chunk in response.iter_content(COPY_BUFFER):
                        digest.update(chunk)
                        handle.write(chunk)
                assert "sha256:" + digest.hexdigest() == entry["digest"]
        in_threads([lambda r=r, s=s: pull_one(r, s) for r, s in zip(round_.repos, round_.sinks)])


class Backend:
    """The storage written and read directly, one thread per image, every blob of it."""

    def __init__(self, setup: StackSetup, prefix: str):
        self.setup, self.prefix = setup, prefix
        if isinstance(setup.backend, S3Backend):
            from boto3.s3.transfer import TransferConfig
            self.s3, self.transfer = setup.backend.client(), TransferConfig()

    def describe(self) -> str:
        if isinstance(self.setup.backend, S3Backend):
            return ("S3 on moto (IAM enforced), the registry's IAM user: write boto3 upload_file (multipart, 8 MiB "
                    "parts, 10 threads), read one streamed get_object")
        return "filesystem: userland streaming copy into/out of the storage dir (1 MiB buffer)"

    def _key(self, index: int, digest: str) -> str:
        return f"{self.prefix}/{index}/{digest.split(':')[1]}"

    def write(self, round_: Round) -> None:
        def write_one(index: int, image: ImageFiles) -> None:
            for digest, path, _, _ in image.blobs:
                if isinstance(self.setup.backend, S3Backend):
                    self.s3.upload_file(str(path), self.setup.backend.bucket, self._key(index, digest),
                                        Config=self.transfer)
                else:
                    copy_file(path, self.setup.backend.root / self._key(index, digest))
        in_threads([lambda i=i, im=im: write_one(i, im) for i, im in enumerate(round_.images)])

    def read(self, round_: Round) -> None:
        def read_one(index: int, image: ImageFiles, sink: Path) -> None:
            sink.mkdir(parents=True, exist_ok=True)
            for digest, _, size, _ in image.blobs:
                target = sink / digest.split(":")[1]
                if isinstance(self.setup.backend, S3Backend):
                    # One streamed GetObject, as the registry reads a blob (boto3's download_file would send
                    # ranged GETs in parallel, which moto answers by reading the whole object each time).
                    body = self.s3.get_object(Bucket=self.setup.backend.bucket, Key=self._key(index, digest))["Body"]
                    hashed = hashlib.sha256()
                    with target.open("wb", buffering=0) as handle:
                        for chunk in body.iter_chunks(COPY_BUFFER):
                            hashed.update(chunk)
                            handle.write(chunk)
                    assert "sha256:" + hashed.hexdigest() == digest
                else:
                    copy_file(self.setup.backend.root / self._key(index, digest), target, verify=True)
                assert target.stat().st_size == size
        in_threads([lambda i=i, im=im, s=s: read_one(i, im, s)
                    for i, (im, s) in enumerate(zip(round_.images, round_.sinks))])


# --- measuring -------------------------------------------------------------------------------------------------


def reset_peak_memory(pid: int) -> None:
    """Reset the process's VmHWM (Linux: writing 5 to clear_refs) so the next reading is this round's peak."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


_LIBC = ctypes.CDLL(None, use_errno=True)


def sync_filesystem(directory: Path) -> None:
    """syncfs(2) on the file system that holds ``directory``: every dirty page of it is on the disk after."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC.syncfs(descriptor) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs {directory}")
    finally:
        os.close(descriptor)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_and_children_cpu_seconds() -> float:
    """This process (the Python client's threads) and its reaped children (every finished crane process)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass
class CpuMeter:
    """CPU seconds spent during one step by the registry, the clients and (S3) moto."""

    registry_pid: int
    moto_pid: Optional[int]

    def snapshot(self) -> tuple[float, float, float]:
        moto = process_cpu_seconds(self.moto_pid) if self.moto_pid else 0.0
        return process_cpu_seconds(self.registry_pid), own_and_children_cpu_seconds(), moto

    def measure(self, action: Callable[[], object]) -> tuple[float, tuple[float, float, float]]:
        """Wall seconds of ``action`` and the CPU seconds (registry, clients, moto) it cost."""
        before = self.snapshot()
        seconds = timed(action)
        return seconds, tuple(after - start for after, start in zip(self.snapshot(), before))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Row:
    stack: str
    workload: str
    concurrency: int
    client: str
    mib: float
    push: list[float] = field(default_factory=list)  # MiB/s per run
    pull: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    push_rss: list[float] = field(default_factory=list)  # registry VmHWM, MiB
    pull_rss: list[float] = field(default_factory=list)
    # CPU seconds per GiB moved: the registry, the client(s), moto (S3; 0 on filesystem)
    push_registry_cpu: list[float] = field(default_factory=list)
    push_client_cpu: list[float] = field(default_factory=list)
    push_moto_cpu: list[float] = field(default_factory=list)
    pull_registry_cpu: list[float] = field(default_factory=list)
    pull_client_cpu: list[float] = field(default_factory=list)
    pull_moto_cpu: list[float] = field(default_factory=list)
    write_moto_cpu: list[float] = field(default_factory=list)  # moto's share of the raw backend's rounds
    read_moto_cpu: list[float] = field(default_factory=list)

    FIGURES = ("push", "pull", "write", "read", "push_rss", "pull_rss", "push_registry_cpu", "push_client_cpu",
               "push_moto_cpu", "pull_registry_cpu", "pull_client_cpu", "pull_moto_cpu", "write_moto_cpu",
               "read_moto_cpu")

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(getattr(self, name)) for name in self.FIGURES}

    def per_gib(self, seconds: float) -> float:
        return seconds / (self.mib / 1024)

    def add_cpu(self, step: str, cpu: Sequence[float]) -> None:
        for who, seconds in zip(("registry", "client", "moto"), cpu):
            getattr(self, f"{step}_{who}_cpu").append(self.per_gib(seconds))


def workload_sizes(workload: str, args: argparse.Namespace) -> list[int]:
    if workload == "large":
        return [args.large_mib * MIB]
    return [args.small_mib * MIB] * args.small_layers


def measure_stack(setup: StackSetup, registry: RunningRegistry, clients: list, args: argparse.Namespace,
                  workdir: Path, moto_pid: Optional[int] = None) -> list[Row]:
    rows: dict[tuple[str, int, str], Row] = {}
    backend = Backend(setup, "benchmark")
    meter = CpuMeter(registry.pid, moto_pid)
    storage = None if isinstance(setup.backend, S3Backend) else setup.backend.root
    durable = storage is not None and not args.page_cache

    def written(action: Callable[[], object]) -> Callable[[], object]:
        """The write, then (filesystem, unless --page-cache) syncfs on the storage: timed until on the disk."""
        def step() -> None:
            action()
            if durable:
                sync_filesystem(storage)
        return step

    profiles: list[threading.Thread] = []  # a profile outlives a short step: joined before the next, untimed

    def settled(action: Callable[[], object]) -> Callable[[], object]:
        while profiles:
            profiles.pop().join()
        os.sync()  # the last step's writeback does not land in this one
        return action

    def profiled(action: Callable[[], object], name: str, run: int) -> Callable[[], object]:
        """With --profile, the registry's CPU profile over the first seconds of the first run's ``action``."""
        if args.profile is None or run:
            return action

        def step() -> None:
            url = f"{registry.debug_url}/debug/pprof/profile?seconds={args.profile_seconds}"
            target = args.profile / f"{setup.stack}-{name}.pb.gz"
            fetch = threading.Thread(target=lambda: target.write_bytes(
                urllib.request.urlopen(url, timeout=args.profile_seconds + 60).read()))
            fetch.start()
            profiles.append(fetch)
            action()
        return step
    for workload in args.workloads:
        for concurrency in args.concurrency:
            for run in range(args.runs):
                for client in clients:
                    base = workdir / f"{workload}-c{concurrency}-{run}-{client.name}"
                    images = [make_image(base / f"image-{i}", workload_sizes(workload, args))
                              for i in range(concurrency)]
                    tag = f"{workload}-c{concurrency}-r{run}-{client.name}"
                    round_ = Round(images, [f"bench/{tag}-{i}" for i in range(concurrency)],
                                   [base / f"pulled-{i}" for i in range(concurrency)])
                    row = rows.setdefault((workload, concurrency, client.name),
                                          Row(setup.stack, workload, concurrency, client.name, round_.mib))
                    reset_peak_memory(registry.pid)
                    seconds, cpu = meter.measure(settled(written(profiled(lambda: client.push(round_),
                                                                          f"{tag}-push", run))))
                    row.push.append(round_.mib / seconds)
                    row.add_cpu("push", cpu)
                    row.push_rss.append(peak_memory_mib(registry.pid))
                    reset_peak_memory(registry.pid)
                    seconds, cpu = meter.measure(settled(profiled(lambda: client.pull(round_), f"{tag}-pull", run)))
                    row.pull.append(round_.mib / seconds)
                    row.add_cpu("pull", cpu)
                    row.pull_rss.append(peak_memory_mib(registry.pid))
                    for sink in round_.sinks:
                        shutil.rmtree(sink, ignore_errors=True)
                    backend.prefix = f"benchmark/{tag}"
                    seconds, cpu = meter.measure(settled(written(lambda: backend.write(round_))))
                    row.write.append(round_.mib / seconds)
                    row.write_moto_cpu.append(row.per_gib(cpu[2]))
                    seconds, cpu = meter.measure(settled(lambda: backend.read(round_)))
                    row.read.append(round_.mib / seconds)
                    row.read_moto_cpu.append(row.per_gib(cpu[2]))
                    shutil.rmtree(base, ignore_errors=True)
                    if not isinstance(setup.backend, S3Backend):
                        shutil.rmtree(setup.backend.root / backend.prefix, ignore_errors=True)
                    print(f"  {setup.stack} {tag}: push {row.push[-1]:.0f} (backend {row.write[-1]:.0f}), "
                          f"pull {row.pull[-1]:.0f} (backend {row.read[-1]:.0f}) MiB/s, "
                          f"registry peak {row.push_rss[-1]:.0f}/{row.pull_rss[-1]:.0f} MiB; CPU s/GiB push "
                          f"{cpu_text(row, 'push', -1)}, pull {cpu_text(row, 'pull', -1)}"
                          + (f" (moto for the backend: write {row.write_moto_cpu[-1]:.2f}, read "
                             f"{row.read_moto_cpu[-1]:.2f})" if moto_pid else "") + f"; load {load_average()}",
                          file=sys.stderr, flush=True)
    settled(lambda: None)  # the last profile is written before the registry stops
    return list(rows.values())


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("REGISTRY_"):
            raise SystemExit(f"--registry-env: expected REGISTRY_KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def boot(setup: StackSetup, factory: RegistryFactory, extra_env: dict[str, str]) -> RunningRegistry:
    name = f"{setup.stack}-benchmark"
    environment = setup.environment_for_test(setup.load(name=name))
    return factory({**environment, **extra_env}, name=name, timeout=60)


def registry_binary() -> str:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=True,
                            stdin=subprocess.DEVNULL)
    return result.stdout.strip().splitlines()[-1]


def csv(kind: Callable[[str], object]):
    return lambda text: [kind(part) for part in text.split(",") if part]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return f"{os.cpu_count()} cores ({model})"


def cpu_text(row: Row, step: str, index: Optional[int] = None) -> str:
    """registry / client[ / moto] CPU seconds per GiB: one run (index) or the medians."""
    values = [getattr(row, f"{step}_{who}_cpu") for who in ("registry", "client", "moto")]
    figures = [value[index] if index is not None else statistics.median(value) for value in values]
    if not figures[2]:
        figures = figures[:2]
    return " / ".join(f"{figure:.2f}" for figure in figures)


def table(rows: list[Row], backends: dict[str, str]) -> str:
    lines = ["| stack | workload | c | client | MiB | push | backend write | push ratio | pull | backend read "
             "| pull ratio | registry peak RSS push / pull (MiB) | CPU s/GiB push: registry / client [/ moto] "
             "| CPU s/GiB pull: registry / client [/ moto] |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        m = row.medians()
        lines.append(f"| {row.stack} | {row.workload} | {row.concurrency} | {row.client} | {row.mib:.0f} "
                     f"| {m['push']:.0f} | {m['write']:.0f} | {m['push'] / m['write']:.2f} | {m['pull']:.0f} "
                     f"| {m['read']:.0f} | {m['pull'] / m['read']:.2f} | {m['push_rss']:.0f} / {m['pull_rss']:.0f} "
                     f"| {cpu_text(row, 'push')} | {cpu_text(row, 'pull')} |")
    lines.append("")
    lines.extend(f"- {stack} backend: {text}" for stack, text in backends.items())
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mib", type=int, default=256, help="size of the large layer (MiB)")
    parser.add_argument("--small-layers", type=int, default=50)
    parser.add_argument("--small-mib", type=int, default=1, help="size of each small layer (MiB)")
    parser.add_argument("--concurrency", type=csv(int), default=[1, 8], help="comma-separated, e.g. 1,8")
    parser.add_argument("--workloads", type=csv(str), default=["large", "small"])
    parser.add_argument("--clients", type=csv(str), default=["crane", "python"])
    parser.add_argument("--stacks", type=csv(str), default=["staging", "prod"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--registry-env", action="append", default=[], metavar="KEY=VALUE",
                        help="change one registry variable after config-cli's work (tuning experiments)")
    parser.add_argument("--page-cache", action="store_true",
                        help="time filesystem writes into the page cache only (no syncfs inside the time)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="save the registry's CPU profile of each row's first push and pull here")
    parser.add_argument("--profile-seconds", type=int, default=3, help="length of each profile (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--scratch", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where the client-side images and pulled copies go (default: /dev/shm)")
    args = parser.parse_args(argv)
    if args.profile_seconds < 1:
        raise SystemExit(f"--profile-seconds: {args.profile_seconds} is not allowed; whole seconds, at least 1")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    extra_env = parse_env(args.registry_env)
    unknown = set(args.clients) - {"crane", "python"} or set(args.workloads) - {"large", "small"}
    if unknown:
        raise SystemExit(f"unknown client or workload: {sorted(unknown)}")

    started, load_before = time.monotonic(), load_average()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {machine()}, load {load_before}",
          file=sys.stderr, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="registry-benchmark-"))
    # The images and what is pulled live in memory (tmpfs) when it has room: a disk shared with other work
    # throttles writes of new files, which would make both the client side and the backend copies noisy. The
    # registry's own storage (and moto's) stays on disk, as a volume would be.
    scratch = Path(tempfile.mkdtemp(prefix="registry-benchmark-", dir=args.scratch))
    crane = crane_binary() if "crane" in args.clients else ""
    openbao = start_openbao(workdir / "openbao")
    moto = start_moto_server(workdir / "moto", initial_no_auth_action_count=S3_SETUP_ACTIONS) \
        if "prod" in args.stacks else None
    factory = RegistryFactory(registry_binary(), workdir / "registries")
    setups: list[StackSetup] = []
    rows: list[Row] = []
    backends: dict[str, str] = {}
    try:
        for stack in args.stacks:
            setup = prepare_stack(stack, openbao, workdir / stack, moto=moto if stack == "prod" else None)
            setups.append(setup)
            registry = boot(setup, factory, extra_env)
            clients = [CraneClient(crane, setup, registry, workdir / stack / "crane") if name == "crane"
                       else PythonClient(setup, registry) for name in args.clients]
            rows.extend(measure_stack(setup, registry, clients, args, scratch / stack,
                                      moto.pid if moto is not None and stack == "prod" else None))
            backends[stack] = Backend(setup, "").describe()
            exit_code = registry.stop()
            assert exit_code == 0, f"{stack} registry exited {exit_code}"
    finally:
        for setup in setups:
            setup.close()
        factory.stop_all()
        if moto is not None:
            moto.stop()
        openbao.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; load before {load_before}, "
              f"after {load_average()}; median of {args.runs} run(s); MiB/s; wall {time.monotonic() - started:.0f} s; "
              + ("filesystem writes timed into the page cache" if args.page_cache
                 else "filesystem writes timed until on the disk (syncfs)")
              + (f"; registry env changed: {extra_env}" if extra_env else ""))
    print(header)
    print(table(rows, backends))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "extra_env": extra_env,
                                         "rows": [{**row.__dict__, "medians": row.medians()} for row in rows]},
                                        indent=1))
    return rows


if __name__ == "__main__":
    main()
