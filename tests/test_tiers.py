"""The test tiers (tests/conftest.py): the pull-request tier names only tests that exist, boots the
registry exactly once per stack, leaves the full-tier files out; `rest` is every test the pr tier leaves out
(scripts/test.sh's second pass); no tier, or `full`, runs everything."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import PR_TIER, STACKS, TIERS

TESTS = Path(__file__).resolve().parent
E2E_BOOT = "test_registry_from_the_stack_config_serves_pushes_pulls_auth_metrics_and_stops_cleanly"


def _collect(*args: str, tier_env: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TEST_TIER"}
    if tier_env is not None:
        env["TEST_TIER"] = tier_env
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=120)


def _collected(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: nothing collected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_every_file_and_test_the_pr_tier_names_exists():
    for name, functions in PR_TIER.items():
        path = TESTS / name
        assert path.is_file(), f"PR_TIER names {name}, which does not exist"
        if functions is None:
            continue
        # Top-level test functions, found in the text: a name check needs no parse.
        defined = set(re.findall(r"^def (test_\w+)\(", path.read_text(), re.M))
        assert functions <= defined, f"{name}: PR_TIER names {sorted(functions - defined)}, not defined there"


def test_the_pr_tier_boots_the_registry_once_per_stack_and_leaves_out_the_full_tier_files():
    files = ["tests/test_registry_e2e.py", "tests/test_operations_gc.py"]
    everything = _collected(_collect(*files))
    pr = _collected(_collect("--tier", "pr", *files))

    assert sorted(pr) == sorted(f"tests/test_registry_e2e.py::{E2E_BOOT}[{stack}]" for stack in STACKS)
    assert any(item.startswith("tests/test_operations_gc.py::") for item in everything)
    assert any(item.startswith("tests/test_registry_e2e.py::") and item not in pr for item in everything)
    assert _collected(_collect(*files, tier_env="pr")) == pr


def test_the_rest_tier_is_every_test_the_pr_tier_leaves_out_so_the_two_passes_run_each_test_once():
    # scripts/test.sh runs the full tier as the pr pass (on every core) and then the rest pass (one process).
    files = ["tests/test_registry_e2e.py", "tests/test_tiers.py", "tests/test_operations_gc.py"]
    everything = _collected(_collect(*files))
    pr = _collected(_collect("--tier", "pr", *files))
    rest = _collected(_collect("--tier", "rest", *files))

    assert pr and rest
    assert not set(pr) & set(rest)
    assert sorted(pr + rest) == sorted(everything)
    assert _collected(_collect(*files, tier_env="rest")) == rest
    assert _collected(_collect("--tier", "full", *files)) == everything


def test_a_bad_tier_in_the_environment_is_one_line_before_anything_runs():
    bad = _collect("tests/test_registry_e2e.py", tier_env="quick")
    assert bad.returncode == 4
    assert bad.stderr.strip() == "ERROR: TEST_TIER: 'quick' is not allowed; one of pr, rest, full"
    assert "::" not in bad.stdout


def test_scripts_test_sh_runs_exactly_the_tiers_conftest_defines():
    # The tier names are conftest's (TIERS); test.sh needs them for its passes without importing the tests, so
    # this holds its copy to the definition: every case it handles and every pass it runs is a defined tier.
    script = (TESTS.parent / "scripts" / "test.sh").read_text()
    cases = set(re.findall(r"^    (\w+)\)", script, re.M))
    passes = set(re.findall(r"^\s*pass (\w+)", script, re.M))
    assert cases == set(TIERS), cases
    assert passes == set(TIERS) - {"full"}, passes  # full is the two passes, pr then rest
