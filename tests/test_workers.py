"""``serve --workers N``: N processes on one port, each with its own socket and writer,
one gapless chain; a worker that dies takes the service down for its supervisor."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from ledger.settings import Settings
from tests.support import ServerProcess, make_event


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
