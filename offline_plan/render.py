"""Show a recorded plan as ``pulumi preview`` would, and write it under ``build/<stack>/``.

Kubernetes objects become one YAML manifest each (``kubernetes/``), every other resource one JSON file
(``resources/``), and ``plan.json`` holds every registration with its options. Secrets are masked in
all of them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional, TextIO

import yaml

from .recorder import KEEP_WALKING, SECRET_MASK, Plan, Registration, masked, walk

STACK_TYPE = "pulumi:pulumi:Stack"


def plain_numbers(value: Any) -> Any:
    """The wire protocol carries every number as a float; manifests want 1, not 1.0."""
    return walk(value, lambda node: int(node) if isinstance(node, float) and node.is_integer() else KEEP_WALKING)


def kubernetes_manifest(registration: Registration) -> dict:
    """The object as the Kubernetes API would receive it, secrets masked."""
    manifest = _sorted(plain_numbers(registration.masked_inputs))
    ordered = {key: manifest[key] for key in ("apiVersion", "kind", "metadata") if key in manifest}
    ordered.update({key: value for key, value in manifest.items() if key not in ordered})
    return ordered


def display_type(type_token: str) -> str:
    """The CLI's short form: ``aws:s3/bucketPolicy:BucketPolicy`` is shown as ``aws:s3:BucketPolicy``."""
    package, _, rest = type_token.partition(":")
    module, _, kind = rest.rpartition(":")
    head, _, last = module.rpartition("/")
    if head and last == kind[:1].lower() + kind[1:]:
        return f"{package}:{head}:{kind}"
    return type_token


def _sorted(value: Any) -> Any:
    """The wire format does not keep key order; sorted keys make manifests diffable between runs."""
    return walk(value, lambda node: {k: _sorted(node[k]) for k in sorted(node)} if isinstance(node, dict) else KEEP_WALKING)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def manifest_file_names(objects: list[tuple[str, str, Optional[str]]]) -> list[str]:
    """``<kind>-<name>.yaml`` for each (kind, name, namespace); objects of one kind and name in several
    namespaces (the pull Secret's ExternalSecret in each consuming namespace) get
    ``<kind>-<namespace>-<name>.yaml`` instead."""
    counts: dict[tuple[str, str], int] = {}
    for kind, name, _ in objects:
        counts[(kind, name)] = counts.get((kind, name), 0) + 1
    return [f"{kind.lower()}-{_slug(namespace)}-{_slug(name)}.yaml" if counts[(kind, name)] > 1 and namespace
            else f"{kind.lower()}-{_slug(name)}.yaml" for kind, name, namespace in objects]


def write_plan(plan: Plan, out_dir: Path) -> Path:
    stack_dir = out_dir / plan.stack
    if stack_dir.exists():
        shutil.rmtree(stack_dir)
    (stack_dir / "kubernetes").mkdir(parents=True)
    (stack_dir / "resources").mkdir()
    manifests = [(registration, kubernetes_manifest(registration)) for registration in plan.resources
                 if registration.type.startswith("kubernetes:")]
    file_names = manifest_file_names([
        (manifest.get("kind", registration.type.rsplit(":", 1)[-1]),
         manifest.get("metadata", {}).get("name", registration.name), manifest.get("metadata", {}).get("namespace"))
        for registration, manifest in manifests])
    for (_, manifest), file_name in zip(manifests, file_names):
        (stack_dir / "kubernetes" / file_name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    for registration in plan.resources:
        if not registration.type.startswith("kubernetes:"):
            path = stack_dir / "resources" / f"{_slug(display_type(registration.type))}-{_slug(registration.name)}.json"
            path.write_text(json.dumps(_resource_record(registration), indent=2, sort_keys=True) + "\n")
    document = {
        "stack": plan.stack,
        "project": plan.project,
        "resources": [_resource_record(r) for r in plan.registrations],
        "outputs": {name: SECRET_MASK if secret else masked(value) for name, (value, secret) in plan.outputs.items()},
    }
    (stack_dir / "plan.json").write_text(json.dumps(plain_numbers(document), indent=2, sort_keys=True) + "\n")
    return stack_dir


def _resource_record(registration: Registration) -> dict:
    return plain_numbers({
        "urn": registration.urn,
        "type": registration.type,
        "name": registration.name,
        "parent": registration.parent,
        "protect": registration.protect,
        "retainOnDelete": registration.retain_on_delete,
        "aliases": list(registration.aliases),
        "dependencies": list(registration.dependencies),
        "inputs": registration.masked_inputs,
    })


def print_plan(plan: Plan, stream: TextIO) -> None:
    print(f"Offline plan of stack {plan.project}/{plan.stack} (mock runtime: no Pulumi CLI, no cloud calls)\n", file=stream)
    rows: list[tuple[str, str, str]] = []
    children: dict[str, list[Registration]] = {}
    for registration in plan.registrations:
        children.setdefault(registration.parent, []).append(registration)

    def walk(registration: Registration, prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else prefix + ("└─ " if last else "├─ ")
        flags = []
        if registration.protect:
            flags.append("protect")
        if registration.retain_on_delete:
            flags.append("retain")
        rows.append((branch + display_type(registration.type), registration.name, ", ".join(flags)))
        kids = children.get(registration.urn, [])
        for i, kid in enumerate(kids):
            extension = "" if depth == 0 else prefix + ("   " if last else "│  ")
            walk(kid, extension, i == len(kids) - 1, depth + 1)

    for root in children.get("", []):
        walk(root, "", True, 0)
    type_width = max(len(row[0]) for row in rows) + 2
    name_width = max(len(row[1]) for row in rows) + 2
    print(f"     {'Type':<{type_width}}{'Name':<{name_width}}Options", file=stream)
    for type_column, name, flags in rows:
        print(f" +   {type_column:<{type_width}}{name:<{name_width}}{flags}".rstrip(), file=stream)

    if plan.outputs:
        print("\nOutputs:", file=stream)
        for name, (value, secret) in sorted(plan.outputs.items()):
            shown = SECRET_MASK if secret else json.dumps(masked(value))
            print(f"    {name}: {shown}", file=stream)
    protected = sum(1 for r in plan.registrations if r.protect)
    print(f"\nResources:\n    + {len(plan.registrations)} to create ({protected} protected)\n", file=stream)
