"""Losing the database: 503 with Retry-After, nothing half-written, recovery on its own.

PostgreSQL only: it is the store with a network between the service and the database,
and so the one that can vanish while the service process lives on. An embedded SQLite
file cannot become unreachable apart from the process itself, which test_crash.py kills.

A small TCP proxy stands between the service and PostgreSQL; the service's
LEDGER_DATABASE_URL names the proxy, while the checks read PostgreSQL directly. Cutting
the proxy closes its listening socket *and* every open connection, as a failed network
or a database restart would.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from ledger.store import ledger_id, open_store
from ledger.verifier import verify_ledger
from tests.loadgen import (
    Collector,
    check_ledger,
    entries_from_store,
    fixed_port,
    post_until_receipt,
    run_threads,
    run_verify_cli,
    tagged_event,
    wait_until,
)
from tests.support import ServerProcess, chosen_seed, contract_example, key_headers

RECOVERY_SECONDS = 45


class TcpProxy:
    """Forwards 127.0.0.1:port to an upstream address, until cut; restorable on the
    same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = fixed_port()  # reopened on the same port after a cut
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._acceptor: threading.Thread | None = None

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener, self._stopped), daemon=True
        )
        self._acceptor.start()
        return self

    def _accept(self, listener: socket.socket, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                downstream, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                downstream.close()
                continue
            for sock in (downstream, upstream):
                sock.settimeout(None)
            with self._lock:
                if stopped.is_set():
                    downstream.close()
                    upstream.close()
                    return
                self._sockets.update((downstream, upstream))
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _close(sock)
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)

    def cut(self) -> None:
        """Refuse new connections and drop every open one, both ways."""
        self._stopped.set()
        if self._listener is not None:
            _close(self._listener)
            self._listener = None
        if self._acceptor is not None:
            self._acceptor.join(5)
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        self.start()

    def url_for(self, database_url: str) -> str:
        """``database_url`` with host and port replaced by the proxy's."""
        scheme, rest = database_url.split("://", 1)
        userinfo, hostpath = rest.rsplit("@", 1) if "@" in rest else ("", rest)
        dbname = hostpath.split("/", 1)[1]
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}127.0.0.1:{self.port}/{dbname}"


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def upstream_of(database_url: str) -> tuple[str, int]:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    return str(info.get("host", "127.0.0.1")), int(info.get("port") or 5432)


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    p = TcpProxy(upstream_of(postgres_url)).start()
    try:
        yield p
    finally:
        p.cut()


def _stored_counts(postgres_url: str) -> tuple[int, int, int]:
    """(entries, event_id rows, highest seq) of the default ledger, read directly."""
    lid = ledger_id("default")
    with psycopg.connect(postgres_url) as conn:
        entries, top = conn.execute(
            "SELECT count(*), coalesce(max(originator_version), 0) FROM stored_events"
            " WHERE originator_id = %s", (lid,)).fetchone() or (0, 0)
        ids = conn.execute(
            "SELECT count(*) FROM ledger_event_ids WHERE ledger_id = %s", (lid,)
        ).fetchone()
    return int(entries), int(ids[0] if ids else 0), int(top)


def _direct_verdict(postgres_url: str) -> Any:
    store = open_store(postgres_url)
    try:
        return verify_ledger(store, "default")
    finally:
        store.close()


def _phi_values(event: dict[str, Any]) -> list[str]:
    """The values of the event that identify a patient or say what was disclosed."""
    recipient = event["disclosure"]["recipient"]
    return [event["patient"]["id"], recipient["name"], recipient["address"],
            event["disclosure"]["description"], event["actor"]["ip"],
            event["actor"]["session_id"]]


def test_outage_answers_503_writes_nothing_and_recovers(
    postgres_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = Settings(database_url=proxy.url_for(postgres_url),
                        key_file=tmp_path / "keys.json")
    with TestClient(create_app(settings, configure_logs=False),
                    headers=key_headers(settings.database_url)) as client:
        before = [client.post("/v1/events", json=tagged_event("before")) for _ in range(5)]
        assert [r.status_code for r in before] == [201] * 5
        assert client.get("/readyz").status_code == 200
        fresh = key_headers(settings.database_url)  # made now, never presented yet

        proxy.cut()
        # A credential not in the cache needs the database: the cut is a 503 in the
        # error shape (it escaped access control as a bare text/plain 500 before).
        uncached = client.get("/v1/ledger", headers=fresh)
        assert uncached.status_code == 503, uncached.text
        assert uncached.headers["content-type"] == "application/json"
        assert uncached.json()["error"]["code"] == "unavailable"
        assert uncached.headers["retry-after"] == "1"
        assert uncached.headers["x-content-type-options"] == "nosniff"
        event = contract_example()
        response = client.post("/v1/events", json=event)
        assert response.status_code == 503, response.text
        retry_after = response.headers.get("retry-after", "")
        assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message", "fields"}
        assert isinstance(body["error"]["code"], str) and body["error"]["code"]
        assert isinstance(body["error"]["message"], str)
        assert isinstance(body["error"]["fields"], list)
        for value in _phi_values(event):
            assert value not in response.text, "the 503 body repeats PHI from the event"

        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text

        # Read PostgreSQL itself, not through the proxy: the five events, whole, and
        # nothing of the refused one.
        assert _stored_counts(postgres_url) == (5, 5, 5)
        with psycopg.connect(postgres_url) as conn:
            found = conn.execute("SELECT count(*) FROM ledger_event_ids WHERE event_id = %s",
                                 (event["event_id"],)).fetchone()
        assert found == (0,)
        verdict = _direct_verdict(postgres_url)
        assert verdict.ok and verdict.verified_through == 5, verdict

        proxy.restore()
        wait_until(lambda: client.get("/readyz").status_code == 200, RECOVERY_SECONDS,
                   "/readyz to answer 200 once the database is back", interval=0.25)

        again = client.post("/v1/events", json=event)
        # It cannot have committed (the database was unreachable before it was posted).
        assert again.status_code == 201, again.text
        receipt = again.json()
        assert receipt["event_id"] == event["event_id"] and receipt["seq"] == 6
        assert receipt["prev_hash"] == before[-1].json()["hash"]
        assert client.post("/v1/events", json=event).json() == receipt  # and it replays

        verified = client.post("/v1/ledger/verify").json()
        assert verified["ok"] and verified["verified_through"] == 6, verified
    assert _stored_counts(postgres_url) == (6, 6, 6)
    verdict = _direct_verdict(postgres_url)
    assert verdict.ok and verdict.verified_through == 6, verdict


@pytest.mark.slow
def test_outage_mid_load_loses_and_duplicates_nothing(
    postgres_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    """The network drops while clients are posting, so some transactions die mid-flight
    and some commits may outrun their answers; clients re-post the same events until
    they get receipts. Afterwards the ledger is exactly the posted events, once each."""
    seed = chosen_seed()
    rng = random.Random(seed)
    env = {
        "LEDGER_DATABASE_URL": proxy.url_for(postgres_url),
        "LEDGER_KEY_FILE": str(tmp_path / "keys.json"),
        "LEDGER_LOG_LEVEL": "error",
    }
    collector = Collector()
    stop = threading.Event()
    deadline = time.monotonic() + 120

    def client_load(server: ServerProcess, name: str) -> None:
        with server.client(timeout=60) as client:
            for _ in range(2000):
                if stop.is_set():
                    return
                event = tagged_event(name)
                collector.will_post(event)
                post_until_receipt(client, event, collector, deadline=deadline,
                                   retry_delay=0.1)

    with ServerProcess(env, log_path=tmp_path / "server.log") as server:

        def outage() -> None:
            wait_until(lambda: collector.acked >= 100, 30, "the load to start")
            time.sleep(rng.uniform(0.1, 0.5))
            proxy.cut()
            wait_until(lambda: collector.statuses[503] > 0, 30, "a 503 during the outage")
            proxy.restore()
            acked = collector.acked
            wait_until(lambda: collector.acked >= acked + 100, RECOVERY_SECONDS,
                       "clients to get receipts again after the outage", interval=0.1)
            stop.set()

        targets: list[Callable[[], None]] = [
            partial(client_load, server, f"o{k}") for k in range(3)]
        targets.append(outage)
        try:
            run_threads(targets, collector, timeout=150)
        finally:
            stop.set()
        assert not collector.errors, f"seed {seed}:\n" + "\n".join(collector.errors[:5])
        assert collector.statuses[503] > 0
        print(f"seed {seed}: {len(collector.posted)} events, answers "
              f"{dict(collector.statuses)}")

        n = len(collector.posted)
        entries = entries_from_store(postgres_url)
        check_ledger(entries, collector)
        assert len(collector.receipts) == n
        assert _stored_counts(postgres_url) == (n, n, n)
    assert f"intact through seq {n} " in run_verify_cli({**env,
                                                         "LEDGER_DATABASE_URL": postgres_url})
