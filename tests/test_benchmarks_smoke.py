"""The benchmark scripts' code paths at tiny sizes, so they cannot rot (full tier: they boot real registries and, for GC, the real peers).

benchmarks/throughput.py and benchmarks/gc_scaling.py are scripts, not tests: their figures come from runs by hand
(docs/figures.md). Here each runs end to end on a few MiB / a few manifests and must produce every figure it
reports; the gc_scaling fit and its output parser are checked against values worked out by hand.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import gc_peers

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import gc_scaling  # noqa: E402
import throughput  # noqa: E402

pytestmark = pytest.mark.full


def test_throughput_reports_every_client_workload_and_stack(capsys, tmp_path):
    # The large workload is the same code with one layer: the small one (2 layers of 1 MiB) covers both.
    rows = throughput.main(["--workloads", "small", "--small-layers", "2", "--concurrency", "2", "--runs", "1",
                            "--profile", str(tmp_path), "--profile-seconds", "1"])
    # a pprof CPU profile (gzip) of the registry for each row's push and pull
    profiles = sorted(path.name for path in tmp_path.iterdir())
    assert profiles == sorted(f"{stack}-small-c2-r0-{client}-{step}.pb.gz" for stack in ("staging", "prod")
                              for client in ("crane", "python") for step in ("push", "pull"))
    assert all((tmp_path / name).read_bytes()[:2] == b"\x1f\x8b" for name in profiles)
    assert {(r.stack, r.workload, r.concurrency, r.client) for r in rows} == {
        (stack, "small", 2, client) for stack in ("staging", "prod") for client in ("crane", "python")}
    for row in rows:
        assert row.mib == pytest.approx(2 * 2, rel=0.01)  # two images of two 1 MiB layers
        figures = row.medians()
        assert all(figures[name] > 0 for name in ("push", "pull", "write", "read", "push_rss", "pull_rss")), row
        # CPU is counted in clock ticks (10 ms): a 4 MiB round may cost the registry less than one
        assert all(value >= 0 for value in figures.values()), row
        assert figures["push_client_cpu"] > 0, row  # two crane processes, or the client's threads, at least
        # moto's share is counted for S3 only, and moving 4 MiB through moto (Python) costs it some
        moto = [figures[name] for name in ("push_moto_cpu", "write_moto_cpu")]
        assert all(value > 0 for value in moto) if row.stack == "prod" else moto == [0, 0], row
    printed = capsys.readouterr().out
    assert "| prod | small | 2 | crane |" in printed and "push ratio" in printed
    assert "CPU s/GiB push: registry / client [/ moto]" in printed
    assert "filesystem writes timed until on the disk (syncfs)" in printed


def test_gc_scaling_measures_the_window_mark_sweep_and_pulls(tmp_path):
    # One size on staging's real peers (kube-apiserver, Consul, the GC Job): the fit is checked below on its own.
    plot = tmp_path / "gc.png"
    timings = dict(gc_peers.SCRIPT_TIMINGS)
    results = gc_scaling.main(["--backends", "filesystem", "--filesystem-sizes", "10", "--settle", "0",
                               "--poll", "0.1", "--pullers", "1", "--fill-threads", "2", "--plot", str(plot)])
    # The benchmark's waits (settle 0) were for its own run: the GC tests later in this process get theirs back.
    assert gc_peers.SCRIPT_TIMINGS == timings
    (m,) = results
    assert (m.manifests, m.repositories, m.untagged) == (10, 1, 1)  # one superseded "latest" per repository
    assert m.window_seconds > m.collect_seconds >= m.mark_seconds > 0
    # staging collects without --delete-untagged: the superseded manifest (and its layer) stays
    assert m.manifests_deleted == 0 and m.blobs_deleted == 0
    assert m.blobs_marked == 2 * m.manifests + m.repositories  # every manifest, its layer, the config
    assert m.pulls_during_window > 0 and m.failed_pulls_during_window == 0, m.failures
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_finds_the_size_where_a_known_line_reaches_ten_minutes():
    sizes = [100, 1000, 10000]
    fits = gc_scaling.fit(sizes, [10 + 0.01 * n for n in sizes])
    linear = fits["linear"]
    assert linear["a"] == pytest.approx(10) and linear["b"] == pytest.approx(0.01)
    assert linear["limit_size"] == pytest.approx((600 - 10) / 0.01, rel=1e-6)
    assert gc_scaling.best_fit(fits)[0] == "linear"
    n_log_n = gc_scaling.fit(sizes, [5 + 0.002 * n * math.log(n) for n in sizes])["n log n"]
    assert 5 + 0.002 * n_log_n["limit_size"] * math.log(n_log_n["limit_size"]) == pytest.approx(600, rel=1e-6)


def test_fit_of_a_window_that_does_not_grow_never_reaches_the_limit():
    fits = gc_scaling.fit([100, 1000], [20.0, 18.0])
    assert fits["linear"]["b"] == 0 and fits["linear"]["limit_size"] is None


def test_collection_output_splits_into_mark_and_sweep(tmp_path):
    stamped = tmp_path / "collect.log"
    stamped.write_text("\n".join([
        "100.0\tstart",
        "100.5\tteam0/app0",
        "101.0\tteam0/app0: marking manifest sha256:aa ",
        "102.0\tteam0/app0: marking blob sha256:bb",
        "103.0\tmanifest eligible for deletion: {team0/app0 sha256:cc [latest]}",
        "104.0\t",
        "104.0\t2 blobs marked, 1 blobs and 1 manifests eligible for deletion",
        "104.5\tblob eligible for deletion: sha256:dd",
        "106.0\texit 0",
    ]) + "\n")
    parsed = gc_scaling.parse_collection(stamped)
    assert parsed == {"collect_seconds": 6.0, "mark_seconds": 2.0, "sweep_seconds": 4.0, "blobs_marked": 2,
                      "blobs_deleted": 1, "manifests_deleted": 1}


def test_collection_without_delete_untagged_counts_the_blob_walk_as_sweep(tmp_path):
    """Without --delete-untagged nothing is printed between the last marking line and the summary: the time
    between them (every blob enumerated) is sweep, not mark."""
    stamped = tmp_path / "collect.log"
    stamped.write_text("\n".join([
        "10.0\tstart",
        "10.0\tteam0/app0",
        "11.0\tteam0/app0: marking manifest sha256:aa ",
        "12.0\t",
        "12.0\t2 blobs marked, 0 blobs and 0 manifests eligible for deletion",
        "12.5\texit 0",
    ]) + "\n")
    parsed = gc_scaling.parse_collection(stamped)
    assert (parsed["mark_seconds"], parsed["sweep_seconds"]) == (1.0, 1.5)


def test_cpu_seconds_of_a_running_process_come_from_its_own_user_and_system_fields():
    # A child that burns about 0.4 s of CPU and then waits: its /proc/PID/stat says so while it still runs.
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.4\n"
                              "while time.process_time() < end: pass\nprint('spent', flush=True)\ntime.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "spent"
        assert 0.35 <= throughput.process_cpu_seconds(child.pid) < 2.0
    finally:
        child.kill()
        child.wait()
