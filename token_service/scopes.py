"""Scopes as the Docker token specification writes them, parsed strictly.

``scope := resourcescope [' ' resourcescope]*``, ``resourcescope := type ':' name ':' action[,action]*``.
A name may hold a ``:`` (a registry host with a port), so the type ends at the first colon and the
actions start after the last one. Repository names follow the registry's own path grammar: lowercase
components of alphanumerics joined by ``.``, ``_``, ``__`` or dashes, separated by ``/``, 255 characters
at most; so ``..``, upper case and empty components are malformed, not merely unauthorised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SCOPES = 32
MAX_SCOPE_LENGTH = 512
MAX_REPOSITORY_NAME = 255
REPOSITORY = "repository"
REGISTRY = "registry"

_TYPE = re.compile(r"^([a-z0-9]+)(?:\(([a-z0-9]+)\))?$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_PLAIN_NAME = re.compile(r"^[a-z0-9]+$")
_ACTION = re.compile(r"^(?:[a-z]+|\*)$")


class ScopeError(ValueError):
    """A scope that does not follow the grammar; ``str()`` says which part and why."""


@dataclass(frozen=True)
class Scope:
    type: str  # the resource class, e.g. repository(plugin), folds into its type: the registry ignores it
    name: str
    actions: tuple[str, ...]

    def render(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def parse_scope(text: str) -> Scope:
    if len(text) > MAX_SCOPE_LENGTH:
        raise ScopeError(f"scope {_shown(text)} is longer than {MAX_SCOPE_LENGTH} characters")
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        raise ScopeError(f"scope {_shown(text)} is not type:name:actions")
    matched = _TYPE.match(kind)
    if not matched:
        raise ScopeError(f"scope {_shown(text)}: resource type {_shown(kind)} is not lowercase alphanumerics")
    kind = matched.group(1)
    if kind == REPOSITORY:
        if len(name) > MAX_REPOSITORY_NAME or not _REPOSITORY_NAME.match(name):
            raise ScopeError(f"scope {_shown(text)}: repository name {_shown(name)} is not lowercase path "
                             "components of a-z, 0-9 joined by '.', '_', '__' or '-' (no '..', no upper case, "
                             f"at most {MAX_REPOSITORY_NAME} characters)")
    elif kind == REGISTRY and not _PLAIN_NAME.match(name):
        raise ScopeError(f"scope {_shown(text)}: registry resource {_shown(name)} is not lowercase alphanumerics")
    parsed_actions = tuple(dict.fromkeys(a for a in actions.split(",")))
    if not parsed_actions or not all(_ACTION.match(a) for a in parsed_actions):
        raise ScopeError(f"scope {_shown(text)}: actions {_shown(actions)} are not a comma-separated list of "
                         "lowercase words or '*'")
    return Scope(kind, name, parsed_actions)


def parse_scope_parameters(values: list[str]) -> list[Scope]:
    """Every ``scope`` parameter, each possibly a space-separated list (the registry's own challenge for a
    cross-repository mount is one such list), as scopes in request order."""
    scopes: list[Scope] = []
    for value in values:
        for item in value.split(" "):
            if item:
                scopes.append(parse_scope(item))
            if len(scopes) > MAX_SCOPES:
                raise ScopeError(f"more than {MAX_SCOPES} scopes in one request")
    return scopes
