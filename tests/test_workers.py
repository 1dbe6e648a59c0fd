"""``serve --workers N``: N processes on one port, each with its own socket and writer,
one gapless chain; a worker that dies takes the service down for its supervisor."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from api.formats.syslog import frame, syslog_message
from ledger.settings import Settings
from tests import atna_messages as msgs
from tests.certs import Pki
from tests.support import ServerProcess, free_port, make_event, provision_key


def _worker_pids(server: ServerProcess) -> list[int]:
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()]
    # Skip multiprocessing's resource tracker: workers are the spawned server processes.
    return [pid for pid in pids
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


@pytest.mark.slow
def test_two_workers_share_the_port_and_one_chain(settings: Settings) -> None:
    env = {"LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "warning"}
    with ServerProcess(env, args=("--workers", "2")) as server:
        receipts = []
        for _ in range(16):  # new connections: the kernel spreads them over the sockets
            with server.client(timeout=30) as http:
                batch = [make_event() for _ in range(10)]
                r = http.post("/v1/events/batch", json={"events": batch})
                assert r.status_code == 201
                receipts += r.json()["receipts"]
        assert sorted(x["seq"] for x in receipts) == list(range(1, 161))
        verdict = httpx.post(f"{server.url}/v1/ledger/verify", timeout=30,
                             headers=server.headers).json()
        assert verdict == {"ok": True, "verified_through": 160, "first_bad_seq": None,
                           "reason": None}
        assert len(_worker_pids(server)) == 2


@pytest.mark.slow
def test_a_dead_worker_stops_the_service(settings: Settings) -> None:
    env = {"LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "warning"}
    server = ServerProcess(env, args=("--workers", "2")).start()
    try:
        os.kill(_worker_pids(server)[0], signal.SIGKILL)
        assert server.proc is not None
        deadline = time.monotonic() + 30
        while server.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.proc.returncode not in (None, 0)
    finally:
        server.stop()


@pytest.mark.slow
def test_two_workers_with_syslog_listeners_serve_and_record(settings: Settings,
                                                           tmp_path: Path) -> None:
    """Every worker used to start the ATNA listeners: the second could not bind the
    syslog ports (no SO_REUSEPORT there) and its failed start took the service down.
    Only the first worker runs them now, as it runs the projections."""
    pki = Pki(tmp_path)
    provision_key(settings.database_url, roles=("ingest",), name="atna-sender")
    tls_port, udp_port = free_port(), free_port()
    env = {"LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "warning",
           "LEDGER_SYSLOG_TLS": f"127.0.0.1:{tls_port}",
           "LEDGER_SYSLOG_UDP": f"127.0.0.1:{udp_port}",
           "LEDGER_SYSLOG_CERT": str(pki.server[0]), "LEDGER_SYSLOG_KEY": str(pki.server[1]),
           "LEDGER_SYSLOG_CA": str(pki.ca)}
    with ServerProcess(env, args=("--workers", "2")) as server:
        # New connections: the kernel spreads them over both workers' sockets, so each
        # worker must have started for every request to be answered.
        for _ in range(16):
            with server.client(timeout=30) as http:
                r = http.post("/v1/events", json=make_event())
                assert r.status_code == 201, r.text
        with socket.create_connection(("127.0.0.1", tls_port)) as raw, \
                pki.client_context("atna-sender").wrap_socket(
                    raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(frame(syslog_message(msgs.login())))
            deadline = time.monotonic() + 60  # only a hang fails here
            with server.client(timeout=30) as http:
                while http.get("/v1/ledger").json()["seq"] < 17:
                    assert time.monotonic() < deadline, "the syslog message never arrived"
                    time.sleep(0.05)
        assert server.proc is not None and server.proc.poll() is None
        assert len(_worker_pids(server)) == 2
