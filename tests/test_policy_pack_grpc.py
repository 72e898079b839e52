"""The whole policy pack, driven the way the Pulumi engine drives it: its own process, the port it
prints, and the SDK's analyzer gRPC stubs (GetAnalyzerInfo, Configure, Analyze per resource,
AnalyzeStack), fed with each stack's recorded plan."""

from __future__ import annotations

import copy
import io
from contextlib import redirect_stdout

import pytest
from pulumi.runtime.proto import analyzer_pb2

from offline_plan.__main__ import run_policies
from offline_plan.policy_runner import PolicyAnalyzer
from policies.rules import POLICIES
from tests.plan_mutations import MUTATIONS, UNKNOWN_WIRE, edit, mutated


def test_pack_announces_every_rule_as_mandatory(policy_analyzer):
    info = policy_analyzer.info
    assert info.name == "registry-policies"
    assert [p.name for p in info.policies] == [p.name for p in POLICIES]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}
    image_policy = next(p for p in info.policies if p.name == "workload-image-pinned")
    assert "allowedRegistries" in image_policy.configSchema.properties


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_recorded_plan_has_no_diagnostics_at_all(policy_analyzer, plans, stack):
    report = policy_analyzer.analyze(plans[stack])
    assert report.diagnostics == [], "\n".join(map(str, report.diagnostics))


# The ten mutated plans issue 5 names, and the rule each must trip.
ISSUE_5_CASES = {
    "versioning off": "s3-bucket-versioning-enabled",
    "a public access flag off": "s3-public-access-blocked",
    "a wildcard IAM action": "iam-no-wildcards",
    "a root container": "workload-pod-security-restricted",
    "a latest image": "workload-image-pinned",
    "a missing NetworkPolicy": "network-default-deny-selects-registry",
    "a password in Consul KV": "consul-kv-no-plaintext-secrets",
    "filesystem with two replicas": "registry-filesystem-single-replica",
    "a Vault policy with write": "vault-policy-read-only",
    "the debug port on the client Service": "registry-debug-port-not-on-client-service",
}


def test_the_ten_mutations_issue_5_names_are_among_those_run():
    assert {case: MUTATIONS[case][2] for case in ISSUE_5_CASES if case in MUTATIONS} == ISSUE_5_CASES


# The realistic regressions issue 12 found planned with zero violations, and the rule that now stops each.
ISSUE_12_CASES = {
    "a role trusting every AWS principal": "iam-role-trust-bound",
    "a bucket granted to another account": "s3-bucket-policy-allows-nothing",
    "a key policy open to *": "kms-key-policy-own-account",
    "an intention admitting every service": "consul-intentions-deny-by-default",
    "an anonymous registry": "registry-auth-required",
    "a half-internet CIDR pair": "network-no-open-cidr",
    "sudo hidden behind a map in the Vault policy": "vault-policy-read-only",
}


def test_the_regressions_issue_12_names_are_among_those_run():
    assert {case: MUTATIONS[case][2] for case in ISSUE_12_CASES if case in MUTATIONS} == ISSUE_12_CASES


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_mutated_plan_violates_exactly_the_expected_rule(policy_analyzer, plans, case):
    _, _, expected = MUTATIONS[case]
    report = policy_analyzer.analyze(mutated(plans, case))
    assert report.policies_violated() == {expected}, "\n".join(map(str, report.diagnostics))
    assert report.advisory == []


def test_an_unknown_value_during_preview_is_an_advisory_not_a_pass(policy_analyzer, plans):
    plan = copy.deepcopy(plans["prod"])
    edit(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "registry-storage-public-access",
         lambda props: props.update(blockPublicPolicy=UNKNOWN_WIRE))
    report = policy_analyzer.analyze(plan)
    assert report.mandatory == []
    assert [d.policy for d in report.advisory] == ["s3-public-access-blocked"]
    assert "cannot verify during preview" in report.advisory[0].message
    assert "blockPublicPolicy" in report.advisory[0].message


def test_an_unknown_value_does_not_hide_a_known_violation(policy_analyzer, plans):
    plan = copy.deepcopy(plans["prod"])
    edit(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "registry-operations-dr-public-access",
         lambda props: props.update(blockPublicPolicy=UNKNOWN_WIRE, ignorePublicAcls=False))
    report = policy_analyzer.analyze(plan)
    assert [d.policy for d in report.mandatory] == ["s3-public-access-blocked"]
    assert "ignorePublicAcls" in report.mandatory[0].message
    assert [d.policy for d in report.advisory] == ["s3-public-access-blocked"]


def test_prod_previewed_before_its_kms_key_exists_gets_advisories_not_violations(policy_analyzer, plans):
    """The real KeyPrefix's subkeys are one apply over the KMS key ARN, so a preview that creates the key
    sends the whole map as unknown: the Consul rules (the registry's auth settings among them) cannot
    verify it, and none may fail the preview."""
    plan = copy.deepcopy(plans["prod"])
    edit(plan, "consul:index/keyPrefix:KeyPrefix", "registry-consul-kv", lambda props: props.update(subkeys=UNKNOWN_WIRE))
    report = policy_analyzer.analyze(plan)
    assert report.mandatory == [], "\n".join(map(str, report.mandatory))
    assert sorted(d.policy for d in report.advisory) == [
        "consul-kv-no-plaintext-secrets", "consul-kv-registry-prefix", "registry-auth-required",
        "registry-shared-http-secret"]


def test_stack_policy_config_tunes_rules_and_their_enforcement(plans):
    config = {
        "workload-image-pinned": {"allowedRegistries": ["ghcr.io"]},
        "registry-filesystem-single-replica": {"enforcementLevel": "advisory"},
    }
    with PolicyAnalyzer(config=config) as analyzer:
        report = analyzer.analyze(mutated(plans, "filesystem with two replicas"))
    assert report.policies_violated() == {"workload-image-pinned"}
    assert "not one of the allowed registries ['ghcr.io']" in report.mandatory[0].message
    assert [d.policy for d in report.advisory] == ["registry-filesystem-single-replica"]


def test_offline_plan_step_prints_each_violation_and_fails(plans):
    output = io.StringIO()
    with redirect_stdout(output):
        status = run_policies([mutated(plans, "a latest image")], None)
    printed = output.getvalue()
    assert status == 1
    assert "prod: [mandatory] workload-image-pinned: registry-statefulset: containers[registry] image" in printed
    assert "prod: policies: 2 mandatory violations, 0 advisory" in printed


def test_offline_plan_step_passes_a_clean_plan(plans):
    output = io.StringIO()
    with redirect_stdout(output):
        status = run_policies([plans["staging"]], None)
    assert status == 0
    assert "staging: policies: 0 mandatory violations, 0 advisory" in output.getvalue()


def _first_preview(plan):
    """The plan as the engine previews a stack whose AWS resources do not exist yet: every input that comes
    from one of them (its recorded property dependencies) and their own computed ARNs and IDs are unknown."""
    plan = copy.deepcopy(plan)
    aws = {r.urn for r in plan.registrations if r.type.startswith("aws:")}
    for registration in plan.registrations:
        for values in (registration.inputs, registration.outputs):
            for key, sources in registration.property_dependencies.items():
                if set(sources) & aws and key in values:
                    values[key] = UNKNOWN_WIRE
        if registration.urn in aws and registration.outputs:
            for key in ("arn", "id", "keyId", "name"):
                if key in registration.outputs and key not in registration.inputs:
                    registration.outputs[key] = UNKNOWN_WIRE
    return plan


def test_a_first_preview_of_prod_gets_advisories_and_no_violation(policy_analyzer, plans):
    """Before the first ``pulumi up`` nothing of AWS exists: ARNs, the account, every document built from
    them are unknown. The grant rules may not fail such a preview; they say what they could not verify."""
    report = policy_analyzer.analyze(_first_preview(plans["prod"]))
    assert report.mandatory == [], "\n".join(map(str, report.mandatory))
    advised = {d.policy for d in report.advisory}
    assert {"iam-role-trust-bound", "iam-registry-role-scoped", "s3-replication-to-own-bucket",
            "registry-auth-required"} <= advised, advised


def test_a_first_preview_still_fails_a_role_trusting_everyone(policy_analyzer, plans):
    report = policy_analyzer.analyze(_first_preview(mutated(plans, "a role trusting every AWS principal")))
    assert report.policies_violated() == {"iam-role-trust-bound"}, "\n".join(map(str, report.diagnostics))
