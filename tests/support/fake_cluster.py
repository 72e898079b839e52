"""Just enough of Kubernetes and Consul, on local processes, to run the GC script at benchmark sizes.

Used only by benchmarks/gc_scaling.py. No test uses it: the GC tests run the script against the real peers
(tests/support/gc_peers.py), which also show what this misses: the StatefulSet's ``minReadySeconds`` (10 s) holds
every replacement after the first, so a 3-replica window is about 40 s longer than here.

`FakeCluster` keeps a StatefulSet's pods as real registry processes on 127.0.0.1, Consul KV as a JSON
file (full key paths), and the client Service as the list of endpoints that currently pass their readiness
probe. Every registry it starts gets its environment from THE config-cli stand-in (tests/support/config_cli.py)
reading that KV, exactly as a pod's config-cli reads Consul at start. It puts executables named `kubectl`,
`consul` and `config-cli` in `bin_dir`; a script run with that directory first on PATH drives the fake exactly
as it would drive the cluster:

- `kubectl -n NS get statefulset NAME -o jsonpath={.spec.replicas}`
- `kubectl -n NS get pod NAME -o jsonpath=...` -> "<uid> <Ready status>" (exit 1 while the pod is absent)
- `kubectl -n NS delete pod NAME --wait=false` -> the pod leaves the Service, gets SIGTERM a moment
  later (endpoint propagation), and the StatefulSet controller starts a new one (new uid), its environment
  loaded from the KV by the config-cli stand-in
- `consul kv put KEY VALUE` -> writes the KV file
- `config-cli run docker-registry` -> the config-cli stand-in itself (`python -m tests.support.config_cli`),
  which loads the KV and execs `registry serve` (the GC Job's own replica; it listens on `job_replica_port`)

Every kubectl and consul invocation is recorded, so a test can check it against the RBAC Role.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping

import requests

from components.names import READONLY_ON, READONLY_VARIABLE

from . import config_cli
from .processes import LOOPBACK, ManagedProcess, clean_env, free_port, start_process
from .registry_server import DROPPED_VARIABLES, MINIMAL_CONFIG

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

PROBE_PERIOD_SECONDS = 0.1
# Between a pod leaving the Service and its SIGTERM: endpoint propagation, which the pod's preStop sleep
# (components/workload.py, 5 s) covers in the cluster; shorter here to keep the tests fast, long enough for a
# pull already in flight on a loaded machine.
ENDPOINT_PROPAGATION_SECONDS = 1.0


@dataclass
class FakePod:
    name: str
    port: int
    uid: str = ""
    process: ManagedProcess | None = None
    ready: bool = False
    restarts: int = 0
    read_only_history: list[bool] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


class FakeCluster:
    def __init__(self, binary: str, workdir: Path, tree: Mapping[str, str], *, replicas: int,
                 kv_prefix: str, namespace: str = "cicd", statefulset: str = "registry",
                 job_pod_name: str = "registry-gc-28913000-x7k2p"):
        """``tree``: the KV under ``kv_prefix`` (relative to it) as the program and config-cli lay it out."""
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.statefulset = statefulset
        self.kv_prefix = kv_prefix
        self.kv_path = workdir / "consul-kv.json"
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(MINIMAL_CONFIG)
        self.bin_dir = workdir / "bin"
        self.drain_marker = workdir / "job-replica-draining"
        self.job_pod_name = job_pod_name
        self.job_pod_uid = str(uuid.uuid4())
        self.job_replica_port = free_port()
        self.pods = {f"{statefulset}-{i}": FakePod(f"{statefulset}-{i}", free_port()) for i in range(replicas)}
        self.calls: list[list[str]] = []
        self.cleanups: list = []  # called before the pods stop (e.g. to stop a script's leftovers)
        self.job_replica_ready = False
        self.acl_token: str | None = None  # set (with acl_login_method) to enforce Consul ACLs
        self.acl_login_method = ""
        self._lock = threading.Lock()
        self._stopping = False
        self._http = requests.Session()
        self._http.trust_env = False
        self._threads: list[threading.Thread] = []
        self._write_kv({f"{kv_prefix}{key}": value for key, value in tree.items()})
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._serve_thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._serve_thread.start()
        self._write_stubs()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        for pod in self.pods.values():
            self._start_pod(pod)
        prober = threading.Thread(target=self._probe_forever, daemon=True)
        prober.start()
        self._threads.append(prober)
        deadline = time.monotonic() + timeout
        while not all(p.ready for p in self.pods.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"pods not ready: {self.pods}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stopping = True
        self._server.shutdown()
        for pod in self.pods.values():
            if pod.process:
                pod.process.stop(timeout=30)

    # -- state -----------------------------------------------------------------------------------------
    def kv(self) -> dict[str, str]:
        return json.loads(self.kv_path.read_text())

    def put_kv(self, key: str, value: str) -> None:
        kv = self.kv()
        kv[key] = value
        self._write_kv(kv)

    def _write_kv(self, kv: dict) -> None:
        tmp = self.kv_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(kv))
        os.replace(tmp, self.kv_path)

    def registry_env(self, name: str) -> dict[str, str]:
        """What config-cli exports to pod ``name`` from the KV under the prefix (its files in the pod's run dir)."""
        tree = {key[len(self.kv_prefix):]: value for key, value in self.kv().items() if key.startswith(self.kv_prefix)}
        return config_cli.load_tree(tree, None, self.workdir / name / "run").environment

    def ready_endpoints(self) -> list[str]:
        """The client Service's endpoints: every pod (and the Job's replica) passing its readiness probe."""
        with self._lock:
            endpoints = [p.url for p in self.pods.values() if p.ready]
            if self.job_replica_ready:
                endpoints.append(f"http://{LOOPBACK}:{self.job_replica_port}")
        return endpoints

    def pick_endpoint(self) -> str | None:
        endpoints = self.ready_endpoints()
        return random.choice(endpoints) if endpoints else None

    # -- pods ------------------------------------------------------------------------------------------
    def _start_pod(self, pod: FakePod) -> None:
        env = self.registry_env(pod.name)
        env["REGISTRY_HTTP_ADDR"] = f"{LOOPBACK}:{pod.port}"
        env.pop("REGISTRY_HTTP_DEBUG_ADDR", None)
        pod.read_only_history.append(env.get(READONLY_VARIABLE) == READONLY_ON)
        pod.uid = str(uuid.uuid4())
        pod.process = start_process(pod.name, [self.binary, "serve", str(self.config_path)],
                                    self.workdir / f"{pod.name}.log", env=self._child_env(env), cwd=self.workdir)

    def _child_env(self, env: Mapping[str, str]) -> dict[str, str]:
        child = clean_env(env, drop=DROPPED_VARIABLES)
        for key in list(child):
            if key.startswith("REGISTRY_") and key not in env:
                del child[key]
        return child

    def _answers(self, url: str) -> bool:
        try:
            return self._http.get(url + "/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _probe_forever(self) -> None:
        while not self._stopping:
            for pod in list(self.pods.values()):
                process = pod.process
                ready = bool(process and process.alive() and self._answers(pod.url))
                with self._lock:
                    if pod.process is process:
                        pod.ready = ready
            replica_url = f"http://{LOOPBACK}:{self.job_replica_port}"
            job_ready = not self.drain_marker.exists() and self._answers(replica_url)
            with self._lock:
                self.job_replica_ready = job_ready
            time.sleep(PROBE_PERIOD_SECONDS)

    # -- the API behind the stubs ------------------------------------------------------------------------
    def kubectl(self, argv: list[str]) -> tuple[int, str]:
        self.calls.append(["kubectl", *argv])
        args = list(argv)
        if args[:1] == ["-n"]:
            if args[1] != self.namespace:
                return 1, f"namespace {args[1]} not found"
            args = args[2:]
        verb, kind, name = args[0], args[1], args[2]
        if verb == "get" and kind == "statefulset" and name == self.statefulset:
            return 0, str(len(self.pods))
        if verb == "get" and kind == "pod":
            if name == self.job_pod_name:
                return 0, f"{self.job_pod_uid} {'True' if self.job_replica_ready else 'False'}"
            pod = self.pods.get(name)
            if pod is None:
                return 1, f'Error from server (NotFound): pods "{name}" not found'
            with self._lock:
                return 0, f"{pod.uid} {'True' if pod.ready else 'False'}"
        if verb == "delete" and kind == "pod" and name in self.pods:
            pod = self.pods[name]
            with self._lock:
                pod.ready = False
                pod.process, old = None, pod.process
            # The StatefulSet controller recreates the pod once the old one has terminated.
            def recreate(old=old):
                time.sleep(ENDPOINT_PROPAGATION_SECONDS)
                if old:
                    old.stop(timeout=30)
                pod.restarts += 1
                self._start_pod(pod)
            threading.Thread(target=recreate, daemon=True).start()
            return 0, f'pod "{name}" deleted'
        return 1, f"fake kubectl does not implement {argv}"

    def consul(self, argv: list[str], token: str | None = None) -> tuple[int, str]:
        """`consul login` (Kubernetes auth method) and `consul kv put`; with `acl_token` set, a put
        needs the token the login wrote (CONSUL_HTTP_TOKEN_FILE), as with Consul ACLs enabled."""
        self.calls.append(["consul", *argv])
        if argv[:1] == ["login"]:
            options = dict(arg.lstrip("-").split("=", 1) for arg in argv[1:])
            if self.acl_token is None or options.get("method") != self.acl_login_method:
                return 1, f"fake consul: no auth method {options.get('method')}"
            Path(options["token-sink-file"]).write_text(self.acl_token)
            return 0, ""
        if argv[:2] == ["kv", "put"] and len(argv) == 4:
            if self.acl_token is not None and token != self.acl_token:
                return 1, "Error! Failed writing data: Unexpected response code: 403 (Permission denied)"
            self.put_kv(argv[2], argv[3])
            return 0, f"Success! Data written to: {argv[2]}"
        return 1, f"fake consul does not implement {argv}"

    def _handler(self):
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/kubectl":
                    code, output = cluster.kubectl(payload["argv"])
                else:
                    code, output = cluster.consul(payload["argv"], payload["token"])
                body = json.dumps({"code": code, "output": output}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def _write_stubs(self) -> None:
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        control = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        for tool in ("kubectl", "consul"):
            stub = self.bin_dir / tool
            stub.write_text(
                f"#!{sys.executable}\n"
                "import json, os, sys, urllib.request\n"
                "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
                "token_file = os.environ.get('CONSUL_HTTP_TOKEN_FILE')\n"
                "token = open(token_file).read().strip() if token_file and os.path.exists(token_file) else None\n"
                "payload = json.dumps({'argv': sys.argv[1:], 'token': token}).encode()\n"
                f"request = urllib.request.Request({control + '/' + tool!r}, data=payload)\n"
                "answer = json.loads(opener.open(request, timeout=60).read())\n"
                "print(answer['output'], file=sys.stdout if answer['code'] == 0 else sys.stderr)\n"
                "sys.exit(answer['code'])\n")
            stub.chmod(0o755)
        listen = {"REGISTRY_HTTP_ADDR": f"{LOOPBACK}:{self.job_replica_port}", "REGISTRY_HTTP_DEBUG_ADDR": None}
        harness = {
            "CONFIG_CLI_KV_PREFIX": self.kv_prefix,
            "CONFIG_CLI_TEST_KV_FILE": str(self.kv_path),
            "CONFIG_CLI_TEST_REGISTRY_BINARY": self.binary,
            "CONFIG_CLI_TEST_CONFIG_FILE": str(self.config_path),
            "CONFIG_CLI_TEST_RUN_DIRECTORY": str(self.workdir / "job-replica" / "run"),
            "CONFIG_CLI_TEST_OVERRIDES": json.dumps(listen),
            "PYTHONPATH": str(REPOSITORY_ROOT),
        }
        stub = self.bin_dir / "config-cli"
        stub.write_text("#!/bin/sh\n" + "".join(f"export {k}='{v}'\n" for k, v in harness.items())
                        + f'exec "{sys.executable}" -m tests.support.config_cli "$@"\n')
        stub.chmod(0o755)

    def pod_url_curlrc(self, template_host: str) -> Path:
        """A curl config mapping each pod's in-cluster name to its local port (for GC_POD_URL_TEMPLATE)."""
        home = self.workdir / "curl-home"
        home.mkdir(exist_ok=True)
        lines = [f'connect-to = "{template_host.replace("@POD@", pod.name)}:{LOOPBACK}:{pod.port}"'
                 for pod in self.pods.values()]
        (home / ".curlrc").write_text("\n".join(lines) + "\n")
        return home
