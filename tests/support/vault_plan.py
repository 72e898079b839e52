"""Apply a recorded plan's Vault objects to a real Vault API (OpenBao) through hvac, exactly as recorded."""

from __future__ import annotations

import datetime
import json
import re

import hvac
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from offline_plan import Plan, Registration
from offline_plan.render import plain_numbers

MOUNT_TYPE = "vault:index/mount:Mount"
POLICY_TYPE = "vault:index/policy:Policy"
# The registry's own policy (what config-cli's login yields); the plan holds others beside it (pull credentials).
REGISTRY_POLICY = "registry-secrets-policy"
SECRET_TYPE = "vault:kv/secretV2:SecretV2"
ROLE_TYPE = "vault:kubernetes/authBackendRole:AuthBackendRole"
APPLIED_TYPES = (MOUNT_TYPE, POLICY_TYPE, SECRET_TYPE, ROLE_TYPE)


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def throwaway_ca_certificate() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-kubernetes-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def ensure_kubernetes_auth(client: hvac.Client, path: str) -> None:
    """The cluster's shared Kubernetes auth method, which the plan expects to exist (dummy API server)."""
    if f"{path}/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("kubernetes", path=path)
    # Outside a pod the server cannot read the in-cluster CA file: hand it a throwaway one.
    client.write(f"auth/{path}/config", kubernetes_host="https://127.0.0.1:6443", disable_local_ca_jwt=True,
                 kubernetes_ca_cert=throwaway_ca_certificate())


def apply_vault_objects(client: hvac.Client, plan: Plan) -> dict[str, list[Registration]]:
    """Send each recorded Vault object to the server through its API, with the inputs as recorded."""
    applied: dict[str, list[Registration]] = {t: plan.of_type(t) for t in APPLIED_TYPES}
    for mount in applied[MOUNT_TYPE]:
        inputs = mount.plain_inputs
        client.sys.enable_secrets_engine(inputs["type"], path=inputs["path"], options=inputs.get("options"))
    for policy in applied[POLICY_TYPE]:
        client.sys.create_or_update_policy(policy.plain_inputs["name"], policy.plain_inputs["policy"])
    for secret in applied[SECRET_TYPE]:
        inputs = secret.plain_inputs
        client.secrets.kv.v2.create_or_update_secret(
            path=inputs["name"], secret=json.loads(inputs["dataJson"]), mount_point=inputs["mount"]
        )
    for role in applied[ROLE_TYPE]:
        inputs = plain_numbers(role.plain_inputs)  # the wire carries 300.0; the provider sends 300
        backend, name = inputs.pop("backend"), inputs.pop("roleName")
        ensure_kubernetes_auth(client, backend)
        client.write(f"auth/{backend}/role/{name}", **{snake_case(key): value for key, value in inputs.items()})
    return applied
