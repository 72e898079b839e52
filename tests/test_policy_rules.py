"""Each rule of the policy pack, called directly: it passes the recorded plans and fails the plan
broken for it, and it handles values that are unknown during preview as its module documents."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import re
from pathlib import Path

import pytest

from policies.rules import POLICIES
from policies.rules.config_secrets import (
    check_consul_kv_no_secrets,
    check_consul_kv_prefix,
    check_vault_policy_read_only,
    check_vault_role_binding,
    key_looks_secret,
    secret_value_kind,
)
from policies.rules.consul import check_acl_logins, check_consul_acl_policy, check_intentions_deny_by_default
from policies.rules.iam import (
    check_managed_policy_attachments,
    check_no_wildcards,
    check_registry_role_scoped,
    check_role_trust,
)
from policies.rules.network import check_default_deny, check_no_open_cidr
from policies.rules.rbac import check_rbac_least_privilege, check_rbac_no_broad_subjects, check_rbac_no_sensitive_grants
from policies.rules.s3 import (
    check_bucket_versioning,
    check_encrypted_with_own_key,
    check_key_policy,
    check_tls_only_policy,
)
from policies.rules.support import UNKNOWN, Resource, Unverifiable, Violation, config_defaults, dig, plain
from policies.rules.workload import (
    check_debug_port_not_on_client_service,
    check_ingress_tls_and_sources,
    check_pod_security,
    check_shared_http_secret,
)
from tests.plan_mutations import MESSAGES, MUTATIONS, TOKEN_PHRASES, UNKNOWN_WIRE, as_resource, mutated, violations_by_policy

POLICY_NAMES = [policy.name for policy in POLICIES]


def test_every_rule_has_a_failing_case():
    assert sorted({expected for _, _, expected in MUTATIONS.values()}) == sorted(POLICY_NAMES)


def test_the_policy_document_lists_every_rule_and_their_number():
    text = (Path(__file__).parent.parent / "docs" / "policy-and-pipelines.md").read_text()
    assert [name for name in POLICY_NAMES if f"| `{name}` |" not in text] == []
    assert f"{len(POLICIES)} rules" in text and f"by {len(POLICIES)} rules (mandatory)" in (
        Path(__file__).parent.parent / "docs" / "security.md").read_text()


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_recorded_plan_passes_every_rule(plans, stack):
    assert violations_by_policy(plans[stack], POLICIES) == {}


def test_every_resource_rule_checks_a_resource_the_program_registers(plans):
    """A pass on the recorded plans means something only if each rule sees one of its types there."""
    registered = {r.type for plan in plans.values() for r in plan.registrations}
    unchecked = [p.name for p in POLICIES if getattr(p, "types", None) is not None and not p.types & registered]
    assert unchecked == []


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_every_mutation_changes_the_recorded_plan_and_leaves_it_intact(plans, case):
    """A mutation that edits nothing would let its rule pass the "broken" plan for the wrong reason;
    one that edits the shared recorded plan would break every test after it."""
    stack = MUTATIONS[case][0]
    recorded = copy.deepcopy(plans[stack])
    changed = mutated(plans, case)
    assert plans[stack] == recorded
    assert changed != recorded


# The rule reports on the resource the change left unprotected, not the one it edited or removed.
NAMED_INSTEAD = {
    "the DR bucket's versioning pointed at the registry bucket": "registry-storage-dr-bucket",
    "replicas without a shared HTTP secret": "StatefulSet registry",
    "a bucket without a lifecycle": "registry-storage-bucket",
    "a bucket without encryption": "registry-storage-bucket",
    "a bucket without a lifecycle (DR replica)": "registry-storage-dr-bucket",
    "a bucket without encryption (DR replica)": "registry-storage-dr-bucket",
    "a missing NetworkPolicy": "StatefulSet registry",
    "only allow rules, no default deny": "StatefulSet registry",
    "no PrometheusRule": "StatefulSet registry",
    "a token service outside any default deny": "Deployment registry-token-service",
    "a token service without its alerts": "Deployment registry-token-service",
}


def _names_of_what_changed(before: list, after: list) -> set[str]:
    recorded = {r.urn: (r.plain_inputs, r.protect) for r in before}
    names = set()
    for registration in (r for r in after if recorded.get(r.urn) != (r.plain_inputs, r.protect)):
        inputs = registration.plain_inputs
        names |= {registration.name, *(str(v) for v in (dig(inputs, "metadata", "name"), inputs.get("name"),
                                                        inputs.get("roleName")) if isinstance(v, str))}
    return names


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_broken_plan_fails_exactly_its_rule_naming_the_resource_the_grant_and_the_fix(plans, case):
    """Only the expected rule fires; its message names the resource (the one changed, or the one left without
    what was removed), the grant (the case's phrase, for the grant cases) and what to do instead."""
    stack, _, expected = MUTATIONS[case]
    broken = mutated(plans, case)
    found = violations_by_policy(broken, POLICIES)
    assert set(found) == {expected}, found
    messages = found[expected]
    names = ({NAMED_INSTEAD[case]} if case in NAMED_INSTEAD else
             _names_of_what_changed(plans[stack].registrations, broken.registrations))
    assert names, "a case that removes a resource names what is left without it in NAMED_INSTEAD"
    assert any(name in message for name in names for message in messages), (names, messages)
    if case in MESSAGES:
        assert any(MESSAGES[case] in message for message in messages), messages
        assert all("; " in message for message in messages), "every message ends with '; <the fix>'"
    if case in TOKEN_PHRASES:
        assert any(TOKEN_PHRASES[case] in message for message in messages), messages


# --- unknown values during preview ---------------------------------------------------------------


def _resource(type_token: str, props: dict, name: str = "r") -> Resource:
    return Resource(type=type_token, name=name, urn=f"urn:pulumi:s::p::{type_token}::{name}", props=plain(props))


def test_wire_unknowns_become_the_unknown_marker():
    assert plain({"a": [UNKNOWN_WIRE, {"b": UNKNOWN_WIRE}], "c": 1}) == {"a": [UNKNOWN, {"b": UNKNOWN}], "c": 1}


def test_unknown_versioning_status_cannot_be_verified_but_is_not_a_pass_or_a_violation(plans):
    resources = [as_resource(r, outputs=True) for r in plans["prod"].registrations]
    versioning = next(r for r in resources if r.name == "registry-storage-dr-versioning")
    versioning.props["versioningConfiguration"]["status"] = UNKNOWN
    findings = list(check_bucket_versioning(resources, {}))
    assert findings == [Unverifiable(versioning.name, "versioningConfiguration.status")]


def _prod_resources(plans) -> list[Resource]:
    return [as_resource(r, outputs=True) for r in plans["prod"].registrations]


def _named(resources: list[Resource], name: str) -> Resource:
    return next(r for r in resources if r.name == name)


def test_a_versioning_whose_bucket_is_unknown_pairs_with_the_bucket_its_value_comes_from(plans):
    """During preview the engine names, per input, the resources its value comes from."""
    resources = _prod_resources(plans)
    dr_versioning = _named(resources, "registry-storage-dr-versioning")
    registry_bucket = _named(resources, "registry-storage-bucket")
    dr_versioning.props["bucket"] = UNKNOWN
    assert list(check_bucket_versioning(resources, {})) == []
    # The same resource, its value now coming from the registry's bucket: the replica is unversioned.
    dr_versioning.property_dependencies["bucket"] = (registry_bucket.urn,)
    findings = list(check_bucket_versioning(resources, {}))
    assert [type(f) for f in findings] == [Violation]
    assert "registry-storage-dr-bucket has no BucketVersioning" in findings[0].message


def _tie_to_one_more(resources: list[Resource], name: str, input_name: str, other: str) -> None:
    """Make ``name``'s input unknown and its source ambiguous: no property dependencies (an older engine),
    and a dependency on ``other`` besides its own."""
    resource = _named(resources, name)
    resource.props[input_name] = UNKNOWN
    resource.property_dependencies.clear()
    dependencies = (*resource.dependencies, _named(resources, other).urn)
    resources[resources.index(resource)] = dataclasses.replace(resource, dependencies=dependencies)


def test_a_companion_tied_to_no_single_bucket_leaves_that_bucket_unverified_not_violated(plans):
    resources = _prod_resources(plans)
    _tie_to_one_more(resources, "registry-storage-dr-versioning", "bucket", "registry-storage-bucket")
    assert list(check_bucket_versioning(resources, {})) == [Unverifiable("registry-storage-dr-versioning", "bucket")]


def test_a_bucket_policy_with_an_unknown_bucket_is_checked_for_shape_and_left_unverified(plans):
    policy = as_resource(plans["prod"].one("aws:s3/bucketPolicy:BucketPolicy", "registry-storage-dr-tls-only"))
    policy.props["bucket"] = UNKNOWN
    assert list(check_tls_only_policy(policy, {})) == [Unverifiable("registry-storage-dr-tls-only", "bucket")]


def test_an_unknown_image_does_not_hide_a_root_container(plans):
    statefulset = as_resource(next(r for r in plans["staging"].registrations if r.name == "registry-statefulset"))
    container = statefulset.props["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["runAsUser"] = 0
    container["securityContext"]["allowPrivilegeEscalation"] = UNKNOWN
    findings = list(check_pod_security(statefulset, {}))
    assert any(isinstance(f, Violation) and "runAsUser 0" in f.message for f in findings)
    assert any(isinstance(f, Unverifiable) and "allowPrivilegeEscalation" in f.path for f in findings)


def test_a_computed_value_under_a_secret_key_is_a_violation_not_an_advisory():
    kv = _resource("consul:index/keys:Keys", {"keys": [
        {"path": "registry/prod/REGISTRY_HTTP_SECRET", "value": UNKNOWN_WIRE},
        {"path": "registry/prod/REGISTRY_STORAGE_S3_KEYID", "value": UNKNOWN_WIRE},
    ]})
    findings = list(check_consul_kv_no_secrets(kv, {}))
    assert [type(f) for f in findings] == [Violation, Unverifiable]
    assert "REGISTRY_HTTP_SECRET" in findings[0].message


def _policy_config(name: str) -> dict:
    return config_defaults(next(p for p in POLICIES if p.name == name))


def _key_prefix(path_prefix, subkeys) -> Resource:
    return _resource("consul:index/keyPrefix:KeyPrefix", {"pathPrefix": path_prefix, "subkeys": subkeys},
                     name="registry-consul-kv")


def test_a_key_prefix_owning_every_environment_is_a_violation_even_while_its_keys_are_unknown():
    config = _policy_config("consul-kv-registry-prefix")
    findings = list(check_consul_kv_prefix(_key_prefix("registry/", UNKNOWN_WIRE), config))
    assert [type(f) for f in findings] == [Violation, Unverifiable]
    assert "'registry/'" in findings[0].message and "deletes every key" in findings[0].message


def test_a_key_prefix_with_an_unknown_path_prefix_cannot_be_verified():
    config = _policy_config("consul-kv-registry-prefix")
    findings = list(check_consul_kv_prefix(_key_prefix(UNKNOWN_WIRE, {"env/REGISTRY_LOG_LEVEL": "info"}), config))
    assert findings == [Unverifiable("registry-consul-kv", "pathPrefix")]


def test_unknown_consul_keys_leave_the_shared_secret_unverified_not_violated(plans):
    """The program computes the KeyPrefix's whole subkeys map from the KMS key ARN: unknown in preview."""
    resources = [as_resource(r, outputs=True) for r in plans["prod"].registrations]
    kv = next(r for r in resources if r.type == "consul:index/keyPrefix:KeyPrefix")
    config = _policy_config("registry-shared-http-secret")
    assert list(check_shared_http_secret(resources, config)) == []
    kv.props["subkeys"] = UNKNOWN
    assert list(check_shared_http_secret(resources, config)) == [Unverifiable(kv.name, "the key list")]
    kv.props["subkeys"] = {}
    assert [type(f) for f in check_shared_http_secret(resources, config)] == [Violation]


def _ingress_to(service: str, port) -> Resource:
    return _resource("kubernetes:networking.k8s.io/v1:Ingress", {
        "metadata": {"name": "registry", "namespace": "cicd"},
        "spec": {"rules": [{"host": "registry.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": port}}}]}}]},
    }, name="registry-ingress")


@pytest.mark.parametrize("service, port, violates", [
    ("registry", {"number": 5000}, False),
    ("registry", {"name": "http"}, False),
    ("registry-metrics", {"number": 5001}, True),
    ("registry-metrics", {"name": "debug"}, True),
    ("registry", {"name": "metrics"}, True),
])
def test_an_ingress_backend_never_reaches_the_debug_port(service, port, violates):
    config = _policy_config("registry-debug-port-not-on-client-service")
    findings = list(check_debug_port_not_on_client_service(_ingress_to(service, port), config))
    assert [type(f) for f in findings] == ([Violation] if violates else [])


def test_an_unknown_ingress_backend_port_cannot_be_verified():
    config = _policy_config("registry-debug-port-not-on-client-service")
    findings = list(check_debug_port_not_on_client_service(_ingress_to("registry", UNKNOWN_WIRE), config))
    assert findings == [Unverifiable("registry-ingress", "spec.rules[0].http.paths[0].backend.service.port")]


def test_an_unreadable_network_policy_selector_does_not_count_as_isolation(plans):
    resources = [as_resource(r, outputs=True) for r in plans["staging"].registrations]
    deny = next(r for r in resources if r.name == "registry-network-default-deny")
    deny.props["spec"]["podSelector"] = UNKNOWN
    config = config_defaults(next(p for p in POLICIES if p.name == "network-default-deny-selects-registry"))
    findings = list(check_default_deny(resources, config))
    # the StatefulSet and the GC CronJob, whose pods only the registry's default deny selects; the
    # snapshot pods have a default deny of their own
    assert sorted(f.urn.rsplit("::", 1)[-1] for f in findings) == ["registry-operations-gc-cronjob", "registry-statefulset"]
    assert all(isinstance(f, Violation) and "cannot be read during preview" in f.message for f in findings)


def test_an_unknown_iam_document_cannot_be_verified():
    role_policy = _resource("aws:iam/rolePolicy:RolePolicy", {"role": "r", "policy": UNKNOWN_WIRE})
    assert list(check_no_wildcards(role_policy, {})) == [Unverifiable("r", "policy")]


def test_a_role_the_config_does_not_declare_may_reach_nothing(plans):
    config = _policy_config("iam-registry-role-scoped")
    del config["roleAccess"]["registry-storage-gc-role"]
    findings = list(check_registry_role_scoped(_prod_resources(plans), config))
    assert {f.message.split(":")[0] for f in findings} == {"registry-storage-gc-access"}
    assert len(findings) == 3  # the bucket, its objects, its key
    assert all("roleAccess declares no bucket or key for registry-storage-gc-role" in f.message for f in findings)


def test_the_stack_policy_config_decides_which_role_reaches_which_bucket(plans):
    """The replication role's own access, given to the GC role, lets the GC policy reach the DR replica."""
    resources = _prod_resources(plans)
    gc_access = _named(resources, "registry-storage-gc-access")
    document = json.loads(gc_access.props["policy"])
    dr_objects = "arn:aws:s3:::" + _named(resources, "registry-storage-dr-bucket").props["bucket"] + "/*"
    document["Statement"][1]["Resource"] = [document["Statement"][1]["Resource"], dr_objects]
    gc_access.props["policy"] = json.dumps(document)
    config = _policy_config("iam-registry-role-scoped")
    assert [type(f) for f in check_registry_role_scoped(resources, config)] == [Violation]
    roles = config["roleAccess"]
    roles["registry-storage-gc-role"] = roles["registry-storage-replication-role"]
    assert list(check_registry_role_scoped(resources, config)) == []


def test_a_role_policy_whose_role_is_unknown_belongs_to_the_role_its_value_comes_from(plans):
    resources = _prod_resources(plans)
    gc_access = _named(resources, "registry-storage-gc-access")
    gc_access.props["role"] = UNKNOWN
    config = _policy_config("iam-registry-role-scoped")
    config["roleAccess"]["registry-storage-gc-role"] = {}
    findings = list(check_registry_role_scoped(resources, config))
    assert len(findings) == 3 and all(f.message.startswith("registry-storage-gc-access:") for f in findings)
    gc_access.property_dependencies["role"] = (_named(resources, "registry-storage-role").urn,)
    assert list(check_registry_role_scoped(resources, config)) == []


def test_a_role_policy_tied_to_no_single_role_cannot_be_verified(plans):
    resources = _prod_resources(plans)
    _tie_to_one_more(resources, "registry-storage-gc-access", "role", "registry-storage-role")
    findings = list(check_registry_role_scoped(resources, _policy_config("iam-registry-role-scoped")))
    assert findings == [Unverifiable("registry-storage-gc-access", "role")]


def test_a_role_policy_for_a_role_outside_the_stack_is_known_by_that_role_name(plans):
    resources = _prod_resources(plans)
    _named(resources, "registry-storage-gc-access").props["role"] = "someone-elses-role"
    findings = list(check_registry_role_scoped(resources, _policy_config("iam-registry-role-scoped")))
    assert len(findings) == 3
    assert all("roleAccess declares no bucket or key for someone-elses-role" in f.message for f in findings)


def test_stack_rules_skip_a_stack_without_a_registry_workload(plans):
    only_storage = [as_resource(r, outputs=True) for r in plans["prod"].registrations
                    if not r.type.startswith("kubernetes:")]
    for policy in POLICIES:
        if policy.name in ("network-default-deny-selects-registry", "prometheus-rule-required-alerts",
                           "registry-shared-http-secret"):
            assert list(policy.check(only_storage, config_defaults(policy))) == [], policy.name


@pytest.mark.parametrize("field, values, violates", [
    ("boundServiceAccountNames", ["registry"], False),
    ("boundServiceAccountNames", ["registry", "default"], True),
    ("boundServiceAccountNames", ["*"], True),
    ("boundServiceAccountNames", [], True),
    ("boundServiceAccountNamespaces", ["cicd", "default"], True),
    ("boundServiceAccountNamespaces", ["ci-*"], True),
])
def test_the_vault_auth_role_binds_exactly_one_service_account_and_namespace(plans, field, values, violates):
    role = as_resource(plans["staging"].one("vault:kubernetes/authBackendRole:AuthBackendRole", "registry-secrets-auth-role"))
    role.props[field] = values
    findings = list(check_vault_role_binding(role, _policy_config("vault-kubernetes-role-single-binding")))
    assert [type(f) for f in findings] == ([Violation] if violates else [])


# --- RBAC ----------------------------------------------------------------------------------------


def _staging_rbac(plans) -> tuple[list[Resource], Resource, Resource]:
    resources = [as_resource(r, outputs=True) for r in plans["staging"].registrations]
    return resources, _named(resources, "registry-operations-gc-role"), _named(resources, "registry-operations-gc-role-binding")


def _rbac_findings(resources: list[Resource]) -> list:
    return list(check_rbac_least_privilege(resources, _policy_config("rbac-registry-roles-least-privilege")))


@pytest.mark.parametrize("rule, violation", [
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["deletecollection"]}, "'deletecollection' on pods"),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"], "resourceNames": []}, "without resourceNames"),
    ({"apiGroups": ["*"], "resources": ["statefulsets"], "verbs": ["get"]}, "wildcard apiGroup"),
    ({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}, "wildcard resource"),
    ({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}, "'escalate'"),
    ({"nonResourceURLs": ["*"], "verbs": ["get"]}, "wildcard nonResourceURL"),
])
def test_a_role_bound_to_a_registry_service_account_grants_no_more_than_it_names(plans, rule, violation):
    resources, role, _ = _staging_rbac(plans)
    role.props["rules"].append(rule)
    findings = _rbac_findings(resources)
    assert len(findings) == 1 and violation in findings[0].message, findings
    assert "bound to cicd/registry-gc" in findings[0].message


def test_the_service_accounts_of_a_namespace_as_a_group_include_the_registry_s(plans):
    resources, role, binding = _staging_rbac(plans)
    role.props["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]})
    binding.props["subjects"] = [{"kind": "Group", "name": "system:serviceaccounts:cicd",
                                  "apiGroup": "rbac.authorization.k8s.io"}]
    assert [type(f) for f in _rbac_findings(resources)] == [Violation]
    binding.props["subjects"] = [{"kind": "Group", "name": "system:serviceaccounts:other",
                                  "apiGroup": "rbac.authorization.k8s.io"}]
    assert _rbac_findings(resources) == []


def test_a_role_bound_to_no_registry_service_account_is_not_this_rule_s_business(plans):
    resources, role, binding = _staging_rbac(plans)
    role.props["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]})
    binding.props["subjects"] = [{"kind": "ServiceAccount", "name": "someone-else", "namespace": "cicd"}]
    assert _rbac_findings(resources) == []


def test_unknown_subjects_or_rules_cannot_be_verified(plans):
    resources, role, binding = _staging_rbac(plans)
    binding.props["subjects"] = UNKNOWN
    assert _rbac_findings(resources) == [Unverifiable("registry-operations-gc-role-binding", "subjects")]
    resources, role, binding = _staging_rbac(plans)
    role.props["rules"] = UNKNOWN
    assert _rbac_findings(resources) == [Unverifiable("registry-operations-gc-role", "rules")]


# --- what counts as a secret -------------------------------------------------------------------


@pytest.mark.parametrize("path, secret", [
    ("registry/prod/REGISTRY_HTTP_SECRET", True),
    ("registry/prod/REGISTRY_STORAGE_S3_SECRETKEY", True),
    ("registry/prod/REGISTRY_STORAGE_S3_ACCESSKEY", True),
    ("registry/prod/REGISTRY_REDIS_OPTIONS_PASSWORD", True),
    ("registry/prod/REGISTRY_AUTH_TOKEN_REALM", False),
    ("registry/prod/REGISTRY_AUTH_HTPASSWD_PATH", False),
    ("registry/prod/REGISTRY_STORAGE_S3_KEYID", False),
])
def test_secret_key_names(path, secret):
    assert key_looks_secret(path) is secret


@pytest.mark.parametrize("value, kind", [
    ("vault:secret/registry/prod#http_secret", None),
    ("info", None),
    ('{"age":"168h","dryrun":false,"enabled":true,"interval":"24h"}', None),
    ("arn:aws:kms:eu-west-1:123456789012:key/c585f988-b920-7aec-c85d-f7049df8370f", None),
    ("AKIAIOSFODNN7EXAMPLE", "an AWS access key ID"),
    ("ci:$2y$12$" + "a" * 53, "a bcrypt hash (htpasswd entry)"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "a PEM private key"),
    ("redis://user:hunter22@redis:6379", "credentials in a URL"),
    ('{"password":"hunter22"}', "a password/secret/token assignment"),
])
def test_secret_looking_values(value, kind):
    assert secret_value_kind(value) == kind


# --- grants: what the rules accept, and what they cannot verify -----------------------------------


GC_ACL_RULES = '''key_prefix "registry/prod/" {
  policy = "read"
}
key "registry/prod/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
'''


@pytest.mark.parametrize("rules, violates", [
    (GC_ACL_RULES, False),  # the garbage collector's identity: one exact key, read everything else
    (GC_ACL_RULES.replace('key "registry/prod/maintenance/', 'key_prefix "registry/prod/maintenance/'), True),
    (GC_ACL_RULES.replace("READONLY", "READONLY_OTHER"), True),
    (GC_ACL_RULES.replace('key "registry/prod/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY"',
                          'key "vault/config"'), True),
    (GC_ACL_RULES + 'acl = "read"\n', True),
    (GC_ACL_RULES + 'keyring = "write"\n', True),
    (GC_ACL_RULES + 'service "registry" {\n  policy = "write"\n  intentions = "write"\n}\n', True),
    (GC_ACL_RULES + 'agent_prefix "" {\n  policy = "write"\n}\n', True),
    (GC_ACL_RULES.replace('service_prefix "" {\n  policy = "read"\n', 'service_prefix "" {\n  policy = "read"\n'
                          '  intentions = "write"\n'), True),
    ('{"key": {"registry/prod/env/REGISTRY_AUTH": {"policy": "write"}}}', True),  # the JSON form
    ('key_prefix "registry/prod/" {{', True),  # unparseable
])
def test_a_consul_acl_policy_may_write_only_a_declared_exact_key(rules, violates):
    acl = _resource("consul:index/aclPolicy:AclPolicy", {"name": "registry-gc-prod", "rules": rules})
    findings = list(check_consul_acl_policy(acl, _policy_config("consul-acl-policy-least-privilege")))
    assert bool(findings) is violates, findings
    assert all(isinstance(f, Violation) and "registry-gc-prod" in f.message for f in findings)


def test_an_unknown_acl_policy_or_intention_cannot_be_verified():
    acl = _resource("consul:index/aclPolicy:AclPolicy", {"name": "x", "rules": UNKNOWN_WIRE}, name="acl")
    assert list(check_consul_acl_policy(acl, _policy_config("consul-acl-policy-least-privilege"))) == [
        Unverifiable("acl", "rules")]
    entry = _resource("consul:index/configEntry:ConfigEntry", {"kind": "service-intentions", "name": "registry",
                                                               "configJson": UNKNOWN_WIRE}, name="intentions")
    assert list(check_intentions_deny_by_default(entry, {})) == [Unverifiable("intentions", "configJson")]


@pytest.mark.parametrize("policy, violates", [
    ('path "secret/data/registry/prod" {\n  capabilities = ["read"]\n}\n', False),
    ('# read only\npath "secret/data/registry/prod" { capabilities = ["read"] } // same\n', False),
    ('{"path": {"secret/data/registry/prod": {"capabilities": ["read"]}}}', False),
    ('{"path": {"secret/data/registry/prod": {"capabilities": ["read", "update"]}}}', True),
    ('path "secret/data/registry/prod" {\n  capabilities = ["read"]\n  path "sys/*" {\n'
     '    capabilities = ["sudo"]\n  }\n}\n', True),  # a nested block Vault would reject
    ('path "secret/data/registry/prod" {\n  policy = "sudo"\n}\n', True),
    ('path "secret/data/registry/+" {\n  capabilities = ["read"]\n}\n', True),
    ('path "secret/data/registry/prod" {\n  capabilities = ["read"]\n}\npath "secret/data/registry/staging" {\n'
     '  capabilities = ["read"]\n}\n', True),
    ('capabilities = ["read"]\n', True),
    ('path "secret/data/registry/prod" {', True),
])
def test_the_vault_policy_is_read_with_a_real_hcl_parser(policy, violates):
    resource = _resource("vault:index/policy:Policy", {"name": "registry-prod", "policy": policy})
    findings = list(check_vault_policy_read_only(resource, _policy_config("vault-policy-read-only")))
    assert bool(findings) is violates, findings
    assert all(isinstance(f, Violation) and "registry-prod" in f.message for f in findings)


def test_a_managed_policy_attachment_is_judged_like_managed_policy_arns(plans):
    resources = _prod_resources(plans)
    role = _named(resources, "registry-storage-role")
    attachment = _resource("aws:iam/rolePolicyAttachment:RolePolicyAttachment", {
        "role": role.props["name"], "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, name="admin")
    findings = list(check_managed_policy_attachments([*resources, attachment], {}))
    assert [type(f) for f in findings] == [Violation]
    assert "AWS-managed policy 'arn:aws:iam::aws:policy/AdministratorAccess'" in findings[0].message
    own = _resource("aws:iam/policy:Policy", {"arn": "arn:aws:iam::123456789012:policy/registry", "policy": "{}"})
    attachment.props["policyArn"] = own.props["arn"]
    assert list(check_managed_policy_attachments([*resources, attachment, own], {})) == []
    attachment.props["policyArn"] = UNKNOWN
    assert list(check_managed_policy_attachments([*resources, attachment, own], {})) == [
        Unverifiable("admin", "policyArn")]


def test_a_trust_policy_of_a_new_stack_cannot_be_tied_to_an_account_yet(plans):
    """Before the first ``pulumi up`` no ARN of the stack is known; the provider's account is then
    unverifiable, while everything else about the trust is still checked."""
    resources = [dataclasses.replace(r, props={k: v for k, v in r.props.items() if k != "arn"})
                 for r in _prod_resources(plans)]
    config = _policy_config("iam-role-trust-bound")
    findings = list(check_role_trust(resources, config))
    assert findings and all(isinstance(f, Unverifiable) for f in findings)
    config["accountIds"] = ["123456789012"]
    assert list(check_role_trust(resources, config)) == []
    config["accountIds"] = ["210987654321"]
    assert {type(f) for f in check_role_trust(resources, config)} == {Violation}


def test_a_key_policy_open_to_star_passes_only_when_limited_to_the_stack_s_account(plans):
    resources = _prod_resources(plans)
    key = _named(resources, "registry-storage-key")
    statement = {"Sid": "ViaS3", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",
                 "Resource": "*", "Condition": {"StringEquals": {"kms:CallerAccount": "123456789012"}}}
    key.props["policy"] = json.dumps({"Statement": [statement]})
    assert list(check_key_policy(resources, _policy_config("kms-key-policy-own-account"))) == []
    statement["Condition"]["StringEquals"]["kms:CallerAccount"] = "210987654321"
    key.props["policy"] = json.dumps({"Statement": [statement]})
    assert [type(f) for f in check_key_policy(resources, _policy_config("kms-key-policy-own-account"))] == [Violation]


def test_an_encryption_key_computed_from_the_stack_s_key_is_its_own(plans):
    resources = _prod_resources(plans)
    encryption = _named(resources, "registry-storage-encryption")
    encryption.props["rules"][0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] = UNKNOWN
    encryption.property_dependencies.clear()
    resources[resources.index(encryption)] = dataclasses.replace(encryption, dependencies=())
    path = "rules[0].applyServerSideEncryptionByDefault.kmsMasterKeyId"
    assert list(check_encrypted_with_own_key(resources, {})) == [Unverifiable("registry-storage-encryption", path)]
    encryption = _named(resources, "registry-storage-encryption")
    encryption.property_dependencies["rules"] = (_named(resources, "registry-storage-key").urn,)
    assert list(check_encrypted_with_own_key(resources, {})) == []


# --- Kubernetes and network grants -----------------------------------------------------------------


def _staging_resources(plans) -> list[Resource]:
    return [as_resource(r, outputs=True) for r in plans["staging"].registrations]


def _client_peers(resources: list[Resource]) -> list:
    return _named(resources, "registry-network-allow-clients").props["spec"]["ingress"][0]["from"]


def _cidr_findings(resources: list[Resource]) -> list:
    return list(check_no_open_cidr(resources, _policy_config("network-no-open-cidr")))


def test_the_internet_minus_an_except_list_is_still_the_internet(plans):
    resources = _staging_resources(plans)
    _client_peers(resources).append({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}})
    assert {type(f) for f in _cidr_findings(resources)} == {Violation}


def test_an_except_list_can_keep_a_wide_private_block_narrow(plans):
    """The union subtracts each block's except entries: 10.60.0.0/12 minus everything but a /16 is a /16."""
    resources = _staging_resources(plans)
    cuts = [str(n) for n in ipaddress.ip_network("10.48.0.0/12").address_exclude(ipaddress.ip_network("10.60.0.0/16"))]
    _client_peers(resources).append({"ipBlock": {"cidr": "10.48.0.0/12", "except": cuts}})
    assert _cidr_findings(resources) == []
    config = _policy_config("network-no-open-cidr")
    config["maxAddresses"] = 1 << 16
    assert [type(f) for f in check_no_open_cidr(resources, config)] == [Violation, Violation]  # STS and GC job


def test_a_partner_range_can_be_declared_public_and_allowed(plans):
    resources = _staging_resources(plans)
    _client_peers(resources).append({"ipBlock": {"cidr": "203.0.113.0/24"}})
    assert _cidr_findings(resources)
    config = _policy_config("network-no-open-cidr")
    config["allowedPublicCidrs"] = ["203.0.113.0/24"]
    assert list(check_no_open_cidr(resources, config)) == []


def test_an_unknown_cidr_cannot_be_verified(plans):
    resources = _staging_resources(plans)
    _client_peers(resources).append({"ipBlock": {"cidr": UNKNOWN}})
    findings = _cidr_findings(resources)
    assert findings and all(isinstance(f, Unverifiable) for f in findings)


@pytest.mark.parametrize("rule, violates", [
    ({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["registry-tls"], "verbs": ["get"]}, False),
    ({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["registry-tls"], "verbs": ["list"]}, True),
    ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["watch"]}, True),
    ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}, True),  # wildcards include secrets
    ({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]}, True),
    ({"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}, True),
    ({"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["patch"]}, True),
    ({"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list", "watch"]}, False),
])
def test_no_role_reads_secrets_wholesale_opens_pods_or_starts_them(plans, rule, violates):
    role = _named(_staging_resources(plans), "registry-operations-snapshot-role")
    role.props["rules"].append(rule)
    findings = list(check_rbac_no_sensitive_grants(role, {}))
    assert bool(findings) is violates and all(isinstance(f, Violation) for f in findings), findings


def test_a_cluster_role_binding_is_reported_even_for_one_service_account(plans):
    binding = _named(_staging_resources(plans), "registry-operations-gc-role-binding")
    cluster_wide = dataclasses.replace(binding, type="kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert [type(f) for f in check_rbac_no_broad_subjects(cluster_wide, {})] == [Violation]
    assert list(check_rbac_no_broad_subjects(binding, {})) == []


@pytest.mark.parametrize("annotation, violates", [
    ("10.8.16.0/22, 10.8.24.0/22", False),
    ("10.8.16.0/22,0.0.0.0/0", True),
    ("10.8.16.0/22,not-a-cidr", True),
    ("10.0.0.0/8", True),  # private, but more than maxSourceAddresses
])
def test_ingress_source_ranges_are_judged_together(plans, annotation, violates):
    ingress = as_resource(plans["prod"].one("kubernetes:networking.k8s.io/v1:Ingress", "registry-network-ingress"))
    ingress.props["metadata"]["annotations"]["nginx.ingress.kubernetes.io/whitelist-source-range"] = annotation
    config = _policy_config("kubernetes-ingress-tls-and-source-ranges")
    assert [type(f) for f in check_ingress_tls_and_sources(ingress, config)] == ([Violation] if violates else [])


@pytest.mark.parametrize("selector, bind_name, violates", [
    ('serviceaccount.name=="registry-gc"', "registry-gc-prod", False),  # the GC identity: one account, fixed policy
    ('serviceaccount.name=="registry-gc" and serviceaccount.namespace=="cicd"', "registry-gc-prod", False),
    ('serviceaccount.name=="registry-gc" or serviceaccount.name=="default"', "registry-gc-prod", True),
    ('serviceaccount.name!="default"', "registry-gc-prod", True),
    ("", "registry-gc-prod", True),
    ('serviceaccount.name=="registry-gc"', "${serviceaccount.name}", True),
])
def test_a_consul_binding_rule_logs_in_one_service_account_as_a_fixed_identity(selector, bind_name, violates):
    rule = _resource("consul:index/aclBindingRule:AclBindingRule", {
        "authMethod": "registry-prod-kubernetes", "bindType": "policy", "bindName": bind_name, "selector": selector})
    findings = list(check_acl_logins([rule], {}))
    assert bool(findings) is violates and all(isinstance(f, Violation) for f in findings), findings


def test_no_consul_token_holds_the_management_policy():
    token = _resource("consul:index/aclToken:AclToken", {"policies": ["global-management"]}, name="gc-token")
    assert [type(f) for f in check_acl_logins([token], {})] == [Violation]
    token.props["policies"] = ["registry-gc-prod"]
    assert list(check_acl_logins([token], {})) == []


def test_the_grant_rules_defaults_are_the_programs_names():
    """The pack cannot import components/ (its own program, its own virtualenv): its defaults are held to
    components/names.py here, so a rename on one side fails this test instead of every deployment."""
    from components import names

    acl = _policy_config("consul-acl-policy-least-privilege")
    assert acl["serviceNames"] == [names.CONSUL_SERVICE_NAME, names.SIDECAR_SERVICE_NAME, names.TOKEN_SERVICE_NAME,
                                   names.TOKEN_SERVICE_SIDECAR_NAME]
    assert _policy_config("registry-shared-http-secret")["nonDistributionComponents"] == [names.TOKEN_SERVICE_COMPONENT]
    vault_config = _policy_config("vault-policy-read-only")
    for environment in ("staging", "prod"):
        program = names.program_names(environment)
        assert re.match(vault_config["signingPolicyNames"], program.vault_role(program.token_service))
        assert not re.match(vault_config["signingPolicyNames"], program.vault_role(program.service_account))
        for path in (program.vault_secret_path, program.token_signing_secret_path, program.token_trust_secret_path):
            assert re.match(vault_config["signingPathPattern"], f"secret/data/{path}"), path
        assert not re.match(vault_config["pathPattern"], f"secret/data/{program.token_signing_secret_path}")
        for prefix in (program.token_service_kv_prefix, program.kv_prefix):
            assert re.match(acl["kvPrefixPattern"], prefix), prefix
    for environment in ("staging", "prod"):
        key = names.readonly_kv_key(environment)
        assert [pattern for pattern in acl["writableKeys"] if re.match(pattern, key)], key
        assert re.match(acl["kvPrefixPattern"], names.kv_prefix(environment))
    trust = _policy_config("iam-role-trust-bound")["roleTrust"]
    assert {declared["serviceAccount"].split("/")[1] for declared in trust.values() if "serviceAccount" in declared} == {
        names.SERVICE_ACCOUNT_NAME, names.GC_NAME}


def test_the_pull_only_robots_the_pack_knows_are_the_stack_files_pull_users():
    """pullOnlyRobots stands in for the robots' roles, which the plan holds only as a Pulumi secret: it must be the
    name:pull users the stack files declare, or a pusher could be handed to every node unnoticed."""
    import yaml

    from policies.rules.pull_credentials import POLICIES as PULL_POLICIES

    root = Path(__file__).parent.parent
    declared = set()
    for stack_file in root.glob("Pulumi.*.yaml"):
        users = yaml.safe_load(stack_file.read_text())["config"].get("registry:htpasswdUsers", [])
        declared |= {user.split(":")[0] for user in users if user.endswith(":pull")}
    assert declared
    for policy in PULL_POLICIES:
        if "pullOnlyRobots" in (policy.config_schema.properties if policy.config_schema else {}):
            assert set(config_defaults(policy)["pullOnlyRobots"]) == declared, policy.name
