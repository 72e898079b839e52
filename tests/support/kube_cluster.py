"""A real Kubernetes control plane on 127.0.0.1: etcd (Debian etcd-server), kube-apiserver and
kube-controller-manager (v1.35.4, built by scripts/install-kube.sh), with RBAC and Pod Security admission.

No kubelet and no container runtime run here: pods are admitted and stored, never started. What this shows is
what the API server decides (admission, RBAC as evaluated, CRD schemas, field validation) and what the
controllers create from the objects (a StatefulSet's claims and pods, a PDB's status, a CronJob's jobs).
Each cluster gets its own etcd data directory, so two stacks that share object names never meet.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import requests
import yaml

from .processes import LOOPBACK, ManagedProcess, clean_env, free_port, start_process, wait_for_http

ADMIN_TOKEN = "registry-iac-test-admin-token"
NAMESPACE = "cicd"
# What the CI platform creates before the program runs (the program does not own the namespace).
NAMESPACE_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
CONTROLLERS = "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route"


class KubeError(RuntimeError):
    """kubectl failed where the test expected success."""


@dataclass
class KubeCluster:
    workdir: Path
    url: str
    kubeconfig: Path
    ca_file: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    stack: str = ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """kubectl as the cluster admin (system:masters)."""
        result = subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=timeout,
                                env=clean_env({"HOME": str(self.workdir)}, drop=("KUBECONFIG",)))
        if check and result.returncode != 0:
            raise KubeError(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
        return result

    def get(self, path: str) -> Any:
        """GET an API path as the admin; returns the decoded JSON."""
        session = requests.Session()
        session.trust_env = False
        response = session.get(self.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                               verify=str(self.ca_file), timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_for(self, what: str, condition, timeout: float = 60.0, interval: float = 0.5):
        """Poll condition() until it returns a truthy value; fail with `what` and the last value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for proc in self.processes:
                if not proc.alive():
                    raise proc.failure(f"exited while waiting for {what}")
            last = condition()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    def stop(self) -> list[int]:
        return [proc.stop(timeout=15) for proc in reversed(self.processes)]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=registry-iac-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", "apiserver.key", "-out", "apiserver.csr", cwd=pki)
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n")
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "apiserver.crt", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)


def _kubeconfig(path: Path, url: str, ca_file: Path) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
    }))


def start_kube_cluster(binaries: dict[str, str], crd_files: Sequence[Path], workdir: Path,
                       timeout: float = 180.0) -> KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager, namespace `cicd` (restricted) and the CRDs installed."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    _certificates(pki)
    (workdir / "tokens.csv").write_text(f"{ADMIN_TOKEN},admin,admin-uid,system:masters\n")
    env = clean_env({"HOME": str(workdir)}, drop=("KUBECONFIG",))
    processes: list[ManagedProcess] = []
    try:
        etcd_port, etcd_peer = free_port(), free_port()
        etcd = start_process("etcd", [
            binaries["etcd"], "--name", "test", "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", f"http://{LOOPBACK}:{etcd_port}",
            "--advertise-client-urls", f"http://{LOOPBACK}:{etcd_port}",
            "--listen-peer-urls", f"http://{LOOPBACK}:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://{LOOPBACK}:{etcd_peer}",
            "--initial-cluster", f"test=http://{LOOPBACK}:{etcd_peer}",
            "--listen-metrics-urls", f"http://{LOOPBACK}:{free_port()}",
        ], workdir / "etcd.log", env=env, cwd=workdir)
        processes.append(etcd)
        wait_for_http(etcd, f"http://{LOOPBACK}:{etcd_port}/health", ok_statuses=(200,), timeout=30)

        port = free_port()
        url = f"https://{LOOPBACK}:{port}"
        apiserver = start_process("kube-apiserver", [
            binaries["kube-apiserver"],
            f"--etcd-servers=http://{LOOPBACK}:{etcd_port}",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}", f"--secure-port={port}",
            f"--cert-dir={workdir / 'certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,ResourceQuota,LimitRanger",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=false",
            "--profiling=false",
        ], workdir / "kube-apiserver.log", env=env, cwd=workdir)
        processes.append(apiserver)
        kubeconfig = workdir / "kubeconfig"
        _kubeconfig(kubeconfig, url, pki / "ca.crt")
        cluster = KubeCluster(workdir=workdir, url=url, kubeconfig=kubeconfig, ca_file=pki / "ca.crt",
                              processes=processes)

        def ready() -> bool:
            try:
                return bool(requests.get(url + "/readyz", verify=str(pki / "ca.crt"), timeout=2,
                                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200)
            except requests.RequestException:
                return False

        cluster.wait_for("kube-apiserver /readyz", ready, timeout=timeout)

        manager = start_process("kube-controller-manager", [
            binaries["kube-controller-manager"],
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}", f"--secure-port={free_port()}", f"--cert-dir={workdir / 'kcm-certs'}",
            f"--controllers={CONTROLLERS}", "--leader-elect=false", "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--profiling=false",
        ], workdir / "kube-controller-manager.log", env=env, cwd=workdir)
        processes.append(manager)

        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": NAMESPACE, "labels": NAMESPACE_LABELS}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace))
        for crd in crd_files:
            cluster.kubectl("apply", "--server-side", "-f", str(crd))
        for crd in crd_files:
            name = yaml.safe_load(Path(crd).read_text())["metadata"]["name"]
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
        # The namespace's default service account is created by the controller manager's serviceaccount
        # controller; pods are admitted only once it exists.
        cluster.wait_for("the cicd default ServiceAccount",
                         lambda: cluster.kubectl("get", "-n", NAMESPACE, "serviceaccount/default",
                                                 check=False).returncode == 0)
        return cluster
    except BaseException:
        for proc in reversed(processes):
            proc.stop(timeout=10)
        raise


def service_account_token(cluster: KubeCluster, account: str, namespace: str = NAMESPACE,
                          audience: Optional[str] = None) -> str:
    args = ["create", "token", account, "-n", namespace, "--duration=1h"]
    if audience:
        args.append(f"--audience={audience}")
    return cluster.kubectl(*args).stdout.strip()


def grant_token_review(cluster: KubeCluster, account: str, namespace: str) -> str:
    """A service account allowed to call TokenReview (``system:auth-delegator``) and read service accounts, as
    an auth method's reviewer (Consul's or Vault's) is set up; returns its token."""
    cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    cluster.kubectl("create", "clusterrolebinding", f"{account}-{namespace}", "--clusterrole=system:auth-delegator",
                    f"--serviceaccount={namespace}:{account}")
    cluster.kubectl("create", "clusterrole", f"{account}-{namespace}-read", "--verb=get", "--resource=serviceaccounts")
    cluster.kubectl("create", "clusterrolebinding", f"{account}-{namespace}-read",
                    f"--clusterrole={account}-{namespace}-read", f"--serviceaccount={namespace}:{account}")
    return service_account_token(cluster, account, namespace)


def revoke_token_review(cluster: KubeCluster, account: str, namespace: str) -> None:
    """Undo ``grant_token_review``'s cluster-wide objects (the account goes with its namespace)."""
    cluster.kubectl("delete", "clusterrolebinding", f"{account}-{namespace}", f"{account}-{namespace}-read",
                    "--ignore-not-found", check=False)
    cluster.kubectl("delete", "clusterrole", f"{account}-{namespace}-read", "--ignore-not-found", check=False)


class ReportedReadiness:
    """Stands in for what does not run here, as a context manager: a kubelet reporting every pod in the
    namespace Running and Ready (with a pod IP), and an ingress controller giving every Ingress an address.

    The Pulumi kubernetes provider waits for both before it reports a StatefulSet, a Service or an Ingress
    created; nothing else about the objects is changed.
    """

    def __init__(self, cluster: KubeCluster, namespace: str = NAMESPACE, interval: float = 0.5):
        self.cluster, self.namespace, self.interval = cluster, namespace, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next_ip = 10
        self.reported_pods: list[str] = []

    def __enter__(self) -> "ReportedReadiness":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _patch_status(self, resource: str, status: dict) -> None:
        self.cluster.kubectl("patch", "-n", self.namespace, resource, "--subresource=status", "--type=merge",
                             "-p", json.dumps({"status": status}), check=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._report()
            except Exception:  # noqa: BLE001 - the API server may be stopping; the waiting side reports
                pass
            self._stop.wait(self.interval)

    def _report(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for pod in self.cluster.get(f"/api/v1/namespaces/{self.namespace}/pods")["items"]:
            conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conditions.get("Ready") == "True":
                continue
            self._next_ip += 1
            ip = f"10.0.0.{self._next_ip}"
            self._patch_status(f"pod/{pod['metadata']['name']}", {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
                "conditions": [{"type": kind, "status": "True", "lastTransitionTime": now}
                               for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]})
            self.reported_pods.append(pod["metadata"]["name"])
        for ingress in self.cluster.get(f"/apis/networking.k8s.io/v1/namespaces/{self.namespace}/ingresses")["items"]:
            if not ingress.get("status", {}).get("loadBalancer", {}).get("ingress"):
                self._patch_status(f"ingress/{ingress['metadata']['name']}",
                                   {"loadBalancer": {"ingress": [{"ip": "10.0.1.1"}]}})
