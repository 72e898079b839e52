"""Credential rotation: bumping credentialsGeneration changes the credentials, one KV key and the pods, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.vault_secrets import GENERATION_ANNOTATION
from tests.conftest import STACKS, settings_for
from offline_plan import Plan, record_plan

ANNOTATIONS = ("spec", "template", "metadata", "annotations")


def differences(before: Any, after: Any, path: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys) at which two JSON-like values differ; JSON strings are compared parsed."""
    if isinstance(before, str) and isinstance(after, str) and before != after:
        try:
            return differences(json.loads(before), json.loads(after), path)
        except (json.JSONDecodeError, TypeError):
            return [path]
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key not in before or key not in after:
                found.append(path + (key,))
            else:
                found.extend(differences(before[key], after[key], path + (key,)))
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (b, a) in enumerate(zip(before, after)) for p in differences(b, a, path + (i,))]
    return [] if before == after else [path]


def plan_differences(before: Plan, after: Plan) -> dict[str, list[tuple]]:
    old = {r.urn: r for r in before.registrations}
    new = {r.urn: r for r in after.registrations}
    assert set(old) == set(new), "rotation must neither add nor remove resources"
    changed = {}
    for urn in old:
        paths = differences(old[urn].plain_inputs, new[urn].plain_inputs)
        if set(old[urn].dependencies) != set(new[urn].dependencies) or old[urn].protect != new[urn].protect:
            paths.append(("(options)",))
        if paths:
            changed[old[urn].name] = paths
    return changed



@pytest.mark.parametrize("stack", STACKS)
def test_next_generation_changes_credentials_secret_kv_generation_and_pod_annotation_only(stack):
    current = record_plan(stack, overrides={"registry:credentialsGeneration": "1"})
    again = record_plan(stack, overrides={"registry:credentialsGeneration": "1"})
    rotated = record_plan(stack, overrides={"registry:credentialsGeneration": "2"})
    assert current.error is None and rotated.error is None

    assert plan_differences(current, again) == {}, "an unchanged generation must be an empty diff"
    changed = plan_differences(current, rotated)

    keepers = [("keepers", "credentialsGeneration")]
    # Every robot of the stack: a new password and salt, and its client secret's password.
    robots = {}
    for user in settings_for(stack).users:
        robots[f"registry-secrets-{user.name}-password"] = keepers
        robots[f"registry-secrets-{user.name}-salt"] = keepers
        robots[f"registry-secrets-{user.name}-client"] = [("dataJson", "password")]
    assert len(robots) >= 6
    assert changed == {
        "registry-secrets-http-secret": keepers,
        **robots,
        "registry-secrets-secret": [("dataJson", field) for field in
                                    ("credentials_generation", "htpasswd", "http_secret")],
        "registry-consul-kv": [("subkeys", "credentials-generation")],
        "registry-statefulset": [ANNOTATIONS + (GENERATION_ANNOTATION,)],
        # The token service re-reads the robots' hashes from Vault every 15 s: its pods need no restart, and
        # its KV's generation is what config-cli reports at their next start.
        **({"registry-token-service-kv": [("subkeys", "credentials-generation")]}
           if settings_for(stack).token_service is not None else {}),
    }
    rotated_set = rotated.one("kubernetes:apps/v1:StatefulSet").plain_inputs
    assert rotated_set["spec"]["template"]["metadata"]["annotations"][GENERATION_ANNOTATION] == "2"
    assert rotated.one("consul:index/keyPrefix:KeyPrefix", "registry-consul-kv").plain_inputs["subkeys"]["credentials-generation"] == "2"
