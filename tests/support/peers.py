"""Build (once, cached) and locate the real peers: the Pulumi CLI, Consul, kube-apiserver and its controllers.

Each peer has one install script under scripts/ that builds it from the Go module proxy into
``~/.cache/registry-iac/<name>-<version>/bin`` and prints the binaries' paths. A test that needs a peer fails
(never skips) when its build fails: CI must not go green because a peer was missing.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Cold builds take minutes each on 2 busy cores (measured figures in docs/peers.md).
BUILD_TIMEOUT = 3600


def installed_binaries(script: str) -> dict[str, str]:
    """Run scripts/<script> and return {basename: path} of the executables (and directories) it printed."""
    path = REPO_ROOT / "scripts" / script
    started = time.monotonic()
    result = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.fail(f"{path} failed with exit code {result.returncode} after {time.monotonic() - started:.0f}s\n"
                    f"--- build log (stderr) ---\n{result.stderr[-8000:]}\n--- stdout ---\n{result.stdout[-2000:]}",
                    pytrace=False)
    binaries = {}
    for line in result.stdout.split():
        if not os.access(line, os.X_OK):
            pytest.fail(f"{path} printed {line!r}, not an executable or a directory\n{result.stderr[-4000:]}", pytrace=False)
        binaries[Path(line).name] = line
    if not binaries:
        pytest.fail(f"{path} printed no binary path\n{result.stderr[-4000:]}", pytrace=False)
    return binaries
