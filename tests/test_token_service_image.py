"""The token service's image: what its Dockerfile installs runs on its own, as a non-root user, with no secret.

No container runtime runs here, so the image's build is replayed: a fresh virtualenv gets exactly the
Dockerfile's ``pip install --no-deps -r requirements-token.txt``, and the service is started from a copy
of ``token_service/`` alone, away from the repository (no Pulumi SDK, no ``components`` on the path).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from token_service import contract as c

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "token_service" / "Dockerfile"
REQUIREMENTS = REPO_ROOT / "requirements-token.txt"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def test_the_image_runs_as_a_numeric_non_root_user():
    users = [arg for op, arg in _instructions() if op == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, users[-1]


def test_the_image_bakes_in_no_secret_and_copies_only_the_service():
    for op, arg in _instructions():
        if op in ("ENV", "ARG"):
            assert not re.search(r"(?i)token|password|secret|private|key", arg.split("=")[0]), (op, arg)
            assert c.ENV_VAULT_TOKEN not in arg
        if op == "COPY" and "--from=" not in arg:
            sources = arg.split()[:-1]
            assert set(sources) <= {"requirements-token.txt", "token_service/"}, arg
    ignore = [line for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context must start from nothing and admit only what the image needs"


def test_every_image_requirement_is_pinned():
    lines = [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    unpinned = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", line)]
    assert lines and not unpinned, unpinned


@pytest.fixture(scope="module")
def image_environment(tmp_path_factory) -> tuple[Path, Path]:
    """The image's /opt/token-service: a virtualenv with the pinned packages, the service beside it."""
    root = tmp_path_factory.mktemp("image")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-deps", "-r", str(REQUIREMENTS)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"requirements-token.txt misses a dependency:\n{check.stdout}{check.stderr}"
    app = root / "app"
    shutil.copytree(REPO_ROOT / "token_service", app / "token_service",
                    ignore=shutil.ignore_patterns("__pycache__", "Dockerfile*"))
    return python, app


def test_the_service_starts_from_the_image_contents_alone(image_environment):
    python, app = image_environment
    imported = subprocess.run([str(python), "-c", "import token_service.app, token_service.keys, sys; "
                               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'components')))"],
                              cwd=app, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert imported.stdout.strip() == "[]"
    # Without its settings it stops with one line naming the first missing one, as in a misconfigured pod.
    started = subprocess.run([str(python), "-m", "token_service"], cwd=app, capture_output=True, text=True,
                             timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert started.returncode == 2
    assert started.stderr.strip() == (f"token-service: {c.ENV_ISSUER}: (not set) is not allowed; the tokens' issuer "
                                      "(REGISTRY_AUTH_TOKEN_ISSUER) is required")


def test_the_docs_describe_every_setting():
    docs = (REPO_ROOT / "docs" / "token-service.md").read_text()
    missing = [name for name in c.SETTING_NAMES if f"`{name}`" not in docs]
    assert not missing, f"docs/token-service.md does not describe {missing}"
