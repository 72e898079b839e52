"""No generated secret and no secure config value appears in Consul KV, manifests, outputs or the printed plan.

The offline plan's random resources produce new values in every test process (and stable ones within
it), so the values searched for below are unknown until the plan runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from offline_plan import Plan, record_plan
from offline_plan.__main__ import main as offline_plan_main
from offline_plan.recorder import PROJECT_DIR, SECURE_PLACEHOLDER
from offline_plan.render import print_plan, write_plan
from tests.conftest import STACKS

SECRET_TYPE = "vault:kv/secretV2:SecretV2"
NOT_SECRET_FIELDS = {"access", "credentials_generation", "username"}


def generated_secrets(plan: Plan) -> set[str]:
    """Every secret value the plan wrote to Vault: passwords, HTTP secret, bcrypt hashes, S3 keys."""
    found = set()
    for registration in plan.of_type(SECRET_TYPE):
        for field, value in json.loads(registration.plain_inputs["dataJson"]).items():
            if field == "htpasswd":
                found |= {line.split(":", 1)[1] for line in value.splitlines()}
            elif field not in NOT_SECRET_FIELDS:
                found.add(value)
    return found


def exposed_texts(plan: Plan, build_dir: Path, printed: str) -> dict[str, str]:
    """Everything a person or a process other than Vault gets to see, by where it is seen."""
    texts = {f"printed plan of {plan.stack}": printed}
    for path in sorted(build_dir.rglob("*")):
        if path.is_file():
            texts[str(path.relative_to(build_dir))] = path.read_text()
    subkeys = plan.one("consul:index/keyPrefix:KeyPrefix", "registry-consul-kv").plain_inputs["subkeys"]
    texts.update({f"consul:{key}": value for key, value in subkeys.items()})
    texts[f"outputs of {plan.stack}"] = json.dumps({name: value for name, (value, _) in plan.outputs.items()})
    return texts


def leaks(secrets: set[str], texts: dict[str, str]) -> list[tuple[str, str]]:
    return [(where, secret[:4] + "...") for secret in secrets for where, text in texts.items() if secret in text]


def test_stack_plans_show_no_generated_secret(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert offline_plan_main([*STACKS, "--out", str(tmp_path)]) == 0
    for stack in STACKS:
        plan = record_plan(stack)  # same process, same keepers: the values the printed run generated
        secrets = generated_secrets(plan)
        # http secret + 3 robots' passwords and hashes (push, pull, cleanup), each distinct: the scan has
        # something to find.
        assert len(secrets) == 7 and all(len(secret) >= 32 for secret in secrets)
        texts = exposed_texts(plan, tmp_path / stack, printed.getvalue())
        assert leaks(secrets, texts) == []


@pytest.fixture
def minio_project(tmp_path) -> Path:
    """A copy of the project with a stack whose MinIO keys are `secure:` values, as `pulumi config set --secret` writes."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(PROJECT_DIR / name, project / name)
    shutil.copytree(PROJECT_DIR / "components", project / "components")
    config = yaml.safe_load((PROJECT_DIR / "Pulumi.staging.yaml").read_text())["config"]
    config.update({
        "registry:storageMode": "minio", "registry:replicas": 3, "registry:s3Bucket": "registry-data",
        "registry:minioEndpoint": "https://minio.storage.svc:9000", "registry:s3StorageBudget": "2Ti",
        "registry:minioAccessKey": {"secure": "v1:bm90LXJlYWQtb2ZmbGluZQ=="},
        "registry:minioSecretKey": {"secure": "v1:YWxzby1ub3QtcmVhZA=="},
    })
    for filesystem_only in ("registry:storageClass", "registry:snapshotClass"):
        config.pop(filesystem_only)
    (project / "Pulumi.minio.yaml").write_text(yaml.safe_dump({"config": config}))
    return project


def test_minio_keys_reach_vault_only(minio_project, tmp_path):
    plan = record_plan("minio", project_dir=minio_project)
    assert plan.error is None, plan.error
    registry_secret = json.loads(plan.one(SECRET_TYPE, "registry-secrets-secret").plain_inputs["dataJson"])
    assert registry_secret["s3_access_key"] == registry_secret["s3_secret_key"] == SECURE_PLACEHOLDER

    printed = io.StringIO()
    print_plan(plan, printed)
    build_dir = write_plan(plan, tmp_path / "build")
    secrets = generated_secrets(plan)
    assert SECURE_PLACEHOLDER in secrets and len(secrets) == 8  # the two keys share the placeholder
    assert leaks(secrets, exposed_texts(plan, build_dir, printed.getvalue())) == []
