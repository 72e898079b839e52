"""How a plugin meets the engine: serve gRPC on a free 127.0.0.1 port, print the port, leave quietly when told."""

from __future__ import annotations

import signal
from concurrent import futures
from typing import Callable

import grpc


def serve(register: Callable[[grpc.Server], None]) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 400 * 1024 * 1024)])
    register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # The engine stops its plugins with SIGINT (then SIGKILL): leave quietly, without a traceback.
    signal.signal(signal.SIGINT, lambda *_: server.stop(grace=None))
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=None))
    server.wait_for_termination()
