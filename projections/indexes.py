"""Deferred view indexes: a view rebuilt from empty gets its rows first, its indexes after.

Inserting ten million rows into a table with two secondary b-trees over random keys
costs far more than inserting them into the bare table and then building each index in
one sort, once the indexes outgrow memory. So on PostgreSQL a rebuild drops the views'
secondary indexes (never a primary key or a unique index: upserts and exactly-once rely
on those) in the transaction that empties the views, and builds them again once the
views have caught up.

The definitions are PostgreSQL's own (``pg_get_indexdef``), written to
``view_deferred_indexes`` in the dropping transaction and deleted in each building one:
the migrations stay the one source of what the indexes are, and a rebuild killed at any
point leaves behind exactly the list of indexes still to build, which the next projector
builds (:func:`restore`). While an index is missing the view answers correctly, only
slower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog

from ledger.store import LedgerStore

log = structlog.get_logger("projections")

# Building an index sorts its keys; more memory means fewer passes over temporary files.
BUILD_MEMORY = "512MB"


def defer(tx: Any, tables: Sequence[str]) -> list[str]:
    """Drop the secondary indexes of ``tables`` (PostgreSQL), remembering how to build them
    again; the names dropped. Run it in the transaction that empties the tables."""
    tx.execute(
        "SELECT ic.relname, t.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
        " WHERE t.relname = ANY(%s) AND t.relnamespace = current_schema()::regnamespace"
        " AND NOT i.indisprimary AND NOT i.indisunique ORDER BY ic.relname",
        (list(tables),),
    )
    found = tx.fetchall()
    for name, table, definition in found:
        tx.execute(
            "INSERT INTO view_deferred_indexes (index_name, table_name, definition)"
            " VALUES (%s, %s, %s)", (name, table, definition))
        tx.execute(f'DROP INDEX "{name}"')
    return [name for name, _, _ in found]


def pending(store: LedgerStore, tables: Sequence[str] | None = None) -> list[str]:
    """The indexes dropped by a rebuild and not built again yet (of ``tables`` only, when
    given)."""
    if store.dialect != "postgresql":
        return []
    with store.reading() as curs:
        if tables is None:
            curs.execute("SELECT index_name FROM view_deferred_indexes ORDER BY index_name")
        else:
            curs.execute("SELECT index_name FROM view_deferred_indexes"
                         " WHERE table_name = ANY(%s) ORDER BY index_name", (list(tables),))
        return [name for (name,) in curs.fetchall()]


def restore(store: LedgerStore, names: Sequence[str] | None = None,
            building: Callable[[str], None] | None = None) -> list[str]:
    """Build again every deferred index (or those named); the names this call built.

    Each index is claimed and built in one transaction: two projectors restoring at once
    never build one twice (the second waits on the first's claim, then finds it gone)."""
    built = []
    for name in names if names is not None else pending(store):
        with store.transaction() as tx:
            tx.execute("DELETE FROM view_deferred_indexes WHERE index_name = %s"
                       " RETURNING definition", (name,))
            row = tx.fetchone()
            if row is None:
                continue  # another projector built it
            if building is not None:
                building(name)
            tx.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
            # A build takes as long as the view is large: not bound by the service's
            # statement timeout, which is meant for requests.
            tx.execute("SET LOCAL statement_timeout = 0")
            tx.execute(row[0])
        log.info("view_index_built", index=name)
        built.append(name)
    return built
