"""An HTTPS front for a plain-HTTP server on loopback, standing in for the ingress controller's TLS termination:
a throwaway CA issues the front's certificate (as the platform's CA issues the Ingress certificate), and the front
copies bytes both ways. Nothing else about the traffic is touched.

``tls_front(upstream_port, workdir, hosts)`` is a context manager yielding ``TlsFront`` (``.port``, ``.ca_file``);
its listening thread and connections end with the block.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .processes import LOOPBACK


@dataclass(frozen=True)
class TlsFront:
    port: int
    ca_file: Path
    untrusted_ca_file: Path  # a CA that did not issue the front's certificate


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(workdir: Path, hosts: Sequence[str]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN=test-{name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=workdir)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hosts[0]}", "-keyout", "front.key",
             "-out", "front.csr", cwd=workdir)
    (workdir / "san.ext").write_text("subjectAltName=" + ",".join([f"IP:{LOOPBACK}", *(f"DNS:{h}" for h in hosts)]) + "\n")
    _openssl("x509", "-req", "-in", "front.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
             "-extfile", "san.ext", "-out", "front.crt", cwd=workdir)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _serve(client: socket.socket, context: ssl.SSLContext, upstream_port: int) -> None:
    try:
        secured = context.wrap_socket(client, server_side=True)
    except (OSError, ssl.SSLError):
        client.close()  # a client that does not trust the certificate hangs up during the handshake
        return
    with secured, socket.create_connection((LOOPBACK, upstream_port), timeout=60) as upstream:
        back = threading.Thread(target=_pipe, args=(upstream, secured), daemon=True)
        back.start()
        _pipe(secured, upstream)
        back.join(timeout=60)


@contextlib.contextmanager
def tls_front(upstream_port: int, workdir: Path, hosts: Sequence[str]) -> Iterator[TlsFront]:
    _issue(workdir, hosts)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(workdir / "front.crt", workdir / "front.key")
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(60)
            threading.Thread(target=_serve, args=(client, context, upstream_port), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield TlsFront(port=listener.getsockname()[1], ca_file=workdir / "ca.crt",
                       untrusted_ca_file=workdir / "other-ca.crt")
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
