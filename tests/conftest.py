"""Shared fixtures: each stack's recorded plan, computed once per test session."""

from __future__ import annotations

import pytest

from components.settings import Settings, parse_settings
from offline_plan import Plan, record_plan
from offline_plan.recorder import discover_stacks, stack_config

STACKS = discover_stacks()


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
