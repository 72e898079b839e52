"""The HTTP service: the Docker registry token endpoint (GET and OAuth2 POST), health, readiness, metrics.

Everything that decides who someone is and what they may do lives in ``TokenService``; the Starlette
handlers only turn HTTP into calls to it and its answers or ``HttpError``s back into HTTP.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import secrets
import logging
import re
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import parse_qs

import bcrypt
from joserfc import jwt
from joserfc.errors import JoseError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import contract as c
from .config import ServiceConfig
from .keys import SIGNING_ALGORITHM, trust_keyset
from .limiter import FailureLimiter
from .oidc import IssuerUnavailable, OidcRejected, OidcVerifier, looks_like_jwt
from .scopes import Scope, ScopeError, parse_scope_parameters
from .vault import VaultSource, VaultState, VaultUnavailable

log = logging.getLogger("token_service")

MAX_AUTHORIZATION_BYTES = 8192
# All request headers together; h11 only bounds a head that arrives in pieces, not one sent at once.
MAX_HEADER_BYTES = 16384
MAX_FORM_BYTES = 16384
MAX_USERNAME = 256
MAX_PASSWORD = 8192
# RFC 6749 appendix A.1: client_id is VSCHAR (printable ASCII).
_CLIENT_ID = re.compile(r"^[\x20-\x7e]{1,128}$")
REFRESH_TOKEN_USE = "refresh"
BASIC_REALM = "registry token service"
VAULT_ERROR_LOG_INTERVAL = 60
# A robot's password, once checked with bcrypt, is remembered for this long (as an HMAC under a per-process
# random key, never in clear): a cluster's nodes pulling at once would otherwise queue behind bcrypt.
VERIFIED_PASSWORD_SECONDS = 60


class HttpError(Exception):
    def __init__(self, status: int, error: str, description: str, headers: Optional[dict[str, str]] = None):
        super().__init__(description)
        self.status, self.error, self.description, self.headers = status, error, description, headers or {}


def _unauthorized(description: str = "invalid credentials") -> HttpError:
    return HttpError(401, "unauthorized", description, {"WWW-Authenticate": f'Basic realm="{BASIC_REALM}"'})


@dataclass(frozen=True)
class Identity:
    kind: str  # robot or oidc
    subject: str
    roles: tuple[str, ...]
    groups: tuple[str, ...] = ()
    credential: str = ""  # robots: fingerprint of the stored hash, so a rotation revokes refresh tokens


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(c.METRIC_REQUESTS.removesuffix("_total"), "Token endpoint requests",
                                ["endpoint", "code"], registry=r)
        self.issued = Counter(c.METRIC_TOKENS_ISSUED.removesuffix("_total"), "Bearer tokens issued", ["identity"],
                              registry=r)
        self.failures = Counter(c.METRIC_LOGIN_FAILURES.removesuffix("_total"), "Refused logins", ["reason"],
                                registry=r)
        self.limited = Counter(c.METRIC_RATE_LIMITED.removesuffix("_total"), "Logins refused by the failure limits",
                               ["limit"], registry=r)
        self.denied = Counter(c.METRIC_DENIED_ACTIONS.removesuffix("_total"), "Requested actions not granted",
                              ["action"], registry=r)
        self.duration = Histogram(c.METRIC_REQUEST_SECONDS, "Token endpoint latency", ["endpoint"], registry=r)
        self.vault_up = Gauge(c.METRIC_VAULT_UP, "1 when the last Vault read succeeded", registry=r)
        self.vault_last = Gauge(c.METRIC_VAULT_LAST_READ, "Time of the last good Vault read", registry=r)
        self.oidc_up = Gauge(c.METRIC_OIDC_UP, "1 when the OIDC issuer's JWKS was last read successfully",
                             registry=r)
        self.cert_expiry = Gauge(c.METRIC_SIGNING_CERT_EXPIRY, "notAfter of the active signing certificate",
                                 registry=r)


def _fingerprint(password_hash: bytes) -> str:
    return hashlib.sha256(password_hash).hexdigest()[:32]


def _scope_text(scopes: list[Scope]) -> str:
    return " ".join(s.render() for s in scopes)


class TokenService:
    def __init__(self, config: ServiceConfig, vault: VaultSource, oidc: Optional[OidcVerifier],
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.config, self.vault, self.oidc = config, vault, oidc
        self.clock, self.monotonic = clock, monotonic
        self.metrics = Metrics()
        self.by_identity = FailureLimiter(config.failures_per_identity, config.failure_window_seconds)
        self.by_source = FailureLimiter(config.failures_per_source, config.failure_window_seconds)
        self._state: Optional[VaultState] = None
        self._state_at = 0.0
        self._vault_error: Optional[str] = None
        self._vault_error_logged = 0.0
        # Unknown usernames cost the same bcrypt work as known ones: no timing oracle for account names.
        self._dummy_hash = bcrypt.hashpw(b"not a password", bcrypt.gensalt(10))
        self._stop = threading.Event()
        self._refresher: Optional[threading.Thread] = None
        self._verified_key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[bytes, bytes, float]] = {}  # name -> (stored hash, HMAC, until)

    # --- Vault state --------------------------------------------------------------------------------------

    def refresh_once(self) -> None:
        try:
            state = self.vault.read()
        except Exception as exc:  # noqa: BLE001 - whatever the cause, the refresher lives on and logins fail closed
            if not isinstance(exc, VaultUnavailable):
                exc = VaultUnavailable(f"unexpected {type(exc).__name__}: {exc}")
            self.metrics.vault_up.set(0)
            now = self.monotonic()
            if str(exc) != self._vault_error or now - self._vault_error_logged > VAULT_ERROR_LOG_INTERVAL:
                log.error("vault unavailable: %s; logins are refused once the last good read is older than %ss",
                          exc, self.config.vault.max_staleness_seconds, extra={"event": "vault_unavailable"})
                self._vault_error_logged = now
            self._vault_error = str(exc)
            return
        if self._vault_error is not None or self._state is None:
            log.info("vault read: %d robots, signing key %s", len(state.robots), state.signing_key.kid,
                     extra={"event": "vault_ready"})
        self._state, self._state_at, self._vault_error = state, self.monotonic(), None
        self.metrics.vault_up.set(1)
        self.metrics.vault_last.set(self.clock())
        self.metrics.cert_expiry.set(state.signing_key.certificate.not_valid_after_utc.timestamp())

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.refresh_once()
                self._stop.wait(self.config.vault.refresh_seconds)

        self._refresher = threading.Thread(target=loop, name="vault-refresh", daemon=True)
        self._refresher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._refresher:
            self._refresher.join(timeout=10)

    def fresh_state(self) -> VaultState:
        """The Vault state, if read recently enough to trust; otherwise fail closed (503)."""
        age = self.monotonic() - self._state_at
        if self._state is None or age > self.config.vault.max_staleness_seconds:
            reason = self._vault_error or "not read yet"
            log.error("refusing login: no Vault data younger than %ss (%s)", self.config.vault.max_staleness_seconds,
                      reason, extra={"event": "fail_closed", "dependency": "vault"})
            self.metrics.failures.labels("vault_unavailable").inc()
            raise HttpError(503, "temporarily_unavailable", "credentials store unavailable", {"Retry-After": "5"})
        return self._state

    def readiness(self) -> tuple[bool, dict]:
        age = self.monotonic() - self._state_at if self._state else None
        ready = self._state is not None and age is not None and age <= self.config.vault.max_staleness_seconds
        detail = {"vault": "ok" if ready else (self._vault_error or "not read yet"),
                  "signing_key": self._state.signing_key.kid if self._state else None}
        return ready, detail

    # --- authentication -------------------------------------------------------------------------------------

    def _limited(self, username: str, source: str, known_good: bool = False) -> None:
        checks = [(self.by_source, f"source:{source}", "source")]
        if not known_good:
            checks.insert(0, (self.by_identity, f"user:{username}", "identity"))
        for limiter, key, label in checks:
            wait = limiter.retry_after(key)
            if wait > 0:
                self.metrics.limited.labels(label).inc()
                log.warning("login refused: too many failures for this %s", label,
                            extra={"event": "rate_limited", "limit": label, "username": username, "source": source})
                raise HttpError(429, "too_many_requests", f"too many failed logins for this {label}",
                                {"Retry-After": str(int(wait) + 1)})

    def _failed(self, username: str, source: str, reason: str, detail: str = "") -> HttpError:
        self.by_identity.record_failure(f"user:{username}")
        self.by_source.record_failure(f"source:{source}")
        self.metrics.failures.labels(reason).inc()
        log.warning("login refused: %s%s", reason, f" ({detail})" if detail else "",
                    extra={"event": "login_failed", "reason": reason, "username": username, "source": source})
        return _unauthorized()

    def authenticate_password(self, username: str, password: str, source: str) -> Identity:
        if not username or len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            raise self._failed(username[:MAX_USERNAME], source, "malformed_credentials")
        state = self._state
        robot = state.robots.get(username) if state else None
        # A robot presenting the password this replica verified minutes ago is not guessing: someone else's
        # failed guesses at its name must not lock the cluster's nodes out of pulling.
        self._limited(username, source, known_good=robot is not None and self._remembered(robot, password))
        state = self.fresh_state()
        robot = state.robots.get(username)
        if robot is not None:
            if self._robot_password_ok(robot, password):
                self.by_identity.reset(f"user:{username}")
                roles = (robot.role,) if robot.role else ()
                return Identity("robot", robot.name, roles, credential=_fingerprint(robot.password_hash))
            raise self._failed(username, source, "bad_password")
        if self.oidc is not None and looks_like_jwt(password):
            try:
                developer = self.oidc.verify(password, username)
            except IssuerUnavailable as exc:
                self.metrics.oidc_up.set(0)
                self.metrics.failures.labels("oidc_unavailable").inc()
                log.error("refusing developer login: %s", exc, extra={"event": "fail_closed", "dependency": "oidc",
                                                                        "username": username})
                raise HttpError(503, "temporarily_unavailable", "identity provider unavailable",
                                {"Retry-After": "5"}) from None
            except OidcRejected as exc:
                self.metrics.oidc_up.set(1 if self.oidc.up else 0)
                raise self._failed(username, source, "oidc_rejected", str(exc)) from None
            self.metrics.oidc_up.set(1)
            self.by_identity.reset(f"user:{username}")
            return Identity("oidc", developer.username, self.config.rules.roles_of_groups(developer.groups),
                            groups=developer.groups)
        bcrypt.checkpw(password.encode(), self._dummy_hash)
        raise self._failed(username, source, "unknown_identity")

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._verified_key, password.encode(), hashlib.sha256).digest()

    def _remembered(self, robot, password: str) -> bool:
        remembered = self._verified.get(robot.name)
        return bool(remembered and remembered[0] == robot.password_hash and remembered[2] > self.monotonic()
                    and hmac.compare_digest(remembered[1], self._mac(password)))

    def _robot_password_ok(self, robot, password: str) -> bool:
        if self._remembered(robot, password):
            return True
        if not bcrypt.checkpw(password.encode(), robot.password_hash):
            return False
        # Keyed by robot name and stored hash: bounded by the robots in Vault, forgotten on rotation.
        until = self.monotonic() + VERIFIED_PASSWORD_SECONDS
        self._verified[robot.name] = (robot.password_hash, self._mac(password), until)
        return True

    def authenticate_refresh(self, token: str, source: str) -> Identity:
        self._limited("(refresh token)", source)
        state = self.fresh_state()
        try:
            decoded = jwt.decode(token, trust_keyset(state.trust_jwks), algorithms=[SIGNING_ALGORITHM])
            claims = decoded.claims
            jwt.JWTClaimsRegistry(
                now=int(self.clock()), iss={"essential": True, "value": self.config.issuer},
                aud={"essential": True, "value": self._refresh_audience}, exp={"essential": True},
                sub={"essential": True}, token_use={"essential": True, "value": REFRESH_TOKEN_USE},
            ).validate(claims)
        except (JoseError, ValueError) as exc:
            raise self._failed("(refresh token)", source, "bad_refresh_token", type(exc).__name__) from None
        subject, kind = claims["sub"], claims.get("kind")
        if kind == "robot":
            robot = state.robots.get(subject)
            if robot is None or _fingerprint(robot.password_hash) != claims.get("cred"):
                raise self._failed(subject, source, "revoked_refresh_token")
            return Identity("robot", subject, (robot.role,) if robot.role else (),
                            credential=_fingerprint(robot.password_hash))
        if kind == "oidc":
            groups = tuple(g for g in claims.get("groups", []) if isinstance(g, str))
            return Identity("oidc", subject, self.config.rules.roles_of_groups(groups), groups=groups)
        raise self._failed(subject, source, "bad_refresh_token", "unknown kind")

    # --- issuing ----------------------------------------------------------------------------------------------

    @property
    def _refresh_audience(self) -> str:
        # Never the registry's service name: the registry must refuse a refresh token used as a bearer token.
        return f"{self.config.registry_service}/refresh-token"

    def grant(self, identity: Identity, scopes: list[Scope]) -> list[Scope]:
        granted: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            allowed = self.config.rules.allowed(identity.roles, scope)
            for action in scope.actions:
                if action not in allowed and action != "*":
                    self.metrics.denied.labels(action if action in ("pull", "push", "delete") else "other").inc()
            if allowed:
                actions = granted.setdefault((scope.type, scope.name), [])
                actions.extend(a for a in allowed if a not in actions)
        return [Scope(kind, name, tuple(actions)) for (kind, name), actions in granted.items()]

    def _sign(self, state: VaultState, claims: dict, for_registry: bool = True) -> str:
        key = state.signing_key
        header = {"typ": "JWT", "alg": SIGNING_ALGORITHM, "kid": key.kid}
        if for_registry and self.config.registry_trust == "rootcertbundle":
            header["x5c"] = [base64.b64encode(key.certificate_der).decode()]
        return jwt.encode(header, claims, key.key, algorithms=[SIGNING_ALGORITHM])

    def issue(self, identity: Identity, scopes: list[Scope], *, offline: bool, refresh_token: Optional[str] = None,
              client_id: str = "", source: str = "") -> dict:
        state = self.fresh_state()
        granted = self.grant(identity, scopes)
        now = int(self.clock())
        claims = {
            "iss": self.config.issuer, "sub": identity.subject, "aud": self.config.registry_service,
            "exp": now + self.config.token_ttl, "nbf": now, "iat": now, "jti": uuid.uuid4().hex,
            "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in granted],
        }
        body = {
            "token": self._sign(state, claims),
            "expires_in": self.config.token_ttl,
            "issued_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scope": _scope_text(granted),
        }
        body["access_token"] = body["token"]
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        elif offline and self.config.refresh_ttl > 0:
            refresh_claims = {
                "iss": self.config.issuer, "sub": identity.subject, "aud": self._refresh_audience,
                "exp": now + self.config.refresh_ttl, "iat": now, "jti": uuid.uuid4().hex,
                "token_use": REFRESH_TOKEN_USE, "kind": identity.kind,
            }
            if identity.kind == "robot":
                refresh_claims["cred"] = identity.credential
            else:
                refresh_claims["groups"] = list(identity.groups)
            body["refresh_token"] = self._sign(state, refresh_claims, for_registry=False)
        self.metrics.issued.labels("refresh" if refresh_token else identity.kind).inc()
        log.info("token issued", extra={
            "event": "token_issued", "subject": identity.subject, "identity": identity.kind, "roles": list(identity.roles),
            "requested": _scope_text(scopes), "granted": body["scope"], "client_id": client_id, "source": source,
            "refresh_token": "refresh_token" in body, "jti": claims["jti"]})
        return body


# --- HTTP -------------------------------------------------------------------------------------------------------


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise _unauthorized("basic credentials required")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("malformed basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise _unauthorized("malformed basic credentials")
    return username, password


def _one(values: list[str], name: str, expected: Optional[str] = None, required: bool = True) -> str:
    if not values and not required:
        return ""
    if len(values) != 1:
        raise HttpError(400, "invalid_request", f"exactly one {name} parameter is required")
    if expected is not None and values[0] != expected:
        raise HttpError(400, "invalid_request", f"unknown {name} {values[0][:100]!r}")
    return values[0]


def _client_id(values: list[str]) -> str:
    client_id = _one(values, "client_id", required=False)
    if client_id and not _CLIENT_ID.match(client_id):
        raise HttpError(400, "invalid_request", "client_id must be 1..128 printable ASCII characters")
    return client_id


def _scopes(values: list[str]) -> list[Scope]:
    try:
        return parse_scope_parameters(values)
    except ScopeError as exc:
        raise HttpError(400, "invalid_scope", str(exc)) from None


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(service: TokenService) -> Starlette:
    config = service.config
    metrics = service.metrics

    def answer(endpoint: str, status: int, body: dict, headers: Optional[dict[str, str]] = None) -> JSONResponse:
        metrics.requests.labels(endpoint, str(status)).inc()
        return JSONResponse(body, status_code=status,
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})})

    async def token(request: Request) -> Response:
        endpoint = f"{request.method} {c.TOKEN_PATH}"
        started = time.perf_counter()
        try:
            authorization = request.headers.get("authorization", "")
            if len(authorization) > MAX_AUTHORIZATION_BYTES:
                raise HttpError(431, "invalid_request", f"Authorization header longer than {MAX_AUTHORIZATION_BYTES} bytes")
            if request.method == "GET":
                body = await _get_token(request, authorization)
            else:
                body = await _post_token(request)
            return answer(endpoint, 200, body)
        except HttpError as exc:
            return answer(endpoint, exc.status, {"error": exc.error, "error_description": exc.description}, exc.headers)
        finally:
            metrics.duration.labels(endpoint).observe(time.perf_counter() - started)

    async def _get_token(request: Request, authorization: str) -> dict:
        query = request.query_params
        _one(query.getlist("service"), "service", config.registry_service)
        scopes = _scopes(query.getlist("scope"))
        client_id = _client_id(query.getlist("client_id"))
        offline = query.get("offline_token", "").lower() in ("true", "1")
        if not authorization:
            raise _unauthorized("anonymous access is not granted")
        username, password = _basic_credentials(authorization)
        source = _source(request)
        identity = await run_in_threadpool(service.authenticate_password, username, password, source)
        return await run_in_threadpool(service.issue, identity, scopes, offline=offline, client_id=client_id,
                                       source=source)

    async def _post_token(request: Request) -> dict:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise HttpError(415, "invalid_request", "the token POST takes application/x-www-form-urlencoded")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM_BYTES:
                raise HttpError(413, "invalid_request", f"form larger than {MAX_FORM_BYTES} bytes")
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "invalid_request", "undecodable form") from None
        _one(form.get("service", []), "service", config.registry_service)
        scopes = _scopes(form.get("scope", []))
        client_id = _client_id(form.get("client_id", []))
        grant_type = _one(form.get("grant_type", []), "grant_type")
        source = _source(request)
        if grant_type == "password":
            username = _one(form.get("username", []), "username")
            password = _one(form.get("password", []), "password")
            offline = form.get("access_type", [""])[0] == "offline"
            identity = await run_in_threadpool(service.authenticate_password, username, password, source)
            return await run_in_threadpool(service.issue, identity, scopes, offline=offline, client_id=client_id,
                                           source=source)
        if grant_type == "refresh_token":
            refresh = _one(form.get("refresh_token", []), "refresh_token")
            if len(refresh) > MAX_PASSWORD:
                raise _unauthorized()
            identity = await run_in_threadpool(service.authenticate_refresh, refresh, source)
            return await run_in_threadpool(service.issue, identity, scopes, offline=False, refresh_token=refresh,
                                           client_id=client_id, source=source)
        raise HttpError(400, "unsupported_grant_type", "grant_type must be password or refresh_token")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        ready, detail = service.readiness()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    async def jwks(request: Request) -> Response:
        ready, _ = service.readiness()
        if not ready:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        return Response(service.fresh_state().trust_jwks, media_type="application/json")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = Starlette(routes=[
        Route(c.TOKEN_PATH, token, methods=["GET", "POST"]),
        Route(c.HEALTH_PATH, healthz, methods=["GET"]),
        Route(c.READY_PATH, readyz, methods=["GET"]),
        Route(c.JWKS_PATH, jwks, methods=["GET"]),
        Route(c.METRICS_PATH, metrics_endpoint, methods=["GET"]),
    ], lifespan=lifespan)
    return HeaderLimit(OpsPortOnly(app, config.ops_port), metrics)


class OpsPortOnly:
    """ASGI wrapper: on the ops port (outside the mesh) only health, readiness and metrics answer; /token and
    /keys there are 404, so no client reaches them around the sidecar's mTLS and intentions."""

    def __init__(self, app, ops_port: Optional[int]):
        self.app, self.ops_port = app, ops_port

    async def __call__(self, scope, receive, send):
        if (self.ops_port is not None and scope["type"] == "http" and (scope.get("server") or (None, None))[1] == self.ops_port
                and scope["path"] not in c.OPS_PATHS):
            await JSONResponse({"error": "not_found", "error_description": "the ops port serves "
                                + ", ".join(c.OPS_PATHS) + " only"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HeaderLimit:
    """ASGI wrapper: a request whose headers exceed ``MAX_HEADER_BYTES`` gets 431 before any handler runs."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > MAX_HEADER_BYTES:
                self.metrics.requests.labels("oversized", "431").inc()
                log.warning("request refused: %d bytes of headers", size, extra={"event": "oversized_headers"})
                response = JSONResponse({"error": "invalid_request",
                                         "error_description": f"headers larger than {MAX_HEADER_BYTES} bytes"},
                                        status_code=431, headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, as the cluster's log collector expects; extras become fields."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
