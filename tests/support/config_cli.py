"""THE test-only stand-in for ``config-cli run docker-registry``: the contract of docs/config-cli.md, nothing more.

Every test that boots a registry goes through this module (end-to-end, garbage collection, rotation, restore,
benchmarks); there is no second one. From the KV tree under ``CONFIG_CLI_KV_PREFIX`` (``registry/<env>/``) and a
Vault client holding only the registry's policy, ``load_tree()`` builds what config-cli hands the registry:

- ``config/env/<NAME>`` -> variable ``<NAME>``, value verbatim, a ``vault:<mount>/<path>#<field>`` value resolved
  from KV v2 (``GET /v1/<mount>/data/<path>``, field of ``data.data``); a missing secret or field is a start failure;
- ``config/files/<file>`` -> written (mode 0400) before the registry starts, content verbatim or resolved from Vault;
- ``config/credentials-generation`` (integer text) and ``config/service/check`` (JSON) are read and reported,
  never exported;
- ``maintenance/<NAME>`` -> overrides ``config/env/<NAME>``; only the names in
  ``components.names.MAINTENANCE_VARIABLES``, and only for a variable ``config/env/`` sets;
- any other key is a start failure.

``load()`` does the same for the ``config/`` part alone (keys relative to it, as the plan's KeyPrefix records them).

Liberties, each a harness matter: the files go to ``run_directory`` (a temp dir) instead of ``/run/registry``
(``relocate()`` rewrites values naming them); ``main()`` takes the registry binary and the harness's overrides
(listen addresses, the test's storage: ``TEST_OVERRIDES``) from ``CONFIG_CLI_TEST_*``. Everything the tests
change beyond that is in ``tests/support/stack_registry.py`` (``TEST_OVERRIDES``).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import hvac
import requests

from components.names import (CHECK_KEY, CONFIG_FOLDER, ENV_FOLDER, FILES_FOLDER, GENERATION_KEY, MAINTENANCE_FOLDER,
                              MAINTENANCE_VARIABLES)
from components.registry_config import SECRETS_DIRECTORY, VAULT_REFERENCE_PREFIX

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


def recorded_kv(plan) -> tuple[str, dict[str, str]]:
    """(pathPrefix, subkeys) of the stack's KeyPrefix, as the plan would write them (secrets revealed: test only)."""
    inputs = plan.one(KV_TYPE, "registry-consul-kv").plain_inputs
    return inputs["pathPrefix"], dict(inputs["subkeys"])


def as_tree(config_kv: Mapping[str, str], maintenance: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """A KV tree relative to ``registry/<env>/`` from the ``config/`` keys and optional ``maintenance/`` values."""
    tree = {f"{CONFIG_FOLDER}{key}": value for key, value in config_kv.items()}
    tree.update({f"{MAINTENANCE_FOLDER}{name}": value for name, value in (maintenance or {}).items()})
    return tree


def split_tree(tree: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(config/ keys, maintenance/ names) of a tree relative to ``registry/<env>/``; anything else is refused."""
    config_kv, maintenance = {}, {}
    for key, value in tree.items():
        if key.startswith(CONFIG_FOLDER):
            config_kv[key[len(CONFIG_FOLDER):]] = value
        elif key.startswith(MAINTENANCE_FOLDER):
            maintenance[key[len(MAINTENANCE_FOLDER):]] = value
        else:
            raise ConfigCliError(f"unknown KV key {key!r}: expected {CONFIG_FOLDER}... or {MAINTENANCE_FOLDER}<NAME>")
    return config_kv, maintenance


def consul_tree(address: str, prefix: str, token: Optional[str] = None) -> dict[str, str]:
    """Every key under ``prefix`` from Consul's HTTP API (``GET /v1/kv/<prefix>?recurse``), relative to it."""
    session = requests.Session()
    session.trust_env = False
    answer = session.get(f"{address.rstrip('/')}/v1/kv/{prefix}", params={"recurse": "true"},
                         headers={"X-Consul-Token": token} if token else {}, timeout=10)
    if answer.status_code == 404:
        return {}
    if answer.status_code != 200:
        raise ConfigCliError(f"cannot read Consul KV {prefix}: HTTP {answer.status_code} {answer.text.strip()[:200]}")
    return {entry["Key"][len(prefix):]: base64.b64decode(entry["Value"] or "").decode()
            for entry in answer.json() if not entry["Key"].endswith("/")}


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

    def __init__(self, client: Optional[hvac.Client]):
        self.client = client
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}

    def resolve(self, value: str) -> str:
        if not value.startswith(VAULT_REFERENCE_PREFIX):
            return value
        mount, path, field_name = parse_vault_reference(value)
        if self.client is None:
            raise ConfigCliError(f"cannot resolve {value!r}: no Vault address")
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


def load_tree(tree: Mapping[str, str], vault: Optional[hvac.Client], run_directory: Path) -> LoadedConfig:
    """Build the registry's environment and files from the whole tree under ``registry/<env>/``."""
    config_kv, maintenance = split_tree(tree)
    return load(config_kv, vault, run_directory, maintenance)


def load(kv: Mapping[str, str], vault: Optional[hvac.Client], run_directory: Path,
         maintenance: Optional[Mapping[str, str]] = None) -> LoadedConfig:
    """Build the registry's environment and files from the ``config/`` keys (relative to that folder) and the
    ``maintenance/`` overrides, as config-cli does before ``serve``. Without a Vault client any reference fails."""
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

    for name, value in sorted((maintenance or {}).items()):
        if name not in MAINTENANCE_VARIABLES:
            raise ConfigCliError(f"unknown KV key {MAINTENANCE_FOLDER}{name!r}: only {list(MAINTENANCE_VARIABLES)}")
        if name not in env_values:
            raise ConfigCliError(f"{MAINTENANCE_FOLDER}{name} overrides nothing: {CONFIG_FOLDER}{ENV_FOLDER}{name} is unset")
        env_values[name] = value

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


def main(argv: list[str]) -> int:
    """``config-cli run docker-registry``: load the tree, then exec ``registry serve`` with its environment.

    Reads ``CONFIG_CLI_KV_PREFIX``, then the tree from ``CONSUL_HTTP_ADDR`` (token ``CONSUL_HTTP_TOKEN`` or the
    file ``CONSUL_HTTP_TOKEN_FILE``, as the consul CLI takes them); Vault from ``VAULT_ADDR``/``VAULT_TOKEN``
    when set. Harness inputs: ``CONFIG_CLI_TEST_REGISTRY_BINARY``, ``CONFIG_CLI_TEST_CONFIG_FILE``,
    ``CONFIG_CLI_TEST_RUN_DIRECTORY`` and ``CONFIG_CLI_TEST_OVERRIDES`` (JSON of variables the harness replaces
    after loading, null to drop one).
    """
    if argv != ["run", "docker-registry"]:
        print(f"config-cli (test stand-in): only `run docker-registry` is implemented, got {argv}", file=sys.stderr)
        return 64
    prefix = os.environ["CONFIG_CLI_KV_PREFIX"]
    try:
        token = os.environ.get("CONSUL_HTTP_TOKEN")
        if not token and os.environ.get("CONSUL_HTTP_TOKEN_FILE"):
            token = Path(os.environ["CONSUL_HTTP_TOKEN_FILE"]).read_text().strip()
        tree = consul_tree(os.environ["CONSUL_HTTP_ADDR"], prefix, token)
        vault = None
        if os.environ.get("VAULT_ADDR"):
            vault = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ.get("VAULT_TOKEN"))
        loaded = load_tree(tree, vault, Path(os.environ["CONFIG_CLI_TEST_RUN_DIRECTORY"]))
    except ConfigCliError as exc:
        print(f"config-cli: {exc}", file=sys.stderr)
        return 1
    environment = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    environment.update(loaded.environment)
    for name, value in json.loads(os.environ.get("CONFIG_CLI_TEST_OVERRIDES", "{}")).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    binary = os.environ["CONFIG_CLI_TEST_REGISTRY_BINARY"]
    os.execve(binary, [binary, "serve", os.environ["CONFIG_CLI_TEST_CONFIG_FILE"]], environment)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
