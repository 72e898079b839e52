"""Refactors keep state: every stateful resource of today's stacks keeps its URN or carries an alias to it.

A resource whose URN changes without an alias is, to the engine, one resource deleted and another
created: for a protected bucket the update fails, for a KMS key or a StatefulSet's volume claims it is
data loss, for a generated password an unannounced rotation. ``tests/fixtures/urns-before-library.json``
holds the URNs the plans had before the components became a library (recorded once, see its comment);
the plans of today must reach each stateful one, by its own URN or by an alias.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.names import WORKLOAD_NAME, data_claim_name

BEFORE = json.loads((Path(__file__).parent / "fixtures" / "urns-before-library.json").read_text())
# What holds data or identity a replacement would lose (buckets, keys, the StatefulSet and so its volume
# claims, generated credentials), besides everything that was protected.
STATEFUL_TYPES = (
    "aws:s3/bucket:Bucket",
    "aws:kms/key:Key",
    "kubernetes:apps/v1:StatefulSet",
    "random:index/randomPassword:RandomPassword",
    "random:index/randomBytes:RandomBytes",
)
RECORDED_STACKS = [stack for stack in BEFORE if not stack.startswith("_")]


def stateful(resource: dict) -> bool:
    return resource["protect"] or resource["type"] in STATEFUL_TYPES


def reached_urns(plan) -> dict[str, str]:
    """Every URN the plan's resources answer to (their own and their aliases), to the resource's URN."""
    reached = {}
    for registration in plan.registrations:
        reached[registration.urn] = registration.urn
        for alias in registration.aliases:
            reached[alias] = registration.urn
    return reached


def test_the_fixture_covers_both_stacks_and_their_protected_resources():
    assert set(RECORDED_STACKS) == {"staging", "prod"}
    assert sum(r["protect"] for r in BEFORE["prod"]) == 4  # bucket, key, DR bucket, DR key
    assert any(r["type"] == "kubernetes:apps/v1:StatefulSet" for r in BEFORE["staging"])


@pytest.mark.parametrize("stack", RECORDED_STACKS)
def test_every_stateful_resource_keeps_its_urn_or_an_alias_to_it(plans, stack):
    reached = reached_urns(plans[stack])
    lost = [r["urn"] for r in BEFORE[stack] if stateful(r) and r["urn"] not in reached]
    assert not lost, "these would be replaced (add an alias to the old URN):\n" + "\n".join(lost)


@pytest.mark.parametrize("stack", RECORDED_STACKS)
def test_a_moved_resource_keeps_its_type_and_protection(plans, stack):
    reached = reached_urns(plans[stack])
    by_urn = {r.urn: r for r in plans[stack].registrations}
    for before in filter(stateful, BEFORE[stack]):
        after = by_urn[reached[before["urn"]]]
        assert after.type == before["type"], before["urn"]
        assert after.protect == before["protect"], before["urn"]


@pytest.mark.parametrize("stack", RECORDED_STACKS)
def test_no_two_resources_claim_the_same_old_urn(plans, stack):
    claimed: dict[str, str] = {}
    for registration in plans[stack].registrations:
        for urn in (registration.urn, *registration.aliases):
            assert claimed.setdefault(urn, registration.urn) == registration.urn, urn


def test_the_staging_volume_claims_keep_their_names(staging_plan):
    """A claim is named <template>-<StatefulSet>-<ordinal>: renaming either orphans the volume."""
    workload = staging_plan.one("kubernetes:apps/v1:StatefulSet").plain_inputs
    templates = [t["metadata"]["name"] for t in workload["spec"]["volumeClaimTemplates"]]
    assert workload["metadata"]["name"] == WORKLOAD_NAME
    assert [f"{t}-{workload['metadata']['name']}-0" for t in templates] == [data_claim_name()]


@pytest.mark.parametrize("stack", RECORDED_STACKS)
def test_the_providers_of_stateful_resources_keep_their_urn_or_an_alias_to_it(plans, stack):
    """A provider that moves without an alias is a new provider to the engine, and every resource it
    manages would be diffed against it as a changed provider."""
    before = {r["urn"] for r in BEFORE[stack]}
    plan = plans[stack]
    by_urn = {r.urn: r for r in plan.registrations}
    providers = {r.provider.rsplit("::", 1)[0] for r in plan.registrations
                 if r.custom and r.provider and stateful({"protect": r.protect, "type": r.type})}
    assert providers or stack == "staging"
    for urn in providers:
        if urn.split("::")[2] == "pulumi:providers:kubernetes":
            continue  # the default provider, not created by the program
        assert {urn, *by_urn[urn].aliases} & before, f"{urn} has no URN of the plan before"
