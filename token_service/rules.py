"""Authorisation as data: each role may do a set of actions on resources whose names match globs.

Rules (``TOKEN_SERVICE_ACCESS_RULES``, JSON)::

    {"roles":  {"push": [{"type": "repository", "names": ["ci/**"], "actions": ["pull", "push"]}]},
     "groups": {"platform-developers": ["pull"]}}

A robot's role is its ``access`` value in Vault; a developer's roles are those of their OIDC groups. A
request is answered with the intersection of what it asks and what the roles allow: never more, and
an identity without a matching rule gets a token with no access at all.

Globs match repository names component-wise: ``*`` matches within one component, ``**`` (a whole
component) matches one or more components at the end, zero or more in the middle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .scopes import REGISTRY, REPOSITORY, Scope

ACTIONS_BY_TYPE = {REPOSITORY: ("pull", "push", "delete"), REGISTRY: ("*",)}
# A component is ``**`` alone, or characters of a repository name with single ``*`` wildcards.
_GLOB_COMPONENT = re.compile(r"^(?:\*\*|(?:[a-z0-9._-]|\*(?!\*))+)$")
_ROLE_OR_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")


class RulesError(ValueError):
    def __init__(self, where: str, value: object, allowed: str):
        self.where, self.value, self.allowed = where, value, allowed
        super().__init__(f"{where}: {value!r} is not allowed; {allowed}")


def glob_pattern(glob: str) -> re.Pattern:
    parts = glob.split("/")
    if not glob or not all(_GLOB_COMPONENT.match(p) for p in parts):
        raise ValueError(glob)
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".+" if last else "(?:[^/]+/)*"
        else:
            regex += re.escape(part).replace(r"\*", "[^/]*") + ("" if last else "/")
    return re.compile(f"^{regex}$")


@dataclass(frozen=True)
class Rule:
    type: str
    names: tuple[str, ...]
    actions: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple(glob_pattern(n) for n in self.names))

    def matches(self, scope: Scope) -> bool:
        return scope.type == self.type and any(p.match(scope.name) for p in self._patterns)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AccessRules:
    roles: Mapping[str, tuple[Rule, ...]]
    groups: Mapping[str, tuple[str, ...]]

    def roles_of_groups(self, groups: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted({role for group in groups for role in self.groups.get(group, ())}))

    def allowed(self, roles: Iterable[str], scope: Scope) -> tuple[str, ...]:
        """The actions of ``scope`` the roles allow, in the order asked; ``*`` on a repository becomes the
        allowed actions themselves (a token never carries a wildcard the rules did not write)."""
        permitted: set[str] = set()
        for role in roles:
            for rule in self.roles.get(role, ()):
                if rule.matches(scope):
                    permitted.update(rule.actions)
        granted: list[str] = []
        for action in scope.actions:
            if action == "*" and scope.type == REPOSITORY:
                granted.extend(a for a in ACTIONS_BY_TYPE[REPOSITORY] if a in permitted)
            elif action in permitted:
                granted.append(action)
        return tuple(dict.fromkeys(granted))


def _list_of_strings(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RulesError(where, value, "a non-empty list of strings")
    return value


def parse_rules(data: Any) -> AccessRules:
    if not isinstance(data, dict) or set(data) - {"roles", "groups"}:
        raise RulesError("rules", data, 'an object with "roles" and optionally "groups"')
    roles_data = data.get("roles")
    if not isinstance(roles_data, dict):
        raise RulesError("roles", roles_data, "an object mapping role names to lists of rules")
    roles: dict[str, tuple[Rule, ...]] = {}
    for role, rules in roles_data.items():
        if not _ROLE_OR_GROUP.match(role):
            raise RulesError("roles", role, "role names of letters, digits and ._:@/-")
        if not isinstance(rules, list):
            raise RulesError(f"roles.{role}", rules, "a list of rules")
        parsed = []
        for index, rule in enumerate(rules):
            where = f"roles.{role}[{index}]"
            if not isinstance(rule, dict) or set(rule) - {"type", "names", "actions"}:
                raise RulesError(where, rule, 'an object with "type", "names" and "actions"')
            kind = rule.get("type", REPOSITORY)
            if kind not in ACTIONS_BY_TYPE:
                raise RulesError(f"{where}.type", kind, f"one of {', '.join(ACTIONS_BY_TYPE)}")
            names = _list_of_strings(f"{where}.names", rule.get("names"))
            for name in names:
                try:
                    glob_pattern(name)
                except ValueError:
                    raise RulesError(f"{where}.names", name, "globs of lowercase a-z, 0-9, '._-', '*' and '**' "
                                     "components separated by '/'") from None
            actions = _list_of_strings(f"{where}.actions", rule.get("actions"))
            bad = [a for a in actions if a not in ACTIONS_BY_TYPE[kind]]
            if bad:
                raise RulesError(f"{where}.actions", bad, f"{kind} actions: {', '.join(ACTIONS_BY_TYPE[kind])}")
            parsed.append(Rule(kind, tuple(names), tuple(dict.fromkeys(actions))))
        roles[role] = tuple(parsed)
    groups_data = data.get("groups", {})
    if not isinstance(groups_data, dict):
        raise RulesError("groups", groups_data, "an object mapping OIDC group names to lists of roles")
    groups: dict[str, tuple[str, ...]] = {}
    for group, mapped in groups_data.items():
        if not _ROLE_OR_GROUP.match(group):
            raise RulesError("groups", group, "group names of letters, digits and ._:@/-")
        mapped = _list_of_strings(f"groups.{group}", mapped)
        unknown = [r for r in mapped if r not in roles]
        if unknown:
            raise RulesError(f"groups.{group}", unknown, f"roles defined under roles: {', '.join(sorted(roles))}")
        groups[group] = tuple(mapped)
    return AccessRules(roles=roles, groups=groups)
