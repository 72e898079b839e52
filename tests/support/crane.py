"""crane (go-containerregistry), a real registry client, built once by scripts/go-install.sh.

``build_crane()`` returns the binary's path (a test module wraps it in a session fixture); ``Crane`` runs it
with its own DOCKER_CONFIG holding one identity's credentials, as CI has them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CRANE_MODULE = "github.com/google/go-containerregistry/cmd/crane"
CRANE_VERSION = "v0.22.1"


def build_crane() -> str:
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts/go-install.sh"), "crane", CRANE_MODULE, CRANE_VERSION],
                            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.fail(f"building crane failed:\n{result.stderr[-4000:]}", pytrace=False)
    return result.stdout.strip().splitlines()[-1]


def basic_auth(user: str, password: str) -> dict:
    """A config.json ``auths`` entry with Basic credentials."""
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


class Crane:
    """crane with its own DOCKER_CONFIG holding one identity's credentials for one registry host."""

    def __init__(self, binary: str, registry_host: str, home: Path, auth: dict):
        self.binary, self.host = binary, registry_host
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.json").write_text(json.dumps({"auths": {registry_host: auth}}))
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "DOCKER_CONFIG": str(home)}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([self.binary, *args, "--insecure"], env=self.env, capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, f"crane {' '.join(args)} failed: {result.stderr[-2000:]}"
        return result

    def ref(self, repository: str) -> str:
        return f"{self.host}/{repository}"


def layer_tarball(directory: Path, content: bytes, name: str = "hello.txt") -> Path:
    """A gzipped layer holding one file, for ``crane append -f``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    path = directory / f"layer-{len(content)}-{abs(hash(content)) % 10**8}.tar.gz"
    path.write_bytes(buffer.getvalue())
    return path
