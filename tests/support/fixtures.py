"""pytest plugin: real registry (Distribution v3.1.1), moto and OpenBao processes on 127.0.0.1.

Use from a test module with `pytest_plugins = ["tests.support.fixtures"]`.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator, Mapping

import pytest

from .moto_server import MotoServer, start_moto_server
from .openbao import OpenBao, start_openbao
from .registry_server import RunningRegistry, start_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-registry.sh"


@pytest.fixture(scope="session")
def registry_binary() -> str:
    """Path of the registry binary, built by scripts/install-registry.sh on first use (never skipped)."""
    started = time.monotonic()
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1800,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.fail(f"{INSTALL_SCRIPT} failed with exit code {result.returncode} after "
                    f"{time.monotonic() - started:.0f}s\n--- build log (stderr) ---\n{result.stderr[-8000:]}"
                    f"\n--- stdout ---\n{result.stdout[-2000:]}", pytrace=False)
    binary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail(f"{INSTALL_SCRIPT} printed {result.stdout!r}, not an executable path\n{result.stderr[-4000:]}",
                    pytrace=False)
    return binary


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server (S3, IAM, ...) without IAM enforcement, shared by the session."""
    server = start_moto_server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """OpenBao dev server (root token `root`), shared by the session."""
    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    yield server
    server.stop()


class RegistryFactory:
    """Starts registries from REGISTRY_* env mappings; teardown stops them and checks each exited cleanly."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.started: list[tuple[RunningRegistry, int | None]] = []

    def __call__(self, env: Mapping[str, str], *, name: str | None = None, expected_exit: int | None = 0,
                 timeout: float = 30.0, add_debug_addr: bool = True) -> RunningRegistry:
        """Start a registry; expected_exit=None disables the clean-exit check at teardown for this one."""
        name = name or f"registry{len(self.started) + 1}"
        registry = start_registry(self.binary, env, self.workdir / name, name=name, timeout=timeout,
                                  add_debug_addr=add_debug_addr)
        self.started.append((registry, expected_exit))
        return registry

    def stop_all(self) -> list[str]:
        problems = []
        for registry, expected in self.started:
            code = registry.stop()
            if expected is not None and code != expected:
                problems.append(f"{registry.process.name} (pid {registry.pid}) exited {code}, expected {expected}"
                                f" after SIGTERM\n--- {registry.log_path} ---\n{registry.log_tail(30)}")
        return problems


@pytest.fixture
def registry_factory(registry_binary: str, tmp_path: Path) -> Iterator[RegistryFactory]:
    """`registry_factory(env, name=None, expected_exit=0) -> RunningRegistry`; all are stopped at teardown."""
    factory = RegistryFactory(registry_binary, tmp_path)
    yield factory
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
