"""Where chains are kept: the eventsourcing library's recorders, on SQLite or PostgreSQL.

Each ledger is one stream of the library's ``stored_events`` table: the stream's
``originator_id`` is derived from the ledger's name, ``originator_version`` is the entry's
``seq`` and ``state`` is the entry's canonical bytes. The library's primary key on
``(originator_id, originator_version)`` is what makes a fork impossible: two writers that
both try to write seq N cannot both commit.
"""

from ledger.store.base import LedgerStore, StoreUnavailable, ledger_id, open_store

__all__ = ["LedgerStore", "StoreUnavailable", "ledger_id", "open_store"]
