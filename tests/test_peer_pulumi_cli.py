"""The stack files judged by the real Pulumi CLI (v3.274.1): its own config validation, before any program runs.

The offline plan merges the stack files with the recorder's own code; only the CLI decides whether a stack's
configuration satisfies Pulumi.yaml (declared types, keys without a default that must be set, `secret: true`
keys that must be `secure:`). Each stack is discovered from its Pulumi.<stack>.yaml file and previewed in a
scratch copy of the project with a file backend and the passphrase secrets provider.

No Python language host runs here (pulumi-language-python is not served by the Go module proxy), so a preview
that passes config validation stops at loading it: that error is the proof that validation passed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from offline_plan import record_plan
from offline_plan.recorder import on_the_wire
from offline_plan.render import write_plan
from tests.support.kube_cluster import ReportedReadiness, start_kube_cluster
from tests.support.pulumi_cli import PulumiProject, PulumiRun, scratch_project

pytest_plugins = ["tests.support.peer_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in REPO_ROOT.glob("Pulumi.*.yaml"))
CONFIG_ERROR = "validating stack config"
NO_LANGUAGE_HOST = "no language plugin 'pulumi-language-python' found"
KILLED = -9
POLICY_PACK_VERSION = yaml.safe_load((REPO_ROOT / "policies" / "PulumiPolicy.yaml").read_text())["version"]
# Keys Pulumi.yaml declares without a default that every stack sets (README "Settings": required everywhere).
REQUIRED_EVERYWHERE = ("image", "storageMode", "consulIntentionSources", "htpasswdUsers", "operationsToolsImage")


def passed_config_validation(run) -> bool:
    """The CLI went past config validation: it printed the preview header and stopped, if at all, at the
    language host this machine does not have."""
    return (CONFIG_ERROR not in run.output and run.returncode != KILLED
            and (run.returncode == 0 or NO_LANGUAGE_HOST in run.output))


def test_stacks_are_discovered_from_the_stack_files():
    assert STACKS == ["prod", "staging"]


@pytest.mark.parametrize("stack", STACKS)
def test_pulumi_preview_accepts_the_stack_configuration(pulumi_project: PulumiProject, stack: str):
    pulumi_project.init_stack(stack)
    run = pulumi_project.preview(stack)
    assert passed_config_validation(run), run.output
    assert f"Previewing update ({stack})" in run.stdout


@pytest.mark.parametrize("key", REQUIRED_EVERYWHERE)
@pytest.mark.parametrize("stack", STACKS)
def test_a_stack_without_a_required_key_is_refused_by_the_cli(pulumi_project: PulumiProject, stack: str,
                                                               key: str):
    pulumi_project.edit_stack_config(stack, remove=(f"registry:{key}",))
    pulumi_project.init_stack(stack)
    run = pulumi_project.preview(stack)
    assert run.returncode == 1, run.output
    match = re.search(rf"error: {CONFIG_ERROR}: Stack '{stack}' is missing configuration values? (.*)", run.output)
    assert match, run.output
    assert f"'{key}'" in match.group(1)
    assert "Previewing update" not in run.stdout


@pytest.mark.parametrize("stack", STACKS)
def test_a_value_of_the_wrong_type_is_refused_by_the_cli(pulumi_project: PulumiProject, stack: str):
    pulumi_project.edit_stack_config(stack, set_plain={"registry:replicas": "three"})
    pulumi_project.init_stack(stack)
    run = pulumi_project.preview(stack)
    assert run.returncode == 1
    assert f"Stack '{stack}' with configuration key 'replicas' must be of type 'integer'" in run.output


@pytest.mark.parametrize("stack", STACKS)
def test_a_plain_value_for_a_secret_key_is_refused_without_showing_it(pulumi_project: PulumiProject, stack: str):
    """minioAccessKey holds a secret: a plain value would sit in git in clear. Pulumi.yaml cannot declare it
    `secret: true` (the CLI would then require it in every stack, docs/config-flow.md), so the program refuses it,
    here run by the real engine, and never prints the value."""
    pulumi_project.edit_stack_config(stack, set_plain={"registry:minioAccessKey": "AKIAPLAINTEXT"})
    run = engine_project(pulumi_project, stack).preview(stack)
    assert run.returncode != 0, run.output
    assert "registry:minioAccessKey: '[secret]' is not allowed; must be encrypted" in run.output
    assert "AKIAPLAINTEXT" not in run.output


# --- the real engine running the program ------------------------------------------------------------------------
#
# With the test-only language host and echo providers of tests/support/engine on its PATH, the CLI's engine runs
# __main__.py for real: its config, its resource monitor and dependency graph, its state file and the policy pack
# it loads itself (`--policy-pack policies`). The providers accept everything, so what is compared is what the
# engine sends them and records, against the offline plan.

PACK = "registry-policies"


@dataclass
class EngineRun:
    project: PulumiProject
    run: PulumiRun
    rendered: Path | None = None


def engine_project(project: PulumiProject, stack: str) -> PulumiProject:
    """The project with the engine doubles on the CLI's PATH and the stack initialised."""
    project.use_engine_doubles()
    project.init_stack(stack)
    return project


def scratch_engine_project(binary: str, workdir: Path, real_providers: dict[str, str] | None = None
                           ) -> PulumiProject:
    project = scratch_project(binary, workdir)
    project.use_engine_doubles(real_providers)
    return project


@pytest.fixture(scope="module", params=STACKS)
def engine_preview(request, pulumi_binary: str, tmp_path_factory) -> EngineRun:
    """`pulumi preview --policy-pack policies` of the stack, every provider an echo provider (recording)."""
    stack = request.param
    project = scratch_engine_project(pulumi_binary, tmp_path_factory.mktemp(f"engine-preview-{stack}"))
    project.init_stack(stack)
    return EngineRun(project, project.preview(stack, "--policy-pack", "policies", timeout=300))


@pytest.fixture(scope="module", params=STACKS)
def engine_up(request, pulumi_binary: str, pulumi_kubernetes_binary: str, tmp_path_factory) -> EngineRun:
    """`pulumi up --policy-pack policies` of the stack with the real kubernetes provider rendering YAML
    (`kubernetes:renderYamlToDirectory`, no cluster needed) and echo providers for the rest."""
    stack = request.param
    workdir = tmp_path_factory.mktemp(f"engine-up-{stack}")
    project = scratch_engine_project(pulumi_binary, workdir, {"kubernetes": pulumi_kubernetes_binary})
    project.edit_stack_config(stack, set_plain={"kubernetes:renderYamlToDirectory": str(workdir / "rendered")})
    project.init_stack(stack)
    run = project.run("up", "--yes", "--stack", stack, "--non-interactive", "--color", "never",
                      "--policy-pack", "policies", timeout=600)
    return EngineRun(project, run, workdir / "rendered")


def stack_of(engine: EngineRun) -> str:
    return engine.project.stacks_initialised[-1]


def without_stack_type(urn: str) -> str:
    """A URN as the engine writes it: children of the stack carry no `pulumi:pulumi:Stack$` in their type."""
    return urn.replace("::pulumi:pulumi:Stack$", "::", 1)


def test_the_engine_loads_the_policy_pack_and_no_mandatory_policy_fails_the_preview(engine_preview: EngineRun):
    """During a preview the pack may only be advisory about values not known yet (README "Preview")."""
    run = engine_preview.run
    assert run.returncode == 0, run.output
    assert "Loading policy packs...: done" in run.stdout
    assert f"{PACK}@v{POLICY_PACK_VERSION} (local: policies)" in run.stdout
    assert "[mandatory]" not in run.stdout
    advisories = [line for line in run.stdout.splitlines() if "[advisory]" in line]
    assert len(advisories) == run.stdout.count("during preview: cannot verify during preview")


def test_the_engine_sends_providers_exactly_the_inputs_the_offline_plan_records(engine_preview: EngineRun):
    assert engine_preview.run.returncode == 0, engine_preview.run.output
    plan = record_plan(stack_of(engine_preview), preview=True)
    planned = {(r.type, r.name): on_the_wire(r.inputs) for r in plan.resources
               if r.custom and not r.type.startswith("pulumi:providers:")}
    sent = engine_preview.project.recorded_provider_inputs()
    assert sorted(sent) == sorted(planned)
    differing = sorted(key for key in planned if sent[key] != planned[key])
    assert differing == []


def test_pulumi_up_passes_every_policy_of_the_pack_loaded_by_the_engine(engine_up: EngineRun):
    run, stack = engine_up.run, stack_of(engine_up)
    assert run.returncode == 0, run.output
    # `up` prints its preview first (advisories about unknown values included), then the update.
    update = run.stdout.split(f"Updating ({stack}):", 1)[-1]
    assert f"✅ {PACK}@v{POLICY_PACK_VERSION} (local: policies)" in update
    assert "[advisory]" not in update and "[mandatory]" not in update


def test_the_engines_state_has_the_offline_plans_graph(engine_up: EngineRun):
    """Parents, dependencies, protect and retainOnDelete of every resource, as `pulumi up` stored them."""
    assert engine_up.run.returncode == 0, engine_up.run.output
    stack = stack_of(engine_up)
    plan = record_plan(stack)
    key = {r.urn: (r.type, r.name) for r in plan.registrations}
    planned = {(r.type, r.name): (key.get(r.parent, r.parent), sorted(key[d] for d in r.dependencies),
                                  bool(r.protect), bool(r.retain_on_delete)) for r in plan.resources}
    exported = engine_up.project.exported_resources(stack)
    engine_key = {r["urn"]: (r["type"], r["urn"].split("::")[-1]) for r in exported}
    # The engine adds the stack and a default provider per package; the program declares neither.
    declared = [r for r in exported if r["type"] != "pulumi:pulumi:Stack"
                and not (r["type"].startswith("pulumi:providers:") and r["urn"].split("::")[-1].startswith("default"))]
    stored = {engine_key[r["urn"]]: (engine_key.get(r.get("parent", ""), r.get("parent", "")),
                                     sorted(engine_key[d] for d in r.get("dependencies", [])),
                                     r.get("protect", False), r.get("retainOnDelete", False))
              for r in declared}
    assert sorted(stored) == sorted(planned)
    assert {k: v for k, v in stored.items() if v != planned[k]} == {}


@pytest.mark.parametrize("stack", STACKS)
def test_the_offline_plan_records_the_urns_the_engine_uses(stack: str):
    # The engine's URNs are known without running it: the root stack type never appears in a child's URN.
    plan = record_plan(stack)
    assert [r.urn for r in plan.resources if r.urn != without_stack_type(r.urn)] == []


# --- the real kubernetes provider -------------------------------------------------------------------------------

def without_empty_maps(value):
    """The object as the provider serialises it: an empty map (``annotations: {}``) is left out."""
    if isinstance(value, dict):
        return {key: without_empty_maps(item) for key, item in value.items() if item != {}}
    if isinstance(value, list):
        return [without_empty_maps(item) for item in value]
    return value


def rendered_objects(engine: EngineRun) -> dict:
    assert engine.run.returncode == 0, engine.run.output
    rendered = {}
    for path in sorted(engine.rendered.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                rendered[object_key(document)] = document
    return rendered


def planned_manifests(stack: str, out: Path) -> dict:
    directory = write_plan(record_plan(stack), out) / "kubernetes"
    documents = (yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml")))
    return {object_key(d): d for d in documents}


def object_key(document: dict) -> tuple:
    """Kind, namespace (None for cluster-scoped objects) and name: the pull Secret's ExternalSecret has one name in
    every consuming namespace."""
    return document["kind"], document["metadata"].get("namespace"), document["metadata"]["name"]


def consumer_namespaces(stack: str) -> list[str]:
    return yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"].get(
        "registry:pullSecretNamespaces", [])


def test_the_real_kubernetes_provider_renders_the_offline_plans_manifests(engine_up: EngineRun, tmp_path: Path):
    rendered = rendered_objects(engine_up)
    planned = planned_manifests(stack_of(engine_up), tmp_path)
    assert sorted(rendered, key=str) == sorted(planned, key=str)
    assert {key for key in planned if without_empty_maps(rendered[key]) != without_empty_maps(planned[key])} == set()


def test_the_offline_plans_manifests_are_exactly_what_the_provider_renders(engine_up: EngineRun, tmp_path: Path):
    stack = stack_of(engine_up)
    rendered = rendered_objects(engine_up)
    planned = planned_manifests(stack, tmp_path)
    assert {key for key in planned if rendered.get(key) != planned[key]} == set()



@pytest.mark.parametrize("stack", STACKS)
def test_pulumi_up_applies_every_kubernetes_object_to_the_real_api_server(
        pulumi_binary: str, pulumi_kubernetes_binary: str, kube_binaries: dict[str, str], stack: str,
        tmp_path: Path):
    """The engine, the real kubernetes provider and a real API server (PSA restricted, RBAC, the CRDs): every
    object of the offline plan is created and stored, the provider's readiness waits included."""
    crd_dir = next(Path(path) for name, path in kube_binaries.items() if name.startswith("kube-crds-"))
    cluster = start_kube_cluster(kube_binaries, sorted(crd_dir.glob("*.yaml")), tmp_path / "kube")
    try:
        project = scratch_engine_project(pulumi_binary, tmp_path, {"kubernetes": pulumi_kubernetes_binary})
        project.edit_stack_config(stack, set_plain={"kubernetes:kubeconfig": str(cluster.kubeconfig)})
        project.init_stack(stack)
        for namespace in consumer_namespaces(stack):  # the platform's, like cicd
            cluster.kubectl("create", "namespace", namespace)
        with ReportedReadiness(cluster) as readiness:
            run = project.run("up", "--yes", "--stack", stack, "--non-interactive", "--color", "never",
                              "--policy-pack", "policies", timeout=600)
        assert run.returncode == 0, run.output
        update = run.stdout.split(f"Updating ({stack}):", 1)[-1]
        assert f"✅ {PACK}@v{POLICY_PACK_VERSION} (local: policies)" in update
        planned = planned_manifests(stack, tmp_path / "build")
        kinds = ",".join(sorted({kind.lower() for kind, _, _ in planned}))
        # What the controllers made (pods, claims, kube-root-ca.crt, the default account) carries no labels of ours.
        stored = json.loads(cluster.kubectl("get", "--all-namespaces", kinds, "-l",
                                            "app.kubernetes.io/managed-by=pulumi", "-o", "json").stdout)["items"]
        assert sorted((object_key(o) for o in stored if not o["metadata"].get("ownerReferences")), key=str) == \
            sorted(planned, key=str)
        config = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        replicas = int(config.get("registry:replicas", 1))
        registry_pods = sorted(pod for pod in readiness.reported_pods if not pod.startswith("registry-token-service-"))
        assert registry_pods == [f"registry-{i}" for i in range(replicas)]
        # The token service's Deployment (authMode token): the provider waited for its ReplicaSet's pods too.
        token_pods = set(readiness.reported_pods) - set(registry_pods)
        expected_token_pods = int(config.get("registry:tokenServiceReplicas", 2)) \
            if config.get("registry:authMode") == "token" else 0
        assert len(token_pods) == expected_token_pods, token_pods
    finally:
        cluster.stop()
