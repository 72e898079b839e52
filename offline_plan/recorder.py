"""Run the real Pulumi program under the SDK's mock runtime and record every resource registration.

This is what ``pulumi preview`` would send to the engine, captured without the Pulumi CLI, provider
plugins or cloud credentials. Configuration is assembled by the CLI's rules (``cli_config``): the
stack's ``Pulumi.<stack>.yaml`` with the defaults of ``Pulumi.yaml`` merged in, refused where the CLI
would refuse it. ``secure:`` values are secrets whose plaintext is unknown here; they are handed to
the program as opaque placeholders and marked secret, so they are masked wherever the plan is shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import runpy
import secrets
import string
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.sync_await import _sync_await

from . import cli_config
from .cli_config import SECURE_PLACEHOLDER, ConfigFileError, StackConfigError  # the first two re-exported

PROJECT_DIR = Path(__file__).resolve().parent.parent
FAKE_ACCOUNT = "123456789012"
SECRET_MASK = "[secret]"
# Generated values (random passwords and bytes) are new in every process, so a test that scans the
# plan's output for them cannot pass by luck, and stable within it for the same resource and
# keepers, as the provider keeps a generated value until its keepers change.
_RUN_SEED = secrets.token_bytes(32)


@dataclass
class Registration:
    """One resource as the program registered it: what the engine would be asked to create."""

    urn: str
    type: str
    name: str
    inputs: dict  # secrets still wrapped (see is_secret / reveal / masked)
    parent: str
    protect: bool
    retain_on_delete: bool
    dependencies: tuple[str, ...]
    custom: bool
    provider: str
    # URNs this resource was known by before (``aliases`` option): the engine moves their state here
    aliases: tuple[str, ...] = ()
    outputs: dict = field(default_factory=dict)  # what the (mock) provider returned; stack policies read these
    # input name -> URNs that input's value came from (the engine hands these to stack policies)
    property_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def plain_inputs(self) -> dict:
        return reveal(self.inputs)

    @property
    def masked_inputs(self) -> dict:
        return masked(self.inputs)


@dataclass
class Plan:
    stack: str
    project: str
    registrations: list[Registration] = field(default_factory=list)
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # name -> (value, is_secret)
    error: Optional[str] = None
    secret_config_keys: tuple[str, ...] = ()

    @property
    def resources(self) -> list[Registration]:
        """Every registration except the stack itself."""
        return [r for r in self.registrations if r.type != "pulumi:pulumi:Stack"]

    def of_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_token]

    def one(self, type_token: str, name: Optional[str] = None) -> Registration:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_token} {name or ''} in the {self.stack} plan, found {len(found)}")
        return found[0]

    def children_of(self, parent: Registration) -> list[Registration]:
        return [r for r in self.registrations if r.parent == parent.urn]


# --- secret handling --------------------------------------------------------------------------


def is_secret(value: Any) -> bool:
    return rpc.is_rpc_secret(value)


UNKNOWN_MASK = "[unknown until created]"


def _is_unknown(value: Any) -> bool:
    return isinstance(value, Unknown) or value == rpc.UNKNOWN


def walk(value: Any, visit: Callable[[Any], Any]) -> Any:
    """Rebuild a JSON-like value: ``visit`` sees every node first and returns a replacement, or
    ``KEEP_WALKING`` to have dicts and lists rebuilt from their walked items and leaves kept."""
    replaced = visit(value)
    if replaced is not KEEP_WALKING:
        return replaced
    if isinstance(value, dict):
        return {k: walk(v, visit) for k, v in value.items()}
    if isinstance(value, list):
        return [walk(v, visit) for v in value]
    return value


KEEP_WALKING = object()


def reveal(value: Any) -> Any:
    """Plain values, secrets unwrapped; unknown values become the engine's UNKNOWN sentinel."""
    def visit(node: Any) -> Any:
        if isinstance(node, Unknown):
            return rpc.UNKNOWN
        if is_secret(node):
            return reveal(rpc.unwrap_rpc_secret(node))
        return KEEP_WALKING
    return walk(value, visit)


def on_the_wire(value: Any) -> Any:
    """Inputs as the engine sends them to an analyzer: secrets wrapped, unknowns as the sentinel."""
    return walk(value, lambda node: rpc.UNKNOWN if isinstance(node, Unknown) else KEEP_WALKING)


def masked(value: Any) -> Any:
    """What may be shown: secrets and unknown values replaced by a marker."""
    def visit(node: Any) -> Any:
        if _is_unknown(node):
            return UNKNOWN_MASK
        if is_secret(node):
            return SECRET_MASK
        return KEEP_WALKING
    return walk(value, visit)


# --- configuration, as the CLI assembles it (offline_plan/cli_config.py) ---------------------------


def stack_config(
    stack: str, project_dir: Path = PROJECT_DIR, overrides: Optional[Mapping[str, Any]] = None
) -> tuple[str, dict[str, str], list[str]]:
    """(project name, config as the CLI passes it to the program, secret keys); raises
    ``StackConfigError`` where the CLI would refuse the stack. ``overrides``: see ``cli_config.stack_config``."""
    config = cli_config.stack_config(stack, project_dir, overrides)
    return config.project, config.plain, config.secret_keys


def discover_stacks(project_dir: Path = PROJECT_DIR) -> tuple[str, ...]:
    """Every stack of the project: one ``Pulumi.<stack>.yaml`` each, as ``pulumi stack ls`` would find them
    (staging before prod, then the rest by name, so plans print in promotion order)."""
    found = [path.name[len("Pulumi."):-len(".yaml")] for path in project_dir.glob("Pulumi.*.yaml")]
    order = {"staging": 0, "prod": 1}
    return tuple(sorted(found, key=lambda stack: (order.get(stack, 2), stack)))


# --- the mock runtime -------------------------------------------------------------------------


def _fake_id(urn: str) -> str:
    return hashlib.sha256(urn.encode()).hexdigest()[:20]


def _generated_bytes(name: str, inputs: Mapping[str, Any], length: int) -> bytes:
    material = json.dumps({"name": name, "keepers": inputs.get("keepers") or {}}, sort_keys=True).encode()
    stream = b""
    counter = 0
    while len(stream) < length:
        stream += hmac.new(_RUN_SEED, material + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    return stream[:length]


def _generated_password(name: str, inputs: Mapping[str, Any]) -> str:
    alphabet = string.ascii_letters + string.digits
    if inputs.get("special", True):
        alphabet += inputs.get("overrideSpecial") or "!@#$%&*()-_=+[]{}<>:?"
    length = int(inputs.get("length", 16))
    return "".join(alphabet[b % len(alphabet)] for b in _generated_bytes(name, inputs, length))


class PlanMocks(pulumi.runtime.Mocks):
    """Plausible provider answers, so values computed from outputs (ARNs, IDs) are realistic."""

    def __init__(self, preview: bool = False) -> None:
        self.provider_regions: dict[str, str] = {}
        # In a first `pulumi preview` nothing exists yet: provider-computed values (IDs, ARNs, generated
        # passwords) are unknown, and so is everything computed from them.
        self.preview = preview

    def _region(self, args: pulumi_mocks.MockResourceArgs) -> str:
        # A provider reference is "<urn>::<id>" and the URN ends in "::<name>".
        provider_name = (args.provider or "::").split("::")[-2]
        return self.provider_regions.get(provider_name, "us-east-1")

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        inputs = reveal(args.inputs)
        state = dict(inputs)
        resource_id = f"{args.name}-{_fake_id(args.name + args.typ)[:8]}"
        if args.typ == "pulumi:providers:aws":
            self.provider_regions[args.name] = inputs.get("region", "us-east-1")
            return resource_id, state
        if self.preview:
            return "", state
        if args.typ == "aws:s3/bucket:Bucket":
            resource_id = inputs["bucket"]
            state["arn"] = f"arn:aws:s3:::{resource_id}"
        elif args.typ == "aws:kms/key:Key":
            key_id = _fake_id(args.name)
            resource_id = f"{key_id[:8]}-{key_id[8:12]}-{key_id[12:16]}-{key_id[16:20]}-{_fake_id(key_id)[:12]}"
            state["keyId"] = resource_id
            state["arn"] = f"arn:aws:kms:{self._region(args)}:{FAKE_ACCOUNT}:key/{resource_id}"
        elif args.typ == "aws:iam/role:Role":
            resource_id = inputs.get("name") or resource_id
            state["name"] = resource_id
            state["arn"] = f"arn:aws:iam::{FAKE_ACCOUNT}:role/{resource_id}"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = _generated_password(args.name, inputs)
            resource_id = "none"
        elif args.typ == "random:index/randomBytes:RandomBytes":
            data = _generated_bytes(args.name, inputs, int(inputs.get("length", 32)))
            state["hex"] = data.hex()
            state["base64"] = base64.b64encode(data).decode()
            resource_id = "none"
        return resource_id, state

    def call(self, args: pulumi_mocks.MockCallArgs):
        return {}


STACK_TYPE = "pulumi:pulumi:Stack"


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, plus a record of each request's options (parent, protect, ...)."""

    def __init__(self, mocks: PlanMocks, on_register: Optional[Callable[[Registration], None]] = None):
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self._lock = threading.Lock()
        self._on_register = on_register

    def _alias_urns(self, request) -> tuple[str, ...]:
        """Each alias as the URN the engine resolves it to: a spec's unset name, type and parent are the
        resource's own (``noParent`` means the stack's top level)."""
        urns = set(request.aliasURNs)
        for alias in request.aliases:
            if alias.WhichOneof("alias") == "urn":
                urns.add(alias.urn)
                continue
            spec = alias.spec
            parent = request.parent
            if spec.WhichOneof("parent") == "parentUrn":
                parent = spec.parentUrn
            elif spec.noParent:
                parent = self._stack_urn()
            urns.add(self.make_urn(parent, spec.type or request.type, spec.name or request.name))
        return tuple(sorted(urns))

    def _stack_urn(self) -> str:
        return next((r.urn for r in self.registrations if r.type == STACK_TYPE), "")

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """The engine's URN (pkg/resource/urn.go): a parent's type qualifies a child's, except the root stack's.

        The SDK's mock puts ``pulumi:pulumi:Stack$`` into every top-level component's URN, which matches no
        real state (seen against the real engine, tests/test_peer_pulumi_cli.py)."""
        if parent and parent.split("::")[2].split("$")[-1] == STACK_TYPE:
            parent = ""
        return super().make_urn(parent, type_, name)

    def RegisterResource(self, request):
        pulumi_mocks._ensure_event_loop()
        inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
        registration = Registration(
            urn=self.make_urn(request.parent, request.type, request.name),
            type=request.type,
            name=request.name,
            inputs=inputs,
            parent=request.parent,
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            dependencies=tuple(sorted(request.dependencies)),
            custom=bool(request.custom),
            provider=request.provider,
            aliases=self._alias_urns(request),
            property_dependencies={key: tuple(sorted(value.urns)) for key, value in request.propertyDependencies.items()},
        )
        with self._lock:
            # The engine refuses a second resource with the same URN; the SDK's mock monitor does not.
            if any(r.urn == registration.urn for r in self.registrations):
                raise pulumi.RunError(f"duplicate resource URN {registration.urn}")
            self.registrations.append(registration)
        if self._on_register is not None:
            self._on_register(registration)
        response = super().RegisterResource(request)
        registration.outputs = rpc.deserialize_properties(response.object, keep_unknowns=True)
        return response


def record_plan(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    overrides: Optional[Mapping[str, Any]] = None,
    preview: bool = False,
    on_register: Optional[Callable[[Registration], None]] = None,
) -> Plan:
    """Run ``__main__.py`` of ``project_dir`` for ``stack`` and return what it registered.

    ``overrides`` sets (or, with None, removes) config keys as ``pulumi config set/rm`` would (see
    ``cli_config.stack_config``). ``preview=True`` records a first ``pulumi preview``: values providers
    compute are unknown. Bad configuration is returned as ``Plan.error``, not raised: the CLI's refusal
    (missing key, wrong type, unencrypted secret), then nothing runs, or a ``pulumi.RunError`` from the
    program (bad settings). ``on_register`` sees each registration (inputs and options, before the mock
    provider's outputs) as it arrives, from the mock runtime's threads, as the engine's analyzers do.
    """
    try:
        project, config, secret_keys = stack_config(stack, project_dir, overrides)
    except StackConfigError as exc:
        return Plan(stack=stack, project=exc.project, error=str(exc))
    return run_program(project, stack, config, secret_keys, project_dir, preview, on_register)


def run_program(
    project: str,
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str],
    project_dir: Path = PROJECT_DIR,
    preview: bool = False,
    on_register: Optional[Callable[[Registration], None]] = None,
) -> Plan:
    """Run the program with exactly this config (as the engine hands it over) and record it."""
    runtime_settings.reset_options(project=project, stack=stack)
    set_all_config(dict(config), list(secret_keys))
    mocks = PlanMocks(preview=preview)
    monitor = RecordingMonitor(mocks, on_register)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=monitor)
    plan = Plan(stack=stack, project=project, secret_config_keys=tuple(secret_keys))

    def program():
        sys.path.insert(0, str(project_dir))
        try:
            runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")
        finally:
            sys.path.remove(str(project_dir))
        return _collect_outputs(plan)

    try:
        _sync_await(pulumi_mocks.run_pulumi_func(program))
    except pulumi.RunError as exc:
        plan.error = str(exc)
    # Registrations arrive from several threads in varying order; sorted, plans and their files are
    # the same on every run.
    plan.registrations = sorted(monitor.registrations, key=lambda registration: registration.urn)
    return plan


async def _collect_outputs(plan: Plan) -> None:
    root = runtime_settings.get_root_resource()
    for name, value in dict(getattr(root, "outputs", {}) or {}).items():
        output = pulumi.Output.from_input(value)
        plan.outputs[name] = (await output.future(with_unknowns=True), await output.is_secret())
