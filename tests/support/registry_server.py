"""Run a real CNCF Distribution registry configured the way the deployed container is: by REGISTRY_* env only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .processes import (LOOPBACK, ManagedProcess, clean_env, free_port, log_tail, start_process,
                        wait_for_http)

# The binary refuses to start without a config file; everything else comes from the environment, exactly as in
# the `registry:3` container where our Pulumi program sets only env vars.
MINIMAL_CONFIG = "version: 0.1\n"

# Removed from the child environment: proxies (traffic must stay on 127.0.0.1) and AWS_CA_BUNDLE (the S3 driver
# panics with LoadCustomCABundleError when it is set). Ambient AWS credentials/profiles are dropped too, so a test
# only ever uses the credentials its env mapping passes.
DROPPED_VARIABLES = (
    "AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
)


@dataclass
class RunningRegistry:
    process: ManagedProcess
    base_url: str
    debug_url: str
    config_path: Path
    env: dict[str, str]

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM by pid (SIGKILL after timeout); returns the exit code (0 = clean graceful shutdown)."""
        return self.process.stop(timeout=timeout)


def start_registry(binary: str | Path, env: Mapping[str, str], workdir: str | Path, *,
                   name: str = "registry", timeout: float = 30.0, add_debug_addr: bool = True,
                   port: int | None = None) -> RunningRegistry:
    """Start `registry serve <config>` with the given REGISTRY_* env and wait until it serves HTTP.

    REGISTRY_HTTP_ADDR and REGISTRY_HTTP_DEBUG_ADDR are replaced by free 127.0.0.1 ports; with
    add_debug_addr=False a debug address absent from `env` stays absent (no debug server), so a test can
    show what its absence does. ``port``: listen there instead (a pod's stable address in the GC harness).
    Readiness means
    the main port answers `GET /` with any HTTP status (200, 401 with auth, 503 if a health check already failed).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}-config.yml"
    config_path.write_text(MINIMAL_CONFIG)

    port, debug_port = port or free_port(), free_port()
    while debug_port == port:
        debug_port = free_port()
    registry_env = dict(env)
    registry_env["REGISTRY_HTTP_ADDR"] = f"{LOOPBACK}:{port}"
    if add_debug_addr or "REGISTRY_HTTP_DEBUG_ADDR" in env:
        registry_env["REGISTRY_HTTP_DEBUG_ADDR"] = f"{LOOPBACK}:{debug_port}"

    child_env = clean_env(registry_env, drop=DROPPED_VARIABLES)
    # Never inherit stray REGISTRY_* settings from the test runner's own environment.
    for key in list(child_env):
        if key.startswith("REGISTRY_") and key not in registry_env:
            del child_env[key]

    proc = start_process(name, [str(binary), "serve", str(config_path)], workdir / f"{name}.log",
                         env=child_env, cwd=workdir)
    base_url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for_http(proc, base_url + "/", timeout=timeout)
    except Exception:
        proc.stop(timeout=5)
        raise
    return RunningRegistry(process=proc, base_url=base_url, debug_url=f"http://{LOOPBACK}:{debug_port}",
                           config_path=config_path, env=registry_env)


def write_htpasswd(path: str | Path, users: Mapping[str, str], rounds: int = 10) -> Path:
    """Write an htpasswd file with bcrypt hashes (the only scheme the registry's htpasswd auth accepts)."""
    import bcrypt

    path = Path(path)
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds)).decode()}" for user, pw in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
