"""``python -m token_service``: read the environment, then serve with uvicorn until SIGTERM."""

from __future__ import annotations

import logging
import os
import socket
import sys

from .config import ConfigError, load_config

# h11 refuses a request whose line and headers exceed this (HTTP 400, connection closed): a bound on what
# one client can make the service buffer. The service's own limits (Authorization 8 KiB) are below it.
MAX_REQUEST_HEAD_BYTES = 16384
GRACEFUL_SHUTDOWN_SECONDS = 10


def main() -> int:
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"token-service: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from .app import JsonFormatter, TokenService, create_app
    from .oidc import OidcVerifier
    from .vault import VaultSource

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())

    service = TokenService(config, VaultSource(config.vault), OidcVerifier(config.oidc) if config.oidc else None)
    server = uvicorn.Server(uvicorn.Config(
        create_app(service), host=config.listen_host, port=config.listen_port,
        proxy_headers=bool(config.trusted_proxies), forwarded_allow_ips=",".join(config.trusted_proxies) or None,
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES, access_log=False, log_config=None,
        server_header=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    ))
    if config.ops_port is None:
        server.run()
    else:
        # One server, one event loop, one SIGTERM handler: both ports stop together. The app itself refuses
        # everything but health, readiness and metrics on the ops port.
        server.run(sockets=[listening_socket(config.listen_host, port)
                            for port in (config.listen_port, config.ops_port)])
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    sys.exit(main())
