"""The lookups an append makes under the write lock stay primary-key probes as the ledger
grows (PostgreSQL only: this is about its plan cache).

The store prepares these statements, and a prepared statement keeps the plan PostgreSQL
settles on after its first executions -- on a new deployment, over tables without
statistics, and on a server without autovacuum (as these machines have it) nothing ever
replaces it. Spelled ``key = ANY(array)``, the idempotency lookup settled on a plan that
read every id of the ledger and filtered them (a 31-event append went from 1.6 to 3.0 ms
over its first 12,400 entries, and on from there). What is checked here is the work each
lookup does, in buffers touched (``EXPLAIN (ANALYZE, BUFFERS)`` of the very statement the
store's connection prepared while its tables were empty), once the tables have grown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.admission import Pending
from ledger.event_ids import new_event_id
from ledger.migrate import migrate
from ledger.store.postgres import (
    LEAVES_QUERY,
    NODES_QUERY,
    RECORDED_QUERY,
    STATES_AFTER_QUERY,
    PostgresLedgerStore,
)
from tests.support import make_event

LEDGER = "default"
GROUPS = 400
GROUP_EVENTS = 31
# A primary-key probe of these tables touches three pages (two index levels and the row);
# the plan this replaced read every id of the ledger: ~190 pages by the end of the test,
# and more with every append.
PAGES_PER_PROBE = 4


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresLedgerStore]:
    """A store that appended GROUPS groups to a new database, one connection at a time,
    half the appends reloading the tree's edge as though another process had appended (so
    every lookup an append can make was prepared while the tables were nearly empty)."""
    migrate(postgres_url)
    store = PostgresLedgerStore.from_url(postgres_url, pool_size=1)
    try:
        for group in range(GROUPS):
            events = [make_event(event_id=new_event_id()) for _ in range(GROUP_EVENTS)]
            # Two groups in four read the edge from the tree, the others what was appended
            # after it (nothing here): in pairs, so that each of the pool's connections,
            # which take turns, prepares both kinds of lookup.
            if group // 2 % 2:
                store._frontiers.clear()
            store.append({LEDGER: [[Pending(e["event_id"], "fp", e) for e in events]]},
                         datetime.now(UTC))
        yield store
    finally:
        store.close()


def _pages_touched(conn: Any, query: str, params: str) -> int:
    """Run the statement this connection prepared for ``query`` once more under EXPLAIN
    (on whichever plan PostgreSQL now uses for it): the pages it touched."""
    prepared = conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE statement = %s",
        (_numbered(query),),
    ).fetchone()
    assert prepared is not None, f"the store did not prepare {query[:40]}..."
    plan = conn.execute(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {prepared['name']}({params})"
    ).fetchone()
    root = next(iter(plan.values()))[0]["Plan"]
    return int(root["Shared Hit Blocks"] + root["Shared Read Blocks"])


def _numbered(query: str) -> str:
    """``query`` as psycopg sends it: ``%s`` and ``%b`` placeholders numbered ``$1``,
    ``$2``, ..."""
    parts = re.split("%[sb]", query)
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


def test_each_lookup_probes_its_keys_however_long_the_ledger(
    store: PostgresLedgerStore,
) -> None:
    with store.datastore.get_connection() as conn:
        first = conn.execute("SELECT originator_id FROM stored_events LIMIT 1").fetchone()
        assert first is not None
        lid = first["originator_id"]
        newest = conn.execute(
            "SELECT array_agg(event_id) AS ids, array_agg(seq) AS seqs FROM (SELECT event_id,"
            " seq FROM ledger_event_ids ORDER BY seq DESC LIMIT %s) AS n", (GROUP_EVENTS,)
        ).fetchone()
        assert newest is not None
        ids = "{" + ",".join(map(str, newest["ids"])) + "}"
        seqs = "{" + ",".join(map(str, newest["seqs"])) + "}"
        levels = "{" + ",".join(["4"] * GROUP_EVENTS) + "}"
        indexes = "{" + ",".join(map(str, range(GROUP_EVENTS))) + "}"
        work = {
            "recorded ids": _pages_touched(conn, RECORDED_QUERY, f"'{ids}', '{lid}'"),
            "entries' hashes": _pages_touched(conn, LEAVES_QUERY, f"'{seqs}', '{lid}'"),
            "tree nodes": _pages_touched(conn, NODES_QUERY, f"'{levels}', '{indexes}', '{lid}'"),
            "entries after an edge": _pages_touched(
                conn, STATES_AFTER_QUERY, f"'{lid}', {min(newest['seqs']) - 1}"),
        }
    for name, pages in work.items():
        assert pages <= PAGES_PER_PROBE * GROUP_EVENTS, (name, pages)
