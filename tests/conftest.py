"""Shared fixtures: each stack's recorded plan, computed once per test session. And the test tiers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.settings import Settings, parse_settings
from offline_plan import Plan, record_plan
from offline_plan.recorder import discover_stacks, stack_config

STACKS = discover_stacks()

# --- test tiers -------------------------------------------------------------------------------
# `scripts/test.sh` (no tier, or `full`) runs everything, as .ci/run and deploys do, in two passes: the pr tier on
# every core, then the `rest` tier (every test the pr tier leaves out) in one process, as the real-peer tests
# with their read-only windows and timings were measured. `--tier rest` runs that second pass alone.
# `scripts/test.sh --tier pr` (or TEST_TIER=pr) runs the pull-request tier only: the unit tests, the
# recorded plans, the policy pack, and exactly one end-to-end boot of the registry per stack; it
# takes under 3 minutes on a quiet 2-core machine (docs/tests.md). The tier is a deliberate list:
# a file not named here runs in the full tier only, so a new slow test cannot lengthen every pull
# request unnoticed; a test marked `full` stays out of the pr tier even in a listed file. Left out on purpose: garbage collection and restore drills, OCI conformance, the
# real peers (kube-apiserver, Consul, the Pulumi CLI as the engine) and the policy pack's ground truth
# on them, every registry boot beyond the first per stack (the keys each boot needs, registry facts,
# clients, token-service boots), the token service against OpenBao (time-based rotations) and the
# copy of the repository planned with a third stack (tests/test_library.py, 80 s).
TIERS = ("pr", "rest", "full")
PR_TIER: dict[str, frozenset[str] | None] = {  # file -> None (every test) or the test functions in the tier
    "test_alerting.py": None,
    "test_aliases.py": None,
    "test_cli_config_rules.py": None,
    "test_config_settings.py": None,
    "test_consul_config.py": None,
    "test_gc_identity.py": None,
    "test_library.py": frozenset({
        "test_the_package_declares_a_version_and_ships_the_operations_scripts",
        "test_the_example_plans_from_the_installed_package_with_its_own_names_and_namespace",
        "test_the_policy_pack_holds_the_example_to_its_own_prefixes_and_registries",
    }),
    "test_manifests.py": None,
    "test_names.py": None,
    "test_network.py": None,
    "test_offline_plan.py": None,
    "test_operations_plan.py": None,
    "test_operations_snapshot.py": None,
    "test_policy_pack_grpc.py": None,
    "test_policy_pack_robustness.py": None,
    "test_policy_pack_runtime.py": None,
    "test_policy_regressions.py": None,
    "test_policy_rules.py": None,
    "test_registry_e2e.py": frozenset({
        "test_registry_from_the_stack_config_serves_pushes_pulls_auth_metrics_and_stops_cleanly",  # one boot per stack
    }),
    "test_registry_env.py": None,
    "test_rotation.py": None,
    "test_secret_leaks.py": None,
    "test_settings.py": None,
    "test_settings_fuzz.py": None,
    "test_storage.py": None,
    "test_tiers.py": None,
    "test_token_rules.py": None,
    "test_token_service_deploy.py": None,
    "test_vault_secrets.py": None,
    "test_workflows.py": None,
    "test_workload.py": None,
}


def in_pr_tier(path: Path, function: str) -> bool:
    if path.parent != Path(__file__).parent or path.name not in PR_TIER:
        return False
    functions = PR_TIER[path.name]
    return functions is None or function in functions


def pytest_addoption(parser):
    parser.addoption("--tier", choices=TIERS, default=None,
                     help="pr: the pull-request tier only; rest: every test the pr tier leaves out; "
                          "full (default, or $TEST_TIER): every test")


def _tier(config) -> str:
    tier = config.getoption("--tier") or os.environ.get("TEST_TIER") or "full"
    if tier not in TIERS:
        raise pytest.UsageError(f"TEST_TIER: {tier!r} is not allowed; one of {', '.join(TIERS)}")
    return tier


def pytest_configure(config):
    _tier(config)  # a bad TEST_TIER stops the run before anything is collected


def pytest_collection_modifyitems(config, items):
    tier = _tier(config)
    selected, deselected = [], []
    for item in items:
        function = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
        if in_pr_tier(Path(item.path), function) and item.get_closest_marker("full") is None:
            item.add_marker(pytest.mark.pr)
            selected.append(item)
        else:
            deselected.append(item)
    keep, drop = {"pr": (selected, deselected), "rest": (deselected, selected)}.get(tier, (items, []))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def settings_for(stack: str, **overrides: str | None) -> Settings:
    """The stack's settings as the program would parse them, with config keys overridden."""
    project, config, _ = stack_config(stack)
    prefix = f"{project}:"
    raw = {key[len(prefix):]: value for key, value in config.items() if key.startswith(prefix)}
    raw.update(overrides)
    return parse_settings(raw, environment=stack)


@pytest.fixture(scope="session")
def plans() -> dict[str, Plan]:
    recorded = {stack: record_plan(stack) for stack in STACKS}
    for stack, plan in recorded.items():
        assert plan.error is None, f"{stack}: {plan.error}"
    return recorded


@pytest.fixture(scope="session")
def staging_plan(plans) -> Plan:
    return plans["staging"]


@pytest.fixture(scope="session")
def prod_plan(plans) -> Plan:
    return plans["prod"]


@pytest.fixture(params=STACKS)
def stack_plan(request, plans) -> Plan:
    return plans[request.param]


@pytest.fixture(scope="session")
def policy_analyzer():
    """The policy pack running as its own process, as the Pulumi engine starts it (stopped by pid)."""
    from offline_plan.policy_runner import PolicyAnalyzer

    with PolicyAnalyzer() as analyzer:
        yield analyzer
