"""Test-only doubles that let the real Pulumi engine (the CLI built by scripts/install-pulumi.sh) run the program.

Nothing here is used outside tests/. The engine itself, its dependency graph, its config handling and its
loading of the policy pack are real; what is replaced is what cannot be built here:

- ``language_host.py``: a Python language host (``pulumi-language-python`` is not served by the Go module
  proxy). It speaks the engine's LanguageRuntime protocol from the Python SDK's own gRPC definitions, runs
  ``__main__.py`` in the project's virtualenv connected to the engine's resource monitor, and runs the policy
  pack (``RunPlugin``) with the virtualenv its PulumiPolicy.yaml names, refusing a missing one as the real host
  does.
- ``echo_provider.py``: one resource provider per package (aws, vault, consul, random, kubernetes) that accepts
  every input and echoes it back as outputs, recording what the engine sent. The Terraform-bridged providers
  cannot be built here; so no provider-side validation (a provider's own schema checks) is covered.

``install_engine_doubles(bin_dir)`` writes the executables the engine looks up on PATH. The real kubernetes
provider can take the place of its echo provider: it renders YAML (``kubernetes:renderYamlToDirectory``) or
applies to the API server of tests/support/kube_cluster.py.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The packages the program's resources come from; each gets an echo provider.
ECHO_PACKAGES = ("aws", "vault", "consul", "random", "kubernetes")


def _write_executable(path: Path, python: str, script: Path, *args: str) -> None:
    path.write_text(f"#!/bin/sh\nexec {python} {script} {' '.join(args)} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install_engine_doubles(bin_dir: Path, record_dir: Path, python: str = sys.executable,
                           real_providers: dict[str, str] | None = None) -> Path:
    """Write pulumi-language-python and pulumi-resource-<pkg> into bin_dir; providers record into record_dir.

    ``real_providers`` maps a package to a real provider binary used instead of its echo provider (the
    kubernetes provider, built by scripts/install-pulumi-kubernetes.sh)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record_dir.mkdir(parents=True, exist_ok=True)
    _write_executable(bin_dir / "pulumi-language-python", python, HERE / "language_host.py")
    for package in ECHO_PACKAGES:
        target = bin_dir / f"pulumi-resource-{package}"
        if package in (real_providers or {}):
            target.symlink_to(real_providers[package])
        else:
            _write_executable(target, python, HERE / "echo_provider.py", package, os.fspath(record_dir))
    return bin_dir
