"""The garbage-collection script against the real peers: a Kubernetes control plane, Consul and the registry.

Staging's recorded plan (htpasswd variant, so the test's robot may push without a token server) is applied for
real: its manifests to kube-apiserver v1.35.4 with its controller manager, its Consul objects to Consul 1.14.4
(ACLs default deny; the platform's Kubernetes auth method pointed at this API server), its Vault objects to
OpenBao. The script then runs as the Job's container would, with the real `kubectl` holding the `registry-gc`
service account's own token, the real `consul` logging in through that auth method (Consul checks the token with
the API server's TokenReview), real curl, and the config-cli stand-in reading this Consul over HTTP.

What no peer can run here is a kubelet: the harness plays it. Each pod object the StatefulSet controller creates
becomes a registry process, started by the config-cli stand-in from this Consul at that moment, and is reported
Ready once it serves; a deleted pod's process is stopped. A pod without a node is deleted at once, and the real
StatefulSet controller creates its replacement (a new uid), exactly what the script waits for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from components.names import GC_NAME, READONLY_OFF, READONLY_ON, readonly_kv_key
from offline_plan.render import write_plan
from tests.support.config_cli import consul_tree, load_tree
from tests.support.consul_agent import apply_recorded_consul, ensure_kubernetes_auth_method, start_consul
from tests.support.kube_cluster import NAMESPACE, KubeCluster, start_kube_cluster
from tests.support.oci import OciClient, RegistryError, make_image
from tests.support.processes import LOOPBACK, free_port
from tests.support.registry_server import RunningRegistry, start_registry
from tests.support.stack_fixtures import VARIANTS
from tests.support.stack_registry import StackSetup, prepare_stack

pytest_plugins = ["tests.support.fixtures", "tests.support.peer_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "components" / "scripts" / "registry-gc.sh"
STACK = "staging"
AUTH_METHOD_REVIEWER = "consul-auth-reviewer"


class Kubelet:
    """Plays the kubelet for the StatefulSet's pods: a registry process per pod object, Ready once it serves."""

    def __init__(self, cluster: KubeCluster, setup: StackSetup, consul_url: str, consul_token: str, binary: str,
                 workdir: Path):
        self.cluster, self.setup, self.binary, self.workdir = cluster, setup, binary, workdir
        self.consul_url, self.consul_token = consul_url, consul_token
        self.running: dict[str, tuple[str, RunningRegistry]] = {}  # pod name -> (uid, its registry)
        self.started: list[tuple[str, str, str]] = []  # (pod, uid, REGISTRY_STORAGE_MAINTENANCE_READONLY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._errors: list[str] = []

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
        for _, registry in self.running.values():
            registry.stop()

    def _pods(self) -> dict[str, str]:
        listed = self.cluster.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app.kubernetes.io/component=registry")
        return {p["metadata"]["name"]: p["metadata"]["uid"] for p in listed["items"]
                if not p["metadata"].get("deletionTimestamp")}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self._pods()
                for name, (uid, registry) in list(self.running.items()):
                    if pods.get(name) != uid:
                        registry.stop()
                        del self.running[name]
                for name, uid in pods.items():
                    if name not in self.running:
                        self._start(name, uid)
            except Exception as exc:  # reported by the test, which fails on any
                self._errors.append(repr(exc)[:500])
            time.sleep(0.2)

    def _start(self, name: str, uid: str) -> None:
        tree = consul_tree(self.consul_url, f"registry/{STACK}/", self.consul_token)
        loaded = load_tree(tree, self.setup.vault, self.workdir / f"{name}-{uid[:8]}")
        environment = self.setup.environment_for_test(loaded)
        registry = start_registry(self.binary, environment, self.workdir, name=f"{name}-{uid[:8]}")
        self.running[name] = (uid, registry)
        self.started.append((name, uid, environment["REGISTRY_STORAGE_MAINTENANCE_READONLY"]))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"status": {"phase": "Running", "podIP": LOOPBACK, "startTime": now, "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]}}
        self.cluster.kubectl("patch", "-n", NAMESPACE, f"pod/{name}", "--subresource=status", "--type=merge",
                             "-p", json.dumps(status))

    def registry(self, name: str) -> RunningRegistry:
        assert not self._errors, self._errors
        return self.running[name][1]

    def wait_ready(self, name: str, timeout: float = 60) -> RunningRegistry:
        deadline = time.monotonic() + timeout
        while name not in self.running:
            assert not self._errors, self._errors
            assert time.monotonic() < deadline, f"{name} never started"
            time.sleep(0.1)
        return self.running[name][1]


def service_account_token(cluster: KubeCluster, account: str, namespace: str = NAMESPACE) -> str:
    return cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()


@pytest.fixture
def peers(kube_binaries, consul_binary, registry_binary, tmp_path):
    setup = prepare_stack(STACK, None, tmp_path / "stack", extra_overrides=VARIANTS["htpasswd"])
    crd_dir = next(Path(path) for name, path in kube_binaries.items() if name.startswith("kube-crds-"))
    cluster = start_kube_cluster(kube_binaries, sorted(crd_dir.glob("*.yaml")), tmp_path / "kube")
    consul = start_consul(consul_binary, tmp_path / "consul")
    try:
        manifests = write_plan(setup.plan, tmp_path / "build") / "kubernetes"
        cluster.kubectl("apply", "--server-side", "--field-manager=pulumi", "--validate=strict", "-f", str(manifests))
        # The platform's prerequisites: a token reviewer for Consul's Kubernetes auth method, and the method.
        cluster.kubectl("create", "serviceaccount", AUTH_METHOD_REVIEWER, "-n", "kube-system")
        cluster.kubectl("create", "clusterrolebinding", AUTH_METHOD_REVIEWER, "--clusterrole=system:auth-delegator",
                        f"--serviceaccount=kube-system:{AUTH_METHOD_REVIEWER}")
        # Consul also reads the account's annotations (as consul-k8s's own reviewer role allows).
        cluster.kubectl("create", "clusterrole", f"{AUTH_METHOD_REVIEWER}-read", "--verb=get",
                        "--resource=serviceaccounts")
        cluster.kubectl("create", "clusterrolebinding", f"{AUTH_METHOD_REVIEWER}-read",
                        f"--clusterrole={AUTH_METHOD_REVIEWER}-read", f"--serviceaccount=kube-system:{AUTH_METHOD_REVIEWER}")
        method = setup.plan.one("consul:index/aclBindingRule:AclBindingRule", "registry-consul-gc-binding-rule"
                                ).plain_inputs["authMethod"]
        ensure_kubernetes_auth_method(consul, method, host=cluster.url, ca_pem=cluster.ca_file.read_text(),
                                      reviewer_jwt=service_account_token(cluster, AUTH_METHOD_REVIEWER, "kube-system"))
        apply_recorded_consul(consul, setup.plan)
        yield setup, cluster, consul, method
    finally:
        consul.stop()
        cluster.stop()
        setup.close()


def registry_consul_token(consul) -> str:
    return consul.call("PUT", "/acl/token", json={"Roles": [{"Name": f"registry-{STACK}"}]})["SecretID"]


def kv_value(consul, key: str) -> str | None:
    answer = consul.request("GET", f"/kv/{key}?raw=true", token=consul.management_token)
    return answer.text if answer.status_code == 200 else None


def script_environment(setup: StackSetup, cluster: KubeCluster, consul, method: str, registry_binary: str,
                       tmp_path: Path, data_root: str) -> tuple[dict[str, str], Path, Path]:
    """What the CronJob's container has, with the real tools first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "registry").symlink_to(registry_binary)
    (bin_dir / "consul").symlink_to(consul.process.argv[0])
    token = tmp_path / "service-account-token"
    token.write_text(service_account_token(cluster, GC_NAME))
    kubeconfig = tmp_path / "kubeconfig-registry-gc"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gc",
        "clusters": [{"name": "c", "cluster": {"server": cluster.url, "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": GC_NAME, "user": {"tokenFile": str(token)}}],
        "contexts": [{"name": "gc", "context": {"cluster": "c", "user": GC_NAME, "namespace": NAMESPACE}}],
    }))
    replica_port = free_port()
    vault_token = setup.vault.token
    harness = {
        "CONFIG_CLI_TEST_REGISTRY_BINARY": registry_binary,
        "CONFIG_CLI_TEST_CONFIG_FILE": str(tmp_path / "config.yml"),
        "CONFIG_CLI_TEST_RUN_DIRECTORY": str(tmp_path / "job-replica"),
        "CONFIG_CLI_TEST_OVERRIDES": json.dumps({"REGISTRY_HTTP_ADDR": f"{LOOPBACK}:{replica_port}",
                                                 "REGISTRY_HTTP_DEBUG_ADDR": None,
                                                 "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": data_root}),
        "PYTHONPATH": str(ROOT),
    }
    (tmp_path / "config.yml").write_text("version: 0.1\n")
    stub = bin_dir / "config-cli"
    stub.write_text("#!/bin/sh\n" + "".join(f"export {k}='{v}'\n" for k, v in harness.items())
                    + f'exec "{sys.executable}" -m tests.support.config_cli "$@"\n')
    stub.chmod(0o755)
    pod_env = {e["name"]: e.get("value") for e in _gc_container(setup)["env"]}
    keep = ("NAMESPACE", "STATEFULSET", "READONLY_KV_KEY", "GC_CONSUL_LOGIN_METHOD", "GC_DELETE_UNTAGGED",
            "CONFIG_CLI_KV_PREFIX", "CONFIG_CLI_ENVIRONMENT", "CONFIG_CLI_SERVICE_NAME")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_", "http_", "https_", "HTTP_",
                                                                    "HTTPS_", "ALL_", "all_", "CONSUL_", "VAULT_"))},
        **{k: pod_env[k] for k in keep},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KUBECONFIG": str(kubeconfig),
        "HOME": str(tmp_path),
        "CONSUL_HTTP_ADDR": consul.url,
        "VAULT_ADDR": setup.vault.url, "VAULT_TOKEN": vault_token,
        "GC_SERVICE_ACCOUNT_TOKEN": str(token),
        "GC_CONFIG_FILE": str(tmp_path / "config.yml"),
        "GC_REPLICA_URL": f"http://{LOOPBACK}:{replica_port}",
        "GC_DRAIN_MARKER": str(tmp_path / "draining"),
        "GC_SETTLE_SECONDS": "1", "GC_POLL_SECONDS": "0.2", "GC_POD_TIMEOUT_SECONDS": "60",
        "REGISTRY_STORAGE": "filesystem", "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": data_root,
    }
    assert pod_env["GC_CONSUL_LOGIN_METHOD"] == method
    paused, resume = tmp_path / "gc-paused", tmp_path / "gc-resume"
    collector = tmp_path / "collect.sh"
    collector.write_text(f'#!/bin/sh\ntouch "{paused}"\nwhile [ ! -e "{resume}" ]; do sleep 0.05; done\n'
                         'exec registry garbage-collect "$GC_CONFIG_FILE"\n')
    collector.chmod(0o755)
    env["GC_COLLECT_COMMAND"] = str(collector)
    return env, paused, resume


def _gc_container(setup: StackSetup) -> dict:
    cron_job = next(r.plain_inputs for r in setup.plan.of_type("kubernetes:batch/v1:CronJob")
                    if r.plain_inputs["metadata"]["name"] == GC_NAME)
    return cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def push_status(client: OciClient) -> int:
    try:
        client.push_image("team/during-gc", make_image(os.urandom(1024)), tag="v1")
        return 201
    except RegistryError as exc:
        return exc.status


def test_gc_flips_read_only_through_consul_and_restarts_pods_through_the_api_server(peers, registry_binary, tmp_path):
    setup, cluster, consul, method = peers
    user = setup.users("push")[0]
    with Kubelet(cluster, setup, consul.url, registry_consul_token(consul), registry_binary, tmp_path / "pods") as kubelet:
        registry = kubelet.wait_ready("registry-0")
        data_root = registry.env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]
        client = OciClient(registry.base_url, user, setup.accounts[user].password)
        image = make_image(os.urandom(4096))
        client.push_image("team/app", image, tag="v1")
        first_uid = kubelet.running["registry-0"][0]

        env, paused, resume = script_environment(setup, cluster, consul, method, registry_binary, tmp_path, data_root)
        run = subprocess.Popen(["sh", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not paused.exists():
                assert run.poll() is None, run.stdout.read()
                assert time.monotonic() < deadline, "the collection never started"
                time.sleep(0.1)
            # The window: the key the registry reads is on, and registry-0 was replaced (new uid) read-only.
            assert kv_value(consul, readonly_kv_key(STACK)) == READONLY_ON
            uid, during = kubelet.running["registry-0"]
            assert uid != first_uid
            reader = OciClient(during.base_url, user, setup.accounts[user].password)
            assert push_status(reader) == 405
            assert reader.pull_image("team/app", "v1").manifest.data == image.manifest.data
            resume.touch()
            output, _ = run.communicate(timeout=180)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, 9)
        assert run.returncode == 0, output
        assert "read-only window closed: write mode restored on every replica" in output
        assert kv_value(consul, readonly_kv_key(STACK)) == READONLY_OFF
        after = kubelet.wait_ready("registry-0")
        assert [ro for pod, _, ro in kubelet.started if pod == "registry-0"] == [READONLY_OFF, READONLY_ON, READONLY_OFF]
        assert push_status(OciClient(after.base_url, user, setup.accounts[user].password)) == 201
