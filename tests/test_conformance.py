"""The OCI distribution-spec conformance suite, every area on, through the project's token path, side by side
with a bare Distribution v3.1.1 booted in the same run.

Distribution v3.1.1 itself fails part of the suite (sha512 digests, the referrers API, OCI-Subject...), so the
bar is the bare registry's result, not zero: the stack's registry, booted from staging's recorded configuration
through the config-cli stand-in, behind the token service, must pass and fail exactly the same tests. The suite
logs in as the stack's cleanup robot, under a rule added the way docs/token-service.md describes ("How to add a
rule"): on ``conformance/*`` only, that role may also push, as the suite must.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from tests.support.peers import installed_binaries
from tests.support.registry_server import start_registry
from tests.support.stack_registry import prepare_stack
from token_service import contract

pytest_plugins = ["tests.support.fixtures"]

STACK = "staging"
CONFORMANCE_RULES = json.loads(json.dumps(contract.DEFAULT_ACCESS_RULES))
CONFORMANCE_RULES["roles"][contract.ROLE_CLEANUP].append(
    {"type": "repository", "names": ["conformance/*"], "actions": ["pull", "push", "delete"]})


@pytest.fixture(scope="module")
def conformance() -> str:
    return installed_binaries("install-conformance.sh")["conformance.test"]


def run_suite(binary: str, registry: str, results: Path, username: str = "", password: str = "") -> Counter:
    """How many times each (test, status) occurs in the suite's junit.xml (a name can repeat across areas)."""
    results.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(results), "OCI_REGISTRY": registry, "OCI_TLS": "disabled",
           "OCI_REPO1": "conformance/repo1", "OCI_REPO2": "conformance/repo2", "OCI_USERNAME": username,
           "OCI_PASSWORD": password, "OCI_RESULTS_DIR": str(results), "OCI_VERSION": "1.1", "OCI_LOG": "error"}
    finished = subprocess.run([binary], env=env, cwd=results, capture_output=True, text=True, timeout=900)
    junit = results / "junit.xml"
    assert junit.exists(), f"the suite wrote no junit.xml (exit {finished.returncode}):\n{finished.stdout[-3000:]}"
    return Counter((case.get("name"), case.get("status")) for case in ET.parse(junit).getroot().iter("testcase"))


def count(result: Counter, status: str) -> int:
    return sum(n for (_, s), n in result.items() if s == status)


def test_the_token_path_passes_and_fails_exactly_what_a_bare_registry_does(conformance, registry_binary,
                                                                          registry_factory, tmp_path):
    bare = start_registry(registry_binary, {
        "REGISTRY_STORAGE": "filesystem", "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "bare-data"),
        "REGISTRY_STORAGE_DELETE_ENABLED": "true", "REGISTRY_LOG_LEVEL": "error", "OTEL_TRACES_EXPORTER": "none",
    }, tmp_path / "bare", name="bare")
    setup = prepare_stack(STACK, None, tmp_path / "stack", extra_overrides=None,
                          token_service_overrides={contract.ENV_ACCESS_RULES: json.dumps(CONFORMANCE_RULES)})
    try:
        stack = setup.boot(registry_factory)
        name = setup.users(contract.ROLE_CLEANUP)[0]
        bare_result = run_suite(conformance, bare.base_url.removeprefix("http://"), tmp_path / "results-bare")
        stack_host = stack.base_url.removeprefix("http://").replace("127.0.0.1", "localhost")
        stack_result = run_suite(conformance, stack_host, tmp_path / "results-stack", name,
                                 setup.accounts[name].password)
    finally:
        setup.close()
        bare.stop()
    print(f"\nconformance: bare v3.1.1 {count(bare_result, 'passed')} passed / {count(bare_result, 'failure')} failed / "
          f"{count(bare_result, 'skipped')} skipped; staging through the token service {count(stack_result, 'passed')} "
          f"passed / {count(stack_result, 'failure')} failed / {count(stack_result, 'skipped')} skipped")
    assert count(bare_result, "passed") > 300 and count(bare_result, "failure") > 0, "the suite did not run fully"
    assert stack_result == bare_result, {"only bare": sorted((bare_result - stack_result).elements())[:20],
                                         "only stack": sorted((stack_result - bare_result).elements())[:20]}
