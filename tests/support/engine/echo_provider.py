"""Test-only resource provider that accepts every input and echoes it back as the resource's outputs.

Started by the engine as ``pulumi-resource-<package>`` (the shim passes PACKAGE and RECORD_DIR first); prints its
port and serves the ResourceProvider gRPC service on 127.0.0.1. Every Check it answers is recorded as
``RECORD_DIR/<package>/<n>.json`` ({urn, type, name, inputs}) so a test can compare what the engine sent with
the offline plan.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime import mocks as pulumi_mocks
from plugin_server import serve  # a sibling module: the engine runs this file as a script
from pulumi.runtime.proto import plugin_pb2, provider_pb2, provider_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
# The values a provider computes (ARNs, IDs, generated passwords) as the offline plan's mocks make them up, so
# the engine's run and the plan compute the same dependent values.
from offline_plan.recorder import PlanMocks  # noqa: E402

SECRET_SIG = "4dabf18193072939515e22adb298388d"

DIFF_NONE = provider_pb2.DiffResponse.DIFF_NONE
DIFF_SOME = provider_pb2.DiffResponse.DIFF_SOME


def _reveal(value):
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return _reveal(value.get("value"))
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_reveal(item) for item in value]
    return value


class EchoProvider(provider_pb2_grpc.ResourceProviderServicer):
    def __init__(self, package: str, record_dir: Path):
        self.package = package
        self.record_dir = record_dir / package
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.region = None
        try:
            self.version = importlib.metadata.version(f"pulumi_{package}")
        except importlib.metadata.PackageNotFoundError:
            self.version = "0.0.1"

    def Handshake(self, request, context):
        return provider_pb2.ProviderHandshakeResponse(accept_secrets=True, accept_resources=True)

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=self.version)

    def GetSchema(self, request, context):
        return provider_pb2.GetSchemaResponse(schema=json.dumps({"name": self.package, "version": self.version}))

    def CheckConfig(self, request, context):
        return provider_pb2.CheckResponse(inputs=request.news)

    def DiffConfig(self, request, context):
        return provider_pb2.DiffResponse(changes=DIFF_NONE)

    def Configure(self, request, context):
        # One process per provider instance: its region decides the ARNs the mocks make up (as in the plan).
        arguments = json_format.MessageToDict(request.args) if request.HasField("args") else {}
        self.region = arguments.get("region") or dict(request.variables).get(f"{self.package}:config:region")
        return provider_pb2.ConfigureResponse(acceptSecrets=True, supportsPreview=True, acceptResources=True)

    def Check(self, request, context):
        record = {"urn": request.urn, "type": request.type or request.urn.split("::")[-2].split("$")[-1],
                  "name": request.name or request.urn.split("::")[-1],
                  "inputs": json_format.MessageToDict(request.news)}
        key = hashlib.sha256(request.urn.encode()).hexdigest()[:16]
        (self.record_dir / f"{key}.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        return provider_pb2.CheckResponse(inputs=request.news)

    def Diff(self, request, context):
        changed = json_format.MessageToDict(request.olds) != json_format.MessageToDict(request.news)
        return provider_pb2.DiffResponse(changes=DIFF_SOME if changed else DIFF_NONE)

    def Create(self, request, context):
        if request.preview:
            return provider_pb2.CreateResponse(properties=request.properties)
        inputs = _reveal(json_format.MessageToDict(request.properties))
        name = request.name or request.urn.split("::")[-1]
        type_token = request.type or request.urn.split("::")[-2].split("$")[-1]
        mocks = PlanMocks()
        if self.region:
            mocks.provider_regions["this-provider"] = _reveal(self.region)
        identifier, state = mocks.new_resource(pulumi_mocks.MockResourceArgs(
            typ=type_token, name=name, inputs=inputs, provider="urn::this-provider::id", resource_id="",
            custom=True))
        properties = struct_pb2.Struct()
        properties.CopyFrom(request.properties)
        for key, value in state.items():
            if key not in inputs:
                properties.update({key: value})
        return provider_pb2.CreateResponse(id=identifier or hashlib.sha256(request.urn.encode()).hexdigest()[:12],
                                           properties=properties)

    def Read(self, request, context):
        return provider_pb2.ReadResponse(id=request.id, properties=request.properties, inputs=request.inputs)

    def Update(self, request, context):
        return provider_pb2.UpdateResponse(properties=request.news)

    def Delete(self, request, context):
        return empty_pb2.Empty()

    def Invoke(self, request, context):
        return provider_pb2.InvokeResponse(**{"return": request.args})

    def Cancel(self, request, context):
        return empty_pb2.Empty()


def main() -> None:
    package, record_dir = sys.argv[1], Path(sys.argv[2])
    serve(lambda server: provider_pb2_grpc.add_ResourceProviderServicer_to_server(EchoProvider(package, record_dir),
                                                                                  server))


if __name__ == "__main__":
    main()
