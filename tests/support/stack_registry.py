"""The real registry booted from a stack's recorded configuration: plan -> OpenBao -> config-cli stand-in -> registry.

Every difference between what the plan configures and what runs here is listed in this module, in two places:

- ``plan_overrides()``: stack settings changed before the plan is recorded (the token service's URL on this
  machine; the stack files hold the cluster's realm);
- ``TEST_OVERRIDES``: registry variables the tests replace after config-cli's work (``environment_for_test()``),
  each with its reason. ``tests/test_registry_e2e.py`` asserts that nothing else differs.

Vault login: the pod logs in with Kubernetes auth, which needs a Kubernetes API server; here the root token
creates a token carrying exactly what that login yields (the registry's policy, no default policy, 5 minutes).
The robot accounts' passwords are read from ``registry/<env>/clients/<user>`` with the root token, standing in
for the CI runners' own Vault roles (not managed by this program).

Token mode runs the project's own token service (token_service/, as a process on 127.0.0.1): its signing key is
generated into OpenBao by ``python -m token_service.keys init`` as the runbook does, and it checks the robots
against the hashes in the plan's own Vault secret.

Usable outside pytest (benchmarks/throughput.py uses it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import hvac

from offline_plan import Plan, record_plan
from offline_plan.recorder import stack_config

from .config_cli import LoadedConfig, load, recorded_kv
from .moto_server import MotoServer
from .oci import OciClient
from .openbao import OpenBao, start_openbao
from .registry_server import RunningRegistry
from components import names
from token_service import contract

from .processes import free_port
from .token_client import RegistryTokenAuth
from .token_service import KV_MOUNT, RunningTokenService, VaultLayout, read_trust, run_keys, start_token_service
from .vault_plan import POLICY_TYPE, REGISTRY_POLICY, apply_vault_objects

VAULT_TOKEN_TTL = "5m"  # what the Kubernetes auth role grants (token_ttl 300)
CLIENT_SECRET_TYPE = "vault:kv/secretV2:SecretV2"

TEST_OVERRIDES = {
    "REGISTRY_HTTP_ADDR": "a free 127.0.0.1 port instead of :5000 (set by the harness, start_registry)",
    "REGISTRY_HTTP_DEBUG_ADDR": "a free 127.0.0.1 port instead of :5001 (set by the harness, start_registry)",
    "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "a temp dir instead of the pod's volume /var/lib/registry",
    "REGISTRY_STORAGE_S3_REGIONENDPOINT": "added: the moto server on 127.0.0.1 instead of AWS",
    "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "added: moto serves path-style only (v3 defaults to virtual hosts)",
    "REGISTRY_STORAGE_S3_SECURE": "false: moto speaks plain HTTP",
    "REGISTRY_STORAGE_S3_ACCESSKEY": "added: an IAM user's key instead of the pod's IRSA web identity",
    "REGISTRY_STORAGE_S3_SECRETKEY": "added: that IAM user's secret key",
    "REGISTRY_STORAGE_S3_KEYID": "the ARN of a key created in moto instead of the plan's (mock) key ARN",
}


@dataclass(frozen=True)
class RobotAccount:
    password: str
    access: str


def plan_overrides(token_realm: str, extra: Optional[Mapping[str, Optional[str]]] = None) -> dict[str, Optional[str]]:
    """Stack settings changed for the test: the token service's URL (plus ``extra``)."""
    return {"registry:tokenRealm": token_realm, **(extra or {})}


# --- storage backends -------------------------------------------------------------------------------------------


@dataclass
class FilesystemBackend:
    root: Path

    def overrides(self, environment: Mapping[str, str]) -> dict[str, str]:
        key = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"
        return {key: str(self.root)} if key in environment else {}

    def blob_location(self, kv: Mapping[str, str], digest: str) -> str:
        algorithm, _, hex_ = digest.partition(":")
        return str(self.root / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data")

    def stored_blob(self, kv: Mapping[str, str], digest: str) -> dict:
        """What the backend holds for the blob where the stack's KV says it goes (raises if it is not there)."""
        path = Path(self.blob_location(kv, digest))
        return {"size": path.stat().st_size}


@dataclass
class S3Backend:
    moto: MotoServer
    bucket: str
    region: str
    access_key: str
    secret_key: str
    kms_key_arn: str  # the key created in moto
    plan_kms_key_arn: str  # the (mock) key ARN the plan wrote
    policy: dict  # what the IAM user holds: the plan's role policy plus the moto-only shim

    def overrides(self, environment: Mapping[str, str]) -> dict[str, str]:
        added = {
            "REGISTRY_STORAGE_S3_REGIONENDPOINT": self.moto.url,
            "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
            "REGISTRY_STORAGE_S3_SECURE": "false",
            "REGISTRY_STORAGE_S3_ACCESSKEY": self.access_key,
            "REGISTRY_STORAGE_S3_SECRETKEY": self.secret_key,
        }
        if "REGISTRY_STORAGE_S3_KEYID" in environment:
            assert environment["REGISTRY_STORAGE_S3_KEYID"] == self.plan_kms_key_arn
            added["REGISTRY_STORAGE_S3_KEYID"] = self.kms_key_arn
        return added

    def client(self):
        return self.moto.client("s3", self.access_key, self.secret_key, region=self.region)

    def blob_location(self, kv: Mapping[str, str], digest: str) -> str:
        algorithm, _, hex_ = digest.partition(":")
        root = kv.get("env/REGISTRY_STORAGE_S3_ROOTDIRECTORY", "").strip("/")
        return "/".join(part for part in (root, "docker/registry/v2/blobs", algorithm, hex_[:2], hex_, "data") if part)

    def stored_blob(self, kv: Mapping[str, str], digest: str) -> dict:
        """Size and encryption of the blob's object where the stack's KV says it goes (raises if it is not there)."""
        head = self.client().head_object(Bucket=self.bucket, Key=self.blob_location(kv, digest))
        return {"size": head["ContentLength"], "sse": head.get("ServerSideEncryption"),
                "kms_key": head.get("SSEKMSKeyId")}


# Actions provision_s3() sends before IAM enforcement must start: moto counts every one of them.
S3_SETUP_ACTIONS = 7


def moto_policy(plan_policy: dict, bucket_arn: str, plan_key_arn: str, moto_key_arn: str) -> dict:
    """The plan's IAM role policy as the moto user holds it: verbatim but for two moto-only changes.

    1. The plan's KMS key ARN (a mock ARN) becomes the ARN of the key created in moto.
    2. ``s3:DeleteObject`` on the *bucket* ARN is added: moto authorizes batch DeleteObjects against the bucket
       (AWS checks each key against the object ARN, which the plan's policy allows). Without it every push
       fails (tests/test_registry_facts.py pins this moto behaviour).
    The function asserts that undoing both gives the plan's document back exactly.
    """
    substituted = json.loads(json.dumps(plan_policy).replace(plan_key_arn, moto_key_arn))
    shim = {"Sid": "MotoOnlyBatchDelete", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": bucket_arn}
    policy = {**substituted, "Statement": [*substituted["Statement"], shim]}
    undone = json.loads(json.dumps({**policy, "Statement": policy["Statement"][:-1]}).replace(moto_key_arn,
                                                                                              plan_key_arn))
    assert undone == plan_policy, "the moto policy must be the plan's policy plus the documented shim only"
    assert plan_key_arn in json.dumps(plan_policy), "the plan's policy no longer names the KMS key"
    return policy


def provision_s3(moto: MotoServer, plan: Plan, kv: Mapping[str, str]) -> S3Backend:
    """Bucket, versioning and default encryption as the plan says, a KMS key, and an IAM user with the plan's policy.

    Not applied: the bucket policy (it denies plain HTTP, and moto is reached over plain HTTP; moto does not
    evaluate bucket policies anyway), public access block, ownership controls and lifecycle (no effect on a test).
    """
    bucket = plan.one("aws:s3/bucket:Bucket", "registry-storage-bucket").plain_inputs["bucket"]
    region = kv["env/REGISTRY_STORAGE_S3_REGION"]
    plan_key_arn = plan.one("aws:kms/key:Key", "registry-storage-key").outputs["arn"]
    versioning = plan.one("aws:s3/bucketVersioning:BucketVersioning",
                          "registry-storage-versioning").plain_inputs["versioningConfiguration"]
    encryption = plan.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                          "registry-storage-encryption").plain_inputs["rules"]
    role_policy = json.loads(plan.one("aws:iam/rolePolicy:RolePolicy", "registry-storage-access").plain_inputs["policy"])

    s3 = moto.client("s3", region=region)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": versioning["status"]})
    key_arn = moto.client("kms", region=region).create_key(Description=f"stands in for {plan_key_arn}")[
        "KeyMetadata"]["Arn"]
    rules = [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"],
        "KMSMasterKeyID": rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"].replace(plan_key_arn, key_arn)},
        "BucketKeyEnabled": rule.get("bucketKeyEnabled", False)} for rule in encryption]
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
    policy = moto_policy(role_policy, f"arn:aws:s3:::{bucket}", plan_key_arn, key_arn)
    access_key, secret_key = moto.create_user_with_inline_policy("registry-storage", policy, "registry-storage-access")
    return S3Backend(moto=moto, bucket=bucket, region=region, access_key=access_key, secret_key=secret_key,
                     kms_key_arn=key_arn, plan_kms_key_arn=plan_key_arn, policy=policy)


# --- the stack ----------------------------------------------------------------------------------------------------


@dataclass
class StackSetup:
    """One stack's configuration as the pod would find it, plus what the tests need to talk to its registry."""

    stack: str
    plan: Plan
    kv: dict[str, str]  # the recorded KV subkeys, relative to the stack's prefix
    login: Callable[[], hvac.Client]  # a new Kubernetes-auth-like login: the registry's policy, 5 minutes
    accounts: dict[str, RobotAccount]  # robot accounts and their passwords, read back from Vault
    token_service: Optional[RunningTokenService]  # token mode only
    token_realm: str
    token_service_name: str
    backend: FilesystemBackend | S3Backend
    workdir: Path
    owned_openbao: Optional[OpenBao] = field(default=None, repr=False)

    @property
    def vault(self) -> hvac.Client:
        """A client of a fresh login, as each pod start logs in (a session outlives one 5-minute token)."""
        return self.login()
    _boots: int = field(default=0, repr=False)

    def load(self, kv: Optional[Mapping[str, str]] = None, name: str = "registry") -> LoadedConfig:
        """config-cli's work, into ``<workdir>/<name>/run`` (standing in for /run/registry)."""
        return load(self.kv if kv is None else kv, self.vault, self.workdir / name / "run")

    def environment_for_test(self, loaded: LoadedConfig) -> dict[str, str]:
        """The loaded environment with ``TEST_OVERRIDES`` applied (listen addresses: by the harness)."""
        changes = self.backend.overrides(loaded.environment)
        unexplained = set(changes) - set(TEST_OVERRIDES)
        assert not unexplained, f"overrides without a documented reason: {unexplained}"
        return {**loaded.environment, **changes}

    def boot(self, factory: Callable[..., RunningRegistry], kv: Optional[Mapping[str, str]] = None,
             name: Optional[str] = None, **kwargs) -> RunningRegistry:
        self._boots += 1
        name = name or f"{self.stack}-{self._boots}"
        loaded = self.load(kv, name)
        return factory(self.environment_for_test(loaded), name=name, **kwargs)

    @property
    def token_mode(self) -> bool:
        return self.kv.get("env/REGISTRY_AUTH") == "token" or "env/REGISTRY_AUTH_TOKEN_REALM" in self.kv

    def users(self, access: str) -> list[str]:
        return [name for name, account in self.accounts.items() if account.access == access]

    def client(self, registry: RunningRegistry, user: Optional[str] = None, password: Optional[str] = None,
               timeout: float = 60.0) -> OciClient:
        """A client for ``user`` (password from Vault unless given; no user: anonymous)."""
        if user is not None and password is None:
            password = self.accounts[user].password
        if self.token_mode:
            client = OciClient(registry.base_url, timeout=timeout)
            client.session.auth = RegistryTokenAuth(user, password)
            return client
        return OciClient(registry.base_url, user, password, timeout=timeout)

    def close(self) -> None:
        if self.token_service is not None:
            self.token_service.stop()
        if self.owned_openbao is not None:
            self.owned_openbao.stop()


def registry_vault_token(root: hvac.Client, plan: Plan) -> str:
    """What config-cli's Kubernetes-auth login yields: the registry's policy only, short-lived."""
    policy = plan.one(POLICY_TYPE, REGISTRY_POLICY).plain_inputs["name"]
    token = root.auth.token.create(policies=[policy], no_default_policy=True, ttl=VAULT_TOKEN_TTL)
    return token["auth"]["client_token"]


def robot_accounts(root: hvac.Client, plan: Plan) -> dict[str, RobotAccount]:
    """Each client secret ``registry/<env>/clients/<user>`` of the plan, read back from Vault."""
    accounts = {}
    for secret in plan.of_type(CLIENT_SECRET_TYPE):
        inputs = secret.plain_inputs
        if "/clients/" not in inputs["name"]:
            continue
        data = root.secrets.kv.v2.read_secret_version(path=inputs["name"], mount_point=inputs["mount"],
                                                      raise_on_deleted_version=True)["data"]["data"]
        accounts[data["username"]] = RobotAccount(password=data["password"], access=data["access"])
    return accounts


def provision_token_keys(root: hvac.Client, vault_url: str, stack: str) -> VaultLayout:
    """The token service's signing and trust secrets beside the registry's, generated as the runbook does."""
    base = f"registry/{stack}"
    layout = VaultLayout(prefix=base, robots_path=base, signing_path=f"{base}/{names.TOKEN_SIGNING_SECRET}",
                         trust_path=f"{base}/{names.TOKEN_TRUST_SECRET}", service_token="", robots={})
    try:
        read_trust(root, layout)  # one OpenBao may serve several setups of a stack: keys once
    except hvac.exceptions.InvalidPath:
        result = run_keys(layout, vault_url, root.token, "init")
        assert result.returncode == 0, f"keys init failed: {result.stderr}"
    return layout


def token_service_vault_token(root: hvac.Client, layout: VaultLayout, robots_secret: str) -> str:
    """What the token service's own Vault role grants: read the robots' secret, its signing and trust secrets."""
    policy = "".join(f'path "{KV_MOUNT}/data/{path}" {{\n  capabilities = ["read"]\n}}\n'
                     for path in (robots_secret, layout.signing_path, layout.trust_path))
    root.sys.create_or_update_policy(name=f"{layout.prefix.replace('/', '-')}-token-service", policy=policy)
    return root.auth.token.create(policies=[f"{layout.prefix.replace('/', '-')}-token-service"],
                                  no_default_policy=True, ttl="1h")["auth"]["client_token"]


def prepare_stack(stack: str, openbao: Optional[OpenBao], workdir: Path, moto: Optional[MotoServer] = None,
                  extra_overrides: Optional[Mapping[str, Optional[str]]] = None,
                  token_service_overrides: Optional[Mapping[str, str]] = None,
                  start_own_token_service: bool = True) -> StackSetup:
    """Record the stack's plan (with the token service on this machine), apply its Vault objects, provision its
    storage, and start the token service if the stack uses token auth.

    ``openbao``: None starts one for this setup alone (stopped by ``close()``). Two setups of one stack must
    not share a Vault: the plan's paths are fixed (``registry/<env>``), so the second would overwrite the robots
    the first one's token service reads.

    ``start_own_token_service=False``: no service is started here; the caller starts the one the plan deploys
    (tests/test_token_service_e2e.py) on the realm's port (``token_realm``)."""
    owned = None
    if openbao is None:
        openbao = owned = start_openbao(workdir / "openbao", name=f"openbao-{stack}")
    try:
        setup = _prepare(stack, openbao, workdir, moto, extra_overrides, token_service_overrides or {},
                         start_own_token_service)
    except BaseException:
        if owned is not None:
            owned.stop()
        raise
    setup.owned_openbao = owned
    return setup


def _prepare(stack: str, openbao: OpenBao, workdir: Path, moto: Optional[MotoServer],
             extra_overrides: Optional[Mapping[str, Optional[str]]], token_service_overrides: Mapping[str, str],
             start_own_token_service: bool = True) -> StackSetup:
    _, config, _ = stack_config(stack)
    root = openbao.client()
    layout = provision_token_keys(root, openbao.url, stack)
    port = free_port()
    # A host name, not 127.0.0.1: go-containerregistry refuses a loopback IP realm on another port.
    realm = f"http://localhost:{port}{contract.TOKEN_PATH}"
    overrides = plan_overrides(realm, extra_overrides)
    plan = record_plan(stack, overrides=overrides)
    assert plan.error is None, f"{stack}: {plan.error}"
    apply_vault_objects(root, plan)
    accounts = robot_accounts(root, plan)
    _, kv = recorded_kv(plan)
    service = None
    if kv.get("env/REGISTRY_AUTH") == "token" and start_own_token_service:
        robots_secret = plan.one("vault:kv/secretV2:SecretV2", "registry-secrets-secret").plain_inputs["name"]
        service = start_token_service({
            contract.ENV_ISSUER: kv["env/REGISTRY_AUTH_TOKEN_ISSUER"],
            contract.ENV_REGISTRY_SERVICE: kv["env/REGISTRY_AUTH_TOKEN_SERVICE"],
            contract.ENV_REGISTRY_TRUST: "jwks",
            # Every client here comes from 127.0.0.1, and the checks try wrong passwords on purpose once per
            # boot: the per-source lockout (tests/test_token_service.py tests it) would end the run early.
            contract.ENV_FAILURES_PER_SOURCE: "10000", contract.ENV_FAILURES_PER_IDENTITY: "10000",
            **VaultLayout(layout.prefix, robots_secret, layout.signing_path, layout.trust_path,
                          token_service_vault_token(root, layout, robots_secret), {}).environment(openbao.url),
            **token_service_overrides,
        }, workdir, port=port)
    try:
        if kv["env/REGISTRY_STORAGE"] == "s3":
            assert moto is not None, f"{stack} stores in S3: pass a moto server"
            backend: FilesystemBackend | S3Backend = provision_s3(moto, plan, kv)
        else:
            backend = FilesystemBackend(workdir / "data")
        return StackSetup(stack=stack, plan=plan, kv=kv,
                          login=lambda: openbao.client(registry_vault_token(root, plan)),
                          accounts=accounts, token_service=service, token_realm=realm,
                          token_service_name=config["registry:tokenService"], backend=backend, workdir=workdir)
    except BaseException:
        if service is not None:
            service.stop()
        raise
