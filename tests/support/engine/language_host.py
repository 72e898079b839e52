"""Test-only Pulumi language host for Python programs (see __init__.py for what it stands in for).

Started by the engine as ``pulumi-language-python [flags] ENGINE_ADDRESS``; prints its port and serves the
LanguageRuntime gRPC service on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from google.protobuf import empty_pb2
from plugin_server import serve  # a sibling module: the engine runs this file as a script
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

RUNNER = Path(__file__).resolve().with_name("program_runner.py")
VERSION = "3.274.1"


def _options(info) -> dict:
    from google.protobuf.json_format import MessageToDict
    return MessageToDict(info.options) if info is not None and info.HasField("options") else {}


def _virtualenv_python(root: str, options: dict) -> str:
    """The interpreter of the virtualenv the project (or policy pack) file names, relative to its directory."""
    virtualenv = options.get("virtualenv")
    if not virtualenv:
        raise RuntimeError("the runtime options name no virtualenv (this test host runs nothing from the "
                           "ambient Python)")
    path = Path(virtualenv) if os.path.isabs(virtualenv) else Path(root) / virtualenv
    python = path / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"The '{virtualenv}' virtualenv ({path}) does not exist")
    return str(python)


class LanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    def __init__(self, engine_address: str):
        self.engine_address = engine_address

    def Handshake(self, request, context):
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=VERSION)

    def GetRequiredPlugins(self, request, context):
        return language_pb2.GetRequiredPluginsResponse()

    def GetRequiredPackages(self, request, context):
        return language_pb2.GetRequiredPackagesResponse()

    def InstallDependencies(self, request, context):
        return iter(())

    def Run(self, request, context):
        try:
            python = _virtualenv_python(request.info.root_directory, _options(request.info))
        except RuntimeError as exc:
            return language_pb2.RunResponse(error=str(exc))
        program = request.info.program_directory or request.pwd
        env = dict(os.environ)
        env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
        env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
        argv = [python, str(RUNNER), "--monitor", request.monitor_address, "--engine", self.engine_address,
                "--project", request.project, "--stack", request.stack, "--organization", request.organization,
                "--parallel", str(request.parallel), "--root", request.info.root_directory or program,
                "--dry-run" if request.dryRun else "--no-dry-run", program]
        # Output goes where the engine reads the host's own stdout/stderr, as with the real host.
        result = subprocess.run(argv, cwd=request.pwd or program, env=env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            return language_pb2.RunResponse(error=f"Program exited with non-zero exit code: {result.returncode}",
                                            bail=result.returncode == 32)
        return language_pb2.RunResponse()

    def RunPlugin(self, request, context):
        python = _virtualenv_python(request.info.root_directory, _options(request.info))
        program = request.info.program_directory
        env = dict(os.environ)
        env.update(item.split("=", 1) for item in request.env if "=" in item)
        proc = subprocess.Popen([python, program, *request.args], cwd=request.pwd or program, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        responses: list = []
        lock = threading.Condition()

        def pump(stream, field):
            for chunk in iter(lambda: stream.read1(4096), b""):
                with lock:
                    responses.append(language_pb2.RunPluginResponse(**{field: chunk}))
                    lock.notify()

        threads = [threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True)]
        for thread in threads:
            thread.start()
        context.add_callback(proc.kill)
        while True:
            with lock:
                lock.wait_for(lambda: responses or not any(t.is_alive() for t in threads), timeout=0.5)
                pending, responses[:] = list(responses), []
            yield from pending
            if not pending and not any(t.is_alive() for t in threads):
                break
        yield language_pb2.RunPluginResponse(exitcode=proc.wait())

    def About(self, request, context):
        return language_pb2.AboutResponse(executable=sys.executable, version=VERSION)

    def GetProgramDependencies(self, request, context):
        return language_pb2.GetProgramDependenciesResponse()

    def Cancel(self, request, context):
        return empty_pb2.Empty()


def main() -> None:
    positional = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    engine_address = positional[-1] if positional else ""
    serve(lambda server: language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageHost(engine_address),
                                                                                 server))


if __name__ == "__main__":
    main()
