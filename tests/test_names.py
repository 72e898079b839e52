"""A name two sides share is spelt once, in components/names.py.

How it is checked: every string and port constant that names.py defines is looked for as a literal in the
program's other modules (components/, offline_plan/, __main__.py), parsed with ``ast`` so that comments and
docstrings do not count. The policy pack (policies/) is a program of its own (the engine runs it from its own
directory and virtualenv, so it cannot import components/): its defaults are held to names.py below instead.
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import pytest

from components import names

ROOT = Path(__file__).resolve().parents[1]
PROGRAM_MODULES = sorted([*ROOT.glob("components/*.py"), *ROOT.glob("offline_plan/*.py"), ROOT / "__main__.py"])
# Values that are also ordinary words with other meanings here (the project name "registry", the container
# name, a ConfigMap's "data" field): equal by coincidence, not the same contract.
COINCIDENTAL = {"registry", "data", "env/", "files/", "backup", "config/"}


def shared_values() -> dict[object, str]:
    values: dict[object, str] = {}
    for key, value in vars(names).items():
        if not key.isupper() or isinstance(value, bool):
            continue
        if isinstance(value, str) and value not in COINCIDENTAL:
            values[value] = key
        elif isinstance(value, int) and value > 1000:  # ports
            values[value] = key
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            values.update({v: key for v in value})
    return values


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def parse(path: Path) -> ast.AST:
    """``ast.parse`` with the garbage collector held off: on CPython 3.11.7 a finalizer that runs Python code
    during parsing (an earlier test's never-retrieved asyncio Future logging its exception) fails the parse with
    "SystemError: AST constructor recursion depth mismatch", depending only on when the collector runs."""
    gc.collect()
    gc.disable()
    try:
        return ast.parse(path.read_text())
    finally:
        gc.enable()


def literal_uses(path: Path, values: dict[object, str]) -> list[str]:
    tree = parse(path)
    docstrings = _docstring_nodes(tree)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return [f"{shown}:{node.lineno}: {node.value!r} is names.{values[node.value]}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and id(node) not in docstrings and not isinstance(node.value, bool)
            and isinstance(node.value, (str, int)) and node.value in values]


def test_no_module_spells_a_shared_name_itself():
    values = shared_values()
    assert "REGISTRY_STORAGE_MAINTENANCE_READONLY" in values and names.MESH_INBOUND_PORT in values
    found = [use for path in PROGRAM_MODULES if path.name != "names.py" for use in literal_uses(path, values)]
    assert not found, "import these from components/names.py:\n" + "\n".join(found)


def test_the_check_finds_a_spelt_out_name(tmp_path):
    module = tmp_path / "sample.py"
    module.write_text('"""The registry-gc job."""\nPORT = 20000\nNAME = "registry-gc"\n')
    uses = [use.split(": ", 1)[1] for use in literal_uses(module, shared_values())]
    assert uses == ["20000 is names.MESH_INBOUND_PORT", "'registry-gc' is names.GC_NAME"]


@pytest.mark.parametrize("policy, key, expected", [
    ("registry-debug-port-not-on-client-service", "registryPort", names.HTTP_PORT),
    ("registry-debug-port-not-on-client-service", "debugPort", names.DEBUG_PORT),
])
def test_the_policy_packs_defaults_are_the_programs_names(policy, key, expected):
    from tests.test_policy_rules import _policy_config

    assert _policy_config(policy)[key] == expected


def test_the_policy_pack_recognises_the_registry_by_the_programs_labels():
    from policies.rules.support import DEFAULT_REGISTRY_LABELS

    assert DEFAULT_REGISTRY_LABELS.items() <= names.selector_labels("any").items()
