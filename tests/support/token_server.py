"""Both ends of the Docker token protocol, for tests on 127.0.0.1.

- ``TokenSigner``: a throwaway CA and an ES256 signing certificate issued by it. The CA's PEM is what the
  stack's ``tokenRootCertBundle`` is overridden with; the leaf goes into every token's ``x5c`` header
  (Distribution v3.1.1 rejects a token without one).
- ``TokenServer``: ``GET /token?service=&scope=`` with Basic auth, as a real token server answers it. Users and
  passwords come from the caller (the tests read them from Vault's ``registry/<env>/clients/<user>``); a
  ``push`` user is granted what it asks of ``pull,push``, a ``pull`` user only ``pull``. Plain comparison,
  no bcrypt: the registry never sees these passwords in token mode.
- ``RegistryTokenAuth``: the client side (a ``requests`` auth): on a ``Bearer`` challenge, fetch a token from
  the realm for the challenged scope and retry once; the token is reused for later requests, so a large
  upload is not sent twice.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping
from urllib.parse import parse_qs, urlparse

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .processes import LOOPBACK

TOKEN_PATH = "/token"
TOKEN_LIFETIME_SECONDS = 300
# What each kind of robot account may do on any repository (docs/config-flow.md, "Authentication modes").
GRANTS = {"push": ("pull", "push"), "pull": ("pull",)}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _certificate(subject: str, public_key, issuer: x509.Name, signing_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    return builder.sign(signing_key, hashes.SHA256())


@dataclass
class TokenSigner:
    """A throwaway CA (the root bundle the registry trusts) and a leaf key that signs ES256 tokens."""

    issuer: str
    service: str
    ca_pem: str = field(init=False)
    _key: ec.EllipticCurvePrivateKey = field(init=False, repr=False)
    _leaf_der: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token root CA")])
        ca = _certificate("test token root CA", ca_key.public_key(), ca_name, ca_key, ca=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate("test token signer", self._key.public_key(), ca_name, ca_key, ca=False)
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        self._leaf_der = leaf.public_bytes(serialization.Encoding.DER)

    def token(self, subject: str, access: list[dict]) -> str:
        """A signed JWT granting ``access`` (``[{"type", "name", "actions"}]``) to ``subject``."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._leaf_der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + TOKEN_LIFETIME_SECONDS,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True)
class RobotAccount:
    password: str
    access: str  # "push" or "pull"


def granted_access(scopes: list[str], access: str) -> list[dict]:
    """The requested repository scopes intersected with what an account of kind ``access`` may do."""
    allowed = GRANTS[access]
    granted = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            continue
        kept = [action for action in actions.split(",") if action in allowed]
        granted.append({"type": "repository", "name": name, "actions": kept})
    return granted


class TokenServer:
    """``GET /token`` on a free 127.0.0.1 port, in a thread of the test process."""

    def __init__(self, signer: TokenSigner, accounts: Mapping[str, RobotAccount]):
        self.signer = signer
        self.accounts = dict(accounts)
        self.requests: list[tuple[str | None, int]] = []  # (user, status) of every token request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body = server.answer(self.path, self.headers.get("Authorization"))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="registry token server"')
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self._httpd.server_address[1]}{TOKEN_PATH}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-server", daemon=True)
        self._thread.start()

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict]:
        url = urlparse(path)
        query = parse_qs(url.query)
        user = self._authenticate(authorization)
        if url.path != TOKEN_PATH:
            status, body = 404, {"error": "not found"}
        elif user is None:
            status, body = 401, {"error": "invalid credentials"}
        elif query.get("service") != [self.signer.service]:
            status, body = 400, {"error": f"unknown service {query.get('service')}"}
        else:
            access = granted_access(query.get("scope", []), self.accounts[user].access)
            token = self.signer.token(user, access)
            status, body = 200, {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_SECONDS}
        self.requests.append((user, status))
        return status, body

    def _authenticate(self, authorization: str | None) -> str | None:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None
        account = self.accounts.get(user)
        if account is None or not hmac.compare_digest(account.password.encode(), password.encode()):
            return None
        return user

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class TokenRequestError(Exception):
    """The token server refused the credentials (or answered something else than a token)."""

    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"token server answered HTTP {status}: {body[:300]}")


class RegistryTokenAuth(requests.auth.AuthBase):
    """Bearer-token client auth: answer the registry's challenge with a token from its realm, reuse it."""

    def __init__(self, username: str | None, password: str | None):
        self.username, self.password = username, password
        self.token: str | None = None
        self._http = requests.Session()
        self._http.trust_env = False

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs) -> requests.Response:
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or not challenge.startswith("Bearer ") or getattr(response.request,
                                                                                         "_token_retry", False):
            return response
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        query = {"service": params.get("service", "")}
        if "scope" in params:
            query["scope"] = params["scope"]
        auth = (self.username, self.password or "") if self.username is not None else None
        answer = self._http.get(params["realm"], params=query, auth=auth, timeout=30)
        if answer.status_code != 200:
            raise TokenRequestError(answer.status_code, answer.text)
        self.token = answer.json()["token"]
        response.content  # noqa: B018 - drain the 401 so its connection can be reused
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {self.token}"
        retry._token_retry = True  # type: ignore[attr-defined]
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again
