"""pytest plugin: one fixture per real peer (Consul, a Kubernetes API server, the Pulumi CLI).

Use from a test module with ``pytest_plugins = ["tests.support.peer_fixtures"]``. Each peer is built once by
its install script (cached; see docs/peers.md) and each server runs on 127.0.0.1 on free ports, stopped by its
own pid at teardown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .consul_agent import ConsulAgent, start_consul
from .kube_cluster import KubeCluster, start_kube_cluster
from .peers import installed_binaries
from .pulumi_cli import PulumiProject, scratch_project


@pytest.fixture(scope="session")
def consul_binary() -> str:
    return installed_binaries("install-consul.sh")["consul"]


@pytest.fixture
def consul_agent(consul_binary: str, tmp_path: Path) -> Iterator[ConsulAgent]:
    """A fresh Consul 1.14.4 dev agent, ACLs on with default deny; ``.management_token`` holds every right."""
    agent = start_consul(consul_binary, tmp_path / "consul")
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def kube_binaries() -> dict[str, str]:
    return installed_binaries("install-kube.sh")


@pytest.fixture(scope="session", params=("staging", "prod"))
def kube_cluster(request, kube_binaries: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[KubeCluster]:
    """A control plane of its own per stack (``.stack``): etcd, kube-apiserver, kube-controller-manager."""
    crd_dir = next(Path(path) for name, path in kube_binaries.items() if name.startswith("kube-crds-"))
    cluster = start_kube_cluster(kube_binaries, sorted(crd_dir.glob("*.yaml")),
                                 tmp_path_factory.mktemp(f"kube-{request.param}"))
    cluster.stack = request.param
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pulumi_binary() -> str:
    return installed_binaries("install-pulumi.sh")["pulumi"]


@pytest.fixture
def pulumi_project(pulumi_binary: str, tmp_path: Path) -> PulumiProject:
    """A scratch copy of the project with the real Pulumi CLI logged in to a file backend inside it."""
    return scratch_project(pulumi_binary, tmp_path)


@pytest.fixture(scope="session")
def pulumi_kubernetes_binary() -> str:
    """The real kubernetes provider (tag v4.25.0), built by scripts/install-pulumi-kubernetes.sh."""
    return installed_binaries("install-pulumi-kubernetes.sh")["pulumi-resource-kubernetes"]
