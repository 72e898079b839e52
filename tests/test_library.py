"""The components as a library: installed from pyproject.toml, used by a second program that imports
nothing else of this repository, and a third stack that is one new file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "second-registry"
# What the example must not inherit from this program: its names, namespace and KV/Vault paths.
PROGRAM_NAMES = ("data-registry-0", "registry-gc", "registry-snapshot", "registry-headless", "registry/team-a")

# The per-stack tests: each runs once per stack file (test_offline_plan's plan command covers all stacks at once).
STACK_TESTS = ("test_alerting.py", "test_manifests.py", "test_registry_env.py", "test_rotation.py",
               "test_operations_plan.py", "test_offline_plan.py")

PLAN_EXAMPLE = """
import json, sys
from pathlib import Path
from offline_plan import record_plan
import components
plan = record_plan("team-a", project_dir=Path(sys.argv[1]))
print(json.dumps({"components": components.__file__, "error": plan.error,
                  "resources": [[r.type, r.name, r.plain_inputs] for r in plan.registrations]}, default=str))
"""


def install_package(target: Path) -> Path:
    """``pip install`` of a copy of the package source (the build writes into its source tree)."""
    source = target / "source"
    source.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", source)
    for package in ("components", "token_service"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = target / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(source)], check=True, timeout=120)
    return site


def plan_example_with_only_the_package(tmp_path: Path) -> dict:
    site = install_package(tmp_path)
    recorder = tmp_path / "recorder"
    shutil.copytree(ROOT / "offline_plan", recorder / "offline_plan", ignore=shutil.ignore_patterns("__pycache__"))
    # -P: neither the working directory nor this repository on sys.path, only the package and the recorder.
    result = subprocess.run([sys.executable, "-P", "-c", PLAN_EXAMPLE, str(EXAMPLE)], cwd=tmp_path,
                            env={"PYTHONPATH": f"{site}:{recorder}", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_example_plans_from_the_installed_package_with_its_own_names_and_namespace(tmp_path):
    plan = plan_example_with_only_the_package(tmp_path)

    assert plan["components"].startswith(str(tmp_path / "site")), "the example must use the installed package"
    assert plan["error"] is None
    objects = [(typ, inputs["metadata"]) for typ, _, inputs in plan["resources"] if typ.startswith("kubernetes:")]
    assert len(objects) >= 20
    assert {metadata["namespace"] for _, metadata in objects} == {"team-a-registry"}
    assert all(metadata["name"].startswith("team-registry") for _, metadata in objects), objects
    assert all(name.startswith("team-registry") for typ, name, _ in plan["resources"] if typ != "pulumi:pulumi:Stack")
    # Whole values only: script file names, temporary paths and the probe repository may stay the same.
    text = json.dumps([inputs for typ, _, inputs in plan["resources"] if typ != "kubernetes:core/v1:ConfigMap"])
    assert not [name for name in PROGRAM_NAMES if re.search(rf"(?<![\w/-]){re.escape(name)}(?![\w./:-])", text)]
    prefix = next(inputs for typ, _, inputs in plan["resources"] if typ == "consul:index/keyPrefix:KeyPrefix")
    assert prefix["pathPrefix"] == "team-registry/team-a/config/"


def test_the_policy_pack_holds_the_example_to_its_own_prefixes_and_registries():
    """The pack's defaults are this program's names; the example's policy config names its own
    (`pulumi preview --policy-pack policies --policy-pack-config policy-config.json`)."""
    from offline_plan import record_plan
    from offline_plan.policy_runner import PolicyAnalyzer

    plan = record_plan("team-a", project_dir=EXAMPLE)
    assert plan.error is None
    with PolicyAnalyzer() as defaults:
        flagged = {d.policy for d in defaults.analyze(plan).mandatory}
    assert {"consul-kv-registry-prefix", "vault-policy-read-only", "workload-image-pinned"} <= flagged
    with PolicyAnalyzer(config=json.loads((EXAMPLE / "policy-config.json").read_text())) as configured:
        assert configured.analyze(plan).mandatory == []


def test_the_package_declares_a_version_and_ships_the_operations_scripts(tmp_path):
    site = install_package(tmp_path)
    metadata = next(site.glob("registry_components-*.dist-info")) / "METADATA"
    assert "Version: 0.1.0" in metadata.read_text()
    assert (site / "components" / "scripts" / "registry-gc.sh").is_file()


def test_a_third_stack_is_one_new_file(tmp_path):
    """A copy of the repository with a Pulumi.dev.yaml added: planned, policy-checked, in the settings table
    and in the tests' stacks, with no other edit."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("venv", "build", "__pycache__", ".git", "*.egg-info"))
    dev = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
    dev["config"]["registry:namespace"] = "cicd-dev"
    (copy / "Pulumi.dev.yaml").write_text(yaml.safe_dump(dev))
    (copy / "venv").symlink_to(sys.prefix)  # the policy pack runs from ../venv, as PulumiPolicy.yaml says

    plan = subprocess.run([sys.executable, "-m", "offline_plan", "--quiet"], cwd=copy,
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    assert "dev: policies: 0 mandatory violations" in plan.stdout
    assert list((copy / "build" / "dev" / "kubernetes").glob("statefulset-*.yaml"))

    tests = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-k", "dev or plan_command",
                            *[f"tests/{name}" for name in STACK_TESTS]], cwd=copy, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:]
    ran = {line.split("::")[0] for line in tests.stdout.splitlines() if "[dev" in line and "PASSED" in line}
    assert ran == {f"tests/{name}" for name in STACK_TESTS if name != "test_offline_plan.py"}, tests.stdout[-3000:]
    assert "test_plan_command_prints_every_stack_and_writes_their_manifests PASSED" in tests.stdout
