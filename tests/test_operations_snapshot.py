"""registry-snapshot.sh, run for real with a kubectl stand-in that keeps VolumeSnapshots in a JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from components.names import SNAPSHOT_NAME
from components.operations import snapshot_cron_job, snapshot_role_rules
from tests.conftest import settings_for

SCRIPT = Path(__file__).resolve().parents[1] / "components" / "scripts" / "registry-snapshot.sh"

KUBECTL = r'''#!PYTHON
import json, os, sys, yaml
state_path = os.environ["FAKE_SNAPSHOTS"]
state = json.load(open(state_path))
args = sys.argv[1:]
state["calls"].append(args)
assert args[:2] == ["-n", "cicd"], args
verb, rest = args[2], args[3:]
snaps = state["snapshots"]
def save():
    json.dump(state, open(state_path, "w"))
if verb == "create":
    doc = yaml.safe_load(sys.stdin)
    assert doc["apiVersion"] == "snapshot.storage.k8s.io/v1" and doc["kind"] == "VolumeSnapshot"
    snaps[doc["metadata"]["name"]] = {"labels": doc["metadata"]["labels"], "spec": doc["spec"], "gets": 0}
elif verb == "get" and rest[0] == "volumesnapshot":
    snap = snaps[rest[1]]
    snap["gets"] += 1
    print("true" if state["become_ready"] and snap["gets"] > 1 else "false", end="")
elif verb == "get" and rest[0] == "volumesnapshots":
    wanted = dict(pair.split("=", 1) for pair in rest[rest.index("-l") + 1].split(","))
    for name, snap in snaps.items():
        if wanted.items() <= snap["labels"].items():
            print(name)
elif verb == "delete":
    del snaps[rest[1]]
else:
    sys.exit(f"unexpected {args}")
save()
'''


def run_snapshot(tmp_path: Path, existing: dict, become_ready: bool = True) -> tuple[subprocess.CompletedProcess, dict]:
    settings = settings_for("staging")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kubectl").write_text(KUBECTL.replace("PYTHON", sys.executable))
    (bin_dir / "kubectl").chmod(0o755)
    state_path = tmp_path / "snapshots.json"
    state_path.write_text(json.dumps({"snapshots": existing, "calls": [], "become_ready": become_ready}))
    container = snapshot_cron_job(settings)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    result = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60, env={
        **os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SNAPSHOTS": str(state_path),
        "POLL_SECONDS": "0", "READY_TIMEOUT_SECONDS": "2"})
    return result, json.loads(state_path.read_text())


def ours(day: int) -> tuple[str, dict]:
    labels = snapshot_cron_job(settings_for("staging"))["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return f"data-registry-0-202611{day:02d}-020000", {"labels": dict(labels), "spec": {}, "gets": 0}


def test_snapshot_is_taken_of_the_registry_claim_and_old_ones_pruned_beyond_retention(tmp_path):
    existing = dict(ours(day) for day in range(1, 16))  # 15 older snapshots, retention 14
    existing["someone-elses-snapshot"] = {"labels": {"app": "other"}, "spec": {}, "gets": 0}
    result, state = run_snapshot(tmp_path, existing)
    assert result.returncode == 0, result.stdout + result.stderr
    snaps = state["snapshots"]
    created = [name for name in snaps if name not in existing]
    assert len(created) == 1
    assert snaps[created[0]]["spec"] == {"volumeSnapshotClassName": "ceph-rbd-snapshot",
                                         "source": {"persistentVolumeClaimName": "data-registry-0"}}
    assert "someone-elses-snapshot" in snaps
    kept = sorted(n for n in snaps if n.startswith("data-registry-0-"))
    assert len(kept) == 14 and created[0] in kept
    assert "data-registry-0-20261101-020000" not in snaps and "data-registry-0-20261102-020000" not in snaps


def test_a_snapshot_that_never_becomes_ready_prunes_nothing(tmp_path):
    existing = dict(ours(day) for day in range(1, 16))
    result, state = run_snapshot(tmp_path, existing, become_ready=False)
    assert result.returncode != 0
    assert set(existing) <= set(state["snapshots"])
    assert not [c for c in state["calls"] if c[2] == "delete"]


def test_snapshot_script_uses_only_what_its_role_allows(tmp_path):
    _, state = run_snapshot(tmp_path, dict(ours(day) for day in range(1, 16)))
    allowed = {verb for rule in snapshot_role_rules() for verb in rule["verbs"]}
    used = {call[2] for call in state["calls"]}
    assert used and used <= allowed
    assert all(call[3].startswith("volumesnapshot") for call in state["calls"] if call[2] != "create")
    assert SNAPSHOT_NAME == "registry-snapshot"

