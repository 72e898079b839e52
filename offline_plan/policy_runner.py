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
import shutil
import signal
import subprocess
import sys
import tempfile
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
    seconds: float = 0.0

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
        self.start_seconds = 0.0

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "PolicyAnalyzer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        started = time.perf_counter()
        if self.python is None:
            self.python = pack_python(self.pack_dir)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [self.python, "__main__.py"], cwd=self.pack_dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._stderr, env=env,
        )
        port_line = self._read_port_line()
        try:
            port = int(port_line.strip())
        except ValueError:
            self.stop()
            raise PolicyPackError(f"policy pack printed {port_line!r} instead of its port; stderr:\n{self.stderr()}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_SECONDS)
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)
        self.info = self.stub.GetAnalyzerInfo(empty_pb2.Empty())
        self._configure()
        self.start_seconds = time.perf_counter() - started

    def _read_port_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        os.set_blocking(self.process.stdout.fileno(), False)
        buffer = b""
        while b"\n" not in buffer:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise PolicyPackError(f"policy pack did not print its port; stderr:\n{self.stderr()}")
            chunk = self.process.stdout.read()
            if chunk:
                buffer += chunk
            else:
                time.sleep(0.01)
        return buffer.split(b"\n", 1)[0].decode()

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None and self.process.poll() is None:
            # PolicyPack stops its gRPC server on KeyboardInterrupt, i.e. SIGINT.
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

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
        assert self.stub is not None
        started = time.perf_counter()
        report = PolicyReport(stack=plan.stack)
        resources = [r for r in plan.registrations if r.type != STACK_TYPE]
        for registration in resources:
            response = self.stub.Analyze(analyzer_pb2.AnalyzeRequest(
                type=registration.type,
                properties=_struct(registration.inputs),
                urn=registration.urn,
                name=registration.name,
                options=_options(registration),
            ))
            report.diagnostics += [_diagnostic(d, registration.urn) for d in response.diagnostics]
        response = self.stub.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[
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
        report.diagnostics += [_diagnostic(d) for d in response.diagnostics]
        report.seconds = time.perf_counter() - started
        return report


def analyze_plans(plans: list[Plan], config: Optional[Mapping[str, Mapping[str, Any]]] = None) -> list[PolicyReport]:
    with PolicyAnalyzer(config=config) as analyzer:
        return [analyzer.analyze(plan) for plan in plans]
