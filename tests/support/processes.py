"""Start, wait for and stop local helper processes (registry, moto, OpenBao) on 127.0.0.1.

Every process is started in its own session with stdout+stderr going to a log file, so that a failure can be
reported with the log tail and the process can be stopped by its own pid without touching anything else.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import requests

LOOPBACK = "127.0.0.1"

# Variables that would send the child's traffic somewhere other than 127.0.0.1, or (AWS_CA_BUNDLE) make the
# registry's S3 driver panic at start with LoadCustomCABundleError.
PROXY_VARIABLES = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy",
)


class ProcessStartError(RuntimeError):
    """A helper process exited early or did not become ready in time."""



def executable_beside_python(name: str, install_hint: str) -> str:
    """A console script installed with this interpreter's packages (the venv's bin/), else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to the Python interpreter or on PATH ({install_hint})")
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def log_tail(path: Path | str, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:  # pragma: no cover - only when the log vanished
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def failure(self, message: str) -> ProcessStartError:
        return ProcessStartError(
            f"{self.name} (pid {self.pid}, argv {self.argv}): {message}\n"
            f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self, timeout=timeout)


def clean_env(env: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None,
              drop: Sequence[str] = ()) -> dict[str, str]:
    """Build a child environment: `base` (default os.environ) minus proxies and `drop`, plus `env`."""
    result = dict(os.environ if base is None else base)
    for key in (*PROXY_VARIABLES, *drop):
        result.pop(key, None)
    result.update(env or {})
    return result


def start_process(name: str, argv: Sequence[str], log_path: Path | str, *, env: Mapping[str, str] | None = None,
                  cwd: Path | str | None = None) -> ManagedProcess:
    """Start argv with stdout/stderr appended to log_path; `env` is the complete environment if given."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path, argv=list(argv))


def wait_for_port(proc: ManagedProcess, port: int, host: str = LOOPBACK, timeout: float = 30.0) -> None:
    """Wait until host:port accepts TCP connections; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise proc.failure(f"exited with code {proc.popen.returncode} before {host}:{port} accepted connections")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise proc.failure(f"{host}:{port} did not accept connections within {timeout:.0f}s")
        time.sleep(0.05)


def wait_for_http(proc: ManagedProcess, url: str, timeout: float = 30.0,
                  ok_statuses: Sequence[int] | None = None) -> requests.Response:
    """Wait until url answers over HTTP (any status, or one of ok_statuses); return that response."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    session = requests.Session()
    session.trust_env = False  # never route loopback checks through a proxy
    while True:
        if not proc.alive():
            raise proc.failure(f"exited with code {proc.popen.returncode} before {url} answered ({last})")
        try:
            resp = session.get(url, timeout=1.0)
            if ok_statuses is None or resp.status_code in ok_statuses:
                return resp
            last = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise proc.failure(f"{url} did not answer as expected within {timeout:.0f}s (last: {last})")
        time.sleep(0.05)


def stop_process(proc: ManagedProcess, timeout: float = 15.0) -> int:
    """SIGTERM the process by its own pid, wait up to `timeout`, then SIGKILL. Return the exit code.

    The exit code follows subprocess conventions: negative means killed by that signal (e.g. -9 after SIGKILL).
    """
    if proc.popen.poll() is not None:
        return proc.popen.returncode
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.popen.wait(timeout=10)
