"""Stack configuration assembled as the Pulumi CLI assembles it before the program runs.

The rules are the CLI's (pulumi/pulumi v3.274.1), restated here, not copied:

- ``Pulumi.yaml`` (sdk/go/common/workspace/project.go): a shorthand entry ``key: value`` is a
  ``default`` for a key of the project's namespace and a ``value`` for another namespace; a
  declaration may not have both; a ``type`` is one of string, integer, boolean, array (with
  ``items``), object; a typed ``default`` must be of its type; a key of another namespace has a
  ``value`` and neither ``type`` nor ``default``.
- ``Pulumi.<stack>.yaml`` (sdk/go/common/resource/config): keys are ``namespace:name`` (a key
  without a namespace belongs to the project); a top-level scalar is handed to the program as a
  string (YAML 1.2 booleans as true/false, numbers in decimal, null as ""); ``{secure: ...}`` is an
  encrypted string; lists and maps are JSON objects (compact, sorted keys, as Go writes them).
- The merge (pkg/workspace/config.go ``mergeConfig`` and ``validateStackConfigValues``): every
  declared key the stack does not set takes its ``default`` (or ``value``) unencrypted; a key of the
  project's namespace with neither is collected into one error, ``Stack '<stack>' is missing
  configuration value(s) ...``; then each typed key, in sorted order, is checked: a ``secret: true``
  key whose value is not encrypted fails with ``Stack '<stack>' with configuration key '<key>' must
  be encrypted as it's secret`` (this includes a default: the CLI never encrypts one), and a value
  not of its type with ``... must be of type '<type>'``. Keys nobody declared pass unchecked.

Offline, the plaintext of a ``secure:`` value is unknown: the program gets ``SECURE_PLACEHOLDER`` as
a secret, and the type of an encrypted scalar is not checked (the CLI decrypts and checks it).
YAML timestamps, explicit tags and property paths in declared keys are not modelled and are refused.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

SECURE_PLACEHOLDER = "<secure value: plaintext unknown offline>"
CONFIG_TYPES = ("string", "integer", "boolean", "array", "object")
# Overriding a key with this value removes it from the stack, as `pulumi config rm` does.
REMOVE = None


class ConfigFileError(Exception):
    """A stack or project file that cannot be read as Pulumi configuration."""


class StackConfigError(ConfigFileError):
    """The CLI refuses the stack's configuration: the program would not run at all."""

    def __init__(self, project: str, message: str):
        super().__init__(message)
        self.project = project


@dataclass(frozen=True)
class ConfigValue:
    """One stack config value: the string the program is handed, and how the CLI stores it."""

    text: str
    secure: bool = False
    is_object: bool = False  # a list or map, handed over as JSON

    def content(self) -> Any:
        """What the CLI checks the declared type against: the string, or the decoded JSON."""
        return json.loads(self.text) if self.is_object else self.text


@dataclass(frozen=True)
class StackConfig:
    project: str
    values: dict[str, ConfigValue]  # full key (namespace:name) -> value, defaults merged in

    @property
    def plain(self) -> dict[str, str]:
        return {key: value.text for key, value in self.values.items()}

    @property
    def secret_keys(self) -> list[str]:
        return sorted(key for key, value in self.values.items() if value.secure)


# --- YAML as the CLI reads it -------------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """Composes nodes without resolving any plain scalar: ``_plain_scalar`` resolves them as Go's
    YAML 1.2 reader does (PyYAML's 1.1 rules would read yes/no/on/off as booleans)."""


_ComposeLoader.yaml_implicit_resolvers = {}

_NULL = re.compile(r"^(~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(0b[01_]+|0o?[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOAT = re.compile(r"^([-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d?-\d\d?([Tt ]|$)")
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


def _integer(text: str) -> int:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if digits.startswith(("0b", "0o", "0x")):
        return sign * int(digits, 0)
    if len(digits) > 1 and digits.startswith("0"):  # a leading zero is octal, as in Go's base-0 parsing
        return sign * int(digits, 8)
    return sign * int(digits)


def _plain_scalar(node: yaml.ScalarNode, where: str) -> Any:
    if node.tag != _STR_TAG:
        raise ConfigFileError(f"{where}: explicit YAML tag {node.tag} is not supported by the offline plan")
    text = node.value
    if node.style is not None:  # quoted or block scalars are always strings
        return text
    if _NULL.match(text):
        return None
    if _BOOL.match(text):
        return text.lower() == "true"
    if _INT.match(text):
        return _integer(text)
    if _FLOAT.match(text):
        return float(text.replace("_", ""))
    if _SPECIAL_FLOAT.match(text):
        raise ConfigFileError(f"{where}: {text} cannot be a config value (the CLI cannot write it as JSON)")
    if _TIMESTAMP.match(text):
        try:
            datetime.date.fromisoformat(text)
        except ValueError:
            return text
        raise ConfigFileError(f"{where}: {text} reads as a YAML timestamp; quote it to make it a string")
    return text


def _go_float(number: float) -> str:
    """A number as Go writes a float64: shortest digits, positional from 1e-6 up to 1e21."""
    if number == 0:
        return "0"
    if 1e-6 <= abs(number) < 1e21:
        return format(decimal.Decimal(repr(number)).normalize(), "f")
    return re.sub(r"e([-+])0(\d)$", r"e\1\2", repr(number))


def _scalar_text(value: Any) -> str:
    """A top-level scalar as the program gets it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _construct(node: yaml.Node, where: str) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return _plain_scalar(node, where)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            raise ConfigFileError(f"{where}: explicit YAML tag {node.tag} is not supported by the offline plan")
        return [_construct(item, where) for item in node.value]
    if node.tag != _MAP_TAG:
        raise ConfigFileError(f"{where}: explicit YAML tag {node.tag} is not supported by the offline plan")
    mapping: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _scalar_text(_construct(key_node, where))
        if key in mapping:
            raise ConfigFileError(f"{where}: mapping key {key!r} appears twice")
        mapping[key] = _construct(value_node, where)
    return mapping


def _go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes a decoded YAML value: compact, keys sorted, every number a
    float64, and <, >, & escaped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _go_float(float(value))
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                              ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            text = text.replace(char, escaped)
        return text
    if isinstance(value, list):
        return "[" + ",".join(_go_json(item) for item in value) + "]"
    return "{" + ",".join(f"{_go_json(key)}:{_go_json(value[key])}" for key in sorted(value)) + "}"


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("secure"), str)


def _has_secure(value: Any) -> bool:
    if _is_secure(value):
        return True
    if isinstance(value, dict):
        return any(_has_secure(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_secure(item) for item in value)
    return False


def _placeholders(value: Any) -> Any:
    if _is_secure(value):
        return SECURE_PLACEHOLDER
    if isinstance(value, dict):
        return {key: _placeholders(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_placeholders(item) for item in value]
    return value


def config_value(value: Any) -> ConfigValue:
    """A value as a stack file holds it (a constructed YAML value) -> how the CLI keeps it."""
    if _is_secure(value):
        return ConfigValue(SECURE_PLACEHOLDER, secure=True)
    if isinstance(value, (list, dict)):
        return ConfigValue(_go_json(_placeholders(value)), secure=_has_secure(value), is_object=True)
    return ConfigValue(_scalar_text(value))


def _compose(path: Path) -> Optional[yaml.Node]:
    try:
        return yaml.compose(path.read_text(), Loader=_ComposeLoader)
    except FileNotFoundError:
        raise ConfigFileError(f"{path.name} not found in {path.parent}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path.name} is not valid YAML: {exc}") from None


def read_yaml(path: Path) -> dict:
    """A project or stack file as a mapping, scalars resolved as the CLI's YAML reader does."""
    node = _compose(path)
    if node is None:
        return {}
    document = _construct(node, path.name)
    if not isinstance(document, dict):
        raise ConfigFileError(f"{path.name}: expected a mapping at the top")
    return document


def parse_key(text: str, project: str) -> str:
    """A stack file's key as the CLI parses it: ``namespace:name``, ``namespace:config:name`` or a
    bare name of the project's namespace."""
    parts = text.split(":")
    if len(parts) == 1:
        return f"{project}:{text}"
    if len(parts) == 2:
        return text
    if len(parts) == 3 and parts[1] == "config":
        return f"{parts[0]}:{parts[2]}"
    raise ConfigFileError(f"could not parse {text} as a configuration key "
                          "(configuration keys should be of the form `<namespace>:<name>`)")


# --- the project's declarations -------------------------------------------------------------------

_ABSENT = object()


@dataclass(frozen=True)
class Declaration:
    key: str  # as written in Pulumi.yaml: the CLI's messages name it so
    full_key: str
    type: Optional[str]
    items: Optional[dict]
    default: Any
    value: Any
    secret: bool

    @property
    def has_default(self) -> bool:
        return self.default is not _ABSENT

    @property
    def has_value(self) -> bool:
        return self.value is not _ABSENT

    @property
    def type_name(self) -> str:
        return _full_type_name(self.type or "", self.items)


def _full_type_name(type_name: str, items: Optional[dict]) -> str:
    if items is not None:
        return f"array<{_full_type_name(items.get('type', ''), items.get('items'))}>"
    return type_name


def is_of_type(type_name: str, items: Optional[dict], value: Any) -> bool:
    """The CLI's ValidateConfigValue: strings are strings; integers are whole numbers or strings of
    decimal digits; booleans are true/false or the strings "true"/"false"; arrays check each item."""
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):
            return value == int(value)
        return isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value) is not None \
            and -(1 << 63) <= int(value) < (1 << 63)
    if type_name == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if type_name == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(is_of_type(items.get("type", ""), items.get("items"), item) for item in value)


def _namespaced_by_project(key: str, project: str) -> bool:
    return ":" not in key or key.startswith(f"{project}:")


def declarations(project_file: dict) -> tuple[str, list[Declaration]]:
    """(project name, the ``config:`` block as the CLI reads and validates it)."""
    name = project_file.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigFileError("Pulumi.yaml: project is missing a non-empty string 'name' attribute")
    block = project_file.get("config") or {}
    if not isinstance(block, dict):
        raise ConfigFileError("Pulumi.yaml: config must be a mapping of keys to declarations")
    declared = []
    for key, entry in block.items():
        own = _namespaced_by_project(key, name)
        if not isinstance(entry, dict):
            entry = {"default": entry} if own else {"value": entry}
        # null reads as "not given", as Go's nil interface
        default = entry.get("default", _ABSENT)
        value = entry.get("value", _ABSENT)
        default = _ABSENT if default is None else default
        value = _ABSENT if value is None else value
        declaration = Declaration(
            key=key, full_key=key if ":" in key else f"{name}:{key}", type=entry.get("type"),
            items=entry.get("items"), default=default, value=value, secret=bool(entry.get("secret", False)),
        )
        if any(char in declaration.full_key.split(":", 1)[1] for char in ".["):
            raise ConfigFileError(f"Pulumi.yaml: {key}: property paths in declared keys are not modelled offline")
        _validate_declaration(declaration, own)
        declared.append(declaration)
    return name, declared


def _validate_declaration(declaration: Declaration, own: bool) -> None:
    key = declaration.key
    if declaration.has_default and declaration.has_value:
        raise ConfigFileError(f"project config '{key}' cannot have both a 'default' and 'value' attribute")
    if declaration.type is not None and declaration.type not in CONFIG_TYPES:
        raise ConfigFileError(f"Pulumi.yaml: config '{key}': type must be one of {', '.join(CONFIG_TYPES)}")
    if not own:
        if declaration.type is not None:
            raise ConfigFileError(
                f"Configuration key '{key}' is not namespaced by the project and should not define a type")
        if declaration.has_default:
            raise ConfigFileError(
                f"Configuration key '{key}' is not namespaced by the project and should not define a default value. "
                "Did you mean to use the 'value' attribute instead of 'default'?")
        if not declaration.has_value:
            raise ConfigFileError(f"Configuration key '{key}' is namespaced and must provide an attribute 'value'")
        return
    if declaration.type == "array" and declaration.items is None:
        raise ConfigFileError(f"The configuration key '{key}' declares an array "
                              "but does not specify the underlying type via the 'items' attribute")
    if declaration.type is not None and declaration.has_default \
            and not is_of_type(declaration.type, declaration.items, declaration.default):
        raise ConfigFileError(f"The default value specified for configuration key '{key}' "
                              f"is not of the expected type '{declaration.type_name}'")


# --- the merge ------------------------------------------------------------------------------------


def _missing_keys_error(project: str, stack: str, keys: list[str]) -> StackConfigError:
    keys = sorted(keys)
    if len(keys) == 1:
        listed = f"'{keys[0]}'"
    else:
        # No comma before "and", as the CLI writes it: 'a', 'b' and 'c'.
        listed = ", ".join(f"'{key}'" for key in keys[:-1]) + f" and '{keys[-1]}'"
    noun = "value" if len(keys) == 1 else "values"
    return StackConfigError(project, f"Stack '{stack}' is missing configuration {noun} {listed}")


def merge(stack: str, project: str, declared: list[Declaration],
          stack_values: Mapping[str, ConfigValue]) -> StackConfig:
    """Defaults merged into the stack's values, then the stack refused or accepted, as the CLI does."""
    values = dict(stack_values)
    missing = []
    for declaration in sorted(declared, key=lambda d: d.key):
        if declaration.full_key in values:
            continue
        if declaration.has_default or declaration.has_value:
            given = declaration.default if declaration.has_default else declaration.value
            values[declaration.full_key] = config_value(given)
        elif declaration.full_key.split(":", 1)[0] == project:
            missing.append(declaration.key)
    if missing:
        raise _missing_keys_error(project, stack, missing)
    for declaration in sorted(declared, key=lambda d: d.key):
        value = values.get(declaration.full_key)
        if declaration.type is None or value is None:
            continue
        if declaration.secret and not value.secure:
            raise StackConfigError(
                project, f"Stack '{stack}' with configuration key '{declaration.key}' must be encrypted as it's secret")
        if value.secure and not value.is_object:
            continue  # plaintext unknown offline; the CLI decrypts it and checks its type
        if not is_of_type(declaration.type, declaration.items, value.content()):
            raise StackConfigError(
                project, f"Stack '{stack}' with configuration key '{declaration.key}' must be of type '{declaration.type_name}'")
    return StackConfig(project=project, values=values)


def stack_config(stack: str, project_dir: Path,
                 overrides: Optional[Mapping[str, Any]] = None) -> StackConfig:
    """The configuration the CLI hands the program for ``stack``, or ``StackConfigError``.

    ``overrides`` change the stack file first: a ``str`` is stored as `pulumi config set` stores it (a
    plain string), a list, map, number or boolean as the stack file would hold it, ``{"secure": ...}``
    as an encrypted value, and ``None`` removes the key (`pulumi config rm`).
    """
    project, declared = declarations(read_yaml(project_dir / "Pulumi.yaml"))
    stack_file = read_yaml(project_dir / f"Pulumi.{stack}.yaml")
    if stack_file.get("environment"):
        raise ConfigFileError(f"Pulumi.{stack}.yaml: environment imports are not modelled offline")
    raw = stack_file.get("config") or {}
    if not isinstance(raw, dict):
        raise ConfigFileError(f"Pulumi.{stack}.yaml: config must be a mapping")
    values: dict[str, ConfigValue] = {}
    for key, value in raw.items():
        full_key = parse_key(key, project)
        if full_key in values:
            raise ConfigFileError(f"Pulumi.{stack}.yaml: {full_key} is set twice")
        values[full_key] = config_value(value)
    for key, value in (overrides or {}).items():
        full_key = parse_key(key, project)
        if value is REMOVE:
            values.pop(full_key, None)
        elif isinstance(value, str):
            values[full_key] = ConfigValue(value)
        else:
            values[full_key] = config_value(value)
    return merge(stack, project, declared, values)
