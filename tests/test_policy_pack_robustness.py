"""No value of any shape makes a rule crash: an exception inside a policy is an engine error that stops
``pulumi preview`` with a traceback instead of a violation naming the field.

Every leaf of every recorded resource is replaced, one at a time, by values of other shapes (unknown,
null, empty list and map, a string, a bool) and every rule that reads that resource runs on it; stack
rules run on the whole stack with one leaf of one resource replaced (up to three levels deep, where
they read)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterator

import pytest
from pulumi_policy import StackValidationPolicy

from policies.rules import POLICIES
from policies.rules.support import UNKNOWN, Resource, config_defaults
from tests.plan_mutations import as_resource

RESOURCE_SUBSTITUTES = (UNKNOWN, None, [], {}, "x", True, [UNKNOWN])
STACK_SUBSTITUTES = (UNKNOWN, [], "x")
STACK_DEPTH = 3
CONFIGS = {policy.name: config_defaults(policy) for policy in POLICIES}


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    elif path:
        yield path


def _with(resource: Resource, path: tuple, value: Any) -> Resource:
    props = copy.deepcopy(resource.props)
    target = props
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return dataclasses.replace(resource, props=props)


def _crashes(run, where: str) -> list[str]:
    try:
        list(run())
    except Exception as error:  # the point of the test: any exception is a crash
        return [f"{where}: {type(error).__name__}: {error}"]
    return []


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_no_resource_rule_crashes_on_a_value_of_another_shape(plans, stack):
    resources = [as_resource(r) for r in plans[stack].registrations if r.type != "pulumi:pulumi:Stack"]
    rules = [p for p in POLICIES if not isinstance(p, StackValidationPolicy)]
    crashes, runs = [], 0
    for resource in resources:
        checks = [p for p in rules if resource.type in p.types]
        for path in (_leaves(resource.props) if checks else ()):
            for value in RESOURCE_SUBSTITUTES:
                changed = _with(resource, path, value)
                for policy in checks:
                    runs += 1
                    crashes += _crashes(lambda: policy.check(changed, CONFIGS[policy.name]),
                                        f"{policy.name} on {resource.name} {list(path)} = {value!r}")
    assert runs > 10_000 and crashes == [], "\n".join(crashes[:20])


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_no_stack_rule_crashes_on_a_value_of_another_shape(plans, stack):
    resources = [as_resource(r, outputs=True) for r in plans[stack].registrations if r.type != "pulumi:pulumi:Stack"]
    rules = [p for p in POLICIES if isinstance(p, StackValidationPolicy)]
    crashes = []
    for index, resource in enumerate(resources):
        for path in {path[:STACK_DEPTH] for path in _leaves(resource.props)}:
            for value in STACK_SUBSTITUTES:
                changed = [*resources[:index], _with(resource, path, value), *resources[index + 1:]]
                for policy in rules:
                    crashes += _crashes(lambda: policy.check(changed, CONFIGS[policy.name]),
                                        f"{policy.name} with {resource.name} {list(path)} = {value!r}")
    assert crashes == [], "\n".join(crashes[:20])
