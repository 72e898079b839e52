"""Every manifest of the offline plan judged by a real Kubernetes API server (v1.35.4) and its controllers.

One control plane per stack (its own etcd): namespace ``cicd`` labelled Pod Security ``enforce=restricted`` as the
CI platform creates it, RBAC on, the Prometheus Operator and VolumeSnapshot CRDs installed from the Go modules
that ship them. No kubelet, scheduler or container runtime run: pods are admitted and stored, never started.
What the API server alone decides is tested here: schema and field validation (CRDs included), Pod Security
admission of every pod template, RBAC as evaluated, and what the StatefulSet, Job and disruption controllers make
of the objects. The expected rights are those docs/operations.md and README.md state, not the Roles themselves.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from offline_plan.render import write_plan
from tests.support.kube_cluster import NAMESPACE, NAMESPACE_LABELS, KubeCluster
from tests.support.processes import clean_env

pytest_plugins = ["tests.support.peer_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
POD_TEMPLATE_KINDS = ("StatefulSet", "Deployment", "DaemonSet", "Job", "CronJob")
# Rules every authenticated subject has (system:basic-user, system:discovery, system:public-info-viewer).
DEFAULT_RESOURCES = {"selfsubjectreviews.authentication.k8s.io", "selfsubjectaccessreviews.authorization.k8s.io",
                     "selfsubjectrulesreviews.authorization.k8s.io"}


def stack_value(stack: str, key: str, default=None):
    config = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config.get(f"registry:{key}", default)


def consumer_namespaces(stack: str) -> list[str]:
    """The namespaces that get the pull robot's image pull Secret (created by the platform, like ``cicd``)."""
    return list(stack_value(stack, "pullSecretNamespaces", []))


@pytest.fixture(scope="session")
def manifest_dir(kube_cluster: KubeCluster, plans, tmp_path_factory) -> Path:
    """build/<stack>/kubernetes as `python -m offline_plan` writes it, the consuming namespaces created first."""
    for namespace in consumer_namespaces(kube_cluster.stack):
        kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": NAMESPACE_LABELS}}))
    return write_plan(plans[kube_cluster.stack], tmp_path_factory.mktemp(f"build-{kube_cluster.stack}")) / "kubernetes"


def manifests(directory: Path) -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))}


@pytest.fixture(scope="session")
def applied(kube_cluster: KubeCluster, manifest_dir: Path) -> KubeCluster:
    """The stack's manifests applied for real (server-side, strict field validation)."""
    kube_cluster.kubectl("apply", "--server-side", "--field-manager=pulumi", "--validate=strict",
                         "-f", str(manifest_dir))
    return kube_cluster


def pod_from_template(owner: dict) -> dict:
    """The Pod a controller would create from the owner's template (the StatefulSet's claims mounted)."""
    spec = owner["spec"]
    if owner["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = copy.deepcopy(spec["template"])
    pod_spec = template["spec"]
    for claim in spec.get("volumeClaimTemplates", []):
        claim_name = f"{claim['metadata']['name']}-{owner['metadata']['name']}-0"
        pod_spec.setdefault("volumes", []).append(
            {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}})
    if owner["kind"] in ("Job", "CronJob"):
        pod_spec.setdefault("restartPolicy", "Never")
    metadata = template.get("metadata", {})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"admission-{owner['kind'].lower()}-{owner['metadata']['name']}",
                         "namespace": NAMESPACE, "labels": metadata.get("labels", {}),
                         "annotations": metadata.get("annotations") or {}},
            "spec": pod_spec}


def create_dry_run(cluster: KubeCluster, obj: dict):
    return cluster.kubectl("create", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-",
                           input=json.dumps(obj), check=False)


def test_every_manifest_passes_server_side_dry_run(kube_cluster: KubeCluster, manifest_dir: Path):
    files = manifests(manifest_dir)
    assert len(files) >= 20
    refused = {}
    for name in files:
        result = kube_cluster.kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict",
                                      "--field-manager=pulumi", "-f", str(manifest_dir / name), check=False)
        if result.returncode != 0 or "Warning" in result.stderr:
            refused[name] = (result.stderr or result.stdout).strip()
    assert refused == {}


def test_every_manifest_is_applied_and_stored(applied: KubeCluster, manifest_dir: Path):
    files = manifests(manifest_dir)
    stored = json.loads(applied.kubectl("get", "-f", str(manifest_dir), "-o", "json").stdout)["items"]
    def identity(o: dict) -> tuple:
        return o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]

    assert sorted(map(identity, stored)) == sorted(map(identity, files.values()))
    # Everything in cicd but the pull Secrets' ExternalSecrets (one per consuming namespace) and their
    # cluster-scoped ClusterSecretStore.
    namespaced = {identity(o)[1] for o in stored if o["kind"] not in ("ExternalSecret", "ClusterSecretStore")}
    assert namespaced == {NAMESPACE}
    assert sorted(identity(o)[1] for o in stored if o["kind"] == "ExternalSecret") == \
        sorted(consumer_namespaces(applied.stack))
    assert [identity(o)[1] for o in stored if o["kind"] == "ClusterSecretStore"] == \
        ([None] if consumer_namespaces(applied.stack) else [])


def test_every_pod_template_is_admitted_as_a_pod_under_restricted(applied: KubeCluster, manifest_dir: Path):
    owners = [m for m in manifests(manifest_dir).values() if m["kind"] in POD_TEMPLATE_KINDS]
    assert {m["kind"] for m in owners} >= {"StatefulSet", "CronJob"}
    refused = {}
    for owner in owners:
        result = create_dry_run(applied, pod_from_template(owner))
        if result.returncode != 0 or "Warning" in result.stderr:
            refused[f"{owner['kind']}/{owner['metadata']['name']}"] = result.stderr.strip()
    assert refused == {}


def test_pod_security_rejects_a_template_that_leaves_restricted(applied: KubeCluster, manifest_dir: Path):
    statefulset = manifests(manifest_dir)["statefulset-registry.yaml"]
    broken = pod_from_template(statefulset)
    broken["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    result = create_dry_run(applied, broken)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in result.stderr


def test_the_api_server_rejects_broken_manifests(applied: KubeCluster, manifest_dir: Path):
    files = manifests(manifest_dir)
    unknown_field = copy.deepcopy(files["statefulset-registry.yaml"])
    unknown_field["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    bad_duration = copy.deepcopy(files["prometheusrule-registry.yaml"])
    bad_duration["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    bad_selector = copy.deepcopy(files["poddisruptionbudget-registry.yaml"])
    bad_selector["spec"]["maxUnavailable"] = "150%"
    verdicts = {}
    for label, obj in {"unknown field": unknown_field, "PrometheusRule for": bad_duration,
                       "PDB maxUnavailable": bad_selector}.items():
        result = applied.kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict",
                                 "--field-manager=pulumi", "-f", "-", input=json.dumps(obj), check=False)
        verdicts[label] = result.returncode
    assert verdicts == {"unknown field": 1, "PrometheusRule for": 1, "PDB maxUnavailable": 1}


def expected_rights(stack: str) -> dict[str, set[tuple[str, str, str]]]:
    """(resource, resourceName or '', verb) each service account may use in cicd, from the docs.

    docs/operations.md: Role registry-gc: `get` statefulset `registry`; `get/list/watch` pods; `delete` pods
    with resourceNames registry-0..N-1 only. README "Backups": the snapshot job creates a VolumeSnapshot, waits
    for it (get), lists and deletes the oldest. The registry itself reads nothing from the Kubernetes API, and
    neither does the token service (README "Architecture": its service account only logs in to Vault and Consul).
    """
    replicas = int(stack_value(stack, "replicas", 1))
    gc = {("statefulsets.apps", "registry", "get"), *{("pods", "", v) for v in ("get", "list", "watch")},
          *{("pods", f"registry-{i}", "delete") for i in range(replicas)}}
    rights = {"registry": set(), "registry-gc": gc}
    if stack_value(stack, "authMode") == "token":
        rights["registry-token-service"] = set()
    if stack_value(stack, "pullSecretNamespaces"):
        # The External Secrets Operator requests its tokens (TokenRequest, its own right); it reads nothing itself.
        rights["registry-pull-credentials"] = set()
    if stack_value(stack, "storageMode") == "filesystem":
        rights["registry-snapshot"] = {("volumesnapshots.snapshot.storage.k8s.io", "", v)
                                       for v in ("create", "get", "list", "delete")}
    return rights


def can_i_list(cluster: KubeCluster, account: str) -> set[tuple[str, str, str]]:
    output = cluster.kubectl("auth", "can-i", "--list", "-n", NAMESPACE,
                             f"--as=system:serviceaccount:{NAMESPACE}:{account}").stdout
    rights = set()
    for line in output.splitlines()[1:]:
        # Resources   Non-Resource URLs   Resource Names   Verbs
        columns = line.split()
        if not columns or columns[0].startswith("[") or columns[0] in DEFAULT_RESOURCES:
            continue
        resource, rest = columns[0], " ".join(columns[1:])
        groups = [part.strip("[] ") for part in rest.split("]") if part.strip()]
        names = groups[1].split() if len(groups) > 1 and groups[1] else [""]
        verbs = groups[-1].split()
        rights |= {(resource, name, verb) for name in names or [""] for verb in verbs}
    return rights


def test_each_service_account_may_do_exactly_what_the_docs_state(applied: KubeCluster, manifest_dir: Path):
    accounts = sorted(m["metadata"]["name"] for m in manifests(manifest_dir).values()
                      if m["kind"] == "ServiceAccount")
    expected = expected_rights(applied.stack)
    assert accounts == sorted(expected)
    assert {account: can_i_list(applied, account) for account in accounts} == expected


def test_statefulset_controller_creates_claims_and_pods_in_order(applied: KubeCluster):
    replicas = int(stack_value(applied.stack, "replicas", 1))

    def pods():
        items = applied.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector="
                            "app.kubernetes.io/component=registry")["items"]
        return sorted(p["metadata"]["name"] for p in items)

    assert applied.wait_for("pod registry-0", lambda: pods() == ["registry-0"] or pods())
    if stack_value(applied.stack, "storageMode") == "filesystem":
        claim = applied.wait_for("claim data-registry-0", lambda: next(
            (c for c in applied.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims")["items"]
             if c["metadata"]["name"] == "data-registry-0"), None))
        assert claim["spec"]["storageClassName"] == stack_value(applied.stack, "storageClass")
        assert claim["spec"]["resources"]["requests"]["storage"] == stack_value(applied.stack, "storageSize")
    # OrderedReady: without a kubelet registry-0 never becomes Ready, so registry-1 must not appear.
    applied.wait_for("the controller to settle", lambda: True, timeout=3)
    assert pods() == ["registry-0"]
    if replicas > 1:
        ready_pod_status(applied, "registry-0")
        applied.wait_for("pod registry-1 after registry-0 is ready", lambda: "registry-1" in pods(), timeout=60)
        assert pods() == ["registry-0", "registry-1"]


def ready_pod_status(cluster: KubeCluster, name: str) -> None:
    """Report the pod Running and Ready, as a kubelet would (none runs here)."""
    now = "2026-01-01T00:00:00Z"
    status = {"status": {"phase": "Running", "podIP": "10.0.0.10", "startTime": now, "conditions": [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]}}
    cluster.kubectl("patch", "-n", NAMESPACE, f"pod/{name}", "--subresource=status", "--type=merge",
                    "-p", json.dumps(status))


def test_pdb_stays_healthy_while_a_gc_job_runs(applied: KubeCluster):
    applied.kubectl("create", "job", "-n", NAMESPACE, "--from=cronjob/registry-gc", "registry-gc-manual")

    def gc_pod():
        return applied.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector="
                           "app.kubernetes.io/component=garbage-collector")["items"]

    applied.wait_for("the GC job's pod", gc_pod)

    def pdb_conditions():
        status = applied.get(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/registry")["status"]
        return status.get("conditions") and status

    applied.wait_for("PDB status", pdb_conditions, timeout=30)
    applied.wait_for("the disruption controller to see the GC pod", lambda: True, timeout=5)
    status = pdb_conditions()
    reasons = {c["type"]: c.get("reason") for c in status["conditions"]}
    assert reasons.get("DisruptionAllowed") != "SyncFailed", status
    # The budget counts the StatefulSet's replicas, not the GC pod.
    assert status.get("expectedPods") == int(stack_value(applied.stack, "replicas", 1)), status


def service_account_kubeconfig(cluster: KubeCluster, account: str, path: Path) -> Path:
    """A kubeconfig holding a real token of the service account (TokenRequest), as its pod would."""
    token = cluster.kubectl("create", "token", account, "-n", NAMESPACE, "--duration=20m").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_snapshot_job_script_works_against_the_api_server_as_its_service_account(
        applied: KubeCluster, manifest_dir: Path, tmp_path: Path):
    """registry-snapshot.sh from the ConfigMap, with the CronJob's env and the registry-snapshot token: it
    creates a VolumeSnapshot the CRD accepts, waits until it is ready and prunes beyond the retention."""
    files = manifests(manifest_dir)
    if "cronjob-registry-snapshot.yaml" not in files:
        assert stack_value(applied.stack, "storageMode") != "filesystem"
        pytest.skip("no volume snapshots outside filesystem mode (S3 versioning instead)")
    cronjob = files["cronjob-registry-snapshot.yaml"]
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    script_path = container["command"][-1]
    script = tmp_path / Path(script_path).name
    script.write_text(files["configmap-registry-snapshot.yaml"]["data"][Path(script_path).name])
    retention = int(env["RETENTION"])
    assert retention == int(stack_value(applied.stack, "snapshotRetention", 14))
    labels = dict(pair.split("=", 1) for pair in env["SELECTOR_LABELS"].split(","))

    def snapshot(name: str, labelled: bool = True) -> dict:
        return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": name, "namespace": NAMESPACE, **({"labels": labels} if labelled else {})},
                "spec": {"volumeSnapshotClassName": env["SNAPSHOT_CLASS"],
                         "source": {"persistentVolumeClaimName": env["CLAIM"]}}}

    older = [f"{env['CLAIM']}-20200101-{i:06d}" for i in range(retention + 2)]
    for name in older:
        applied.kubectl("create", "-f", "-", input=json.dumps(snapshot(name)))
    applied.kubectl("create", "-f", "-", input=json.dumps(snapshot("someone-elses-snapshot", labelled=False)))

    kubeconfig = service_account_kubeconfig(applied, cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                                            ["serviceAccountName"], tmp_path / "kubeconfig")
    job = subprocess.Popen(["sh", str(script)], env=clean_env({**env, "KUBECONFIG": str(kubeconfig),
                                                                "HOME": str(tmp_path), "POLL_SECONDS": "1",
                                                                "READY_TIMEOUT_SECONDS": "60"}),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def new_snapshot():
            items = applied.get(f"/apis/snapshot.storage.k8s.io/v1/namespaces/{NAMESPACE}/volumesnapshots")["items"]
            return next((s["metadata"]["name"] for s in items
                         if s["metadata"]["name"] not in older + ["someone-elses-snapshot"]), None)

        created = applied.wait_for("the job's VolumeSnapshot", new_snapshot, timeout=30)
        # What the snapshot controller would report once the CSI driver cut the snapshot (none runs here).
        applied.kubectl("patch", "-n", NAMESPACE, f"volumesnapshot/{created}", "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {"readyToUse": True}}))
        output, _ = job.communicate(timeout=90)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output
    remaining = sorted(s["metadata"]["name"] for s in
                       applied.get(f"/apis/snapshot.storage.k8s.io/v1/namespaces/{NAMESPACE}/volumesnapshots")["items"])
    labelled_left = [name for name in remaining if name != "someone-elses-snapshot"]
    assert "someone-elses-snapshot" in remaining
    assert len(labelled_left) == retention
    assert created in labelled_left
    assert labelled_left == sorted(older + [created])[-retention:]


def test_the_token_service_deployment_rolls_out_replicas_the_budget_lets_drain_one_at_a_time(applied: KubeCluster):
    """The Deployment controller makes a ReplicaSet of tokenServiceReplicas pods (admitted under restricted); once
    the pods report ready, as a kubelet would, the disruption controller allows exactly one eviction."""
    if stack_value(applied.stack, "authMode") != "token":
        pytest.skip("no token service outside authMode token")
    replicas = int(stack_value(applied.stack, "tokenServiceReplicas", 2))
    selector = "app.kubernetes.io/component=token-service"

    def pods():
        return sorted(p["metadata"]["name"] for p in
                      applied.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}")["items"])

    assert len(applied.wait_for(f"{replicas} token service pods", lambda: len(pods()) == replicas and pods(),
                                timeout=60)) == replicas
    for pod in pods():
        ready_pod_status(applied, pod)

    def budget():
        status = applied.get(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/registry-token-service")[
            "status"]
        return status if status.get("currentHealthy") == replicas else None

    status = applied.wait_for("the token service's budget to count its ready pods", budget, timeout=60)
    assert (status["expectedPods"], status["desiredHealthy"], status["disruptionsAllowed"]) == (
        replicas, replicas - 1, 1), status


def test_the_api_server_keeps_the_pull_secret_template_and_refuses_broken_operator_objects(
        applied: KubeCluster, manifest_dir: Path):
    """The External Secrets Operator's CRDs (v1.3.2) are structural: a field they do not know would be pruned and
    the rendered Secret silently differ. What is stored is what the plan says; broken objects are refused."""
    namespaces = consumer_namespaces(applied.stack)
    assert namespaces, "both stacks hand the pull robot to consuming namespaces"
    files = manifests(manifest_dir)
    external_secrets = {m["metadata"]["namespace"]: m for m in files.values() if m["kind"] == "ExternalSecret"}
    stored = applied.get(f"/apis/external-secrets.io/v1/namespaces/{namespaces[0]}/externalsecrets/registry-pull")
    planned = external_secrets[namespaces[0]]["spec"]
    assert stored["spec"]["target"]["template"]["type"] == "kubernetes.io/dockerconfigjson"
    assert stored["spec"]["target"]["template"]["data"] == planned["target"]["template"]["data"]
    assert stored["spec"]["data"] == [{**item, "remoteRef": {**item["remoteRef"], "conversionStrategy": "Default",
                                                             "decodingStrategy": "None", "metadataPolicy": "None"}}
                                      for item in planned["data"]]
    store = next(m for m in files.values() if m["kind"] == "ClusterSecretStore")
    stored_store = applied.get(f"/apis/external-secrets.io/v1/clustersecretstores/{store['metadata']['name']}")
    assert stored_store["spec"]["conditions"] == [{"namespaces": sorted(namespaces)}]
    assert stored_store["spec"]["provider"]["vault"]["auth"]["kubernetes"]["serviceAccountRef"] == \
        store["spec"]["provider"]["vault"]["auth"]["kubernetes"]["serviceAccountRef"]

    unknown_policy = copy.deepcopy(external_secrets[namespaces[0]])
    unknown_policy["spec"]["target"]["creationPolicy"] = "Sometimes"
    no_key = copy.deepcopy(external_secrets[namespaces[0]])
    del no_key["spec"]["data"][0]["remoteRef"]["key"]
    bad_store = copy.deepcopy(store)
    bad_store["spec"]["provider"]["vault"]["version"] = "v3"
    verdicts = {}
    for label, obj in {"creationPolicy": unknown_policy, "remoteRef without key": no_key,
                       "vault version": bad_store}.items():
        result = applied.kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict",
                                 "--field-manager=pulumi", "-f", "-", input=json.dumps(obj), check=False)
        verdicts[label] = result.returncode
    assert verdicts == {"creationPolicy": 1, "remoteRef without key": 1, "vault version": 1}
