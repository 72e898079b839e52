"""How the garbage-collection read-only window grows with the number of manifests, on filesystem and S3 (moto).

Not a test: run it by hand (the README's figures table has the commands):

    venv/bin/python benchmarks/gc_scaling.py                                   # 100, 1,000, 10,000 / 100, 1,000
    venv/bin/python benchmarks/gc_scaling.py --filesystem-sizes 100,1000 --s3-sizes 100 --plot /tmp/gc.png

What runs: each stack applied to the real peers of tests/test_operations_gc.py (tests/support/gc_peers.py):
kube-apiserver v1.35.4 with its controller manager, Consul 1.14.4 with ACLs, OpenBao, the project's token
service; the StatefulSet's pods are real Distribution v3.1.1 processes started by the config-cli stand-in from
Consul, clients go through the ``registry`` Service (kube-proxy from the EndpointSlices), and a Job made from the
``registry-gc`` CronJob runs ``components/scripts/registry-gc.sh`` itself (real kubectl, consul, curl and
``registry garbage-collect``). Storage and collection mode are the stack's: staging: a volume directory, 1
replica, no ``--delete-untagged``; prod: S3 on moto with the plan's IAM policy enforced, its replicas,
``--delete-untagged``. The script's waits are the cluster's (``GC_SETTLE_SECONDS`` 15, ``GC_POLL_SECONDS`` 2)
unless ``--settle``/``--poll`` say otherwise.

Content: repositories of 10 manifests each (8 tags, plus ``latest`` pushed twice, so 1 in 10 manifests is
superseded and untagged), every manifest with its own 512-byte layer and one config per repository, pushed
through the Service by ``--fill-threads`` threads as the CI robot (POST + PUT per layer, PUT per manifest; a
token from the token service per repository).
Sizes grow in one storage: each size adds manifests to what the previous run left (``--delete-untagged`` runs
remove their untagged manifests, which is counted).

Measured per size: the read-only window (the script's "window opened" to "window closed" log lines), the
collection (``registry garbage-collect``, its output time-stamped line by line: mark = until its last
repository/marking line, sweep = the rest), and the pulls served and failed during the window by
``--pullers`` threads pulling tagged images (manifest, config, layer, each verified) through the Service.
Then least-squares fits (numpy) of the window, linear and n·log n, and the size where each passes 10 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support import gc_peers  # noqa: E402
from tests.support.gc_peers import GcPeers, JobSettings, start_gc_peers  # noqa: E402
from tests.support.fixtures import INSTALL_SCRIPT  # noqa: E402
from tests.support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, canonical_json  # noqa: E402
from tests.support.peers import installed_binaries  # noqa: E402

SCRIPT = REPO_ROOT / "components" / "scripts" / "registry-gc.sh"
WINDOW_LIMIT_SECONDS = 600
MANIFESTS_PER_REPOSITORY = 10
STACK_OF_BACKEND = {"filesystem": "staging", "s3": "prod"}
# The script's own defaults, which the CronJob does not override (components/operations.py).
CLUSTER_SETTLE_SECONDS, CLUSTER_POLL_SECONDS = 15.0, 2.0

# Prints every line of a command's output with the CLOCK_MONOTONIC time it arrived (the benchmark reads the
# script's lines with the same clock), then "exit <code>".
STAMPER = r'''
import subprocess, sys, time
out = open(sys.argv[1], "w", buffering=1)
out.write(f"{time.monotonic():.6f}\tstart\n")
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
for line in child.stdout:
    out.write(f"{time.monotonic():.6f}\t{line.rstrip()}\n")
out.write(f"{time.monotonic():.6f}\texit {child.wait()}\n")
sys.exit(child.returncode)
'''


# --- filling the registry --------------------------------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Content:
    tagged: list[tuple[str, str, str, str]] = field(default_factory=list)  # repo, tag, manifest digest, layer digest
    untagged: int = 0  # manifests superseded by a later push of their tag, still stored
    repositories: int = 0

    @property
    def manifests(self) -> int:
        return len(self.tagged) + self.untagged


class Filler:
    """Pushes repositories of MANIFESTS_PER_REPOSITORY small distinct manifests through the Service, as CI."""

    def __init__(self, peers: GcPeers, threads: int):
        self.peers, self.threads = peers, threads
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = self.peers.client("push").session
        return self._local.session

    def _blob(self, base: str, repo: str, data: bytes) -> str:
        session, digest = self._session(), digest_of(data)
        started = session.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=60)
        assert started.status_code == 202, (started.status_code, started.text[:300])
        location = started.headers["Location"]
        location = location if location.startswith("http") else base + location
        put = session.put(location, params={"digest": digest}, data=data, timeout=60,
                          headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, (put.status_code, put.text[:300])
        return digest

    def _manifest(self, base: str, repo: str, tag: str, config: tuple[str, int], layer: tuple[str, int]) -> str:
        manifest = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
                                   "layers": [{"mediaType": OCI_LAYER, "digest": layer[0], "size": layer[1]}]})
        put = self._session().put(f"{base}/v2/{repo}/manifests/{tag}", data=manifest, timeout=60,
                                  headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, (put.status_code, put.text[:300])
        return digest_of(manifest)

    def _repository(self, number: int) -> tuple[list[tuple[str, str, str, str]], int]:
        base = self.peers.proxy.url
        repo = f"team{number % 20}/app{number}"
        config_data = canonical_json({"architecture": "amd64", "os": "linux", "config": {"Labels": {"n": str(number)}},
                                      "rootfs": {"type": "layers", "diff_ids": []}})
        config = (self._blob(base, repo, config_data), len(config_data))
        tagged, untagged = [], 0
        tags = [f"v{k}" for k in range(MANIFESTS_PER_REPOSITORY - 2)] + ["latest", "latest"]
        for k, tag in enumerate(tags):
            layer_data = os.urandom(512)
            layer = (self._blob(base, repo, layer_data), len(layer_data))
            manifest = self._manifest(base, repo, tag, config, layer)
            if k == len(tags) - 2:  # the first "latest": superseded by the next push
                untagged += 1
            else:
                tagged.append((repo, tag, manifest, layer[0]))
        return tagged, untagged

    def fill(self, content: Content, manifests: int) -> float:
        """Add repositories until ``content`` holds at least ``manifests`` manifests; return the seconds taken."""
        missing = max(0, manifests - content.manifests)
        count = math.ceil(missing / MANIFESTS_PER_REPOSITORY)
        numbers = range(content.repositories, content.repositories + count)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for tagged, untagged in pool.map(self._repository, numbers):
                content.tagged.extend(tagged)
                content.untagged += untagged
        content.repositories += count
        return time.perf_counter() - started


# --- pulls during the window -----------------------------------------------------------------------------------


class Pullers:
    """Threads pulling tagged images (manifest, config, layer; digests checked) through the Service, as the
    cluster's robot."""

    def __init__(self, peers: GcPeers, content: Content, threads: int):
        self.peers, self.content = peers, content
        self.results: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> "Pullers":
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def _pull(self, session: requests.Session, endpoint: str, repo: str, tag: str, manifest_digest: str,
              layer_digest: str) -> None:
        manifest = session.get(f"{endpoint}/v2/{repo}/manifests/{tag}", timeout=10,
                               headers={"Accept": OCI_MANIFEST})
        assert manifest.status_code == 200, f"manifest {manifest.status_code}"
        assert digest_of(manifest.content) == manifest_digest, "manifest digest differs"
        document = manifest.json()
        for digest in (document["config"]["digest"], document["layers"][0]["digest"]):
            blob = session.get(f"{endpoint}/v2/{repo}/blobs/{digest}", timeout=10)
            assert blob.status_code == 200 and digest_of(blob.content) == digest, f"blob {blob.status_code}"
        assert document["layers"][0]["digest"] == layer_digest

    def _run(self, seed: int) -> None:
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        session = self.peers.client("pull").session
        # As Go's net/http (containerd, Docker) does: resend an idempotent request once when a reused keep-alive
        # connection closes before any response (a draining registry closes idle connections).
        session.mount("http://", HTTPAdapter(max_retries=Retry(total=1, connect=1, read=1, status=0, other=0,
                                                               redirect=0, allowed_methods={"GET", "HEAD"})))
        rng = random.Random(seed)
        while not self._stop.is_set():
            repo, tag, manifest_digest, layer_digest = rng.choice(self.content.tagged)
            endpoint = self.peers.proxy.url
            try:
                self._pull(session, endpoint, repo, tag, manifest_digest, layer_digest)
                self.results.append((time.monotonic(), True, ""))
            except Exception as exc:  # every failed pull is what is counted
                self.results.append((time.monotonic(), False, f"{endpoint} {repo}:{tag}: {exc}"[:300]))

    def between(self, start: float, end: float) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if start <= r[0] <= end]


# --- one garbage collection ------------------------------------------------------------------------------------


@dataclass
class Measurement:
    backend: str
    manifests: int
    repositories: int
    tagged: int
    untagged: int
    fill_seconds: float
    fill_manifests: int
    window_seconds: float
    collect_seconds: float
    mark_seconds: float
    sweep_seconds: float
    blobs_marked: int
    blobs_deleted: int
    manifests_deleted: int
    pulls_during_window: int
    failed_pulls_during_window: int
    failures: list[str]


def parse_collection(stamped: Path) -> dict:
    """Mark and sweep times and counts from ``registry garbage-collect``'s time-stamped output."""
    lines = [(float(t), text) for t, _, text in (line.partition("\t") for line in stamped.read_text().splitlines())]
    start, end = lines[0][0], lines[-1][0]
    assert lines[-1][1] == "exit 0", f"garbage-collect failed:\n" + "\n".join(t for _, t in lines[-20:])
    summary = next(((t, text) for t, text in lines if "blobs marked," in text), None)
    assert summary, "no summary line in the garbage-collect output"
    # Mark: repositories enumerated, each manifest and blob marked; its output is a repository's name or
    # "<repo>: marking ...". What follows (untagged manifests listed and removed, every blob enumerated, the
    # summary, deletions) is the sweep.
    def marking(text: str) -> bool:
        return ": marking " in text or text.startswith("manifest tags path") or (bool(text) and " " not in text)

    mark_end = start
    for t, text in lines[1:-1]:
        if not marking(text):
            break
        mark_end = t
    words = summary[1].split()
    return {"collect_seconds": end - start, "mark_seconds": mark_end - start, "sweep_seconds": end - mark_end,
            "blobs_marked": int(words[0]), "blobs_deleted": int(words[3]), "manifests_deleted": int(words[6])}


def stamped_collector(workdir: Path) -> tuple[Path, Path]:
    """A GC_COLLECT_COMMAND running the script's own collection, its output time-stamped into a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    stamped, stamper, collect = workdir / "collect.log", workdir / "stamp.py", workdir / "collect.sh"
    stamper.write_text(STAMPER)
    collect.write_text('#!/bin/sh\n[ "$GC_DELETE_UNTAGGED" = true ] && set -- --delete-untagged\n'
                       f'exec "{sys.executable}" "{stamper}" "{stamped}" registry garbage-collect "$@" '
                       '"$GC_CONFIG_FILE"\n')
    collect.chmod(0o755)
    return collect, stamped


def collect_once(peers: GcPeers, content: Content, workdir: Path, args: argparse.Namespace) -> dict:
    collect, stamped = stamped_collector(workdir)
    with Pullers(peers, content, args.pullers) as pulls:
        time.sleep(0.5)
        job = peers.start_job(JobSettings(collect_command=str(collect)))
        code = job.wait(timeout=args.timeout)
        time.sleep(0.5)
    run = job.script()
    assert code == 0, f"registry-gc.sh exited {code}:\n{run.timeline()}"
    opened, closed = run.time_of("read-only window opened"), run.time_of("read-only window closed")
    during = pulls.between(opened, closed)
    failed = [r for r in during if not r[1]]
    return {"window_seconds": closed - opened, "pulls_during_window": len(during),
            "failed_pulls_during_window": len(failed), "failures": [r[2] for r in failed[:5]],
            **parse_collection(stamped)}


def measure_backend(backend: str, sizes: Sequence[int], binaries: dict, workdir: Path,
                    args: argparse.Namespace) -> list[Measurement]:
    stack = STACK_OF_BACKEND[backend]
    peers = start_gc_peers(stack, binaries["kube"], binaries["consul"], binaries["registry"], workdir)
    results = []
    try:
        content = Content()
        for number, size in enumerate(sizes):
            filler = Filler(peers, args.fill_threads)
            before = content.manifests
            fill_seconds = filler.fill(content, size)
            stored = content.manifests
            print(f"  {backend}: {stored} manifests in {content.repositories} repositories "
                  f"(+{stored - before} in {fill_seconds:.1f} s, {(stored - before) / max(fill_seconds, 1e-9):.0f}/s); "
                  f"load {load_average()}", file=sys.stderr, flush=True)
            collected = collect_once(peers, content, workdir / f"collect-{number}", args)
            results.append(Measurement(backend=backend, manifests=stored, repositories=content.repositories,
                                       tagged=len(content.tagged), untagged=content.untagged,
                                       fill_seconds=fill_seconds, fill_manifests=stored - before, **collected))
            content.untagged -= collected["manifests_deleted"]
            m = results[-1]
            print(f"  {backend} {stored}: window {m.window_seconds:.1f} s, collect {m.collect_seconds:.1f} s "
                  f"(mark {m.mark_seconds:.1f}, sweep {m.sweep_seconds:.1f}), {m.blobs_deleted} blobs and "
                  f"{m.manifests_deleted} manifests deleted, pulls {m.pulls_during_window} "
                  f"({m.failed_pulls_during_window} failed); load {load_average()}", file=sys.stderr, flush=True)
    finally:
        peers.stop()
    return results


# --- fitting and plotting --------------------------------------------------------------------------------------


MODELS = {"linear": lambda n: n, "n log n": lambda n: n * math.log(n)}


def fit(sizes: Sequence[float], seconds: Sequence[float]) -> dict[str, dict]:
    """Least squares ``seconds = a + b * f(n)`` per model; the size where each reaches WINDOW_LIMIT_SECONDS."""
    import numpy

    fits = {}
    for name, f in MODELS.items():
        x = numpy.array([f(n) for n in sizes], dtype=float)
        y = numpy.array(seconds, dtype=float)
        design = numpy.vstack([numpy.ones_like(x), x]).T
        (a, b), *_ = numpy.linalg.lstsq(design, y, rcond=None)
        if b < 0:  # a window that shrinks with size is noise: the best non-decreasing fit is the mean
            a, b = float(numpy.mean(y)), 0.0
        residual = float(numpy.sum((design @ numpy.array([a, b]) - y) ** 2))
        fits[name] = {"a": float(a), "b": float(b), "sse": residual,
                      "limit_size": size_at(lambda n: a + b * f(n), WINDOW_LIMIT_SECONDS)}
    return fits


def size_at(model, target: float) -> Optional[float]:
    """The smallest n >= 2 where the increasing model reaches ``target`` (bisection), None if it never does."""
    low, high = 2.0, 2.0
    if model(low) >= target:
        return low
    while model(high) < target:
        high *= 2
        if high > 1e13:
            return None
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if model(middle) < target else (low, middle)
    return high


def plot(results: list[Measurement], fits: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy

    figure, axes = plt.subplots(figsize=(8, 5))
    colours = {"filesystem": "tab:blue", "s3": "tab:orange"}
    labels = {"filesystem": "filesystem (staging)", "s3": "S3 on moto (prod)"}
    for backend in colours:
        points = [m for m in results if m.backend == backend]
        if not points:
            continue
        axes.plot([m.manifests for m in points], [m.window_seconds for m in points], "o", color=colours[backend],
                  label=f"{labels[backend]}: measured window")
        if backend not in fits:
            continue
        best_name, best = best_fit(fits[backend])
        limit = best["limit_size"]
        end = limit or max(m.manifests for m in points) * 10
        xs = numpy.logspace(math.log10(min(m.manifests for m in points)), math.log10(end * 1.2), 200)
        axes.plot(xs, [best["a"] + best["b"] * MODELS[best_name](x) for x in xs], "--", color=colours[backend],
                  label=f"{backend} fit ({best_name}): 10 min at "
                        f"{f'{limit:,.0f}' if limit else 'no size'} manifests")
    axes.axhline(WINDOW_LIMIT_SECONDS, color="grey", linewidth=1)
    axes.annotate("10 minutes", (0.99, WINDOW_LIMIT_SECONDS), xycoords=("axes fraction", "data"), ha="right",
                  va="bottom", color="grey")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("manifests in the registry")
    axes.set_ylabel("read-only window (s)")
    axes.set_title(title, fontsize=8, wrap=True)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def best_fit(fits: dict[str, dict]) -> tuple[str, dict]:
    return min(fits.items(), key=lambda item: item[1]["sse"])


# --- main ------------------------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def registry_binary() -> str:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=True,
                            stdin=subprocess.DEVNULL)
    return result.stdout.strip().splitlines()[-1]


def sizes_arg(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part]
    if sizes != sorted(sizes) or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be increasing positive integers, got {text!r}")
    return sizes


def table(results: list[Measurement], fits: dict[str, dict]) -> str:
    lines = ["| backend | manifests | repositories | fill (manifests/s) | read-only window (s) | collect (s) "
             "| mark (s) | sweep (s) | blobs / manifests deleted | pulls in window (failed) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in results:
        lines.append(f"| {m.backend} | {m.manifests:,} | {m.repositories:,} "
                     f"| {m.fill_manifests / max(m.fill_seconds, 1e-9):.0f} | {m.window_seconds:.1f} "
                     f"| {m.collect_seconds:.1f} | {m.mark_seconds:.1f} | {m.sweep_seconds:.1f} "
                     f"| {m.blobs_deleted} / {m.manifests_deleted} | {m.pulls_during_window} "
                     f"({m.failed_pulls_during_window}) |")
    lines.append("")
    for backend, models in fits.items():
        best_name, _ = best_fit(models)
        for name, model in models.items():
            limit = model["limit_size"]
            lines.append(f"- {backend}, {name}{' (better fit)' if name == best_name else ''}: window = "
                         f"{model['a']:.1f} s + {model['b']:.3g} s x {'n' if name == 'linear' else 'n ln n'}; "
                         f"10 minutes at {f'{limit:,.0f}' if limit else 'never'} manifests")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filesystem-sizes", type=sizes_arg, default=[100, 1000, 10000])
    parser.add_argument("--s3-sizes", type=sizes_arg, default=[100, 1000])
    parser.add_argument("--backends", default="filesystem,s3")
    parser.add_argument("--settle", type=float, default=CLUSTER_SETTLE_SECONDS, help="GC_SETTLE_SECONDS")
    parser.add_argument("--poll", type=float, default=CLUSTER_POLL_SECONDS, help="GC_POLL_SECONDS")
    parser.add_argument("--pullers", type=int, default=4)
    parser.add_argument("--fill-threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one GC script run may take")
    parser.add_argument("--plot", type=Path, help="write the window-against-size plot (PNG) here")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(STACK_OF_BACKEND)
    if unknown:
        raise SystemExit(f"--backends: unknown {sorted(unknown)}; allowed: filesystem, s3")

    started, load_before = time.monotonic(), load_average()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{stamp}, {os.cpu_count()} cores, load {load_before}", file=sys.stderr, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="registry-gc-scaling-"))
    binaries = {"registry": registry_binary(), "kube": installed_binaries("install-kube.sh"),
                "consul": installed_binaries("install-consul.sh")["consul"]}
    # The script's waits as the CronJob runs it (the harness shortens them for the tests). The harness reads them
    # from its module, so they are set for this run and put back after it: the smoke test calls main() inside the
    # test process, and the GC tests that run later in it must get their own timings back.
    tests_timings = dict(gc_peers.SCRIPT_TIMINGS)
    gc_peers.SCRIPT_TIMINGS.update({"GC_SETTLE_SECONDS": f"{args.settle:g}", "GC_POLL_SECONDS": f"{args.poll:g}",
                                    "GC_POD_TIMEOUT_SECONDS": "600"})
    results: list[Measurement] = []
    try:
        for backend in backends:
            sizes = args.filesystem_sizes if backend == "filesystem" else args.s3_sizes
            results.extend(measure_backend(backend, sizes, binaries, workdir / backend, args))
    finally:
        gc_peers.SCRIPT_TIMINGS.clear()
        gc_peers.SCRIPT_TIMINGS.update(tests_timings)
        shutil.rmtree(workdir, ignore_errors=True)

    fits = {backend: fit([m.manifests for m in results if m.backend == backend],
                         [m.window_seconds for m in results if m.backend == backend])
            for backend in backends if len([m for m in results if m.backend == backend]) >= 2}
    header = (f"{stamp}; {os.cpu_count()} cores; load before {load_before}, after {load_average()}; "
              f"settle {args.settle:g} s, poll {args.poll:g} s, {args.pullers} pullers; wall "
              f"{time.monotonic() - started:.0f} s")
    print(header)
    print(table(results, fits))
    if args.plot:
        plot(results, fits, args.plot, f"GC read-only window: registry-gc.sh on the real peers, Distribution v3.1.1"
                                       f"\n{header}")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "results": [asdict(m) for m in results], "fits": fits},
                                        indent=1))
    return results


if __name__ == "__main__":
    main()
