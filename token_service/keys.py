"""The signing key's life in Vault: generated, published, activated, retired.

Two KV v2 secrets (paths from ``TOKEN_SERVICE_VAULT_SIGNING_PATH`` and ``..._TRUST_PATH``):

- signing (private, only the token service reads it): ``active_key``/``active_kid``, the key that signs
  now, and during a rotation ``next_key``/``next_kid``, the key that will;
- trust (public, what config-cli hands the registry): ``jwks`` (for ``REGISTRY_AUTH_TOKEN_JWKS``) and
  ``certificates`` (a PEM bundle of one self-signed certificate per key, for
  ``REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE``), each holding every key a token in circulation may carry,
  and ``retiring``: when each replaced key may be dropped.

Rotation (docs/token-service.md): ``stage`` publishes a new key without using it; once every registry
pod has restarted with the new trust files, ``activate`` makes it sign; once the old key's last token
has expired, ``retire`` drops it. Each step writes with check-and-set, so two operators cannot race.

Command line (an operator's Vault token, never the service's read-only one)::

    python -m token_service.keys status|init|stage|activate|retire [--valid-days N] [--force]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey, KeySet

from . import contract as c
from .config import MAX_TOKEN_TTL

SIGNING_ALGORITHM = c.REGISTRY_SIGNING_ALGORITHMS[0]
DEFAULT_VALID_DAYS = 400
# The registry accepts a token up to 60 s past its exp (Distribution's Leeway).
REGISTRY_LEEWAY_SECONDS = 60


class RotationError(RuntimeError):
    """A rotation step that would break trust (e.g. activating a key the registry does not know yet)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: ECKey
    certificate: x509.Certificate

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def generate_key(valid_days: int = DEFAULT_VALID_DAYS, now: Optional[datetime.datetime] = None) -> tuple[str, str, str]:
    """A new P-256 key: ``(kid, private key PEM, self-signed certificate PEM)``; kid is its RFC 7638 thumbprint."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    private = ec.generate_private_key(ec.SECP256R1())
    kid = ECKey.import_key(private).thumbprint()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"registry token signer {kid[:16]}")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    return kid, key_pem, certificate.public_bytes(serialization.Encoding.PEM).decode()


def load_signing_key(kid: str, key_pem: str, certificates_pem: str) -> SigningKey:
    """The active key with the published certificate of the same public key (raises if it is unpublished)."""
    key = ECKey.import_key(key_pem)
    if key.thumbprint() != kid:
        raise RotationError(f"the signing secret's kid {kid!r} is not the thumbprint of its key")
    for certificate in certificates(certificates_pem):
        if ECKey.import_key(certificate.public_key()).thumbprint() == kid:
            return SigningKey(kid=kid, key=key, certificate=certificate)
    raise RotationError(f"signing key {kid} has no certificate in the trust bundle: it is not published")


def certificates(bundle_pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle_pem.encode()) if bundle_pem.strip() else []


def trust_keyset(jwks_json: str) -> KeySet:
    return KeySet.import_key_set(json.loads(jwks_json))


def _public_jwk(kid: str, key_pem: str) -> dict[str, Any]:
    jwk = ECKey.import_key(key_pem).as_dict(private=False)
    return {**jwk, "kid": kid, "use": "sig", "alg": SIGNING_ALGORITHM}


def _empty_trust() -> dict[str, str]:
    return {c.TRUST_JWKS_FIELD: json.dumps({"keys": []}), c.TRUST_CERTIFICATES_FIELD: "",
            c.TRUST_RETIRING_FIELD: "{}"}


def publish(trust: dict[str, str], kid: str, key_pem: str, certificate_pem: str) -> dict[str, str]:
    trust = {**_empty_trust(), **trust}
    keys = json.loads(trust[c.TRUST_JWKS_FIELD])["keys"]
    if any(k["kid"] == kid for k in keys):
        return trust
    keys.append(_public_jwk(kid, key_pem))
    bundle = trust[c.TRUST_CERTIFICATES_FIELD]
    return {**trust, c.TRUST_JWKS_FIELD: json.dumps({"keys": keys}, sort_keys=True),
            c.TRUST_CERTIFICATES_FIELD: bundle + ("" if not bundle or bundle.endswith("\n") else "\n") + certificate_pem}


def stage(signing: dict[str, str], trust: dict[str, str], valid_days: int = DEFAULT_VALID_DAYS
          ) -> tuple[dict[str, str], dict[str, str], str]:
    """A new key, published in the trust secret, kept as ``next``: nothing signs with it yet."""
    if signing.get(c.SIGNING_NEXT_KID_FIELD):
        raise RotationError(f"key {signing[c.SIGNING_NEXT_KID_FIELD]} is already staged: activate it first")
    kid, key_pem, cert_pem = generate_key(valid_days)
    signing = {**signing, c.SIGNING_NEXT_KEY_FIELD: key_pem, c.SIGNING_NEXT_KID_FIELD: kid}
    return signing, publish(trust, kid, key_pem, cert_pem), kid


def activate(signing: dict[str, str], trust: dict[str, str], now: Optional[float] = None
             ) -> tuple[dict[str, str], dict[str, str], str]:
    """The staged key signs from now on; the old one stays trusted until its last token has expired."""
    now = time.time() if now is None else now
    kid = signing.get(c.SIGNING_NEXT_KID_FIELD)
    if not kid:
        raise RotationError("no staged key: run stage first")
    published = {k["kid"] for k in json.loads(trust.get(c.TRUST_JWKS_FIELD, '{"keys": []}'))["keys"]}
    if kid not in published:
        raise RotationError(f"staged key {kid} is not in the trust secret: the registry would refuse its tokens")
    old = signing.get(c.SIGNING_ACTIVE_KID_FIELD)
    new_signing = {k: v for k, v in signing.items() if k not in (c.SIGNING_NEXT_KEY_FIELD, c.SIGNING_NEXT_KID_FIELD)}
    new_signing[c.SIGNING_ACTIVE_KEY_FIELD] = signing[c.SIGNING_NEXT_KEY_FIELD]
    new_signing[c.SIGNING_ACTIVE_KID_FIELD] = kid
    retiring = json.loads(trust.get(c.TRUST_RETIRING_FIELD) or "{}")
    if old:
        retiring[old] = int(now + MAX_TOKEN_TTL + REGISTRY_LEEWAY_SECONDS)
    return new_signing, {**trust, c.TRUST_RETIRING_FIELD: json.dumps(retiring, sort_keys=True)}, kid


def retire(signing: dict[str, str], trust: dict[str, str], now: Optional[float] = None, force: bool = False
           ) -> tuple[dict[str, str], list[str]]:
    """Drop replaced keys whose last token has expired (all replaced keys with ``force``)."""
    now = time.time() if now is None else now
    keep = {signing.get(c.SIGNING_ACTIVE_KID_FIELD), signing.get(c.SIGNING_NEXT_KID_FIELD)} - {None}
    retiring = json.loads(trust.get(c.TRUST_RETIRING_FIELD) or "{}")
    dropped = [kid for kid, after in retiring.items() if kid not in keep and (force or now >= after)]
    keys = [k for k in json.loads(trust[c.TRUST_JWKS_FIELD])["keys"] if k["kid"] not in dropped]
    bundle = "".join(
        cert.public_bytes(serialization.Encoding.PEM).decode()
        for cert in certificates(trust[c.TRUST_CERTIFICATES_FIELD])
        if ECKey.import_key(cert.public_key()).thumbprint() not in dropped
    )
    remaining = {kid: after for kid, after in retiring.items() if kid not in dropped}
    return {**trust, c.TRUST_JWKS_FIELD: json.dumps({"keys": keys}, sort_keys=True), c.TRUST_CERTIFICATES_FIELD: bundle,
            c.TRUST_RETIRING_FIELD: json.dumps(remaining, sort_keys=True)}, dropped


# --- Vault I/O (check-and-set) ------------------------------------------------------------------------------


def read_versioned(client, mount: str, path: str) -> tuple[dict[str, str], int]:
    import hvac.exceptions

    try:
        answer = client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
    except hvac.exceptions.InvalidPath:
        return {}, 0
    return dict(answer["data"]["data"]), int(answer["data"]["metadata"]["version"])


def write_versioned(client, mount: str, path: str, data: dict[str, str], version: int) -> None:
    client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=mount, cas=version)


def _client_from_environment():
    import hvac

    addr, token = os.environ.get(c.ENV_VAULT_ADDR), os.environ.get(c.ENV_VAULT_TOKEN)
    if not addr or not token:
        raise RotationError(f"set {c.ENV_VAULT_ADDR} and {c.ENV_VAULT_TOKEN} (an operator token allowed to write "
                            "the signing and trust secrets)")
    return hvac.Client(url=addr, token=token, verify=os.environ.get(c.ENV_VAULT_CACERT) or True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m token_service.keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("status", "init", "stage", "activate", "retire"))
    parser.add_argument("--valid-days", type=int, default=DEFAULT_VALID_DAYS)
    parser.add_argument("--force", action="store_true", help="retire: drop replaced keys before their time")
    args = parser.parse_args(argv)
    mount = os.environ.get(c.ENV_VAULT_KV_MOUNT, "secret")
    signing_path = os.environ.get(c.ENV_VAULT_SIGNING_PATH)
    trust_path = os.environ.get(c.ENV_VAULT_TRUST_PATH)
    try:
        if not signing_path or not trust_path:
            raise RotationError(f"set {c.ENV_VAULT_SIGNING_PATH} and {c.ENV_VAULT_TRUST_PATH}")
        client = _client_from_environment()
        signing, signing_version = read_versioned(client, mount, signing_path)
        trust, trust_version = read_versioned(client, mount, trust_path)
        if args.step == "status":
            published = json.loads(trust.get(c.TRUST_JWKS_FIELD) or '{"keys": []}')["keys"]
            print(json.dumps({"active": signing.get(c.SIGNING_ACTIVE_KID_FIELD),
                              "next": signing.get(c.SIGNING_NEXT_KID_FIELD),
                              "published": [k["kid"] for k in published],
                              "retiring": json.loads(trust.get(c.TRUST_RETIRING_FIELD) or "{}")}, indent=2))
            return 0
        if args.step == "init":
            if signing.get(c.SIGNING_ACTIVE_KID_FIELD):
                raise RotationError("a signing key exists already: rotate with stage, activate, retire")
            signing, trust, kid = stage(signing, trust, args.valid_days)
            signing, trust, _ = activate(signing, trust)
            message = f"signing key {kid} created, published and active"
        elif args.step == "stage":
            signing, trust, kid = stage(signing, trust, args.valid_days)
            message = (f"key {kid} published, not signing yet: restart the registry pods so they load the new "
                       "trust files, then run activate")
        elif args.step == "activate":
            signing, trust, kid = activate(signing, trust)
            message = f"key {kid} signs from now on (token service pods pick it up within their Vault refresh)"
        else:
            trust, dropped = retire(signing, trust, force=args.force)
            message = f"dropped {dropped or 'nothing'}; restart the registry pods so they forget them"
        # Trust first: a key must be published before anything can sign with it.
        write_versioned(client, mount, trust_path, trust, trust_version)
        if args.step != "retire":
            write_versioned(client, mount, signing_path, signing, signing_version)
        print(message)
        return 0
    except RotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
