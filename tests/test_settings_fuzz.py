"""Any value of any setting, as the stack file or `pulumi config set` can give it: the program plans, or it stops
with the one-line message before registering anything. Never a traceback.

Property-based (Hypothesis), through the offline plan's own path (``record_plan`` with overrides: the CLI's
config assembly, then the real ``__main__.py`` under the mock runtime). Bounded for CI and reproducible:
``derandomize`` fixes the examples, ``SETTINGS_FUZZ_EXAMPLES`` raises the count for a longer local run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings, strategies as st

from components.settings import SECRET_KEYS, SettingsError, parse_settings
from offline_plan import record_plan
from offline_plan.cli_config import ConfigFileError
from offline_plan.recorder import PROJECT_DIR, stack_config

STACKS = ("staging", "prod")
# The keys Pulumi.yaml declares, plus the two secrets it cannot declare (its header says why).
DECLARED_KEYS = tuple(yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"])
KEYS = DECLARED_KEYS + SECRET_KEYS
EXAMPLES = int(os.environ.get("SETTINGS_FUZZ_EXAMPLES", "200"))

# The program's refusal: `registry:<key>: <value> is not allowed; <what is allowed>`.
PROGRAM_REFUSAL = re.compile(r"registry:[A-Za-z0-9]+: .+ is not allowed; .+")
# The CLI's own refusals, before the program runs (offline_plan/cli_config.py restates them).
CLI_REFUSAL = re.compile(r"Stack '[a-z]+' (is missing configuration values? .+|with configuration key '[A-Za-z0-9]+' must be .+)")

# Characters careless copying brings in: surrounding and non-breaking spaces, line ends, zero-width and bidi
# marks, a byte-order mark, a Cyrillic look-alike.
NOISE = [" ", "\t", "\n", "\r\n", "\u00a0", "\u200b", "\u200e", "\u202e", "\ufeff", "\u0430", "\x00", "\x7f"]


def _stack_raw(stack: str) -> dict[str, str]:
    """The stack's settings as the program receives them (Pulumi.yaml's defaults merged in)."""
    project, config, _ = stack_config(stack)
    return {full_key.split(":", 1)[1]: text for full_key, text in config.items() if full_key.startswith(f"{project}:")}


STACK_RAW = {stack: _stack_raw(stack) for stack in STACKS}
# Every value the two stacks give each key, lists decoded: the starting points of near-valid values.
STACK_VALUES = {key: [json.loads(raw[key]) if raw[key].startswith("[") else raw[key]
                      for raw in STACK_RAW.values() if key in raw] for key in KEYS}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)


@st.composite
def near_valid(draw, key: str):
    """A value a stack really uses for ``key``, spoilt the way copying and editing spoil values."""
    known = STACK_VALUES[key]
    if not known:
        return draw(st.text(max_size=20))
    value = draw(st.sampled_from(known))

    def spoil(text: str) -> str:
        noise = draw(st.sampled_from(NOISE))
        where = draw(st.sampled_from(("prefix", "suffix", "inside", "digits", "cut", "upper", "double")))
        if where == "prefix":
            return noise + text
        if where == "suffix":
            return text + noise
        if where == "inside" and text:
            at = draw(st.integers(0, len(text)))
            return text[:at] + noise + text[at:]
        if where == "digits":  # numbers, ports and sizes out of range
            at = draw(st.integers(0, len(text)))
            return text[:at] + draw(st.sampled_from(("9999", "0", "-1", "1" + "0" * 400, "e9"))) + text[at:]
        if where == "cut" and text:
            return text[: draw(st.integers(0, len(text) - 1))]
        if where == "upper":
            return text.upper()
        return text + text

    if isinstance(value, list):
        if not value or draw(st.booleans()):
            return [*value, draw(st.sampled_from(("0.0.0.0/1", "128.0.0.0/1", "*", "", "::/1", "8000::/1")))]
        at = draw(st.integers(0, len(value) - 1))
        return [*value[:at], spoil(str(value[at])), *value[at + 1:]]
    return spoil(str(value))


DECLARED_TYPES = {key: spec.get("type", "string")
                  for key, spec in yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"].items()}
# Hypothesis favours small integers: the edges of ports, cron fields and int64 are named outright.
numbers = st.one_of(st.sampled_from((0, 1, 7, 24, 31, 59, 60, 65535, 65536, 99999, (1 << 31) - 1, 1 << 63)),
                    st.integers(-2, 1 << 32))
cidrs = st.builds(lambda address, prefix: str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)),
                  st.ip_addresses(v=4), st.integers(1, 32))


@st.composite
def retuned(draw, key: str):
    """A value of the key's own type that the CLI passes and the parser may well accept: a number, the
    stack's value with its numbers changed (ports, sizes, schedule fields), or other CIDR blocks. These
    reach the components, where an accepted-but-wrong value would crash after registrations."""
    kind = DECLARED_TYPES.get(key, "string")
    if kind == "integer":
        return str(draw(numbers))
    if kind == "array" and key.endswith("Cidrs"):
        return draw(st.lists(cidrs, min_size=1, max_size=3))
    known = [value for value in STACK_VALUES[key] if isinstance(value, str)]
    if not known or not re.search(r"[0-9]+", known[0]):
        return draw(near_valid(key))
    return re.sub(r"[0-9]+", lambda _: str(draw(numbers)), draw(st.sampled_from(known)), count=1)


@st.composite
def overrides(draw):
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True))
    return {f"registry:{key}": draw(st.one_of(near_valid(key), retuned(key), st.text(max_size=60), json_values))
            for key in keys}


@pytest.mark.parametrize("stack", STACKS)
@settings(max_examples=EXAMPLES // len(STACKS), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(changed=overrides())
def test_any_setting_value_plans_or_stops_with_one_line_and_nothing_registered(stack, changed):
    try:
        plan = record_plan(stack, overrides=changed)  # any exception but the ones below is a traceback
    except ConfigFileError as exc:
        # A value the stack file cannot hold (the offline plan says so in one line and exits 2).
        event("refused: not a stack file value")
        assert "\n" not in str(exc)
        return
    if plan.error is None:
        event("planned")
        assert plan.resources, "a plan without an error registers the stack's resources"
        return
    assert "\n" not in plan.error, plan.error
    event("refused by the program" if PROGRAM_REFUSAL.fullmatch(plan.error) else "refused by the CLI's rules")
    assert PROGRAM_REFUSAL.fullmatch(plan.error) or CLI_REFUSAL.fullmatch(plan.error), plan.error
    assert plan.resources == [], f"registered before the error: {plan.error}"


@settings(max_examples=EXAMPLES * 2, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stack=st.sampled_from(STACKS), key=st.sampled_from(KEYS),
       value=st.one_of(json_values, st.text(max_size=60), st.binary(max_size=8)))
def test_parse_settings_refuses_any_python_value_with_its_one_error_type(stack, key, value):
    """Called directly (as tests and tools do), any Python value for any key, not only the CLI's strings."""
    raw = {**STACK_RAW[stack], key: value}
    try:
        parse_settings(raw, environment=stack, present_keys=set(raw))
    except SettingsError as exc:
        assert "\n" not in str(exc) and PROGRAM_REFUSAL.fullmatch(str(exc)), str(exc)
