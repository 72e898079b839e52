"""The registry's policy pack. Constructing ``PolicyPack`` starts the analyzer's gRPC server, prints
its port and never returns, so the rules live in ``rules/`` and this file only builds the pack."""

from pulumi_policy import EnforcementLevel, PolicyPack

from rules import POLICIES

PolicyPack(
    name="registry-policies",
    description="Security and operations rules for the private Docker registry.",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
