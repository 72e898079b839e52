"""The real Pulumi CLI (v3.274.1, built by scripts/install-pulumi.sh) on a scratch copy of the project.

A file backend in the scratch directory (``pulumi login file://...``), the passphrase secrets provider, no update
check and no plugin downloads: nothing leaves the machine and nothing of the user's ~/.pulumi is touched. Every
call runs under ``timeout -s KILL`` (a policy pack whose virtualenv is missing makes the CLI hang, deaf to
SIGTERM).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .processes import clean_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "registry-iac-test-passphrase"
# What `pulumi preview` needs of the project: the program, the packages it imports (every top-level package but
# the tests), the policy pack and the stack files.
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "policies")


def project_entries() -> list[str]:
    packages = sorted(p.name for p in REPO_ROOT.iterdir()
                      if p.is_dir() and (p / "__init__.py").exists() and p.name != "tests")
    return [*PROJECT_FILES, *packages]


DEFAULT_TIMEOUT = 120


@dataclass
class PulumiRun:
    argv: list[str]
    returncode: int  # -9: killed by `timeout -s KILL`
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class PulumiProject:
    binary: str
    directory: Path
    home: Path
    state: Path
    extra_path: list[Path] = field(default_factory=list)
    provider_records: Path | None = None
    stacks_initialised: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return clean_env({
            "PATH": os.pathsep.join([*map(str, self.extra_path), str(Path(self.binary).parent),
                                     os.environ.get("PATH", "")]),
            "PULUMI_HOME": str(self.home),
            "PULUMI_BACKEND_URL": f"file://{self.state}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "NO_COLOR": "1",
        }, drop=("PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_STACK"))

    def run(self, *args: str, timeout: int = DEFAULT_TIMEOUT) -> PulumiRun:
        argv = ["timeout", "-s", "KILL", str(timeout), self.binary, *args]
        result = subprocess.run(argv, cwd=self.directory, env=self.env(), capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=timeout + 30)
        return PulumiRun(argv=argv, returncode=result.returncode, stdout=result.stdout, stderr=result.stderr)

    def must(self, *args: str, timeout: int = DEFAULT_TIMEOUT) -> PulumiRun:
        run = self.run(*args, timeout=timeout)
        if run.returncode != 0:
            raise AssertionError(f"{' '.join(run.argv)} exited {run.returncode}:\n{run.output}")
        return run

    def use_engine_doubles(self, real_providers: dict[str, str] | None = None) -> None:
        """Put the test-only language host and echo providers on the CLI's PATH (tests/support/engine)."""
        from .engine import install_engine_doubles

        self.provider_records = self.directory.parent / "provider-records"
        self.extra_path.insert(0, install_engine_doubles(self.directory.parent / "engine-bin",
                                                         self.provider_records, real_providers=real_providers))

    def recorded_provider_inputs(self) -> dict[tuple[str, str], dict]:
        """{(type, name): inputs} of every Check the echo providers answered."""
        records = {}
        for path in sorted((self.provider_records or Path("/nonexistent")).glob("*/*.json")):
            record = json.loads(path.read_text())
            records[(record["type"], record["name"])] = record["inputs"]
        return records

    def exported_resources(self, stack: str) -> list[dict]:
        """The stack's state as the engine wrote it (``pulumi stack export``)."""
        return json.loads(self.must("stack", "export", "--stack", stack).stdout)["deployment"]["resources"]

    def stacks(self) -> list[str]:
        """Stack names from the Pulumi.<stack>.yaml files of the project."""
        return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in self.directory.glob("Pulumi.*.yaml"))

    def stack_file(self, stack: str) -> Path:
        return self.directory / f"Pulumi.{stack}.yaml"

    def edit_stack_config(self, stack: str, remove: tuple[str, ...] = (), set_plain: dict | None = None) -> None:
        """Rewrite the stack file as a person would: drop keys, set plain (unencrypted) values."""
        path = self.stack_file(stack)
        document = yaml.safe_load(path.read_text())
        for key in remove:
            del document["config"][key]
        document["config"].update(set_plain or {})
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    def init_stack(self, stack: str) -> None:
        self.must("stack", "init", stack, "--secrets-provider", "passphrase", "--non-interactive")
        self.stacks_initialised.append(stack)

    def preview(self, stack: str, *extra: str, timeout: int = DEFAULT_TIMEOUT) -> PulumiRun:
        return self.run("preview", "--stack", stack, "--non-interactive", "--color", "never", *extra,
                        timeout=timeout)


def scratch_project(binary: str, workdir: Path, venv: Path = REPO_ROOT / "venv") -> PulumiProject:
    """Copy the project (and its stack files) to workdir/project and log the CLI in to a file backend there."""
    directory = workdir / "project"
    directory.mkdir(parents=True)
    for name in project_entries():
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, directory / name, ignore=shutil.ignore_patterns("__pycache__", "venv"))
        else:
            shutil.copy2(source, directory / name)
    for stack_file in REPO_ROOT.glob("Pulumi.*.yaml"):
        shutil.copy2(stack_file, directory / stack_file.name)
    # Pulumi.yaml names the virtualenv `venv` relative to the project: the one the tests run in.
    (directory / "venv").symlink_to(venv.resolve())
    project = PulumiProject(binary=binary, directory=directory, home=workdir / "pulumi-home",
                            state=workdir / "state")
    project.state.mkdir()
    project.must("login", f"file://{project.state}")
    return project
