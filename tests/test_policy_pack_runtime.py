"""The policy pack's runtime options name a virtualenv the project's setup creates.

The CLI (pulumi/pulumi sdk/go/common/resource/plugin/analyzer_plugin.go, NewPolicyAnalyzer) starts a
Python pack through the `pulumi-analyzer-policy-python` shim with the pack's directory as working
directory and each runtime option as `-name=value`; the shim makes a relative `-virtualenv` absolute
against that directory and runs `<virtualenv>/bin/python -m pulumi.policy`. A virtualenv that does not
exist leaves `pulumi preview --policy-pack policies` hanging.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
PACK_DIR = PROJECT_DIR / "policies"


def test_the_packs_virtualenv_exists_after_setup_plan_and_can_run_the_pack():
    setup = subprocess.run([str(PROJECT_DIR / "scripts" / "setup.sh"), "plan"], cwd=PROJECT_DIR,
                           capture_output=True, text=True, timeout=900)
    assert setup.returncode == 0, setup.stderr

    runtime = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime["name"] == "python"
    virtualenv = Path(runtime["options"]["virtualenv"])
    resolved = virtualenv if virtualenv.is_absolute() else PACK_DIR / virtualenv
    python = resolved / "bin" / "python"
    assert python.is_file(), f"{python} does not exist after scripts/setup.sh plan"

    imports = subprocess.run([str(python), "-c", "import pulumi.policy, pulumi_policy"], capture_output=True,
                             text=True, timeout=120)
    assert imports.returncode == 0, imports.stderr


def test_the_pack_and_the_program_share_the_virtualenv_setup_creates():
    program = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["runtime"]["options"]["virtualenv"]
    pack = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text())["runtime"]["options"]["virtualenv"]
    assert (PACK_DIR / pack).resolve() == (PROJECT_DIR / program).resolve()


def test_the_offline_plan_runs_the_pack_with_the_interpreter_the_cli_would_use():
    from offline_plan.policy_runner import pack_python

    assert Path(pack_python()) == PACK_DIR / "../venv/bin/python"


def test_a_pack_naming_a_missing_virtualenv_is_an_error_not_a_hang(tmp_path):
    from offline_plan.policy_runner import PolicyAnalyzer, PolicyPackError

    pack = tmp_path / "policies"
    shutil.copytree(PACK_DIR, pack, ignore=shutil.ignore_patterns("__pycache__"))
    (pack / "PulumiPolicy.yaml").write_text(
        (PACK_DIR / "PulumiPolicy.yaml").read_text().replace("virtualenv: ../venv", "virtualenv: venv"))
    started = time.monotonic()
    with pytest.raises(PolicyPackError) as refused:
        with PolicyAnalyzer(pack_dir=pack):
            pass
    assert "'venv'" in str(refused.value) and str(pack / "venv" / "bin" / "python") in str(refused.value)
    assert time.monotonic() - started < 5
