"""A test-only stand-in for ``config-cli run docker-registry``: the contract of docs/config-flow.md, nothing more.

From the Consul KV a stack's plan records (the ``consul:index/keyPrefix:KeyPrefix`` subkeys) and a Vault client
holding only the registry's policy, ``load()`` builds what config-cli hands the registry:

- ``env/<NAME>`` -> variable ``<NAME>``, value verbatim, a ``vault:<mount>/<path>#<field>`` value resolved from
  KV v2 (``GET /v1/<mount>/data/<path>``, field of ``data.data``); a missing secret or field is a start failure;
- ``files/<file>`` -> written (mode 0400) before the registry starts, content verbatim or resolved from Vault;
- ``credentials-generation`` (integer text) and ``service/check`` (JSON) are read and reported, never exported;
- any other key is a start failure.

The one liberty: the files go to ``run_directory`` (a temp dir) instead of ``/run/registry``, and every
``env/`` value naming a file under ``/run/registry`` is rewritten to the temp dir in ``relocate()`` below.
Everything the tests change beyond that is in ``tests/support/stack_registry.py`` (``TEST_OVERRIDES``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import hvac

from components.consul_config import CHECK_KEY, ENV_FOLDER, FILES_FOLDER, GENERATION_KEY
from components.registry_config import SECRETS_DIRECTORY, VAULT_REFERENCE_PREFIX
from offline_plan import Plan

KV_TYPE = "consul:index/keyPrefix:KeyPrefix"
FILE_MODE = 0o400


class ConfigCliError(Exception):
    """config-cli refuses to start the registry (exit non-zero, nothing started)."""


@dataclass(frozen=True)
class LoadedConfig:
    environment: dict[str, str]  # what the registry process gets, Vault references resolved
    files: dict[str, Path]  # file name -> where it was written
    credentials_generation: int
    check: dict  # the Consul check definition, ${POD_IP} not yet replaced


def recorded_kv(plan: Plan) -> tuple[str, dict[str, str]]:
    """(prefix, subkeys) of the stack's KV, as the plan would write them (secrets revealed: test only)."""
    inputs = plan.one(KV_TYPE).plain_inputs
    return inputs["pathPrefix"], dict(inputs["subkeys"])


def parse_vault_reference(value: str) -> tuple[str, str, str]:
    """``vault:<mount>/<path>#<field>`` -> (mount, path, field). The mount is one path segment."""
    body = value[len(VAULT_REFERENCE_PREFIX):]
    location, hash_sign, field_name = body.partition("#")
    mount, slash, path = location.partition("/")
    if not (hash_sign and slash and mount and path and field_name):
        raise ConfigCliError(f"malformed Vault reference {value!r}: expected vault:<mount>/<path>#<field>")
    return mount, path, field_name


class _VaultReader:
    """Reads each referenced secret once (all references of one environment share one secret)."""

    def __init__(self, client: hvac.Client):
        self.client = client
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}

    def resolve(self, value: str) -> str:
        if not value.startswith(VAULT_REFERENCE_PREFIX):
            return value
        mount, path, field_name = parse_vault_reference(value)
        if (mount, path) not in self.secrets:
            try:
                read = self.client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount,
                                                                     raise_on_deleted_version=True)
            except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden) as exc:
                raise ConfigCliError(f"cannot read Vault secret {mount}/{path}: {type(exc).__name__}") from None
            self.secrets[(mount, path)] = read["data"]["data"]
        data = self.secrets[(mount, path)]
        if field_name not in data or not isinstance(data[field_name], str):
            raise ConfigCliError(f"Vault secret {mount}/{path} has no string field {field_name!r}")
        return data[field_name]


def relocate(value: str, written: Mapping[str, Path]) -> str:
    """THE path rewrite: ``/run/registry/<file>`` -> where ``load()`` wrote ``<file>``. Nothing else changes.

    A value naming a file under ``/run/registry`` that no ``files/`` key provides is a start failure: the
    registry would otherwise start and fail on the first request that needs the file.
    """
    prefix = SECRETS_DIRECTORY + "/"
    if not value.startswith(prefix):
        return value
    name = value[len(prefix):]
    if name not in written:
        raise ConfigCliError(f"{value} is not provided by any files/ key")
    return str(written[name])


def load(kv: Mapping[str, str], vault: hvac.Client, run_directory: Path) -> LoadedConfig:
    """Build the registry's environment and files from the KV subkeys, as config-cli does before ``serve``."""
    reader = _VaultReader(vault)
    env_values: dict[str, str] = {}
    file_values: dict[str, str] = {}
    generation: int | None = None
    check: dict | None = None
    for key, value in sorted(kv.items()):
        if key.startswith(ENV_FOLDER):
            name = key[len(ENV_FOLDER):]
            if not name or "/" in name:
                raise ConfigCliError(f"KV key {key!r}: expected env/<NAME>")
            env_values[name] = reader.resolve(value)
        elif key.startswith(FILES_FOLDER):
            name = key[len(FILES_FOLDER):]
            if not name or "/" in name:
                raise ConfigCliError(f"KV key {key!r}: expected files/<file>")
            file_values[name] = reader.resolve(value)
        elif key == GENERATION_KEY:
            if not value.isdigit():
                raise ConfigCliError(f"{GENERATION_KEY} must be an integer, got {value!r}")
            generation = int(value)
        elif key == CHECK_KEY:
            check = json.loads(value)
        else:
            raise ConfigCliError(f"unknown KV key {key!r}")
    if generation is None or check is None:
        raise ConfigCliError(f"KV lacks {GENERATION_KEY} or {CHECK_KEY}")

    run_directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, content in file_values.items():
        path = run_directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        written[name] = path
    environment = {name: relocate(value, written) for name, value in env_values.items()}
    return LoadedConfig(environment=environment, files=written, credentials_generation=generation, check=check)
