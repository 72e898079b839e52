"""What the service reads from Vault: robot accounts, the signing key and the published trust bundle.

``VaultSource.read()`` reads the three KV v2 secrets and returns one immutable ``VaultState``, or raises
``VaultUnavailable`` with a reason fit for a log line. The service keeps the last good state and
refuses every login once it is older than ``TOKEN_SERVICE_VAULT_MAX_STALENESS_SECONDS``: a Vault outage
closes the door after a bounded time instead of leaving revoked robots in for ever.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import hvac
import hvac.exceptions
import requests
from joserfc.errors import JoseError

from . import contract as c
from .config import VaultConfig
from .keys import RotationError, SigningKey, load_signing_key, trust_keyset

VAULT_TIMEOUT_SECONDS = 5


class VaultUnavailable(RuntimeError):
    """Vault could not be read, or what it holds cannot be used; the message says which."""


@dataclass(frozen=True)
class Robot:
    name: str
    password_hash: bytes
    role: Optional[str]


@dataclass(frozen=True)
class VaultState:
    robots: Mapping[str, Robot]
    signing_key: SigningKey
    trust_jwks: str  # JSON, every published key (verifies refresh tokens signed before a rotation)


def parse_robots(hashes: str, roles_json: str) -> dict[str, Robot]:
    """Robots from the htpasswd lines (``name:bcrypt``) and the ``{name: role}`` map of the program's secret."""
    try:
        roles = json.loads(roles_json) if roles_json else {}
    except json.JSONDecodeError as exc:
        raise VaultUnavailable(f"field {c.ROBOT_ROLES_FIELD!r} is not JSON ({exc.msg})") from None
    if not isinstance(roles, dict):
        raise VaultUnavailable(f"field {c.ROBOT_ROLES_FIELD!r} is not a JSON object")
    robots = {}
    for number, line in enumerate(hashes.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, hashed = line.strip().partition(":")
        if not sep or not hashed.startswith("$2"):
            raise VaultUnavailable(f"field {c.ROBOT_HASHES_FIELD!r} line {number} is not name:bcrypt-hash")
        role = roles.get(name)
        robots[name] = Robot(name=name, password_hash=hashed.encode(), role=role if isinstance(role, str) else None)
    return robots


class VaultSource:
    def __init__(self, config: VaultConfig):
        self.config = config
        self._lock = threading.Lock()
        self._client: Optional[hvac.Client] = None

    def _new_client(self) -> hvac.Client:
        client = hvac.Client(url=self.config.addr, verify=self.config.ca_file or True, timeout=VAULT_TIMEOUT_SECONDS)
        if self.config.auth == "token":
            client.token = self.config.token
        else:
            try:
                jwt = Path(self.config.jwt_file).read_text().strip()
            except OSError as exc:
                raise VaultUnavailable(f"service account token {self.config.jwt_file} unreadable: {exc}") from None
            try:
                client.auth.kubernetes.login(role=self.config.role, jwt=jwt, mount_point=self.config.auth_path)
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as exc:
                raise VaultUnavailable(f"Vault refused the Kubernetes login (auth/{self.config.auth_path}, role "
                                       f"{self.config.role}): {str(exc).split(', on ')[0]}") from None
        return client

    def _read(self, path: str) -> dict[str, str]:
        for attempt in (1, 2):
            if self._client is None:
                self._client = self._new_client()
            try:
                answer = self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.config.kv_mount, raise_on_deleted_version=True)
                return answer["data"]["data"]
            except hvac.exceptions.Forbidden:
                self._client = None  # the login expired or was revoked: log in again once
                if attempt == 2:
                    raise VaultUnavailable(f"permission denied reading {self.config.kv_mount}/{path}") from None
            except hvac.exceptions.InvalidPath:
                raise VaultUnavailable(f"secret {self.config.kv_mount}/{path} does not exist") from None
        raise AssertionError("unreachable")

    def read(self) -> VaultState:
        with self._lock:
            try:
                robots_data = self._read(self.config.robots_path)
                signing = self._read(self.config.signing_path)
                trust = self._read(self.config.trust_path)
            except VaultUnavailable:
                raise
            except (requests.RequestException, hvac.exceptions.VaultError, OSError) as exc:
                self._client = None
                raise VaultUnavailable(f"{self.config.addr} unreachable or failing: {type(exc).__name__}: "
                                       f"{str(exc)[:200]}") from None
        robots = parse_robots(robots_data.get(c.ROBOT_HASHES_FIELD, ""), robots_data.get(c.ROBOT_ROLES_FIELD, ""))
        kid, key_pem = signing.get(c.SIGNING_ACTIVE_KID_FIELD), signing.get(c.SIGNING_ACTIVE_KEY_FIELD)
        if not kid or not key_pem:
            raise VaultUnavailable(f"no active signing key in {self.config.kv_mount}/{self.config.signing_path} "
                                   "(run python -m token_service.keys init)")
        jwks = trust.get(c.TRUST_JWKS_FIELD, "")
        try:
            published = {key.get("kid") for key in json.loads(jwks or '{"keys": []}').get("keys", [])}
            if kid not in published:
                raise RotationError(f"active key {kid} is not in the trust secret's JWKS: the registry would "
                                    "refuse its tokens")
            trust_keyset(jwks)  # every published key must parse: refresh tokens are verified against them
            signing_key = load_signing_key(kid, key_pem, trust.get(c.TRUST_CERTIFICATES_FIELD, ""))
        except (RotationError, JoseError, ValueError, KeyError) as exc:
            raise VaultUnavailable(f"signing key unusable: {exc}") from None
        return VaultState(robots=robots, signing_key=signing_key, trust_jwks=jwks)
