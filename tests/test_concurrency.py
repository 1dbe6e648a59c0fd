"""Many writers, one chain: no gap, no fork, no event twice, whatever the concurrency.

Every test here runs real writers against a real database: several server processes
(each with its own group-commit writer) or several writer instances in one process, fed
by many client threads at once. Each ends by reading the whole ledger back and checking
it link by link (tests/loadgen.py) and with ``phi-ledger verify``.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import build_services
from ledger.ingest import EventConflict
from ledger.settings import Settings
from tests.loadgen import (
    Collector,
    check_ledger,
    entries_over_http,
    run_threads,
    run_verify_cli,
    tagged_event,
)
from tests.support import ServerProcess

BATCH_SIZE = 5


def _env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_KEY_FILE": str(tmp_path / "keys.json"),
        "LEDGER_LOG_LEVEL": "warning",
    }


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """``servers(env, n)`` starts n server processes on one database (one after the other,
    so that a first start creates the key file and schema alone); all stop at teardown."""
    with ExitStack() as stack:

        def start(env: dict[str, str], n: int) -> list[ServerProcess]:
            started = []
            for i in range(n):
                server = ServerProcess(env, log_path=tmp_path / f"server-{i}.log")
                stack.enter_context(server)
                started.append(server)
            return started

        yield start


def _mixed_load(
    server: ServerProcess, name: str, collector: Collector, singles: int, seed: int,
    start: threading.Barrier,
) -> None:
    """One keep-alive client: single events, a batch every 50th, and replays of events
    already acknowledged (by any server) that must come back 200 with the same receipt."""
    rng = random.Random(seed)
    with server.client(timeout=60) as client:
        client.get("/healthz").raise_for_status()  # open the keep-alive connection
        start.wait(timeout=60)
        batches: list[list[dict[str, Any]]] = []
        for i in range(singles):
            if i % 50 == 25:
                events = [tagged_event(f"{name}-b") for _ in range(BATCH_SIZE)]
                for event in events:
                    collector.will_post(event)
                response = client.post("/v1/events/batch", json={"events": events})
                assert response.status_code == 201, response.text
                receipts = response.json()["receipts"]
                assert [r["event_id"] for r in receipts] == [e["event_id"] for e in events]
                for event, receipt in zip(events, receipts, strict=True):
                    collector.acknowledged(event, 201, receipt)
                batches.append(events)
                continue
            event = tagged_event(name)
            collector.will_post(event)
            response = client.post("/v1/events", json=event)
            assert response.status_code == 201, response.text
            collector.acknowledged(event, 201, response.json())

            if i % 20 == 10:
                with collector.lock:
                    event_id = rng.choice(sorted(collector.receipts))
                    again = collector.posted[event_id]
                response = client.post("/v1/events", json=again)
                assert response.status_code == 200, response.text
                collector.acknowledged(again, 200, response.json())
        for events in batches[:1]:  # a whole batch replayed: 200, the same receipts
            response = client.post("/v1/events/batch", json={"events": events})
            assert response.status_code == 200, response.text
            for event, receipt in zip(events, response.json()["receipts"], strict=True):
                collector.acknowledged(event, 200, receipt)


def _check_whole_ledger(server: ServerProcess, env: dict[str, str], collector: Collector,
                        expected_events: int) -> None:
    assert not collector.errors, "\n".join(collector.errors[:5])
    assert len(collector.posted) == expected_events
    n = len(collector.posted)
    seqs = sorted(r["seq"] for r in collector.receipts.values())
    assert seqs == list(range(1, n + 1)), "receipts do not hold each seq 1..N exactly once"
    with server.client(timeout=60) as client:
        head = client.get("/v1/ledger").json()
        assert head["seq"] == n
        entries = entries_over_http(client)
        assert head["hash"] == entries[-1]["hash"]
        verdict = client.post("/v1/ledger/verify").json()
        assert verdict["ok"] and verdict["verified_through"] == n, verdict
    check_ledger(entries, collector)
    assert f"intact through seq {n} " in run_verify_cli(env)


@pytest.mark.slow
def test_four_servers_share_one_postgres_chain(postgres_url: str, tmp_path: Path,
                                               servers: Any) -> None:
    """PostgreSQL only: it is the store several service processes share in production
    (SQLite's multi-process case is the next test). Four servers, two keep-alive clients
    each, all writing at once: one chain with no gap, no fork and no event twice."""
    env = _env(postgres_url, tmp_path)
    procs = servers(env, 4)
    collector, expected = _two_clients_per_server(procs, "p", singles=250)
    assert collector.statuses[200] > 0, "no replays were exercised"
    _check_whole_ledger(procs[0], env, collector, expected)


def _two_clients_per_server(procs: list[Any], tag: str, singles: int) -> tuple[Collector, int]:
    """Two keep-alive clients per server, started together; returns what they collected
    and how many distinct events they posted in all."""
    collector = Collector()
    start = threading.Barrier(2 * len(procs))
    targets = [
        partial(_mixed_load, s, f"{tag}{i}t{t}", collector, singles, 100 * i + t, start)
        for i, s in enumerate(procs) for t in range(2)
    ]
    run_threads(targets, collector, timeout=120)
    batches_per_thread = len([i for i in range(singles) if i % 50 == 25])
    per_thread = singles - batches_per_thread + batches_per_thread * BATCH_SIZE
    return collector, 2 * len(procs) * per_thread


@pytest.mark.slow
def test_three_servers_share_one_sqlite_file(tmp_path: Path, servers: Any) -> None:
    """SQLite's one-writer-per-file lock (BEGIN IMMEDIATE) is what keeps several server
    processes on one file from forking the chain."""
    env = _env(f"sqlite:///{tmp_path}/ledger.db", tmp_path)
    procs = servers(env, 3)
    collector, expected = _two_clients_per_server(procs, "s", singles=150)
    _check_whole_ledger(procs[0], env, collector, expected)


def test_two_writers_in_one_process(database_url: str, tmp_path: Path) -> None:
    """Two independent service containers (two stores, two group-commit writers) on one
    database, eight threads calling ``Ingest.record_sync``: the store's write lock, not
    the writer thread, is what keeps the chain whole."""
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    first = build_services(settings)
    second = build_services(settings)
    collector = Collector()
    try:
        start = threading.Barrier(8)

        def load(svc: Any, name: str) -> None:
            start.wait(timeout=60)
            for i in range(60):
                events = [tagged_event(name) for _ in range(3 if i % 10 == 0 else 1)]
                for event in events:
                    collector.will_post(event)
                accepted = svc.ingest.record_sync("default", events, batch=len(events) > 1)
                assert accepted.created
                for event, receipt in zip(events, accepted.receipts, strict=True):
                    collector.acknowledged(event, 201, receipt.as_dict())

        targets = [
            partial(load, svc, f"w{w}t{t}")
            for w, svc in enumerate((first, second)) for t in range(4)
        ]
        run_threads(targets, collector, timeout=60)
        assert not collector.errors, "\n".join(collector.errors[:5])
        n = len(collector.posted)
        assert n == 8 * (54 + 6 * 3)
        assert sorted(r["seq"] for r in collector.receipts.values()) == list(range(1, n + 1))
        assert first.store.head("default").seq == n
        entries = [json.loads(b) for b in first.store.read("default", 0, n + 10)]
        check_ledger(entries, collector)
    finally:
        for svc in (first, second):
            svc.writer.stop()
            svc.store.close()
    assert f"intact through seq {n} " in run_verify_cli(
        {"LEDGER_DATABASE_URL": database_url, "LEDGER_KEY_FILE": str(tmp_path / "keys.json")}
    )


ROUNDS = 12
THREADS_PER_SERVER = 4


def _race(bodies: list[dict[str, Any]], start: threading.Barrier,
          clients: list[httpx.Client]) -> list[httpx.Response]:
    """Every client posts its body at the same moment; answers in client order."""
    answers: list[httpx.Response | None] = [None] * len(clients)
    collector = Collector()

    def post(k: int) -> None:
        start.wait(timeout=60)
        answers[k] = clients[k].post("/v1/events", json=bodies[k])

    run_threads([partial(post, k) for k in range(len(clients))], collector, timeout=60)
    assert not collector.errors, "\n".join(collector.errors[:3])
    return [a for a in answers if a is not None]


@pytest.mark.slow
def test_same_event_id_raced_across_servers(database_url: str, tmp_path: Path,
                                            servers: Any) -> None:
    """Twelve clients on three servers post one event_id at the same instant, round after
    round. Same body: one entry, one 201, every other answer a 200 with the identical
    receipt. Different bodies: one 201, every other answer a 409, and only the winner's
    body is written."""
    env = _env(database_url, tmp_path)
    procs = servers(env, 3)
    n_clients = len(procs) * THREADS_PER_SERVER
    start = threading.Barrier(n_clients)
    ledger_view = Collector()  # what the ledger must end up holding
    with ExitStack() as stack:
        clients = [
            stack.enter_context(procs[k % len(procs)].client(timeout=60))
            for k in range(n_clients)
        ]
        for client in clients:
            client.get("/healthz").raise_for_status()

        for _ in range(ROUNDS):
            event = tagged_event("same")
            answers = _race([event] * n_clients, start, clients)
            statuses = Counter(a.status_code for a in answers)
            assert statuses == {201: 1, 200: n_clients - 1}, statuses
            receipts = [a.json() for a in answers]
            assert all(r == receipts[0] for r in receipts), "replays got different receipts"
            ledger_view.will_post(event)
            ledger_view.acknowledged(event, 201, receipts[0])

        for _ in range(ROUNDS):
            first = tagged_event("diff")
            bodies = [first] + [
                {**first, "resource": {**first["resource"], "id": f"{first['resource']['id']}.{k}"}}
                for k in range(1, n_clients)
            ]
            answers = _race(bodies, start, clients)
            statuses = Counter(a.status_code for a in answers)
            assert statuses == {201: 1, 409: n_clients - 1}, statuses
            for answer in answers:
                if answer.status_code == 409:
                    error = answer.json()["error"]
                    assert error["code"] == "event_id_conflict"
                    assert set(error) == {"code", "message", "fields"}
            winner = next(k for k, a in enumerate(answers) if a.status_code == 201)
            ledger_view.will_post(bodies[winner])
            ledger_view.acknowledged(bodies[winner], 201, answers[winner].json())

        assert not ledger_view.errors, ledger_view.errors[:3]
        head = clients[0].get("/v1/ledger").json()
        assert head["seq"] == 2 * ROUNDS, "a racing post wrote more than one entry"
        entries = entries_over_http(clients[0])
    check_ledger(entries, ledger_view)
    assert f"intact through seq {2 * ROUNDS} " in run_verify_cli(env)


def test_conflict_in_process_writes_nothing(database_url: str, tmp_path: Path) -> None:
    """The same race without HTTP, inside one group-commit writer: eight threads submit
    one event_id with eight bodies; one is recorded, seven get EventConflict."""
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    svc = build_services(settings)
    try:
        for _ in range(5):
            first = tagged_event("inproc")
            bodies = [first] + [
                {**first, "purpose": purpose}
                for purpose in ("ETREAT", "HPAYMT", "HOPERAT", "PATRQT", "PUBHLTH", "HRESCH",
                                "LEGAL")
            ]
            start = threading.Barrier(len(bodies))
            results: list[Any] = [None] * len(bodies)
            collector = Collector()

            def submit(k: int, bodies: list[dict[str, Any]], results: list[Any],
                       start: threading.Barrier) -> None:
                start.wait(timeout=30)
                try:
                    results[k] = svc.ingest.record_sync("default", [bodies[k]])
                except EventConflict as conflict:
                    results[k] = conflict

            run_threads([partial(submit, k, bodies, results, start)
                         for k in range(len(bodies))], collector, 30)
            assert not collector.errors, collector.errors[:3]
            won = [k for k, r in enumerate(results) if not isinstance(r, EventConflict)]
            assert len(won) == 1 and results[won[0]].created, results
            seq = results[won[0]].receipts[0].seq
            stored = json.loads(svc.store.read("default", seq - 1, 1)[0])
            assert stored["event"]["purpose"] == bodies[won[0]]["purpose"]
        assert svc.store.head("default").seq == 5
    finally:
        svc.writer.stop()
        svc.store.close()
