"""Running the ASGI app under uvicorn, one process or several.

Several workers share one listening socket bound here, with ``IPPROTO_TCP`` set
explicitly: uvicorn's own ``bind_socket`` leaves the protocol at 0, accepted connections
inherit it, and asyncio then never sets TCP_NODELAY on them, so every keep-alive request
after the first waits ~40 ms for a delayed ACK (uvicorn issue #3149, measured in
NOTES.md). This is the upstream fix, applied at our edge until a release carries it.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

APP = "api.app:app_from_env"


class _TcpConfig(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        family = socket.AF_INET6 if self.host and ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as error:
            sys.exit(f"phi-ledger: cannot listen on {self.host}:{self.port}: {error.strerror}")
        sock.set_inheritable(True)
        return sock


def serve(
    host: str,
    port: int,
    *,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    config = _TcpConfig(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    if workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        config.load_app()
        server.run()
        if not server.started:
            sys.exit(3)
