"""What the real control plane (tests/support/kube_cluster.py) lacks to run pods, played by the harness.

No scheduler, kubelet, container runtime or kube-proxy runs here. Everything else about a pod's life is the real
API server's and controllers' work: the StatefulSet controller creates and replaces pods, the Job controller
creates a Job's pod, counts its exit and enforces ``activeDeadlineSeconds``, the EndpointSlice controller decides
which pods are behind a Service from their Ready condition and their deletion. The harness:

- ``Kubelet`` binds each new pod of the namespace to one Node object (the scheduler's only decision here), starts
  its "container" through a runner chosen by the pod's component label, gives it a pod IP (``10.244.x.y``, mapped
  to the process's 127.0.0.1 port), reports ``Running`` and the Ready condition from the container's readiness
  probe, and the exit code of a container that ends (``Succeeded``/``Failed``). A deleted pod (a deletion
  timestamp: graceful deletion, since the pod is bound to a node) gets what the kubelet does: the container's
  ``preStop`` sleep from the pod spec, SIGTERM, SIGKILL after the rest of ``terminationGracePeriodSeconds``, then
  the final delete, after which the StatefulSet controller creates the replacement (a new uid).
  Liberties: probes run every ``probe_interval`` (0.1 s) instead of the spec's ``periodSeconds``, each with the
  spec's target (httpGet path) or, for an exec probe, the runner's equivalent of its command; a container whose
  process dies is not restarted (a test failure instead).
- ``ServiceProxy`` is kube-proxy for one Service: it watches the Service's EndpointSlices and forwards each TCP
  connection accepted on its 127.0.0.1 port to a random endpoint that is ready, or closes it at once when none
  is (kube-proxy's REJECT). A connection keeps its backend until either side closes it, as conntrack does.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import requests

from .kube_cluster import ADMIN_TOKEN, KubeCluster
from .processes import LOOPBACK

NODE_NAME = "harness-node"
# A watch ends after this long and is opened again from a fresh list: the proxy stops within it, and an open
# watch never holds the API server's shutdown.
WATCH_SECONDS = 3
COMPONENT_LABEL = "app.kubernetes.io/component"


def eventually(what: str, condition: Callable[[], Any], timeout: float = 120.0, interval: float = 0.05,
               check: Optional[Callable[[], None]] = None) -> Any:
    """Poll ``condition()`` every ``interval`` until it is truthy and return that value; fail naming ``what``
    after ``timeout`` (generous: a loaded machine is slow, a correct one still gets there). ``check()`` runs
    each round and may raise to fail early (a process that died)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if check is not None:
            check()
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class Container(Protocol):
    """What a runner returns for a pod: its process, as the kubelet sees a container."""

    address: tuple[str, int]  # where the pod IP's port is served on this machine

    def ready(self) -> bool: ...

    def exit_code(self) -> Optional[int]: ...

    def terminate(self, grace_seconds: float) -> int: ...


Runner = Callable[[dict], Container]


class KubeApi:
    """The API server as the admin, one HTTP session per thread."""

    def __init__(self, cluster: KubeCluster):
        self.cluster = cluster
        self._local = threading.local()

    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            session = requests.Session()
            session.trust_env = False
            session.verify = str(self.cluster.ca_file)
            session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
            self._local.session = session
        return self._local.session

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             ok: tuple[int, ...] = (200, 201, 202), timeout: float = 30, **kwargs) -> Any:
        response = self.session().request(method, self.cluster.url + path, timeout=timeout,
                                          data=None if body is None else json.dumps(body),
                                          headers={"Content-Type": content_type}, **kwargs)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text[:400]}")
        return response.json() if response.content else None

    def patch_status(self, namespace: str, name: str, uid: str, status: dict) -> None:
        """A merge patch of pods/status; skipped (404/409) when the pod of that uid is gone."""
        self.call("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                  {"metadata": {"uid": uid}, "status": status}, "application/merge-patch+json",
                  ok=(200, 404, 409))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def pre_stop_seconds(pod: dict) -> float:
    lifecycle = pod["spec"]["containers"][0].get("lifecycle", {})
    return float(lifecycle.get("preStop", {}).get("sleep", {}).get("seconds", 0))


@dataclass
class PodRecord:
    """What the kubelet did with one pod incarnation."""
    name: str
    uid: str
    ip: str
    container: Optional[Container] = None
    started: float = field(default_factory=time.monotonic)
    ready_since: Optional[float] = None
    exit_code: Optional[int] = None
    sigterm: Optional[float] = None  # when the kubelet sent SIGTERM (after preStop)
    terminated: Optional[float] = None


class _PodWorker(threading.Thread):
    def __init__(self, kubelet: "Kubelet", pod: dict, ip: str):
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.kubelet, self.pod = kubelet, pod
        self.name_, self.uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        self.record = PodRecord(self.name_, self.uid, ip)
        self.deleting = threading.Event()
        self.gone = threading.Event()

    def _status(self, status: dict) -> None:
        self.kubelet.api.patch_status(self.kubelet.namespace, self.name_, self.uid, status)

    def _conditions(self, ready: bool) -> list[dict]:
        now = _now()
        return [{"type": kind, "status": "True" if (ready or kind in ("PodScheduled", "Initialized")) else "False",
                 "lastTransitionTime": now} for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]

    def run(self) -> None:
        try:
            self._live()
        except Exception as exc:  # reported through Kubelet.check(): the test fails on any
            self.kubelet.errors.append(f"{self.name_} ({self.uid[:8]}): {exc!r}"[:1500])
            container = self.record.container
            if container is not None and container.exit_code() is None:
                container.terminate(0)

    def _live(self) -> None:
        kubelet, record = self.kubelet, self.record
        ip = record.ip
        self._status({"phase": "Pending", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": LOOPBACK,
                      "startTime": _now(), "conditions": self._conditions(False)})
        component = self.pod["metadata"].get("labels", {}).get(COMPONENT_LABEL, "")
        record.container = container = kubelet.runners[component](self.pod)
        kubelet.addresses[ip] = container.address
        self._status({"phase": "Running", "conditions": self._conditions(False)})
        ready = False
        while not (self.deleting.is_set() or self.gone.is_set()):
            code = container.exit_code()
            if code is not None:
                record.exit_code = code
                phase = "Succeeded" if code == 0 else "Failed"
                self._status({"phase": phase, "conditions": self._conditions(False), "containerStatuses": [{
                    "name": self.pod["spec"]["containers"][0]["name"], "image": "harness", "imageID": "",
                    "ready": False, "restartCount": 0, "started": False,
                    "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                             "finishedAt": _now()}}}]})
                break
            now_ready = container.ready()
            if now_ready != ready:
                ready = now_ready
                record.ready_since = time.monotonic() if ready else None
                self._status({"conditions": self._conditions(ready)})
            self.deleting.wait(kubelet.probe_interval)
        while not (self.deleting.is_set() or self.gone.is_set()):
            self.deleting.wait(0.2)
        if container.exit_code() is None:
            grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
            pause = pre_stop_seconds(self.pod)
            if kubelet.pre_stop_limit is not None:
                pause = min(pause, kubelet.pre_stop_limit)
            if pause and not self.gone.is_set():
                self.gone.wait(pause)  # preStop: the Service drops the pod meanwhile; the process still serves
            record.sigterm = time.monotonic()
            record.exit_code = container.terminate(0 if self.gone.is_set() else max(grace - pause, 0))
        record.terminated = time.monotonic()
        if not self.gone.is_set():
            # The kubelet's final delete, once the containers stopped; the StatefulSet controller then replaces it.
            kubelet.api.call("DELETE", f"/api/v1/namespaces/{kubelet.namespace}/pods/{self.name_}",
                             {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": self.uid}}, ok=(200, 202, 404, 409))


class Kubelet:
    """Runs the namespace's pods on this machine (see the module docstring); a context manager.

    ``runners``: component label -> a function starting that pod's container. Pods of other components are
    left unbound (never started). ``pre_stop_limit``: at most this long a preStop sleep (the harness's Service
    follows an EndpointSlice within one watch event, where the cluster's kube-proxies and mesh take seconds);
    ``ServiceProxy.left_at`` shows, per pod IP, that it left the Service before its SIGTERM."""

    def __init__(self, cluster: KubeCluster, namespace: str, runners: dict[str, Runner],
                 probe_interval: float = 0.1, poll_interval: float = 0.1, pre_stop_limit: Optional[float] = None):
        self.api = KubeApi(cluster)
        self.namespace, self.runners = namespace, runners
        self.probe_interval, self.poll_interval = probe_interval, poll_interval
        self.pre_stop_limit = pre_stop_limit
        self.addresses: dict[str, tuple[str, int]] = {}  # pod IP -> where it is served here
        self.records: list[PodRecord] = []  # every pod incarnation, in start order
        self.errors: list[str] = []
        self._workers: dict[str, _PodWorker] = {}  # uid -> worker
        self._next_ip = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kubelet")

    def __enter__(self) -> "Kubelet":
        self.api.call("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}}}, ok=(201, 409))
        self.api.call("PATCH", f"/api/v1/nodes/{NODE_NAME}/status", {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": _now(),
             "lastTransitionTime": _now()}], "addresses": [{"type": "InternalIP", "address": LOOPBACK}]}},
            "application/merge-patch+json")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for worker in list(self._workers.values()):
            worker.gone.set()
        for worker in list(self._workers.values()):
            worker.join(timeout=60)

    def check(self) -> None:
        assert not self.errors, "the kubelet harness failed:\n" + "\n".join(self.errors)

    def _allocate_ip(self) -> str:
        self._next_ip += 1
        return f"10.244.{self._next_ip // 250}.{self._next_ip % 250 + 2}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - reported through check()
                self.errors.append(f"sync: {exc!r}"[:1000])
            self._stop.wait(self.poll_interval)

    def _sync(self) -> None:
        pods = self.api.call("GET", f"/api/v1/namespaces/{self.namespace}/pods")["items"]
        listed = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            uid = meta["uid"]
            listed.add(uid)
            if meta.get("labels", {}).get(COMPONENT_LABEL) not in self.runners:
                continue
            worker = self._workers.get(uid)
            if worker is None:
                if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                if not spec.get("nodeName"):
                    self.api.call("POST", f"/api/v1/namespaces/{self.namespace}/pods/{meta['name']}/binding", {
                        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"], "uid": uid},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME}}, ok=(201, 404, 409))
                    continue
                worker = self._workers[uid] = _PodWorker(self, pod, self._allocate_ip())
                self.records.append(worker.record)
                worker.start()
            elif meta.get("deletionTimestamp"):
                worker.deleting.set()
        for uid, worker in list(self._workers.items()):
            if uid not in listed:
                worker.gone.set()
                if not worker.is_alive():
                    del self._workers[uid]

    # -- what the tests read -------------------------------------------------------------------------
    def running(self, name: str) -> Optional[PodRecord]:
        """The live incarnation of pod ``name`` (started, not terminated), if any."""
        live = [r for r in self.records if r.name == name and r.terminated is None and r.container is not None]
        return live[-1] if live else None

    def wait_ready(self, name: str, timeout: float = 120.0, other_than: Optional[str] = None) -> PodRecord:
        """The incarnation of ``name`` that is Ready (reported to the API server), optionally a new uid."""
        def ready():
            record = self.running(name)
            return record if record and record.ready_since and record.uid != other_than else None
        return eventually(f"pod {name} Ready" + (f" with a uid other than {other_than}" if other_than else ""),
                          ready, timeout, check=self.check)


class ServiceProxy:
    """kube-proxy for one Service: connections to ``url`` go to a random ready endpoint (see the module docstring)."""

    def __init__(self, kubelet: Kubelet, service: str):
        self.kubelet, self.service = kubelet, service
        self.ready: dict[str, str] = {}  # pod IP -> pod name, from the EndpointSlices
        self.left_at: dict[str, float] = {}  # pod IP -> when it stopped being a ready endpoint
        self.refused: list[tuple[float, str]] = []  # (time, why) of each connection that found no backend
        self._slices: dict[str, list[tuple[str, str, bool]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(128)
        self._listener.settimeout(1)
        self.url = f"http://{LOOPBACK}:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._watch, daemon=True, name=f"proxy-watch-{service}"),
                         threading.Thread(target=self._accept, daemon=True, name=f"proxy-accept-{service}")]

    def __enter__(self) -> "ServiceProxy":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:  # each wakes within WATCH_SECONDS (the watch) or a second (accept)
            thread.join(timeout=WATCH_SECONDS + 10)
        self._listener.close()

    def ready_pods(self) -> set[str]:
        with self._lock:
            return set(self.ready.values())

    # -- EndpointSlices ------------------------------------------------------------------------------
    def _apply(self, event_type: str, endpoint_slice: dict) -> None:
        name = endpoint_slice["metadata"]["name"]
        if event_type == "DELETED":
            self._slices.pop(name, None)
        else:
            self._slices[name] = [(address, (e.get("targetRef") or {}).get("name", ""),
                                   bool(e.get("conditions", {}).get("ready")))
                                  for e in endpoint_slice.get("endpoints") or [] for address in e["addresses"]]
        ready = {address: pod for entries in self._slices.values() for address, pod, ok in entries if ok}
        with self._lock:
            now = time.monotonic()
            for address in set(self.ready) - set(ready):
                self.left_at[address] = now
            for address in ready:
                self.left_at.pop(address, None)
            self.ready = ready

    def _watch(self) -> None:
        path = (f"/apis/discovery.k8s.io/v1/namespaces/{self.kubelet.namespace}/endpointslices"
                f"?labelSelector=kubernetes.io/service-name={self.service}")
        api = self.kubelet.api
        failures = 0
        while not self._stop.is_set():
            try:
                listed = api.call("GET", path)
                self._slices = {}
                for item in listed["items"]:
                    self._apply("ADDED", item)
                with api.session().get(f"{api.cluster.url}{path}&watch=1&timeoutSeconds={WATCH_SECONDS}"
                                       f"&resourceVersion={listed['metadata']['resourceVersion']}",
                                       stream=True, timeout=(10, 300)) as stream:
                    for line in stream.iter_lines():
                        if self._stop.is_set():
                            return
                        if not line:
                            continue
                        event = json.loads(line)
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self._apply(event["type"], event["object"])
                        elif event["type"] == "ERROR":
                            break
            except Exception as exc:  # noqa: BLE001 - relist, as an informer does; reported if it persists
                failures += 1
                if failures > 20 and not self._stop.is_set():
                    self.kubelet.errors.append(f"proxy watch failing: {exc!r}"[:500])
                self._stop.wait(0.2)
            else:
                failures = 0

    # -- connections ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                backends = list(self.ready)
            if not backends:
                self.refused.append((time.monotonic(), "no ready endpoint"))
                _reset(client)
                continue
            ip = random.choice(backends)
            threading.Thread(target=self._connect, args=(client, ip), daemon=True).start()

    def _connect(self, client: socket.socket, ip: str) -> None:
        address = self.kubelet.addresses.get(ip)
        try:
            if address is None:
                raise OSError(f"pod IP {ip} is not served here")
            backend = socket.create_connection(address, timeout=10)
            backend.settimeout(None)
        except OSError as exc:
            self.refused.append((time.monotonic(), f"{ip} {address}: {exc}"))
            _reset(client)
            return
        done = threading.Event()
        threading.Thread(target=_relay, args=(backend, client, done), daemon=True).start()
        _relay(client, backend, done)


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a REJECT or a closed port answers."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _relay(source: socket.socket, target: socket.socket, done: threading.Event) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    try:
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    if done.is_set():  # the other direction ended first: both sockets are finished
        source.close()
        target.close()
    else:
        done.set()
