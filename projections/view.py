"""What a view is: tables of rows derived from ledger entries, and nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger.attestation import SERVICE_IDENTITY, SERVICE_SYSTEM
from ledger.canonical import parse
from ledger.store import base
from projections.instants import utc_of


@dataclass(frozen=True, slots=True)
class Change:
    """One ledger entry as views see it: where it sits in the store's commit order
    (``position``, the notification id) and in its chain (``ledger``, ``seq``)."""

    position: int
    ledger: str
    seq: int
    recorded_at: str
    event: dict[str, Any]
    occurred_utc: str
    service_record: bool = False  # one of the records the service composes itself

    @classmethod
    def of(cls, position: int, stored: bytes) -> Change:
        # The entry's fields only: views need not rebuild an Entry (or its hash) for each.
        entry = parse(stored)
        event = entry["event"]
        return cls(position, entry["ledger"], entry["seq"], entry["recorded_at"], event,
                   utc_of(event["occurred_at"]), is_service_record(entry))


def is_service_record(entry: dict[str, Any]) -> bool:
    """Whether the service composed this entry: its source is the service's, and the
    service submitted it (``submitted_by``, which no client can write). Entries older
    than ``submitted_by`` have only their source to go by."""
    source = entry["event"].get("source")
    if not (isinstance(source, dict) and source.get("system") == SERVICE_SYSTEM):
        return False
    by = entry.get("submitted_by")
    return by is None or (isinstance(by, dict) and by.get("identity") == SERVICE_IDENTITY)


# Entries are stored as canonical JSON, keys sorted: "event" comes first, and "action"
# first within it (no other event field sorts before it). So the action of a stored
# entry starts at a fixed offset.
_ACTION_AT: Final = b'{"event":{"action":"'


def action_of(stored: bytes) -> str | None:
    """The event action of a stored entry, read off its bytes without decoding them
    (None when they do not start as a canonical entry does)."""
    if not stored.startswith(_ACTION_AT):
        return None
    start = len(_ACTION_AT)
    end = stored.find(b'"', start)
    return None if end < 0 else stored[start:end].decode("ascii", "replace")


def concerns(stored: bytes, wanted: frozenset[str] | None) -> bool:
    """Whether a stored entry may be read by views reading ``wanted`` actions (every
    entry whose action cannot be read off its bytes may)."""
    if wanted is None:
        return True
    action = action_of(stored)
    return action is None or action in wanted


def wanted_actions(views: Sequence[View]) -> frozenset[str] | None:
    """The actions any of ``views`` reads; None when one of them reads every entry."""
    wanted: set[str] = set()
    for view in views:
        if view.actions is None:
            return None
        wanted |= view.actions
    return frozenset(wanted)


class Sql:
    """Turns a ``%s``-placeholder statement into the database's own style, and knows
    which database it speaks to (bulk writes differ: COPY on PostgreSQL)."""

    def __init__(self, dialect: str, placeholders: Callable[[str], str]) -> None:
        self.dialect = dialect
        self._placeholders = placeholders

    def __call__(self, statement: str) -> str:
        return self._placeholders(statement)


def insert_rows(tx: Any, sql: Sql, table: str, columns: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` -- COPY on PostgreSQL (an order of magnitude above pipelined
    INSERTs there), one executemany on SQLite."""
    if not rows:
        return
    names = ", ".join(columns)
    if sql.dialect == "postgresql":
        types = _column_types(tx, table, names)
        # Binary: the server need not parse text, and psycopg encodes in C.
        with tx.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        return
    tx.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})",
                   rows)


_TYPES: dict[tuple[str, str], list[int]] = {}


def _column_types(tx: Any, table: str, names: str) -> list[int]:
    """The type oids of ``table``'s ``names`` columns (read once per process)."""
    key = (table, names)
    if key not in _TYPES:
        tx.execute(f"SELECT {names} FROM {table} LIMIT 0")
        _TYPES[key] = [column.type_code for column in tx.description]
    return _TYPES[key]


def upsert_rows(tx: Any, sql: Sql, table: str, columns: Sequence[str], keys: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows``, replacing the rows with the same ``keys``. On PostgreSQL they are
    COPYed into a transaction-scoped staging table and merged with one statement."""
    if not rows:
        return
    names = ", ".join(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    if sql.dialect == "postgresql":
        staging = f"staging_{table}"
        tx.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table})"
                   " ON COMMIT DELETE ROWS")
        insert_rows(tx, sql, staging, columns, rows)
        tx.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} {conflict}")
        return
    tx.executemany(
        f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))}) {conflict}",
        rows,
    )


class View(ABC):
    """A named set of tables that :meth:`apply` keeps equal to a function of the ledger.

    Guarantees asked of every view: :meth:`apply` writes only its own tables, through the
    cursor it is given (the projector commits it together with the view's position), and
    applying the same entries to the same tables always gives the same rows, so an
    incremental projection and a rebuild agree.
    """

    name: str
    tables: tuple[str, ...]
    # The actions of the entries this view reads (None: every entry). A projector whose
    # views all name theirs need not decode the other entries at all (see action_of).
    actions: frozenset[str] | None = None

    @abstractmethod
    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        """Fold ``changes`` (in commit order, all new to this view) into the tables."""

    def clear(self, tx: Any) -> None:
        """Empty the view's tables (before a rebuild)."""
        for table in self.tables:
            tx.execute(f"DELETE FROM {table}")


def select_keyed(
    tx: Any, sql: Sql, table: str, columns: str, key: str, ledger: str, keys: Sequence[str]
) -> list[tuple[Any, ...]]:
    """The ``columns`` of the rows of ``table`` (keyed by ``ledger`` and ``key``) for
    ``keys``: on PostgreSQL by one probe per key (see ``probe_each``: spelled ``key IN
    (...)``, a view without statistics -- one being rebuilt -- was read whole for each
    batch); on SQLite a few hundred keys a statement (its bound-parameter limit)."""
    return base.select_keyed(tx, sql.dialect, sql, f"SELECT {columns} FROM {table}"
                             " WHERE ledger = %s", key, keys, (ledger,))
