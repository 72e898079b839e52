"""One stack's garbage collection against the real peers: the harness of tests/test_operations_gc.py.

``start_gc_peers(stack, ...)`` records the stack's plan as it is (token auth through the project's token service,
its storage: a volume directory for staging, S3 on moto with the plan's IAM policy enforced for prod) and applies
it for real: its manifests to kube-apiserver v1.35.4 with its controller manager, its Consul objects to Consul
1.14.4 (ACLs default deny; the platform's Kubernetes auth method pointed at this API server), its Vault objects
to OpenBao. The CronJobs are suspended, so only the tests start Jobs (``GcPeers.start_job``: a Job made from the
``registry-gc`` CronJob, as ``kubectl create job --from`` does).

The pods then run under the harness of tests/support/kubelet.py:

- a StatefulSet pod is a registry process started by the config-cli stand-in from this Consul (with the
  registry's own Consul token and a Vault login holding the registry's policy) at the moment the pod starts,
  listening on a port that stays the pod's own across its incarnations;
- the Job's pod is ``registry-gc.sh`` itself, run as its container runs it: the pod's own environment (as the
  Job controller created the pod from the CronJob), the real ``kubectl`` holding the ``registry-gc`` service
  account's token, the real ``consul`` logging in through the Kubernetes auth method (Consul checks the token
  with the API server's TokenReview), real curl and ``registry garbage-collect``; its readiness is its probe's
  command (no drain marker, and the replica answers ``GET /``);
- clients reach the registry through ``GcPeers.proxy``: kube-proxy for the ``registry`` Service, from the
  EndpointSlices the real controller writes.

What differs from the cluster, each a harness matter: the paths in the container (the drain marker, the config
file, the replica's port) are temporary ones, ``GC_SETTLE_SECONDS``/``GC_POLL_SECONDS`` are shortened
(``SCRIPT_TIMINGS``), the sidecar's shutdown URL is dropped (no mesh runs), and Vault's Kubernetes login is a
token holding the policy that login grants (tests/support/stack_registry.py).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import requests
import yaml

from components.names import GC_COMPONENT, GC_NAME, READONLY_VARIABLE
from offline_plan.render import write_plan

from .config_cli import consul_tree, load_tree
from .consul_agent import ConsulAgent, apply_recorded_consul, ensure_kubernetes_auth_method, start_consul
from .kube_cluster import NAMESPACE, KubeCluster, grant_token_review, service_account_token, start_kube_cluster
from .kubelet import Kubelet, PodRecord, ServiceProxy, eventually
from .moto_server import MotoServer, start_moto_server
from .oci import OciClient
from .processes import LOOPBACK, PROXY_VARIABLES, free_port
from .registry_server import MINIMAL_CONFIG, RunningRegistry, start_registry
from .stack_registry import S3_SETUP_ACTIONS, FilesystemBackend, StackSetup, prepare_stack
from .token_client import RegistryTokenAuth

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPOSITORY_ROOT / "components" / "scripts" / "registry-gc.sh"
AUTH_METHOD_REVIEWER = "consul-auth-reviewer"
REGISTRY_COMPONENT = "registry"
# The script's waits, shortened: the settle stands for the mesh's and every node's kube-proxy propagation in the
# cluster (15 s by default). Here the Service follows the EndpointSlices within one watch event, but the real
# EndpointSlice controller itself took more than 2 s at times in a full run (its stale-cache requeues after
# quick readiness flips): pulls then reached the Job's replica after it stopped. 5 s, as the pods' preStop.
SCRIPT_TIMINGS = {"GC_SETTLE_SECONDS": "5", "GC_POLL_SECONDS": "0.2", "GC_POD_TIMEOUT_SECONDS": "180"}
# The registry pods' preStop sleep (5 s) covers endpoint propagation in the cluster, and the harness keeps it
# whole (a 2 s cap raced the EndpointSlice controller as the settle above did); check_drained() shows in every
# test that each pod had left the Service before its SIGTERM.
PRE_STOP_LIMIT_SECONDS = None
# The pod's variables the script's container keeps as the Job controller wrote them.
POD_VARIABLES = ("NAMESPACE", "STATEFULSET", "READONLY_KV_KEY", "GC_CONSUL_LOGIN_METHOD", "GC_DELETE_UNTAGGED",
                 "GC_SERVE_COMMAND", "GC_PROBE_REPOSITORY", "CONFIG_CLI_KV_PREFIX", "CONFIG_CLI_ENVIRONMENT",
                 "CONFIG_CLI_SERVICE_NAME")


# --- the Job's container: registry-gc.sh --------------------------------------------------------------------


@dataclass
class JobSettings:
    """How one test wants its Job's container run (everything else is the pod's own)."""
    collect_command: Optional[str] = None  # GC_COLLECT_COMMAND; None: the script's own `registry garbage-collect`
    config_file: Optional[Path] = None  # GC_CONFIG_FILE; None: a valid one
    consul_login: bool = True  # False: GC_CONSUL_LOGIN_METHOD unset, so the script has no Consul token


class ScriptRun:
    """registry-gc.sh as the Job's container runs it (PID 1 of the pod: SIGTERM goes to it alone, SIGKILL to all);
    its log lines timed."""

    def __init__(self, env: dict[str, str], workdir: Path, replica_port: int, drain_marker: Path):
        self.address = (LOOPBACK, replica_port)
        self.drain_marker = drain_marker
        self.lines: list[tuple[float, str]] = []
        self._http = requests.Session()
        self._http.trust_env = False
        self.process = subprocess.Popen(["sh", str(SCRIPT)], env=env, cwd=workdir, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    # -- as a container ------------------------------------------------------------------------------
    def ready(self) -> bool:
        """The pod's readiness probe: ``test ! -e <drain marker> && curl -fsS http://127.0.0.1:<port>/``."""
        if self.drain_marker.exists():
            return False
        try:
            return self._http.get(f"http://{LOOPBACK}:{self.address[1]}/", timeout=2).status_code < 400
        except requests.RequestException:
            return False

    def exit_code(self) -> Optional[int]:
        return self.process.poll()

    def terminate(self, grace_seconds: float) -> int:
        try:
            os.kill(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait(timeout=10)

    def kill(self) -> None:
        """The container's end: its process group (the script, its replica, its collector)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # -- for the tests -------------------------------------------------------------------------------
    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def time_of(self, text: str) -> float:
        found = [t for t, line in self.lines if text in line]
        assert found, f"no log line with {text!r}:\n{self.log()}"
        return found[0]

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def timeline(self) -> str:
        """The log with each line's seconds since the script started (the log's own times are whole seconds)."""
        start = self.lines[0][0] if self.lines else 0
        return "\n".join(f"{t - start:7.2f} {line}" for t, line in self.lines)


@dataclass
class GcJob:
    name: str
    peers: "GcPeers"
    settings: JobSettings
    run: Optional[ScriptRun] = None
    pod: str = ""

    def script(self, timeout: float = 120) -> ScriptRun:
        """The script, once the harness started the Job's pod."""
        return eventually(f"job {self.name}'s pod to start", lambda: self.run, timeout, check=self.peers.kubelet.check)

    def conditions(self) -> set[str]:
        job = self.peers.kubelet.api.call("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{self.name}")
        return {c["type"] for c in job.get("status", {}).get("conditions") or [] if c["status"] == "True"}

    def wait(self, timeout: float = 300) -> int:
        """The script's exit code, once the Job controller has counted it (the Job is Complete or Failed)."""
        code = self.script().wait(timeout)
        eventually(f"job {self.name} Complete or Failed", lambda: self.conditions() & {"Complete", "Failed"}, 60,
                   check=self.peers.kubelet.check)
        return code

    def wait_for_file(self, path: Path, timeout: float = 240) -> None:
        run = self.script()

        def appeared() -> bool:
            assert run.process.poll() is None, f"script exited {run.process.returncode}:\n{run.log()}"
            return path.exists()
        eventually(f"{path.name} from the job {self.name}", appeared, timeout, check=self.peers.kubelet.check)


# --- the peers -----------------------------------------------------------------------------------------------


@dataclass
class RegistryStart:
    pod: str
    uid: str
    read_only: str  # REGISTRY_STORAGE_MAINTENANCE_READONLY as config-cli loaded it


class RegistryContainer:
    def __init__(self, registry: RunningRegistry, probe_path: str):
        self.registry = registry
        self.address = (LOOPBACK, int(registry.base_url.rsplit(":", 1)[1]))
        self._probe = f"{registry.base_url}{probe_path}"
        self._http = requests.Session()
        self._http.trust_env = False

    def ready(self) -> bool:
        try:
            return 200 <= self._http.get(self._probe, timeout=5).status_code < 400
        except requests.RequestException:
            return False

    def exit_code(self) -> Optional[int]:
        return self.registry.process.popen.poll()

    def terminate(self, grace_seconds: float) -> int:
        return self.registry.stop(timeout=grace_seconds)


@dataclass
class GcPeers:
    stack: str
    setup: StackSetup
    cluster: KubeCluster
    consul: ConsulAgent
    auth_method: str
    registry_binary: str
    workdir: Path
    moto: Optional[MotoServer] = None
    kubelet: Kubelet = field(init=False)
    proxy: ServiceProxy = field(init=False)
    starts: list[RegistryStart] = field(default_factory=list)
    jobs: dict[str, GcJob] = field(default_factory=dict)
    _pod_ports: dict[str, int] = field(default_factory=dict)
    _registry_token: str = ""
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "GcPeers":
        self._registry_token = self.consul.call("PUT", "/acl/token", json={
            "Roles": [{"Name": f"registry-{self.stack}"}]})["SecretID"]
        self.kubelet = Kubelet(self.cluster, NAMESPACE, {REGISTRY_COMPONENT: self._run_registry,
                                                         GC_COMPONENT: self._run_job},
                               pre_stop_limit=PRE_STOP_LIMIT_SECONDS).__enter__()
        self._cleanups.append(lambda: self.kubelet.__exit__(None, None, None))
        self.proxy = ServiceProxy(self.kubelet, self.service_name).__enter__()
        self._cleanups.append(lambda: self.proxy.__exit__(None, None, None))
        for ordinal in range(self.replicas):
            self.kubelet.wait_ready(f"{self.statefulset}-{ordinal}", timeout=180)
        eventually("every replica behind the Service", lambda: self.proxy.ready_pods() == set(self.pod_names()),
                   check=self.kubelet.check)
        return self

    def stop(self) -> None:
        for job in self.jobs.values():
            if job.run is not None:
                job.run.kill()
        for cleanup in reversed(self._cleanups):
            cleanup()
        self.consul.stop()
        self.cluster.stop()
        self.setup.close()
        if self.moto is not None:
            self.moto.stop()

    # -- the plan's names ------------------------------------------------------------------------------
    def _object(self, kind: str, predicate: Callable[[dict], bool] = lambda o: True) -> dict:
        return next(r.plain_inputs for r in self.setup.plan.of_type(f"kubernetes:{kind}") if predicate(r.plain_inputs))

    @property
    def statefulset(self) -> str:
        return self._object("apps/v1:StatefulSet")["metadata"]["name"]

    @property
    def replicas(self) -> int:
        return int(self._object("apps/v1:StatefulSet")["spec"]["replicas"])

    @property
    def service_name(self) -> str:
        """The clients' Service: the one with a cluster IP in front of the StatefulSet's pods."""
        pod_labels = self._object("apps/v1:StatefulSet")["spec"]["template"]["metadata"]["labels"]
        return self._object("core/v1:Service", lambda s: s["spec"].get("clusterIP") != "None" and all(
            pod_labels.get(k) == v for k, v in s["spec"].get("selector", {}).items()))["metadata"]["name"]

    def pod_names(self) -> list[str]:
        return [f"{self.statefulset}-{i}" for i in range(self.replicas)]

    # -- what the pods run -----------------------------------------------------------------------------
    def _run_registry(self, pod: dict) -> RegistryContainer:
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        tree = consul_tree(self.consul.url, f"registry/{self.stack}/", self._registry_token)
        run_dir = self.workdir / "pods" / f"{name}-{uid[:8]}"
        environment = self.setup.environment_for_test(load_tree(tree, self.setup.vault, run_dir))
        port = self._pod_ports.setdefault(name, free_port())
        registry = start_registry(self.registry_binary, environment, run_dir, name=name, port=port, timeout=120)
        self.starts.append(RegistryStart(name, uid, environment[READONLY_VARIABLE]))
        probe = pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        return RegistryContainer(registry, probe["path"])

    def _run_job(self, pod: dict) -> ScriptRun:
        labels = pod["metadata"]["labels"]
        job = self.jobs[labels.get("batch.kubernetes.io/job-name") or labels["job-name"]]
        workdir = self.workdir / "jobs" / job.name
        env, replica_port, drain_marker = self.script_environment(pod, job.settings, workdir)
        job.pod = pod["metadata"]["name"]
        job.run = ScriptRun(env, workdir, replica_port, drain_marker)
        return job.run

    def script_environment(self, pod: dict, settings: JobSettings, workdir: Path) -> tuple[dict[str, str], int, Path]:
        """What the Job's container has, with the real tools first on PATH and this machine's paths."""
        container = pod["spec"]["containers"][0]
        pod_env = {e["name"]: e.get("value") for e in container["env"]}
        replica_url, drain_marker = pod_env["GC_REPLICA_URL"], pod_env["GC_DRAIN_MARKER"]
        probe = " ".join(container["readinessProbe"]["exec"]["command"])
        assert f"test ! -e {drain_marker}" in probe and f"{replica_url}/" in probe, \
            f"the Job pod's readiness probe is not what ScriptRun.ready() does: {probe}"
        workdir.mkdir(parents=True)
        bin_dir = workdir / "bin"
        bin_dir.mkdir()
        (bin_dir / "registry").symlink_to(self.registry_binary)
        (bin_dir / "consul").symlink_to(self.consul.process.argv[0])
        token = workdir / "service-account-token"
        token.write_text(service_account_token(self.cluster, pod["spec"]["serviceAccountName"]))
        kubeconfig = workdir / "kubeconfig"  # what in-cluster config gives kubectl: the pod's own account
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "c", "cluster": {"server": self.cluster.url,
                                                   "certificate-authority": str(self.cluster.ca_file)}}],
            "users": [{"name": "pod", "user": {"tokenFile": str(token)}}],
            "contexts": [{"name": "pod", "context": {"cluster": "c", "user": "pod", "namespace": NAMESPACE}}],
        }))
        replica_port = free_port()
        config_file = workdir / "config.yml"
        config_file.write_text(MINIMAL_CONFIG)
        recorded_env = {k[len("env/"):]: v for k, v in self.setup.kv.items() if k.startswith("env/")}
        storage = self.setup.backend.overrides(recorded_env)
        harness = {
            "CONFIG_CLI_TEST_REGISTRY_BINARY": self.registry_binary,
            "CONFIG_CLI_TEST_CONFIG_FILE": str(config_file),
            "CONFIG_CLI_TEST_RUN_DIRECTORY": str(workdir / "replica"),
            "CONFIG_CLI_TEST_OVERRIDES": json.dumps({"REGISTRY_HTTP_ADDR": f"{LOOPBACK}:{replica_port}",
                                                     "REGISTRY_HTTP_DEBUG_ADDR": None, **storage}),
            "PYTHONPATH": str(REPOSITORY_ROOT),
        }
        stub = bin_dir / "config-cli"
        stub.write_text("#!/bin/sh\n" + "".join(f"export {k}='{v}'\n" for k, v in harness.items())
                        + f'exec "{sys.executable}" -m tests.support.config_cli "$@"\n')
        stub.chmod(0o755)
        collector_storage = {k: v for k, v in pod_env.items() if k.startswith("REGISTRY_STORAGE")}
        collector_storage.update(self.setup.backend.overrides(collector_storage))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith((
                "REGISTRY_", "AWS_", "CONSUL_", "VAULT_", "KUBECONFIG", "GC_")) and k not in PROXY_VARIABLES},
            **{k: pod_env[k] for k in POD_VARIABLES if pod_env.get(k) is not None},
            **collector_storage,
            **SCRIPT_TIMINGS,
            "POD_NAME": pod["metadata"]["name"],  # fieldRef metadata.name
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "KUBECONFIG": str(kubeconfig),
            "HOME": str(workdir),
            "CONSUL_HTTP_ADDR": self.consul.url,
            "VAULT_ADDR": self.setup.vault.url, "VAULT_TOKEN": self.setup.vault.token,
            "GC_SERVICE_ACCOUNT_TOKEN": str(token),
            "GC_CONFIG_FILE": str(settings.config_file or config_file),
            "GC_REPLICA_URL": f"http://{LOOPBACK}:{replica_port}",
            "GC_DRAIN_MARKER": str(workdir / "draining"),
        }
        assert env.get("GC_CONSUL_LOGIN_METHOD") == self.auth_method
        if not settings.consul_login:
            del env["GC_CONSUL_LOGIN_METHOD"]
        if settings.collect_command:
            env["GC_COLLECT_COMMAND"] = settings.collect_command
        return env, replica_port, workdir / "draining"

    # -- what the tests do -----------------------------------------------------------------------------
    def start_job(self, settings: Optional[JobSettings] = None) -> GcJob:
        """A Job from the registry-gc CronJob (``kubectl create job --from=cronjob/...``), run by the harness."""
        name = f"{GC_NAME}-t{len(self.jobs) + 1}"
        job = self.jobs[name] = GcJob(name, self, settings or JobSettings())
        self.cluster.kubectl("create", "job", name, f"--from=cronjob/{GC_NAME}", "-n", NAMESPACE)
        return job

    def check_drained(self) -> None:
        """Every registry pod that was stopped had left the Service before its SIGTERM (so no connection was sent
        to a process that no longer accepts any): the preStop delay covered the endpoint propagation."""
        late = []
        for record in self.kubelet.records:
            if record.sigterm is None or record.name not in self.pod_names():  # the Job's pod has no preStop
                continue
            left = self.proxy.left_at.get(record.ip)
            if left is None or left > record.sigterm:
                late.append(f"{record.name} ({record.ip}): SIGTERM at {record.sigterm:.2f}, left the Service at "
                            f"{left if left is None else round(left, 2)}")
        assert not late, "pods stopped while still behind the Service:\n" + "\n".join(late)

    def registry_starts(self, since: int = 0) -> dict[str, list[str]]:
        """Per pod, the read-only value each start loaded, for the starts after index ``since``."""
        history: dict[str, list[str]] = {}
        for start in self.starts[since:]:
            history.setdefault(start.pod, []).append(start.read_only)
        return history

    def live(self, pod: str) -> PodRecord:
        record = self.kubelet.running(pod)
        assert record is not None, f"{pod} is not running"
        return record

    def client(self, access: str, base_url: Optional[str] = None, **kwargs) -> OciClient:
        """A robot of ``access`` (push, pull) through the Service (or ``base_url``), as the stack authenticates."""
        user = self.setup.users(access)[0]
        client = OciClient(base_url or self.proxy.url, timeout=kwargs.pop("timeout", 30), **kwargs)
        client.session.auth = RegistryTokenAuth(user, self.setup.accounts[user].password)
        return client

    def kv_value(self, key: str) -> Optional[str]:
        answer = self.consul.request("GET", f"/kv/{key}?raw=true")
        return answer.text if answer.status_code == 200 else None

    def wait_for_kv(self, key: str, value: str, timeout: float = 120) -> None:
        """A Consul blocking query on ``key`` until it holds ``value``."""
        deadline, index = time.monotonic() + timeout, 0
        while True:
            answer = self.consul.request("GET", f"/kv/{key}?index={index}&wait=5s")
            if answer.status_code == 200 and base64.b64decode(answer.json()[0]["Value"] or "").decode() == value:
                return
            index = int(answer.headers.get("X-Consul-Index", index))
            assert time.monotonic() < deadline, f"{key} never became {value} (now {self.kv_value(key)!r})"

    def storage_root(self) -> Optional[Path]:
        return self.setup.backend.root if isinstance(self.setup.backend, FilesystemBackend) else None


def start_gc_peers(stack: str, kube_binaries: dict[str, str], consul_binary: str, registry_binary: str,
                   workdir: Path) -> GcPeers:
    """The stack applied to fresh peers, its pods running and Ready behind the Service (see the module docstring)."""
    moto = start_moto_server(workdir / "moto", initial_no_auth_action_count=S3_SETUP_ACTIONS) if stack == "prod" \
        else None
    setup = prepare_stack(stack, None, workdir / "stack", moto=moto)
    crd_dir = next(Path(path) for name, path in kube_binaries.items() if name.startswith("kube-crds-"))
    cluster = start_kube_cluster(kube_binaries, sorted(crd_dir.glob("*.yaml")), workdir / "kube")
    consul = start_consul(consul_binary, workdir / "consul")
    peers = None
    try:
        manifests = write_plan(setup.plan, workdir / "build") / "kubernetes"
        # Namespaces the platform creates (like cicd): those the pull Secrets are handed to.
        for namespace in sorted({(yaml.safe_load(path.read_text())["metadata"].get("namespace") or NAMESPACE)
                                 for path in manifests.glob("*.yaml")} - {NAMESPACE}):
            cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("apply", "--server-side", "--field-manager=pulumi", "--validate=strict", "-f", str(manifests))
        for cron_job in cluster.kubectl("get", "cronjob", "-n", NAMESPACE, "-o", "name").stdout.split():
            cluster.kubectl("patch", "-n", NAMESPACE, cron_job, "--type=merge", "-p", '{"spec":{"suspend":true}}')
        # The platform's prerequisites: a token reviewer for Consul's Kubernetes auth method, and the method.
        reviewer_jwt = grant_token_review(cluster, AUTH_METHOD_REVIEWER, "kube-system")
        method = setup.plan.one("consul:index/aclBindingRule:AclBindingRule", "registry-consul-gc-binding-rule"
                                ).plain_inputs["authMethod"]
        ensure_kubernetes_auth_method(consul, method, host=cluster.url, ca_pem=cluster.ca_file.read_text(),
                                      reviewer_jwt=reviewer_jwt)
        apply_recorded_consul(consul, setup.plan)
        peers = GcPeers(stack, setup, cluster, consul, method, registry_binary, workdir, moto)
        return peers.start()
    except BaseException:
        if peers is not None:
            for cleanup in reversed(peers._cleanups):
                cleanup()
        consul.stop()
        cluster.stop()
        setup.close()
        if moto is not None:
            moto.stop()
        raise
