"""Running the ASGI app under uvicorn, one process or several.

Several workers each get their own listening socket on the same port (SO_REUSEPORT), so
the kernel spreads connections evenly over them: with one shared socket, whichever worker
wakes first accepts every pending connection, and a burst of clients can land on one
worker while the other idles (measured: 80,000 of 80,000 events on one of two). Sockets
are bound here with ``IPPROTO_TCP`` set explicitly: uvicorn's own ``bind_socket`` leaves
the protocol at 0, accepted connections inherit it, and asyncio then never sets
TCP_NODELAY on them, so every keep-alive request after the first waits ~40 ms for a
delayed ACK (uvicorn issue #3149, measured in NOTES.md).

If a worker dies the whole service exits non-zero, for its supervisor (systemd, the
orchestrator) to restart: nothing acknowledged is lost, and a half-staffed port is worse
than a restart.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

import uvicorn

APP = "api.app:app_from_env"


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        hint = ""
        if error.errno == errno.EADDRINUSE:
            hint = (f" (another process holds port {port}: stop it, or choose another port"
                    " with --port)")
        sys.exit(f"phi-ledger: cannot listen on {host}:{port}: {error.strerror}{hint}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


TRUSTED_PROXIES_VARIABLE = "LEDGER_TRUSTED_PROXIES"


def proxy_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """uvicorn's proxy settings: ``X-Forwarded-For``/``-Proto`` are believed only from
    the addresses (or CIDR ranges) listed, comma separated, in ``LEDGER_TRUSTED_PROXIES``;
    by default from nobody. (uvicorn's own default trusts 127.0.0.1, which let anyone on
    the host choose the address the per-address login limit counts.)"""
    trusted = environ.get(TRUSTED_PROXIES_VARIABLE, "").strip()
    if not trusted:
        return {"proxy_headers": False, "forwarded_allow_ips": ""}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}


def serve(
    host: str,
    port: int,
    *,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        timeout_graceful_shutdown=10,
        **proxy_options(os.environ),
    )
    if workers == 1:
        server = uvicorn.Server(config)
        server.run(sockets=[listening_socket(host, port, reuse_port=False)])
        if not server.started:
            sys.exit(3)
        return
    _supervise(config, [listening_socket(host, port, reuse_port=True) for _ in range(workers)])


def _run_worker(config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    """A worker process's body: what uvicorn's own supervisor runs in each child, through
    its public API only (its process helper lives in a private module)."""
    config.configure_logging()  # logging is set up again in each spawned child
    # The parent already expects the worker to end on an interrupt: no traceback.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=sockets)


def worker_process(config: uvicorn.Config, sock: socket.socket) -> SpawnProcess:
    """A (not yet started) spawned worker serving ``config`` on ``sock``. Spawned, not
    forked: a fork would copy the parent's threads' locks mid-state."""
    multiprocessing.allow_connection_pickling()  # the socket travels to the child
    return multiprocessing.get_context("spawn").Process(target=_run_worker,
                                                        args=(config, [sock]))


# The settings of listeners only the first worker runs (empty: none in the others).
FIRST_WORKER_LISTENERS = ("LEDGER_SYSLOG_TLS", "LEDGER_SYSLOG_UDP")


def _supervise(config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    workers = [worker_process(config, sock) for sock in sockets]
    # One worker keeps the views current and signs checkpoints; in the others it would
    # only lose the race for each batch or each size (exactly-once and one checkpoint per
    # size hold either way). One worker runs the ATNA syslog listeners too: their ports
    # are bound without SO_REUSEPORT, so a second worker binding them would fail to start
    # and take the service down. Workers read the environment as started.
    first_only = {**dict.fromkeys(("LEDGER_PROJECTIONS", "LEDGER_CHECKPOINTS"), "off"),
                  **dict.fromkeys(FIRST_WORKER_LISTENERS, "")}
    inline = {name: os.environ.get(name) for name in first_only}
    for number, worker in enumerate(workers):
        if number == 1:
            os.environ.update(first_only)
        worker.start()
    for name, value in inline.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    asked_to_stop = False

    def terminate_all() -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal asked_to_stop
        asked_to_stop = True
        terminate_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not asked_to_stop and all(worker.is_alive() for worker in workers):
        time.sleep(0.2)
    terminate_all()  # a worker died (or we were asked): take the others down too
    for worker in workers:
        worker.join(30)
    if not asked_to_stop:
        sys.exit("phi-ledger: a worker process died; stopping the service")
