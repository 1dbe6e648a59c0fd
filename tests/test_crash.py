"""SIGKILL mid-load: an acknowledged event survives, a lost one is re-posted, none twice.

A receipt is a promise that the event is durably at its seq. Here the server is killed
(SIGKILL: no shutdown hooks, no flush, what a power cut does to the process) several
times while client threads are posting, and restarted on the same database and port.
Each client keeps re-posting the *same* event until it gets a receipt, as the contract
tells applications to, so an event whose commit outran its answer comes back as a 200
replay instead of a second entry.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.loadgen import (
    Collector,
    check_ledger,
    entries_over_http,
    fixed_port,
    log_tail,
    post_until_receipt,
    run_threads,
    run_verify_cli,
    tagged_event,
    wait_until,
)
from tests.support import ServerProcess, chosen_seed

CLIENTS = 3
KILLS = 4
MAX_EVENTS_PER_CLIENT = 1500
PROGRESS = 20  # acknowledged events that show the load is flowing again


def _progressed(collector: Collector, since: int) -> bool:
    return collector.acked >= since + PROGRESS


def _client(url: str, headers: dict[str, str], name: str, collector: Collector,
            stop: threading.Event, deadline: float) -> None:
    with httpx.Client(base_url=url, headers=headers,
                      timeout=httpx.Timeout(10, connect=2)) as client:
        for _ in range(MAX_EVENTS_PER_CLIENT):
            if stop.is_set():
                return
            event = tagged_event(name)
            collector.will_post(event)
            post_until_receipt(client, event, collector, deadline=deadline)


@pytest.mark.slow
def test_sigkill_mid_load_loses_and_duplicates_nothing(database_url: str,
                                                       tmp_path: Path) -> None:
    seed = chosen_seed()
    rng = random.Random(seed)
    env = {
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_KEY_FILE": str(tmp_path / "keys.json"),
        "LEDGER_LOG_LEVEL": "warning",
    }
    log = tmp_path / "server.log"
    # Restarted on the same port, where clients find it again.
    server = ServerProcess(env, port=fixed_port(), log_path=log).start()
    collector = Collector()
    stop = threading.Event()
    deadline = time.monotonic() + 90
    errors_at_kill: list[int] = []

    def crash_loop() -> None:
        for _ in range(KILLS):
            acked = collector.acked
            wait_until(partial(_progressed, collector, acked), 30,
                       "clients to get receipts from the restarted server")
            time.sleep(rng.uniform(0.3, 1.0))  # let the load run, then kill at random
            errors_at_kill.append(collector.transport_errors)
            server.kill()
            try:
                server.start()
            except RuntimeError as error:
                raise AssertionError(f"restart failed: {error}\n{log_tail(log)}") from None
        acked = collector.acked
        wait_until(lambda: collector.acked >= acked + PROGRESS, 30,
                   "clients to get receipts after the last restart")
        stop.set()

    try:
        targets: list[Callable[[], None]] = [
            partial(_client, server.url, server.headers, f"c{k}", collector, stop, deadline)
            for k in range(CLIENTS)]
        targets.append(crash_loop)
        run_threads(targets, collector, timeout=120)
        assert not collector.errors, f"seed {seed}:\n" + "\n".join(collector.errors[:5])
        assert len(errors_at_kill) == KILLS
        # Every kill hit a live load: clients saw connections fail after each one.
        seen = [*errors_at_kill, collector.transport_errors]
        assert all(b > a for a, b in itertools.pairwise(seen)), (seed, seen)
        # And the load never ran dry before the crash loop was done.
        assert len(collector.posted) < CLIENTS * MAX_EVENTS_PER_CLIENT

        n = len(collector.posted)
        print(f"seed {seed}: {n} events, answers {dict(collector.statuses)}, "
              f"{collector.transport_errors} connection errors")
        with server.client(timeout=60) as client:
            head = client.get("/v1/ledger").json()
            assert head["seq"] == n, f"seed {seed}: head {head['seq']} != {n} events posted"
            entries = entries_over_http(client)
        check_ledger(entries, collector)
        assert len(collector.receipts) == n
        assert f"intact through seq {n} " in run_verify_cli(env)
    finally:
        stop.set()
        server.stop()
