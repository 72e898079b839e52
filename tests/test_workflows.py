"""The GitHub Actions workflows: actionlint passes, every third-party action is pinned to a commit,
and each pipeline runs the policy pack the way the docs say."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parent.parent
WORKFLOWS = PROJECT / ".github" / "workflows"
USES = re.compile(r"^\s*-?\s*uses:\s*(?P<ref>\S+)", re.M)


def _workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _pulumi_steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])
            if step.get("uses", "").startswith("pulumi/actions@")]


@pytest.mark.skipif(shutil.which("go") is None, reason="actionlint is built with Go (scripts/install-actionlint.sh)")
def test_actionlint_accepts_the_workflows():
    result = subprocess.run([str(PROJECT / "scripts" / "lint-workflows.sh"), "-no-color"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_third_party_actions_are_pinned_to_a_commit():
    files = [*WORKFLOWS.glob("*.yml"), *(PROJECT / ".github" / "actions").rglob("action.yml")]
    refs = [m["ref"] for f in files for m in USES.finditer(f.read_text())]
    remote = [r for r in refs if not r.startswith("./")]
    assert remote, "no actions found"
    assert [r for r in remote if not re.search(r"@[0-9a-f]{40}$", r)] == []


def test_pull_requests_preview_each_stack_with_the_pack_only_when_credentials_exist():
    workflow = _workflow("pull-request.yml")
    preview = workflow["jobs"]["preview"]
    assert preview["if"] == "needs.credentials.outputs.available == 'true'"
    assert preview["strategy"]["matrix"]["stack"] == ["staging", "prod"]
    [step] = _pulumi_steps({"jobs": {"preview": preview}})
    assert step["with"]["command"] == "preview" and step["with"]["policyPacks"] == "policies"
    assert step["with"]["comment-on-pr"] is True
    test_steps = " ".join(s.get("run", "") for s in workflow["jobs"]["test"]["steps"])
    assert "pytest" in test_steps and "offline_plan" in test_steps and "lint-workflows" in test_steps


def test_deploy_updates_staging_then_prod_behind_an_environment_with_the_pack():
    jobs = _workflow("deploy.yml")["jobs"]
    assert jobs["prod"]["needs"] == "staging" and jobs["prod"]["environment"] == "production"
    for job in ("staging", "prod"):
        [step] = _pulumi_steps({"jobs": {job: jobs[job]}})
        assert step["with"]["command"] == "up" and step["with"]["policyPacks"] == "policies"


def test_drift_check_expects_no_changes_on_every_stack():
    workflow = _workflow("drift.yml")
    assert workflow[True]["schedule"]  # YAML 1.1 reads the key `on` as True
    [step] = _pulumi_steps(workflow)
    assert step["with"]["expect-no-changes"] is True and step["with"]["refresh"] is True
    assert {entry["stack"] for entry in workflow["jobs"]["drift"]["strategy"]["matrix"]["include"]} == {"staging", "prod"}
