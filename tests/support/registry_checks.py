"""What a registry booted from a stack's configuration must do, as named checks that report instead of stopping.

``behaviour_failures()`` boots the registry (and a second instance on the same storage), runs every check and
returns the failed ones by name: empty means the configuration does everything the stack relies on. The
key-removal tests use it to show which behaviour each KV key carries.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Mapping, Optional

import requests

from .config_cli import ConfigCliError
from .oci import RegistryError, make_image, sha256_digest
from .processes import ProcessStartError
from .registry_server import RunningRegistry
from .stack_registry import S3Backend, StackSetup
from .token_client import TokenRequestError

HTTP = requests.Session()
HTTP.trust_env = False

CHECKS = ("start", "auth challenge", "wrong password", "push and pull", "pull-only user", "upload across instances",
          "delete", "metrics", "health", "storage", "json logs", "clean SIGTERM")


def expect_unauthorized(attempt: Callable[[], object]) -> None:
    """``attempt`` must be refused with 401, by the registry or (token mode) by the token server."""
    try:
        attempt()
    except RegistryError as error:
        assert error.status == 401, f"expected 401, got {error.status}"
        return
    except TokenRequestError as error:
        assert error.status == 401, f"expected 401 from the token server, got {error.status}"
        return
    raise AssertionError("was not refused")


def expected_challenge(setup: StackSetup, environment: Mapping[str, str]) -> str:
    if setup.token_mode:
        return f'Bearer realm="{setup.token_realm}",service="{setup.token_service_name}"'
    return 'Basic realm="Registry"'


def behaviour_failures(setup: StackSetup, factory, kv: Optional[Mapping[str, str]] = None,
                       label: str = "check") -> dict[str, str]:
    """Boot from ``kv`` (default: the recorded KV) and return ``{check: why it failed}``."""
    failures: dict[str, str] = {}

    def check(name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except Exception as error:  # every failure is reported by name, not raised
            failures[name] = f"{type(error).__name__}: {str(error)[:400]}"

    try:
        registry = setup.boot(factory, kv, name=label, expected_exit=None, add_debug_addr=False, timeout=10)
    except (ProcessStartError, ConfigCliError) as error:  # the registry, or config-cli before it, refused
        return {"start": f"{type(error).__name__}: {str(error)[-1500:]}"}
    peer: Optional[RunningRegistry] = None
    try:
        pusher = setup.users("push")[0]
        pullers = setup.users("pull")
        repo = f"e2e/{label.lower()}"
        image = make_image(os.urandom(64 * 1024), compress=False)
        ci = setup.client(registry, pusher)

        def auth_challenge() -> None:
            response = HTTP.get(registry.base_url + "/v2/", timeout=10)
            assert response.status_code == 401, response.status_code
            challenge = response.headers.get("WWW-Authenticate", "")
            assert challenge == expected_challenge(setup, registry.env), challenge
            expect_unauthorized(lambda: setup.client(registry).list_tags(repo))  # no credentials at all

        def wrong_password() -> None:
            expect_unauthorized(lambda: setup.client(registry, pusher, "wrong-" + setup.accounts[pusher].password)
                                .ping())

        def push_and_pull() -> None:
            ci.push_image(repo, image, tag="v1")
            pulled = setup.client(registry, pusher).pull_image(repo, "v1")
            assert pulled.manifest.data == image.manifest.data
            assert [blob.data for blob in pulled.blobs] == [blob.data for blob in image.blobs]

        def pull_only() -> None:
            assert pullers, "the stack has no pull-only user"
            reader = setup.client(registry, pullers[0])
            assert reader.pull_image(repo, "v1").manifest.data == image.manifest.data
            expect_unauthorized(lambda: reader.push_blob(repo, b"pull-only users cannot push"))

        def upload_across_instances() -> None:
            nonlocal peer
            peer = setup.boot(factory, kv, name=f"{label}-peer", expected_exit=None, add_debug_addr=False,
                              timeout=10)
            data = os.urandom(4096)
            started = ci.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
            location = started.headers["Location"].replace(registry.base_url, peer.base_url)
            assert location.startswith(peer.base_url), location
            setup.client(peer, pusher).request(
                "PUT", location, expect=(201,), params={"digest": sha256_digest(data)}, data=data,
                headers={"Content-Type": "application/octet-stream"})

        def delete() -> None:
            if setup.token_mode:
                # Only the cleanup robot's token carries delete; the CI robot's request is refused.
                try:
                    ci.delete_manifest(repo, image.digest)
                    raise AssertionError("the CI robot deleted a manifest")
                except RegistryError as refused:
                    assert refused.status == 401, refused.status
                setup.client(registry, setup.users("cleanup")[0]).delete_manifest(repo, image.digest)
            else:
                ci.delete_manifest(repo, image.digest)
            assert not setup.client(registry, pusher).manifest_exists(repo, image.digest)

        def metrics() -> None:
            response = HTTP.get(registry.debug_url + "/metrics", timeout=10)
            assert response.status_code == 200, response.status_code
            # Requests served, storage calls timed, and blob descriptors looked up in the cache during the pull.
            for sample in ("registry_http_requests_total", "registry_storage_action_seconds_count",
                           "registry_storage_cache_requests_total"):
                assert metric_total(response.text, sample) > 0, f"no {sample} counted"

        def health() -> None:
            response = HTTP.get(registry.debug_url + "/debug/health", timeout=10)
            assert (response.status_code, response.json()) == (200, {}), response.text
            assert HTTP.get(registry.base_url + "/", timeout=10).status_code == 200

        def storage() -> None:
            layer = image.layers[0]
            stored = setup.backend.stored_blob(setup.kv, layer.digest)
            assert stored["size"] == len(layer.data), stored
            if isinstance(setup.backend, S3Backend):
                assert stored["sse"] == "aws:kms" and stored["kms_key"] == setup.backend.kms_key_arn, stored
                # Clients get the bytes from the registry itself, never a redirect to the storage endpoint.
                direct = ci.request("GET", f"/v2/{repo}/blobs/{layer.digest}", allow_redirects=False)
                assert direct.content == layer.data

        check("auth challenge", auth_challenge)
        check("wrong password", wrong_password)
        check("push and pull", push_and_pull)
        if setup.token_mode:
            check("pull-only user", pull_only)
        check("upload across instances", upload_across_instances)
        check("metrics", metrics)
        check("health", health)
        check("storage", storage)
        check("delete", delete)
    finally:
        exits = {instance.process.name: instance.stop() for instance in (registry, peer) if instance is not None}
    if set(exits.values()) != {0}:
        failures["clean SIGTERM"] = f"exit codes after SIGTERM: {exits}"
    check("json logs", lambda: assert_json_logs(registry, setup))
    return failures


def metric_total(exposition: str, sample: str) -> float:
    """The sum of every series of ``sample`` in a Prometheus text exposition."""
    total = 0.0
    for line in exposition.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name == sample:
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_json_logs(registry: RunningRegistry, setup: StackSetup) -> None:
    """Every line is JSON, requests are logged with the stack's environment, debug lines only if the KV says debug."""
    lines = [line for line in registry.log_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not JSON: {line[:200]}") from None
    # A handful of start-up lines are written before the configured fields are attached; requests carry them.
    served = [record for record in records if record.get("msg") == "response completed"]
    assert served, "no request was logged"
    missing = [record["http.request.uri"] for record in served if record.get("environment") != setup.stack]
    assert not missing, f"requests logged without environment={setup.stack}: {missing[:3]}"
    debug = any(record.get("level") == "debug" for record in records)
    assert debug == (setup.kv.get("env/REGISTRY_LOG_LEVEL") == "debug"), f"debug lines present: {debug}"
