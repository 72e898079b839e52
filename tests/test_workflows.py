"""The GitHub Actions workflows: actionlint passes, every third-party action is pinned to a commit,
pull requests and deploys run exactly the steps of .ci/run (pull requests with the pr test tier), each
pipeline runs the policy pack the way the docs say, and the Pulumi jobs know where Consul and Vault are
reached from."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from offline_plan.recorder import discover_stacks

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


def _ci_run_commands() -> list[str]:
    """The commands .ci/run runs, in order; anything else in it may only be shell bookkeeping."""
    commands = []
    bookkeeping = re.compile(r'^(#.*|set -euo pipefail|cd "\$\(dirname "\$0"\)/\.\."|started=\$\(date \+%s\)|echo "ci: .*")?$')
    for line in (PROJECT / ".ci" / "run").read_text().splitlines():
        line = line.strip()
        if line.startswith("scripts/"):
            commands.append(line)
        else:
            assert bookkeeping.match(line), f".ci/run does more than the workflows know of: {line!r}"
    return commands


def test_ci_run_and_the_checks_workflow_run_the_same_steps():
    commands = _ci_run_commands()
    assert commands, "no scripts found in .ci/run"
    [job] = _workflow("checks.yml")["jobs"].values()
    assert [step["run"].strip() for step in job["steps"] if "run" in step] == commands
    # Nothing else happens but checking out and providing the toolchains the scripts build with.
    actions = [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]
    assert actions == ["actions/checkout", "actions/setup-go", "actions/setup-python"]


def test_pull_requests_run_the_checks_with_the_pr_tier_and_deploys_with_every_test():
    assert _workflow("pull-request.yml")["jobs"]["test"] == {"uses": "./.github/workflows/checks.yml",
                                                             "with": {"tier": "pr"}}
    assert _workflow("deploy.yml")["jobs"]["test"] == {"uses": "./.github/workflows/checks.yml"}
    checks = _workflow("checks.yml")
    # YAML 1.1 reads the key `on` as True; no tier given (deploys) is the full tier, as in .ci/run.
    assert checks[True] == {"workflow_call": {"inputs": {"tier": {
        "description": "test tier: pr or full", "type": "string", "default": "full"}}}}
    [job] = checks["jobs"].values()
    assert job["env"] == {"TEST_TIER": "${{ inputs.tier }}"}
    assert "TEST_TIER" not in (PROJECT / ".ci" / "run").read_text()


def test_pull_requests_preview_each_stack_with_the_pack_only_when_credentials_exist():
    workflow = _workflow("pull-request.yml")
    preview = workflow["jobs"]["preview"]
    assert preview["if"] == "needs.credentials.outputs.available == 'true'"
    assert set(preview["needs"]) == {"test", "credentials", "stacks"}
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.list) }}"
    [step] = _pulumi_steps({"jobs": {"preview": preview}})
    assert step["with"]["command"] == "preview" and step["with"]["policyPacks"] == "policies"
    assert step["with"]["comment-on-pr"] is True


def _stack_config(stack: str) -> dict:
    return yaml.safe_load((PROJECT / f"Pulumi.{stack}.yaml").read_text())["config"]


def test_every_pulumi_job_reaches_consul_and_vault_where_its_stack_file_says():
    """The providers read consul:address and vault:address from the stack; nothing else may name them."""
    stacks = discover_stacks()
    for stack in stacks:
        config = _stack_config(stack)
        for key in ("consul:address", "vault:address"):
            address = config.get(key, "")
            # The in-cluster names config-cli uses (registry:consulHttpAddr, ...) are unreachable from a runner.
            assert address and ".svc" not in address and "127.0.0.1" not in address, f"{stack}: {key}={address!r}"
        assert config.get("consul:scheme") == "https", stack
    for name in ("pull-request.yml", "deploy.yml", "drift.yml"):
        text = (WORKFLOWS / name).read_text()
        assert "CONSUL_HTTP_ADDR" not in text and "VAULT_ADDR" not in text, f"{name} names a second address"
        for step in _pulumi_steps(_workflow(name)):
            assert {"CONSUL_HTTP_TOKEN", "VAULT_TOKEN"} <= set(step["env"]), name


def test_pulumi_jobs_set_up_the_virtualenv_both_project_files_name():
    action = yaml.safe_load((PROJECT / ".github" / "actions" / "setup-project" / "action.yml").read_text())
    assert [step["run"] for step in action["runs"]["steps"] if "run" in step] == ["scripts/setup.sh plan"]
    for name in ("pull-request.yml", "deploy.yml", "drift.yml"):
        for job_name, job in _workflow(name)["jobs"].items():
            if any(step.get("uses", "").startswith("pulumi/actions@") for step in job.get("steps", [])):
                uses = [step.get("uses") for step in job["steps"]]
                assert "./.github/actions/setup-project" in uses, f"{name}: {job_name}"


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
    assert workflow["jobs"]["drift"]["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.list) }}"


def test_preview_and_drift_take_their_stacks_from_the_stack_files(tmp_path):
    """One list, from the files: a new Pulumi.<stack>.yaml is previewed and drift-checked without an edit here."""
    for name in ("pull-request.yml", "drift.yml"):
        [step] = [s for s in _workflow(name)["jobs"]["stacks"]["steps"] if "run" in s]
        assert step["run"].strip() == 'echo "list=$(scripts/stacks.sh)" >> "${GITHUB_OUTPUT}"', name

    listed = subprocess.run([str(PROJECT / "scripts" / "stacks.sh")], capture_output=True, text=True, check=True)
    assert sorted(json.loads(listed.stdout)) == sorted(discover_stacks()) and {"staging", "prod"} <= set(discover_stacks())
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(PROJECT / "scripts" / "stacks.sh", copy / "scripts")
    for stack in ("staging", "prod", "dev"):
        (copy / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    listed = subprocess.run([str(copy / "scripts" / "stacks.sh")], capture_output=True, text=True, check=True)
    assert sorted(json.loads(listed.stdout)) == ["dev", "prod", "staging"]
