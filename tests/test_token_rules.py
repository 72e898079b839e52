"""The token service's pure parts: scope grammar, rule globs and what a role is granted (no process)."""

from __future__ import annotations

import pytest

from token_service import contract as c
from token_service.rules import RulesError, parse_rules
from token_service.scopes import Scope, ScopeError, parse_scope, parse_scope_parameters

DEFAULTS = parse_rules(c.DEFAULT_ACCESS_RULES)


def rules_with(names: list[str]):
    return parse_rules({"roles": {"ci": [{"type": "repository", "names": names, "actions": ["pull", "push"]}]}})


@pytest.mark.parametrize("glob, name, matches", [
    ("**", "a", True), ("**", "a/b/c", True),
    ("ci/**", "ci/app", True), ("ci/**", "ci/team/app", True), ("ci/**", "ci", False), ("ci/**", "cix/app", False),
    ("ci/*", "ci/app", True), ("ci/*", "ci/team/app", False),
    ("team-*/app", "team-a/app", True), ("team-*/app", "team-a/b/app", False),
    ("a/**/z", "a/z", True), ("a/**/z", "a/b/c/z", True), ("a/**/z", "a/b/c", False),
    ("releases/v1.2", "releases/v1x2", False),  # '.' is literal, not a regex wildcard
])
def test_globs_match_repository_names_component_wise(glob, name, matches):
    granted = rules_with([glob]).allowed(["ci"], Scope("repository", name, ("push",)))
    assert granted == (("push",) if matches else ())


def test_the_default_rules_are_least_privilege():
    def allowed(role, scope):
        return DEFAULTS.allowed([role], parse_scope(scope))
    assert allowed(c.ROLE_PULL, "repository:any/repo:pull,push,delete") == ("pull",)
    assert allowed(c.ROLE_PUSH, "repository:any/repo:pull,push,delete") == ("pull", "push")
    assert allowed(c.ROLE_CLEANUP, "repository:any/repo:pull,push,delete") == ("pull", "delete")
    assert allowed(c.ROLE_CLEANUP, "registry:catalog:*") == ("*",)
    assert allowed(c.ROLE_PUSH, "registry:catalog:*") == ()
    assert allowed("unknown-role", "repository:any/repo:pull") == ()
    assert DEFAULTS.roles_of_groups(["anyone"]) == ()


def test_a_scope_list_keeps_names_with_a_registry_port_whole():
    assert parse_scope_parameters(["repository:a/b:pull registry:catalog:*", "repository:c:push"]) == [
        Scope("repository", "a/b", ("pull",)), Scope("registry", "catalog", ("*",)), Scope("repository", "c", ("push",))]
    # The name may hold a colon (a host with a port): actions start after the last one.
    assert parse_scope("frob:host:5000/x:pull") == Scope("frob", "host:5000/x", ("pull",))
    with pytest.raises(ScopeError):
        parse_scope("repository:host:5000/x:pull")  # not a repository name the registry serves


@pytest.mark.parametrize("rules, where", [
    ({"roles": {"ci": [{"names": ["**"], "actions": ["pull", "admin"]}]}}, "roles.ci[0].actions"),
    ({"roles": {"ci": [{"type": "registry", "names": ["catalog"], "actions": ["delete"]}]}}, "roles.ci[0].actions"),
    ({"roles": {"ci": [{"type": "helm", "names": ["**"], "actions": ["pull"]}]}}, "roles.ci[0].type"),
    ({"roles": {"ci": [{"names": ["a/**b"], "actions": ["pull"]}]}}, "roles.ci[0].names"),
    ({"roles": {"ci": [{"names": [], "actions": ["pull"]}]}}, "roles.ci[0].names"),
    ({"roles": {"ci": [{"names": ["**"], "actions": ["pull"], "extra": 1}]}}, "roles.ci[0]"),
    ({"roles": {}, "groups": {"devs": ["ci"]}}, "groups.devs"),
    ({"roles": {}, "admins": {}}, "rules"),
])
def test_bad_rules_are_refused_naming_the_place(rules, where):
    with pytest.raises(RulesError) as refused:
        parse_rules(rules)
    assert refused.value.where == where
