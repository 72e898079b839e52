"""The offline plan assembles stack config by the Pulumi CLI's rules, and both stacks pass them.

Every expected message and value below is written from the CLI's source (pulumi/pulumi v3.274.1,
pkg/workspace/config.go and sdk/go/common/workspace/project.go), not from the recorder. Where a
Pulumi CLI binary is present (the real-peers build, ~/.cache/registry-iac/pulumi-*/bin/pulumi), the
same cases are also run through it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Optional

import pytest
import yaml

from offline_plan.cli_config import SECURE_PLACEHOLDER, ConfigFileError, StackConfigError, stack_config
from offline_plan.recorder import PROJECT_DIR, record_plan, run_program

STACKS = sorted(path.name[len("Pulumi."):-len(".yaml")] for path in PROJECT_DIR.glob("Pulumi.*.yaml"))

PROBE_PROJECT = """\
name: probe
runtime: python
config:
"""


def write_project(directory: Path, declarations: str, stack_values: str = "", stack: str = "dev") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Pulumi.yaml").write_text(PROBE_PROJECT + textwrap.indent(textwrap.dedent(declarations), "  "))
    body = textwrap.indent(textwrap.dedent(stack_values), "  ") if stack_values.strip() else "  {}\n"
    (directory / f"Pulumi.{stack}.yaml").write_text("config:\n" + body)
    return directory


def merged(tmp_path: Path, declarations: str, stack_values: str = "") -> dict[str, str]:
    return stack_config("dev", write_project(tmp_path / "project", declarations, stack_values)).plain


def refusal(tmp_path: Path, declarations: str, stack_values: str = "") -> str:
    with pytest.raises(StackConfigError) as refused:
        stack_config("dev", write_project(tmp_path / "project", declarations, stack_values))
    return str(refused.value)


# --- the rules, case by case -------------------------------------------------------------------------

# (declarations, stack values, the CLI's message)
REFUSED = {
    "one required key unset": (
        "a:\n  type: string\n", "", "Stack 'dev' is missing configuration value 'a'"),
    "two required keys unset": (
        "b:\n  type: string\na:\n  type: integer\n", "", "Stack 'dev' is missing configuration values 'a' and 'b'"),
    "three required keys unset, sorted, no comma before and": (
        "zeta:\n  type: string\nalpha:\n  type: string\nmid:\n  type: boolean\nset:\n  type: string\n",
        "probe:set: x\n", "Stack 'dev' is missing configuration values 'alpha', 'mid' and 'zeta'"),
    "missing keys are reported before a wrong type": (
        "a:\n  type: string\nn:\n  type: integer\n", "probe:n: three\n", "Stack 'dev' is missing configuration value 'a'"),
    "integer given a word": (
        "n:\n  type: integer\n", "probe:n: three\n", "Stack 'dev' with configuration key 'n' must be of type 'integer'"),
    "integer given a fraction": (
        "n:\n  type: integer\n", "probe:n: 1.5\n", "Stack 'dev' with configuration key 'n' must be of type 'integer'"),
    "boolean given yes": (
        "b:\n  type: boolean\n", 'probe:b: "yes"\n', "Stack 'dev' with configuration key 'b' must be of type 'boolean'"),
    "boolean given True as a string": (
        "b:\n  type: boolean\n", 'probe:b: "True"\n', "Stack 'dev' with configuration key 'b' must be of type 'boolean'"),
    "array given a JSON string": (
        "l:\n  type: array\n  items:\n    type: string\n", "probe:l: '[\"x\"]'\n",
        "Stack 'dev' with configuration key 'l' must be of type 'array<string>'"),
    "array of strings given numbers": (
        "l:\n  type: array\n  items:\n    type: string\n", "probe:l: [1, 2]\n",
        "Stack 'dev' with configuration key 'l' must be of type 'array<string>'"),
    "string given a list": (
        "s:\n  type: string\n", "probe:s: [x]\n", "Stack 'dev' with configuration key 's' must be of type 'string'"),
    "the first bad key in sorted order is named": (
        "z:\n  type: integer\na:\n  type: integer\n", "probe:z: x\nprobe:a: y\n",
        "Stack 'dev' with configuration key 'a' must be of type 'integer'"),
    "secret key with a plain value": (
        "token:\n  type: string\n  secret: true\n", "probe:token: hunter2\n",
        "Stack 'dev' with configuration key 'token' must be encrypted as it's secret"),
    "secret key with a plain default the stack leaves": (
        "token:\n  type: string\n  secret: true\n  default: \"\"\n", "",
        "Stack 'dev' with configuration key 'token' must be encrypted as it's secret"),
    "secret key without a default the stack leaves": (
        "token:\n  type: string\n  secret: true\n", "", "Stack 'dev' is missing configuration value 'token'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_cli_refuses(tmp_path, case):
    declarations, stack_values, message = REFUSED[case]
    assert refusal(tmp_path, declarations, stack_values) == message


def test_defaults_and_values_are_merged_as_strings_the_stack_wins(tmp_path):
    config = merged(tmp_path, """\
        empty:
          type: string
          default: ""
        uid:
          type: integer
          default: 10001
        digest:
          type: boolean
          default: true
        cidrs:
          type: array
          items:
            type: string
          default: []
        set:
          type: string
          default: from-project
        shorthand: t3.micro
        aws:region:
          value: eu-west-1
        untyped: {}
        """, """\
        probe:set: from-stack
        probe:untyped: [1, anything]
        probe:undeclared: [1, "<&>"]
        """)
    assert config == {
        "probe:empty": "", "probe:uid": "10001", "probe:digest": "true", "probe:cidrs": "[]",
        "probe:set": "from-stack", "probe:shorthand": "t3.micro", "aws:region": "eu-west-1",
        # Lists as Go's JSON encoder writes them: compact, numbers as float64, <, >, & escaped.
        "probe:untyped": '[1,"anything"]', "probe:undeclared": '[1,"\\u003c\\u0026\\u003e"]',
    }


def test_values_of_a_declared_type_are_accepted(tmp_path):
    config = merged(tmp_path, """\
        n:
          type: integer
        m:
          type: integer
        b:
          type: boolean
        c:
          type: boolean
        l:
          type: array
          items:
            type: string
        s:
          type: string
        """, """\
        probe:n: "+7"
        probe:m: 1e3
        probe:b: "false"
        probe:c: TRUE
        probe:l: [a, b]
        probe:s: 5
        """)
    # A top-level scalar reaches the program as a string: numbers in decimal, YAML 1.2 booleans lower-case.
    assert (config["probe:n"], config["probe:m"], config["probe:c"], config["probe:s"]) == ("+7", "1000", "true", "5")
    assert json.loads(config["probe:l"]) == ["a", "b"]


def test_a_secure_value_is_a_secret_with_unknown_plaintext(tmp_path):
    project = write_project(tmp_path / "project", "token:\n  type: string\n  secret: true\n",
                            "probe:token:\n  secure: v1:AAAA\n")
    config = stack_config("dev", project)
    assert config.plain == {"probe:token": SECURE_PLACEHOLDER}
    assert config.secret_keys == ["probe:token"]


@pytest.mark.parametrize("declarations,message", [
    ("x:\n  type: string\n  default: a\n  value: b\n", "project config 'x' cannot have both a 'default' and 'value' attribute"),
    ("n:\n  type: integer\n  default: many\n",
     "The default value specified for configuration key 'n' is not of the expected type 'integer'"),
    ("l:\n  type: array\n", "The configuration key 'l' declares an array but does not specify the underlying "
                            "type via the 'items' attribute"),
    ("aws:region:\n  default: eu-west-1\n", "Configuration key 'aws:region' is not namespaced by the project and should "
     "not define a default value. Did you mean to use the 'value' attribute instead of 'default'?"),
])
def test_the_cli_refuses_the_project_file(tmp_path, declarations, message):
    with pytest.raises(ConfigFileError) as refused:
        stack_config("dev", write_project(tmp_path / "project", declarations))
    assert str(refused.value) == message


def test_the_recorder_returns_the_cli_refusal_as_the_plan_error_and_runs_nothing():
    plan = record_plan("staging", overrides={"registry:image": None})
    assert plan.error == "Stack 'staging' is missing configuration value 'image'"
    assert plan.registrations == []


# --- the real stack files ----------------------------------------------------------------------------


def _declared() -> dict[str, dict]:
    return yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]


def test_stacks_are_discovered():
    assert {"staging", "prod"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_key_without_a_default_is_set_by_the_stack(stack):
    required = {f"registry:{key}" for key, declaration in _declared().items()
                if isinstance(declaration, dict) and "default" not in declaration and "value" not in declaration}
    values = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert sorted(required - set(values)) == []


@pytest.mark.parametrize("stack", STACKS)
def test_the_stack_passes_the_cli_rules_and_gets_every_declared_key(stack):
    config = stack_config(stack, PROJECT_DIR)
    assert {f"registry:{key}" for key in _declared()} <= set(config.values)


@pytest.mark.parametrize("stack", STACKS)
def test_no_declared_secret_is_left_to_a_plain_default(stack):
    # A `secret: true` key would need an encrypted value in every stack file (see the secret cases above).
    values = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    for key, declaration in _declared().items():
        if declaration.get("secret"):
            assert isinstance(values.get(f"registry:{key}"), dict) and "secure" in values[f"registry:{key}"], key


def _comparable(plan) -> list[tuple]:
    return [(r.urn, json.dumps(r.plain_inputs, sort_keys=True), r.parent, r.protect, r.dependencies)
            for r in plan.registrations]


@pytest.mark.parametrize("stack", STACKS)
def test_the_program_plans_the_same_whether_empty_defaults_are_passed_or_not(stack):
    """The CLI hands every default to the program; an empty default must mean "not set"."""
    project, config, secret_keys = (lambda c: (c.project, c.plain, c.secret_keys))(stack_config(stack, PROJECT_DIR))
    stack_keys = set(yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"])
    defaults = {f"registry:{key}": declaration["default"] for key, declaration in _declared().items()
                if "default" in declaration}
    empty = {key for key, default in defaults.items() if default in ("", []) and key not in stack_keys}
    assert empty, "the test needs optional settings the stack leaves to their empty default"

    with_defaults = run_program(project, stack, config, secret_keys)
    without = run_program(project, stack, {k: v for k, v in config.items() if k not in empty}, secret_keys)

    assert with_defaults.error is None and without.error is None, (with_defaults.error, without.error)
    assert _comparable(with_defaults) == _comparable(without)
    assert with_defaults.outputs == without.outputs


@pytest.mark.parametrize("stack", STACKS)
def test_every_default_written_into_the_stack_file_plans_the_same(stack, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR / "components", project / "components")
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(PROJECT_DIR / name, project / name)
    values = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    for key, declaration in _declared().items():
        values.setdefault(f"registry:{key}", declaration.get("default"))
    assert all(value is not None for value in values.values()), "keys without a default are set by the stack"
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": values}))

    explicit = record_plan(stack, project_dir=project)
    recorded = record_plan(stack)
    assert explicit.error is None, explicit.error
    assert _comparable(explicit) == _comparable(recorded)


def test_minio_keys_handed_over_empty_as_a_cli_default_would_be_are_not_settings():
    # Were they declared with `default: ""`, the CLI would pass them to every stack; outside minio mode
    # the program must still plan (it refuses a *set* MinIO key there).
    project, config, secret_keys = (lambda c: (c.project, c.plain, c.secret_keys))(stack_config("staging", PROJECT_DIR))
    handed = {**config, "registry:minioAccessKey": "", "registry:minioSecretKey": ""}
    plan = run_program(project, "staging", handed, secret_keys)
    assert plan.error is None, plan.error
    assert _comparable(plan) == _comparable(run_program(project, "staging", config, secret_keys))


def test_a_plaintext_minio_key_is_refused_by_the_program_without_showing_it():
    plan = record_plan("staging", overrides={"registry:minioAccessKey": "AKIA-plain-text"})
    assert plan.error and plan.error.startswith("registry:minioAccessKey: ") and "--secret" in plan.error
    assert "AKIA-plain-text" not in plan.error


def test_provider_options_reach_their_namespace_and_leave_the_settings_alone(tmp_path):
    # The deploy jobs name Consul and Vault through the providers' own options (consul:address, ...).
    options = {"consul:address": "consul.example.com:8501", "vault:address": "https://vault.example.com:8200"}
    config = stack_config("staging", PROJECT_DIR, overrides=options).plain
    assert {key: config[key] for key in options} == options
    assert _comparable(record_plan("staging", overrides=options)) == _comparable(
        record_plan("staging", overrides={key: None for key in options}))


# --- the same cases through a real Pulumi CLI, where one has been built ------------------------------


def _pulumi_binary() -> Optional[Path]:
    found = sorted(Path.home().glob(".cache/registry-iac/pulumi-*/bin/pulumi"))
    return found[-1] if found else None


PULUMI = _pulumi_binary()
needs_cli = pytest.mark.skipif(PULUMI is None, reason="no Pulumi CLI built (~/.cache/registry-iac/pulumi-*/bin/pulumi)")


class RealCli:
    """The CLI with a local file backend; the program never runs (the project names a runtime that
    does not exist, so a stack whose config passes stops at loading the language plugin)."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "PULUMI_HOME": str(root / "home"), "PULUMI_BACKEND_URL": f"file://{root / 'state'}",
                    "PULUMI_CONFIG_PASSPHRASE": "test-only", "PULUMI_SKIP_UPDATE_CHECK": "true",
                    "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
        (root / "state").mkdir(parents=True)

    def run(self, project: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["timeout", "-s", "KILL", "60", str(PULUMI), "--non-interactive", *args], cwd=project,
                              env=self.env, capture_output=True, text=True, timeout=90)

    def prepare(self, project: Path, stack: str) -> None:
        """`pulumi stack init` rewrites the stack file: put the original back beside its salt."""
        stack_file = project / f"Pulumi.{stack}.yaml"
        original = stack_file.read_text()
        text = (project / "Pulumi.yaml").read_text()
        text = text.replace("runtime: python", "runtime: no-such-runtime", 1).replace(
            "  name: python", "  name: no-such-runtime", 1)
        (project / "Pulumi.yaml").write_text(text)
        assert self.run(project, "stack", "init", stack).returncode == 0
        salt = [line for line in stack_file.read_text().splitlines() if line.startswith("encryptionsalt:")]
        stack_file.write_text("\n".join(salt) + "\n" + original)

    def refusal(self, project: Path, stack: str) -> Optional[str]:
        result = self.run(project, "preview", "--stack", stack)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "no-such-runtime" in output or "validating stack config" in output, output
        marker = "error: validating stack config: "
        return next((line[len(marker):] for line in output.splitlines() if line.startswith(marker)), None)

    def values(self, project: Path, stack: str) -> dict[str, str]:
        result = self.run(project, "config", "--json", "--stack", stack)
        assert result.returncode == 0, result.stderr
        return {key: entry["value"] for key, entry in json.loads(result.stdout).items()}


@needs_cli
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_real_cli_refuses_the_same_way(tmp_path, case):
    declarations, stack_values, message = REFUSED[case]
    project = write_project(tmp_path / "project", declarations, stack_values)
    cli = RealCli(tmp_path / "cli")
    cli.prepare(project, "dev")
    assert cli.refusal(project, "dev") == message


@needs_cli
@pytest.mark.parametrize("stack", STACKS)
def test_the_real_cli_accepts_the_stack_and_hands_over_the_same_config(tmp_path, stack):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", f"Pulumi.{stack}.yaml"):
        shutil.copy(PROJECT_DIR / name, project / name)
    cli = RealCli(tmp_path / "cli")
    cli.prepare(project, stack)
    assert cli.refusal(project, stack) is None
    assert cli.values(project, stack) == stack_config(stack, PROJECT_DIR).plain


@needs_cli
def test_the_real_cli_accepts_an_encrypted_secret_that_the_recorder_hands_over_as_a_secret(tmp_path):
    project = write_project(tmp_path / "project", "token:\n  type: string\n  secret: true\n")
    cli = RealCli(tmp_path / "cli")
    cli.prepare(project, "dev")
    assert cli.run(project, "config", "set", "--secret", "--stack", "dev", "probe:token", "s3cr3t").returncode == 0
    assert "s3cr3t" not in (project / "Pulumi.dev.yaml").read_text()

    assert cli.refusal(project, "dev") is None
    config = stack_config("dev", project)
    assert config.plain == {"probe:token": SECURE_PLACEHOLDER} and config.secret_keys == ["probe:token"]
