"""Run the policy pack on a recorded plan exactly as the Pulumi engine does, over the analyzer's gRPC protocol.

The engine starts the pack as its own process (``python __main__.py`` in the pack's directory, with the
interpreter of the virtualenv ``PulumiPolicy.yaml`` names: ``pack_python``), reads the
port the pack prints on its first stdout line, and talks to it with the SDK's own analyzer stubs:
``GetAnalyzerInfo``, ``Configure`` (every policy's enforcement level and config), ``Analyze`` once per
resource with its inputs and options, and ``AnalyzeStack`` once with every resource's outputs, parent
and dependencies. This module does the same with a recorded ``Plan``, so the pack that ``pulumi preview
--policy-pack policies`` would load is the one tested here, not an import of its functions.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import grpc
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from .recorder import PROJECT_DIR, Plan, Registration, on_the_wire

PACK_DIR = PROJECT_DIR / "policies"
STACK_TYPE = "pulumi:pulumi:Stack"
START_TIMEOUT_SECONDS = 30
CALL_TIMEOUT_SECONDS = 120

_LEVEL_NAMES = {
    analyzer_pb2.ADVISORY: "advisory",
    analyzer_pb2.MANDATORY: "mandatory",
    analyzer_pb2.REMEDIATE: "remediate",
    analyzer_pb2.DISABLED: "disabled",
}
_LEVELS_BY_NAME = {name: level for level, name in _LEVEL_NAMES.items()}


class PolicyPackError(Exception):
    """The policy pack did not start or did not answer."""


@dataclass(frozen=True)
class Diagnostic:
    policy: str
    enforcement: str  # "mandatory", "advisory", ...
    urn: str
    message: str  # what the rule said, without the policy's description

    @property
    def mandatory(self) -> bool:
        return self.enforcement in ("mandatory", "remediate")

    @property
    def resource(self) -> str:
        return self.urn.rsplit("::", 1)[-1] if self.urn else "(stack)"

    def __str__(self) -> str:
        return f"[{self.enforcement}] {self.policy}: {self.resource}: {self.message}"


@dataclass
class PolicyReport:
    stack: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    seconds: float = 0.0  # from the recorded plan to the pack's last answer about it

    @property
    def mandatory(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.mandatory]

    @property
    def advisory(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.mandatory]

    def policies_violated(self) -> set[str]:
        return {d.policy for d in self.mandatory}

    def summary(self) -> str:
        return (f"policies: {len(self.mandatory)} mandatory violations, {len(self.advisory)} advisory "
                f"({self.stack}, {self.seconds:.2f}s)")


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    json_format.ParseDict(on_the_wire(value), struct)
    return struct


def _options(registration: Registration) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(protect=registration.protect, parent=registration.parent)


def _diagnostic(raw: Any, default_urn: str = "") -> Diagnostic:
    description = raw.description or ""
    message = raw.message or ""
    if description and message.startswith(description):
        message = message[len(description):].lstrip("\n") or description
    return Diagnostic(
        policy=raw.policyName,
        enforcement=_LEVEL_NAMES.get(raw.enforcementLevel, str(raw.enforcementLevel)),
        urn=raw.urn or default_urn,
        message=message,
    )


def pack_python(pack_dir: Path = PACK_DIR) -> str:
    """The interpreter the CLI runs the pack with: ``<virtualenv>/bin/python`` of the virtualenv its
    ``PulumiPolicy.yaml`` names, relative to the pack's directory (the CLI starts the pack's shim there
    and passes ``-virtualenv=<value>``), or the ``python`` on PATH without one. A named virtualenv that
    does not exist is an error here; the CLI would hang on it."""
    try:
        runtime = yaml.safe_load((Path(pack_dir) / "PulumiPolicy.yaml").read_text())["runtime"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise PolicyPackError(f"cannot read the runtime of {pack_dir}/PulumiPolicy.yaml: {exc}") from None
    virtualenv = (runtime.get("options") or {}).get("virtualenv") if isinstance(runtime, dict) else None
    if not virtualenv:
        return shutil.which("python") or sys.executable
    python = Path(pack_dir) / virtualenv / "bin" / "python"
    if not python.is_file():
        raise PolicyPackError(f"PulumiPolicy.yaml names virtualenv {virtualenv!r}, but {python} does not exist "
                              "(scripts/setup.sh plan creates venv/)")
    return str(python)


class PolicyAnalyzer:
    """The policy pack as a running analyzer process. Use as a context manager; stopped by its pid."""

    def __init__(self, pack_dir: Path = PACK_DIR, python: Optional[str] = None,
                 config: Optional[Mapping[str, Mapping[str, Any]]] = None):
        self.pack_dir = Path(pack_dir)
        self.python = python
        self.config = dict(config or {})
        self.process: Optional[subprocess.Popen] = None
        self.channel: Optional[grpc.Channel] = None
        self.stub: Optional[analyzer_pb2_grpc.AnalyzerStub] = None
        self.info: Optional[analyzer_pb2.AnalyzerInfo] = None
        self._stderr = tempfile.TemporaryFile()
        self._started = 0.0
        self.start_seconds = 0.0  # from launch until the pack was configured
        self._connecting = threading.Lock()
        self._connector: Optional[threading.Thread] = None
        self._connect_error: Optional[PolicyPackError] = None
        self._ready = threading.Event()  # connected and configured: requests may be sent

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "PolicyAnalyzer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.launch()
        self.connect()

    def launch(self) -> None:
        """Start the pack's process and return at once: it imports its SDKs while the caller plans,
        and a background thread connects and configures it as soon as it prints its port. Requests
        wait for that (``connect``)."""
        if self.process is not None:
            return
        self._started = time.perf_counter()
        if self.python is None:
            self.python = pack_python(self.pack_dir)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [self.python, "__main__.py"], cwd=self.pack_dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._stderr, env=env,
        )
        self._connector = threading.Thread(target=self._connect_quietly, name="policy-pack-connect", daemon=True)
        self._connector.start()

    def _connect_quietly(self) -> None:
        try:
            self.connect()
        except PolicyPackError:
            pass  # kept in _connect_error; raised again by the next connect()

    def connect(self) -> None:
        """Wait for the launched pack's port, then GetAnalyzerInfo and Configure, as the engine does."""
        self.launch()
        with self._connecting:
            if self._connect_error is not None:
                raise self._connect_error
            if self._ready.is_set():
                return
            try:
                self._connect()
            except PolicyPackError as exc:
                self._connect_error = exc
                raise
            except grpc.RpcError as exc:
                self._connect_error = PolicyPackError(f"policy pack refused {exc.code().name}: {exc.details()}")
                raise self._connect_error from None
            except grpc.FutureTimeoutError:
                self._connect_error = PolicyPackError(f"policy pack did not accept a connection within {START_TIMEOUT_SECONDS}s")
                raise self._connect_error from None

    def _connect(self) -> None:
        port_line = self._read_port_line()
        try:
            port = int(port_line.strip())
        except ValueError:
            self._kill()
            raise PolicyPackError(f"policy pack printed {port_line!r} instead of its port; stderr:\n{self.stderr()}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_SECONDS)
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)
        self.info = self.stub.GetAnalyzerInfo(empty_pb2.Empty())
        self._configure()
        self.start_seconds = time.perf_counter() - self._started
        self._ready.set()

    def _read_port_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        descriptor = self.process.stdout.fileno()
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            readable = select.select([descriptor], [], [], max(remaining, 0))[0] if remaining > 0 else []
            chunk = os.read(descriptor, 4096) if readable else b""
            if not chunk:  # end of output (the pack exited) or the deadline passed
                self._kill()
                raise PolicyPackError(f"policy pack did not print its port; stderr:\n{self.stderr()}")
            buffer += chunk
        return buffer.split(b"\n", 1)[0].decode()

    def stop(self) -> None:
        self._ready.clear()
        if self.channel is not None:
            self.channel.close()
            self.channel = None
            self.stub = None
        self._kill()
        if self._connector is not None and self._connector is not threading.current_thread():
            self._connector.join(timeout=START_TIMEOUT_SECONDS)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # PolicyPack stops its gRPC server on KeyboardInterrupt, i.e. SIGINT.
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    # --- the protocol -------------------------------------------------------------------------

    @property
    def policy_names(self) -> list[str]:
        assert self.info is not None
        return [policy.name for policy in self.info.policies]

    def _configure(self) -> None:
        """Like the CLI: every policy gets its enforcement level, and config with its schema defaults."""
        assert self.info is not None and self.stub is not None
        unknown = set(self.config) - set(self.policy_names)
        if unknown:
            raise PolicyPackError(f"policy config names unknown policies: {sorted(unknown)}")
        request = analyzer_pb2.ConfigureAnalyzerRequest()
        for policy in self.info.policies:
            given = dict(self.config.get(policy.name, {}))
            level = given.pop("enforcementLevel", None)
            properties = {key: spec.get("default") for key, spec in
                          json_format.MessageToDict(policy.configSchema.properties).items() if "default" in spec}
            properties.update(given)
            entry = request.policyConfig[policy.name]
            entry.enforcementLevel = _LEVELS_BY_NAME[level] if level else policy.enforcementLevel
            entry.properties.update(properties)
        self.stub.Configure(request)

    def analyze(self, plan: Plan) -> PolicyReport:
        """Analyze each resource, then the stack; every diagnostic, in the engine's order."""
        return self.submit(plan).result()

    def submit(self, plan: Plan) -> "PendingReport":
        """Send every request of ``analyze`` without waiting for the answers (the engine, too, has
        several in flight): the pack works through them in its own process while the caller goes on.
        ``result()`` of the returned object collects the report."""
        return self.analysis(plan.stack).finish(plan)

    def analysis(self, stack: str) -> "StackAnalysis":
        """An analysis fed while the stack is being recorded: give its ``resource`` method to
        ``record_plan(on_register=...)``, as the engine calls Analyze on each resource when it is
        registered, then ``finish`` the recorded plan."""
        return StackAnalysis(self, stack)

    def _analyze(self, registration: Registration) -> grpc.Future:
        assert self.stub is not None
        return self.stub.Analyze.future(analyzer_pb2.AnalyzeRequest(
            type=registration.type,
            properties=_struct(registration.inputs),
            urn=registration.urn,
            name=registration.name,
            options=_options(registration),
        ))

    def _analyze_stack(self, resources: list[Registration]) -> grpc.Future:
        assert self.stub is not None
        return self.stub.AnalyzeStack.future(analyzer_pb2.AnalyzeStackRequest(resources=[
            analyzer_pb2.AnalyzerResource(
                type=registration.type,
                properties=_struct(registration.outputs or registration.inputs),
                urn=registration.urn,
                name=registration.name,
                options=_options(registration),
                parent=registration.parent,
                dependencies=list(registration.dependencies),
                propertyDependencies={key: analyzer_pb2.AnalyzerPropertyDependencies(urns=list(urns))
                                      for key, urns in registration.property_dependencies.items()},
            )
            for registration in resources
        ]))


class StackAnalysis:
    """One stack's requests to the pack. ``resource`` may be called from the mock runtime's threads:
    once the pack is ready, each resource is sent as it is registered; the rest go in ``finish``."""

    def __init__(self, analyzer: PolicyAnalyzer, stack: str):
        self.analyzer = analyzer
        self.stack = stack
        self._sent: dict[str, grpc.Future] = {}
        self._lock = threading.Lock()

    def resource(self, registration: Registration) -> None:
        if registration.type == STACK_TYPE or not self.analyzer._ready.is_set():
            return
        future = self.analyzer._analyze(registration)
        with self._lock:
            self._sent[registration.urn] = future

    def finish(self, plan: Plan) -> "PendingReport":
        """Send what was not sent yet and the stack's AnalyzeStack (with the outputs); the report's
        diagnostics are in plan order, whatever order the answers came in."""
        recorded = time.perf_counter()
        self.analyzer.connect()
        resources = [r for r in plan.registrations if r.type != STACK_TYPE]
        with self._lock:
            sent = dict(self._sent)
        per_resource = [(r.urn, sent.get(r.urn) or self.analyzer._analyze(r)) for r in resources]
        return PendingReport(plan.stack, recorded, per_resource, self.analyzer._analyze_stack(resources))


class PendingReport:
    """The answers to one plan's requests, still in flight; ``result()`` waits for all of them."""

    def __init__(self, stack: str, started: float, per_resource: list[tuple[str, grpc.Future]], stack_future: grpc.Future):
        self.stack = stack
        self._started = started
        self._per_resource = per_resource
        self._stack_future = stack_future
        self._answered = started
        for future in [f for _, f in per_resource] + [stack_future]:
            future.add_done_callback(self._note_answer)

    def _note_answer(self, _future: grpc.Future) -> None:
        self._answered = max(self._answered, time.perf_counter())

    def result(self) -> PolicyReport:
        report = PolicyReport(stack=self.stack)
        try:
            for urn, future in self._per_resource:
                report.diagnostics += [_diagnostic(d, urn) for d in future.result(timeout=CALL_TIMEOUT_SECONDS).diagnostics]
            report.diagnostics += [_diagnostic(d) for d in self._stack_future.result(timeout=CALL_TIMEOUT_SECONDS).diagnostics]
        except grpc.RpcError as exc:
            raise PolicyPackError(f"policy pack failed on stack {self.stack}: {exc.code().name}: {exc.details()}") from None
        except grpc.FutureTimeoutError:
            raise PolicyPackError(f"policy pack did not answer within {CALL_TIMEOUT_SECONDS}s (stack {self.stack})") from None
        report.seconds = self._answered - self._started  # from the recorded plan to the pack's last answer
        return report


def analyze_plans(plans: list[Plan], config: Optional[Mapping[str, Mapping[str, Any]]] = None) -> list[PolicyReport]:
    with PolicyAnalyzer(config=config) as analyzer:
        return [analyzer.analyze(plan) for plan in plans]
