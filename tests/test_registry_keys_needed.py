"""Every KV key the registry needs is shown needed: remove it, boot through config-cli's contract, watch a check fail.

Each ``env/`` and ``files/`` key of both stacks is removed in turn; the registry is booted from the rest (with a
second instance on the same storage) and ``behaviour_failures()`` runs every check. A key listed in ``NEEDED``
must make the named check fail. A key listed in ``NOT_OBSERVABLE`` must change nothing here, and says why; it is
asserted, so a key that becomes observable (or stops being) sends the reader back to this list. ``NOT_BOOTED``
keys cannot be removed safely on a test machine; the reason names what is asserted instead.
"""

from __future__ import annotations

import pytest

from offline_plan import record_plan
from tests.support.config_cli import recorded_kv
from tests.support.registry_checks import behaviour_failures

pytest_plugins = ["tests.support.fixtures", "tests.support.stack_fixtures"]

STACKS = ("staging", "prod")

# key -> the check its removal breaks
NEEDED = {
    "env/REGISTRY_AUTH_TOKEN_REALM": "start",  # "token auth requires a valid option string: realm"
    "env/REGISTRY_AUTH_TOKEN_SERVICE": "start",
    "env/REGISTRY_AUTH_TOKEN_ISSUER": "start",
    "env/REGISTRY_AUTH_TOKEN_JWKS": "start",  # token auth without any key to verify with
    "files/token-jwks.json": "start",  # config-cli refuses: an env value names a file nobody provides
    "env/REGISTRY_HTTP_SECRET": "upload across instances",  # each instance makes up its own secret
    "env/REGISTRY_HTTP_DRAINTIMEOUT": "clean SIGTERM",  # without it v3.1.1 dies by the signal (-15)
    "env/REGISTRY_HTTP_DEBUG_ADDR": "metrics",  # no debug server: no /metrics, no /debug/health
    "env/REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "metrics",  # /metrics answers 404
    "env/REGISTRY_LOG_FORMATTER": "json logs",  # text format
    "env/REGISTRY_LOG_ACCESSLOG_DISABLED": "json logs",  # Apache combined lines between the JSON ones
    "env/REGISTRY_LOG_FIELDS_ENVIRONMENT": "json logs",
    "env/REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "metrics",  # no descriptor cache: no cache lookups counted
    "env/REGISTRY_STORAGE_DELETE_ENABLED": "delete",  # 405 UNSUPPORTED
    "env/REGISTRY_STORAGE_REDIRECT_DISABLE": "push and pull",  # clients sent to presigned storage URLs
    "env/REGISTRY_STORAGE_S3_BUCKET": "start",
    "env/REGISTRY_STORAGE_S3_KEYID": "storage",  # encrypt without a key id: SSE-S3 (AES256), not the KMS key
    "env/REGISTRY_STORAGE_S3_ROOTDIRECTORY": "storage",  # objects land at the bucket root
}
NEEDED_IN = {("staging", "env/REGISTRY_LOG_LEVEL"): "json logs"}  # staging logs at debug; info is the default

NOT_OBSERVABLE = {
    "env/REGISTRY_AUTH": "the REGISTRY_AUTH_TOKEN_* variables alone create the auth.token section; the variable "
                         "matters only if the config file holds another auth section (see docs/e2e.md)",
    "env/REGISTRY_STORAGE": "likewise the storage sub-keys create the section; needed against a config file "
                            "that defines filesystem storage (the image's), where S3 keys on top panic",
    "env/OTEL_TRACES_EXPORTER": "the default OTLP exporter's failures to reach localhost:4318 are not logged "
                                "within a test's lifetime; the registry:3 image sets it to none as well",
    "env/REGISTRY_HEALTH_STORAGEDRIVER_ENABLED": "the check first runs after the 10 s interval and turns "
                                                 "critical after 3 failures (30 s); tests/test_registry_facts.py "
                                                 "shows the mechanism with a 1 s interval",
    "env/REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL": "10s is Distribution's default interval",
    "env/REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD": "only differs after a storage failure lasting 10-30 s",
    "env/REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH": "/metrics is Distribution's default path",
    "env/REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING": "the value is Distribution's default (on, 168h, 24h)",
    "env/REGISTRY_STORAGE_MAINTENANCE_READONLY": "enabled:false is the default; written so the map form is the "
                                                 "one operators edit (see the _ENABLED test below)",
    "env/REGISTRY_STORAGE_S3_ENCRYPT": "the bucket's default encryption (the plan's SSE-KMS rule) encrypts with "
                                       "the same key when the registry asks for nothing",
    "env/REGISTRY_STORAGE_S3_REGION": "moto accepts any region in the signature scope; AWS would refuse",
    "env/REGISTRY_STORAGE_S3_SECURE": "true is the default, and the test replaces it with false for moto",
    "env/REGISTRY_STORAGE_S3_V4AUTH": "true is the default",
    "env/REGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS": "the token service signs ES256 only, which the default list "
                                                "accepts; tests/test_token_service_registry.py shows the pin "
                                                "refusing another algorithm",
}
NOT_OBSERVABLE_IN = {("prod", "env/REGISTRY_LOG_LEVEL"): "info is the default level"}

NOT_BOOTED = {
    "env/REGISTRY_HTTP_ADDR": "without it v3.1.1 listens on a random port on every interface; not started here "
                              "(tests stay on 127.0.0.1). Asserted: the value is :5000, the port probes and "
                              "the Service use",
    "env/REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "the value is Distribution's default /var/lib/registry, so "
                                                     "removing it changes nothing but would write to the host's "
                                                     "/var/lib/registry. Asserted: the value is that default",
}
NOT_BOOTED_VALUES = {"env/REGISTRY_HTTP_ADDR": ":5000",
                     "env/REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/var/lib/registry"}


def removable_keys(stack: str) -> list[str]:
    _, kv = recorded_kv(record_plan(stack))
    return sorted(key for key in kv if key.startswith(("env/", "files/")))


CASES = [(stack, key) for stack in STACKS for key in removable_keys(stack)]


def classification(stack: str, key: str) -> tuple[str, str]:
    if (stack, key) in NEEDED_IN:
        return "needed", NEEDED_IN[(stack, key)]
    if (stack, key) in NOT_OBSERVABLE_IN:
        return "not observable", NOT_OBSERVABLE_IN[(stack, key)]
    for kind, table in (("needed", NEEDED), ("not observable", NOT_OBSERVABLE), ("not booted", NOT_BOOTED)):
        if key in table:
            return kind, table[key]
    raise AssertionError(f"{stack}: {key} is not classified: add it to NEEDED or (with a reason) NOT_OBSERVABLE")


def label(key: str) -> str:
    return key.split("/", 1)[1].lower().replace("_", "-").replace(".", "-").removeprefix("registry-")


@pytest.mark.parametrize("stack,key", CASES, ids=[f"{stack}-{key}" for stack, key in CASES])
def test_removing_a_needed_key_breaks_the_registry(stack_setup, registry_factory, stack, key):
    setup = stack_setup(stack)
    kind, detail = classification(stack, key)
    if kind == "not booted":
        assert setup.kv[key] == NOT_BOOTED_VALUES[key], detail
        return
    without = {name: value for name, value in setup.kv.items() if name != key}
    failures = behaviour_failures(setup, registry_factory, without, label=f"{stack}-without-{label(key)}")
    if kind == "needed":
        assert detail in failures, f"removing {key} should break {detail!r}; failed: {failures}"
    else:
        assert failures == {}, f"{key} was listed as not observable ({detail}) but its removal broke {failures}"


def test_the_recorded_kv_passes_every_check(stack_setup, registry_factory):
    """The baseline of the removal tests: with every key present, nothing fails (so a failure above is the key's)."""
    for stack in STACKS:
        assert behaviour_failures(stack_setup(stack), registry_factory, label=f"{stack}-baseline") == {}


@pytest.mark.parametrize("stack", STACKS)
def test_read_only_flag_in_the_enabled_form_stops_the_boot(stack_setup, registry_factory, stack):
    setup = stack_setup(stack)
    kv = {name: value for name, value in setup.kv.items() if name != "env/REGISTRY_STORAGE_MAINTENANCE_READONLY"}
    kv["env/REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED"] = "true"
    failures = behaviour_failures(setup, registry_factory, kv, label=f"{stack}-readonly-enabled-form")
    assert list(failures) == ["start"]
    assert "readonly config key must contain additional keys" in failures["start"]
