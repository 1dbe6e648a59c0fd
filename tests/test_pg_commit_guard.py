"""A pipelined transaction acknowledges nothing unless PostgreSQL answered COMMIT.

In pipeline mode an error inside an explicit block that a step catches leaves the block
aborted, and the COMMIT queued at its end is then answered ROLLBACK, with no error. The
store must raise rather than return as if the block had committed (about PostgreSQL
itself: SQLite has no pipeline)."""

from __future__ import annotations

import psycopg
import pytest

from ledger.migrate import migrate
from ledger.store import StoreUnavailable, open_store


def test_a_block_answered_rollback_is_refused(postgres_url: str) -> None:
    migrate(postgres_url)
    store = open_store(postgres_url)
    try:
        with (pytest.raises(StoreUnavailable, match="did not commit"),
              store.pipelined_transaction() as tx):
            tx.execute("CREATE TABLE guard_probe (n int)")
            try:
                with tx.connection.pipeline():  # syncs: the error arrives here
                    tx.execute("SELECT 1 / 0")
            except psycopg.errors.DivisionByZero:
                pass  # caught by a step: the block is now aborted
        with store.pipelined_transaction() as tx:
            tx.execute("SELECT to_regclass('guard_probe') IS NULL")
            with tx.connection.pipeline():
                pass
            assert tx.fetchone() == (True,)  # nothing of the refused block remains
    finally:
        store.close()
