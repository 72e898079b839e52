"""Developers' OIDC tokens (ID tokens or JWT access tokens) from the company's issuer.

Verified with joserfc against the issuer's JWKS: signature with one of the pinned algorithms only (so
``alg: none`` and HMAC tokens are refused before any key is looked at), then ``iss``, ``aud``, ``exp``
(all required), ``nbf``/``iat`` when present, and the username claim equal to the login's username.
The JWKS is cached and re-read every ``jwks_refresh_seconds``, and at most every
``MIN_REFETCH_SECONDS`` when a token names a key the cache lacks (the issuer rotated). With no usable
JWKS (the issuer unreachable past three refresh periods) every developer login fails closed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse
from typing import Any, Callable, Optional

import requests
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .config import OidcConfig

HTTP_TIMEOUT_SECONDS = 5
MIN_REFETCH_SECONDS = 30
CLOCK_LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 8192


class OidcRejected(ValueError):
    """The token is not acceptable; the message (for the log, never the client) says why."""


class IssuerUnavailable(RuntimeError):
    """The issuer's keys cannot be had; developer logins fail closed."""


@dataclass(frozen=True)
class Developer:
    username: str
    groups: tuple[str, ...]


def looks_like_jwt(text: str) -> bool:
    return text.count(".") == 2 and len(text) <= MAX_TOKEN_BYTES


class OidcVerifier:
    def __init__(self, config: OidcConfig, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self._http = requests.Session()
        self._http.trust_env = False
        self._http.verify = config.ca_file or True
        self._keys: Optional[KeySet] = None
        self._fetched_at = 0.0
        self._last_attempt = 0.0
        self._lock = threading.Lock()
        self.up = False

    def _get_json(self, url: str) -> Any:
        answer = self._http.get(url, timeout=HTTP_TIMEOUT_SECONDS, allow_redirects=False)
        answer.raise_for_status()
        return answer.json()

    def _jwks_uri(self) -> str:
        if self.config.jwks_uri:
            return self.config.jwks_uri
        discovery = self._get_json(self.config.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if discovery.get("issuer") != self.config.issuer:
            raise IssuerUnavailable(f"discovery document names issuer {discovery.get('issuer')!r}, "
                                    f"not {self.config.issuer!r}")
        jwks_uri = discovery["jwks_uri"]
        parsed = urlparse(jwks_uri)
        if parsed.scheme != "https" and not (parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "::1",
                                                                                             "localhost")):
            raise IssuerUnavailable(f"discovery document's jwks_uri {jwks_uri!r} is not https")
        return jwks_uri

    def _refresh(self, now: float) -> None:
        self._last_attempt = now
        try:
            keys = KeySet.import_key_set(self._get_json(self._jwks_uri()))
        except IssuerUnavailable:
            self.up = False
            raise
        except (requests.RequestException, ValueError, KeyError, JoseError) as exc:
            self.up = False
            raise IssuerUnavailable(f"OIDC issuer {self.config.issuer} JWKS unreachable or invalid: "
                                    f"{type(exc).__name__}: {str(exc)[:200]}") from None
        self._keys, self._fetched_at, self.up = keys, now, True

    def keys(self, wanted_kid: Optional[str]) -> KeySet:
        with self._lock:
            now = self.clock()
            stale = now - self._fetched_at > self.config.jwks_refresh_seconds
            missing = wanted_kid is not None and self._keys is not None and not any(
                k.kid == wanted_kid for k in self._keys.keys)
            refetch_after = min(MIN_REFETCH_SECONDS, self.config.jwks_refresh_seconds)
            if self._keys is None or stale or (missing and now - self._last_attempt >= refetch_after):
                try:
                    self._refresh(now)
                except IssuerUnavailable:
                    if self._keys is None or now - self._fetched_at > 3 * self.config.jwks_refresh_seconds:
                        raise
            assert self._keys is not None
            return self._keys

    def verify(self, token: str, username: str) -> Developer:
        if not looks_like_jwt(token):
            raise OidcRejected("not a compact JWT")
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError):
            raise OidcRejected("undecodable JWS header") from None
        kid = header.get("kid") if isinstance(header, dict) else None
        keys = self.keys(kid)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(self.config.algorithms))
        except JoseError as exc:
            raise OidcRejected(f"signature or header refused: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            raise OidcRejected(f"undecodable: {exc}") from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()), leeway=CLOCK_LEEWAY_SECONDS,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise OidcRejected(f"claims refused: {type(exc).__name__}: {exc}") from None
        if claims.get(self.config.username_claim) != username:
            raise OidcRejected(f"claim {self.config.username_claim!r} does not equal the login's username")
        groups = claims.get(self.config.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise OidcRejected(f"claim {self.config.groups_claim!r} is not a list of strings")
        return Developer(username=username, groups=tuple(groups))
