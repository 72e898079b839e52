"""The offline plan against the floor of importing the SDK classes it needs, measured in one run.

Not a test: run it by hand (``venv/bin/python benchmarks/plan.py [--runs 7]``), best on a quiet machine.

- The floor is a fresh ``python -c`` that imports what a minimal program registering one resource of each
  type the recorded plans hold would need: ``pulumi`` and, per type, the class the provider SDK registers
  for it (``pulumi_aws.s3.Bucket``, ``pulumi_kubernetes.core.v1.Service``, ...; a custom resource kind such
  as ``PrometheusRule`` is ``pulumi_kubernetes.apiextensions.CustomResource``). The types come from a plan
  this script records first, and the classes from the SDKs' own type registry, so a component that starts
  using a new resource type moves the floor with it. Importing only the package roots
  (``import pulumi_aws``: their submodules load lazily) is printed beside it, for comparison: it is not a
  floor, since no resource class is loaded by it.
- The plan is ``python -m offline_plan --quiet`` exactly as ``scripts/plan.sh --quiet`` runs it (every stack,
  the policy pack over gRPC; ``--out`` a temporary directory), and the same with ``--no-policy``.

Each command runs ``--runs`` times as a fresh process, the commands interleaved round by round so that a
load change on a shared machine hits all of them alike. Figures are the median wall time and the median
CPU time (user + sys of the process and its children, the policy pack included); the ratios divide the
plan's median by the floor's. Every run's ``build/`` output is compared byte for byte with the first one's.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = REPO_ROOT / "venv" / "bin" / "python"
GOAL_RATIO = 3.0
STACK_TYPE = "pulumi:pulumi:Stack"
# A kind of a CustomResourceDefinition has no class of its own in the kubernetes SDK.
CUSTOM_RESOURCE = ("pulumi_kubernetes.apiextensions", "CustomResource")


@dataclass
class Command:
    label: str
    argv: list[str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self) -> subprocess.CompletedProcess:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run(self.argv, cwd=REPO_ROOT, capture_output=True, text=True)
        self.wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        if completed.returncode != 0:
            sys.exit(f"{self.label}: exit code {completed.returncode}\n{completed.stdout}{completed.stderr}")
        return completed

    def figures(self) -> str:
        return (f"wall {statistics.median(self.wall):.2f} s (min {min(self.wall):.2f}, max {max(self.wall):.2f}), "
                f"CPU {statistics.median(self.cpu):.2f} s")


def plan_command(out: Path, *extra: str) -> list[str]:
    return [str(PYTHON), "-m", "offline_plan", "--quiet", "--out", str(out), *extra]


def recorded_types(out: Path) -> set[str]:
    types: set[str] = set()
    for plan_file in sorted(out.glob("*/plan.json")):
        types.update(record["type"] for record in json.loads(plan_file.read_text())["resources"])
    if not types:
        sys.exit(f"no plan.json under {out}: did the plan run?")
    return types


# Run in a fresh interpreter of the project's venv: which class the provider SDKs register for each type.
_CLASS_LOOKUP = r"""
import importlib, json, sys
import pulumi
from pulumi.runtime import rpc
types = json.loads(sys.argv[1])
for package in sorted({t.split(":", 1)[0] for t in types} - {"pulumi"}):
    try:
        importlib.import_module("pulumi_" + package)
    except ImportError:
        pass  # no SDK of that name: the program's own component types
table = {}
for modules in rpc._RESOURCE_MODULES.values():
    for module in modules:
        for type_token, class_name in module.mod_info["classes"].items():
            table[type_token] = (module.mod_info["fqn"], class_name)
for packages in rpc._RESOURCE_PACKAGES.values():
    for package in packages:
        table[package.pkg_info["token"]] = (package.pkg_info["fqn"], package.pkg_info["class"])
print(json.dumps(table))
"""


def floor_imports(types: set[str]) -> list[str]:
    """``import`` lines of a minimal program with one resource of each SDK type in ``types``."""
    lookup = subprocess.run([str(PYTHON), "-c", _CLASS_LOOKUP, json.dumps(sorted(types))],
                            capture_output=True, text=True, check=True)
    table = {token: tuple(entry) for token, entry in json.loads(lookup.stdout).items()}
    sdk_packages = {token.split(":", 1)[0] for token in table}
    classes: dict[str, set[str]] = {}
    for type_token in sorted(types):
        package = type_token.split(":", 1)[0]
        if type_token == STACK_TYPE:
            continue
        if type_token in table:
            module, class_name = table[type_token]
        elif package == "kubernetes":
            module, class_name = CUSTOM_RESOURCE
        elif package in sdk_packages or package == "pulumi":
            sys.exit(f"no SDK class registered for resource type {type_token}")
        else:
            continue  # a component of the program (pulumi.ComponentResource, in `import pulumi`)
        classes.setdefault(module, set()).add(class_name)
    return ["import pulumi"] + [f"from {module} import {', '.join(sorted(names))}"
                                for module, names in sorted(classes.items())]


def package_roots(lines: list[str]) -> str:
    roots = sorted({line.split()[1].split(".")[0] for line in lines})
    return "import " + ", ".join(roots)


def same_tree(left: Path, right: Path) -> bool:
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(left / d, right / d) for d in comparison.common_dirs)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command (default 7)")
    parser.add_argument("--show-floor", action="store_true", help="print the floor's import program")
    args = parser.parse_args(argv)
    if not PYTHON.is_file():
        sys.exit(f"{PYTHON} not found: run scripts/setup.sh plan first")

    scratch = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    try:
        reference = scratch / "reference"
        Command("offline plan (first run)", plan_command(reference)).run()
        lines = floor_imports(recorded_types(reference))
        if args.show_floor:
            print("\n".join(lines) + "\n")
        floor = Command("SDK-import floor", [str(PYTHON), "-c", "; ".join(lines)])
        roots = Command("package roots only", [str(PYTHON), "-c", package_roots(lines)])
        out = scratch / "out"
        with_policy = Command("offline plan + policy pack", plan_command(out))
        without_policy = Command("offline plan, no policy", plan_command(out, "--no-policy"))
        commands = [floor, with_policy, roots, without_policy]
        load_before = os.getloadavg()
        for round_number in range(args.runs):
            # Rotate the order, so no command always runs right after the same one.
            shift = round_number % len(commands)
            for command in commands[shift:] + commands[:shift]:
                if out.exists():
                    shutil.rmtree(out)
                command.run()
                if command in (with_policy, without_policy) and not same_tree(reference, out):
                    sys.exit(f"{command.label}: build output differs from the first run's")
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"machine: {machine()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{args.runs} fresh processes each, interleaved; build/ output identical in every plan run")
    print(f"floor ({len(lines) - 1} import lines: pulumi + the SDK classes of the plans' types): {floor.figures()}")
    print(f"package roots only ({package_roots(lines)}): {roots.figures()}")
    print(f"offline plan, no policy: {without_policy.figures()}")
    print(f"offline plan + policy pack: {with_policy.figures()}")
    ratios = {}
    for command in (without_policy, with_policy):
        ratios[command.label] = statistics.median(command.wall) / statistics.median(floor.wall)
        cpu = statistics.median(command.cpu) / statistics.median(floor.cpu)
        print(f"ratio {command.label} / floor: wall {ratios[command.label]:.2f}x, CPU {cpu:.2f}x")
    met = ratios[with_policy.label] <= GOAL_RATIO
    print(f"goal: plan + policy pack <= {GOAL_RATIO:g}x the floor (wall): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
