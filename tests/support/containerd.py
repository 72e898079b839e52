"""containerd (Debian's), started by a test on its own sockets and directories, as the kubelet's runtime pulls.

``containerd`` is a pytest fixture (import it into the test module); ``ctr(socket, ...)`` runs containerd's own
client against it in the ``k8s.io`` namespace, where a kubelet's images live.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from .processes import start_process


@pytest.fixture
def containerd(tmp_path):
    """containerd (Debian) on its own sockets and directories, its CRI plugin off; stopped by its pid."""
    base = tmp_path / "containerd"
    base.mkdir()
    socket = base / "containerd.sock"
    (base / "config.toml").write_text(
        "version = 2\n"
        f'root = "{base / "root"}"\nstate = "{base / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{base / "ttrpc.sock"}"\n'
        '[debug]\n  address = ""\n[metrics]\n  address = ""\n')
    process = start_process("containerd", ["containerd", "--config", str(base / "config.toml")], base / "log",
                            env={"PATH": os.environ.get("PATH", "")})
    deadline = time.monotonic() + 30
    while not socket.exists():
        assert process.alive(), (base / "log").read_text()[-2000:]
        assert time.monotonic() < deadline, "containerd did not start"
        time.sleep(0.1)
    yield str(socket)
    process.stop(timeout=10)


def ctr(socket: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "-a", socket, "-n", "k8s.io", *args], capture_output=True, text=True, timeout=180,
                          env={"PATH": os.environ.get("PATH", "")})
