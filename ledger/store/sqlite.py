"""The ledger on SQLite (the embedded default), through the eventsourcing library.

SQLite has one writer at a time per database file. An append opens its transaction with
``BEGIN IMMEDIATE`` so that it holds the write lock *before* it reads the chain's head:
a deferred transaction could read a head that another process is about to supersede.
The database runs in WAL mode with ``synchronous=FULL``, so a commit survives a power
cut, as a receipt promises.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsourcing.persistence import ConnectionPoolClosedError, PersistenceError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from ledger.admission import Pending, Recorded
from ledger.chain import Head
from ledger.entry import Entry
from ledger.store.base import (
    CATCH_UP_ENTRIES,
    ENTRY_TOPIC,
    IN_CHUNK,
    LedgerStore,
    StoreUnavailable,
    ledger_id,
    select_in,
    stored_hash,
)
from ledger.transparency.tree import Node, SubtreeHash

STREAM_BATCH = 10_000
LOCK_TIMEOUT_SECONDS = 30


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///path`` URL names (relative to the working directory)."""
    return url.removeprefix("sqlite:///")


def owner_only(path: str) -> None:
    """Create the database file readable and writable by its owner only (0600, like the
    key ring), and narrow an existing one and its WAL/SHM to that. SQLite creates the
    -wal and -shm files with the database file's permissions, so they follow it."""
    if path == ":memory:" or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


class SQLiteLedgerStore(LedgerStore):
    """Chains in the library's ``stored_events`` table in one SQLite file."""

    dialect = "sqlite"
    recorder: SQLiteApplicationRecorder

    def __init__(self, datastore: SQLiteDatastore) -> None:
        super().__init__()
        self.datastore = datastore
        self.recorder = SQLiteApplicationRecorder(datastore, events_table_name="stored_events")
        self._held = threading.local()  # the connection this thread holds, if any

    @classmethod
    def from_url(cls, url: str, **_: Any) -> SQLiteLedgerStore:
        path = sqlite_path(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        owner_only(path)
        # One writer at a time in this process too (the pool's writer lock): waiting for
        # another thread's write is waiting for the same lock as another process's, so it
        # gets the same bound. The library's 5 s default turned a slow projection batch on
        # a loaded host into a 503 for an ingest that would have gone through.
        datastore = SQLiteDatastore(path, lock_timeout=LOCK_TIMEOUT_SECONDS, pool_size=4,
                                    pool_timeout=LOCK_TIMEOUT_SECONDS)
        return cls(datastore)

    @contextmanager
    def _connection(self, *, writer: bool) -> Iterator[sqlite3.Connection]:
        held: sqlite3.Connection | None = getattr(self._held, "connection", None)
        if held is not None and not writer:
            # A read inside this thread's own transaction (a view opening a data key while
            # it applies a batch) reads on that transaction's connection. Asking the pool
            # for a second one deadlocks: the pool lets one thread at a time wait, and the
            # one waiting may be a writer that waits for the lock this thread holds.
            yield held
            return
        try:
            with self.datastore.get_connection(commit=writer) as conn:
                # The library's cursor opens as the sqlite3 cursor, whose ``connection`` is
                # the pooled sqlite3 connection: public API of both, where the library's
                # own connection object keeps it in a private attribute.
                with conn.cursor() as probe:
                    raw: sqlite3.Connection = probe.connection
                raw.execute("PRAGMA synchronous=FULL")
                self._held.connection = raw
                try:
                    yield raw
                finally:
                    self._held.connection = held
        # A closed store's pool answers with an error of its own, not a PersistenceError.
        except (PersistenceError, ConnectionPoolClosedError, sqlite3.Error) as error:
            raise StoreUnavailable(f"database unavailable ({type(error).__name__})") from None

    # -- writing -------------------------------------------------------------------

    @contextmanager
    def _write_transaction(self) -> Iterator[Any]:
        with self._connection(writer=True) as raw:
            curs = raw.cursor()
            curs.execute("BEGIN IMMEDIATE")
            try:
                yield curs
            except BaseException:
                raw.rollback()
                raise
            else:
                try:
                    raw.commit()
                except sqlite3.Error as error:
                    raw.rollback()
                    raise StoreUnavailable(
                        f"database unavailable ({type(error).__name__})"
                    ) from None
            finally:
                curs.close()

    def _head(self, tx: Any, lid: uuid.UUID) -> Head:
        tx.execute(
            "SELECT originator_version, state FROM stored_events WHERE originator_id = ?"
            " ORDER BY originator_version DESC LIMIT 1",
            (lid.hex,),
        )
        return self._head_of(tx.fetchone())

    def _recorded(self, tx: Any, lid: uuid.UUID, event_ids: list[str]) -> dict[str, Recorded]:
        return self._recorded_of(select_in(
            tx, "SELECT event_id, seq, fingerprint FROM ledger_event_ids WHERE ledger_id = ?"
            " AND event_id IN ({marks})", (lid.hex,), event_ids, "?"))

    def _states_after(self, tx: Any, lid: uuid.UUID, seq: int) -> list[tuple[int, bytes]]:
        tx.execute(
            "SELECT originator_version, state FROM stored_events WHERE originator_id = ?"
            " AND originator_version > ? ORDER BY originator_version LIMIT ?",
            (lid.hex, seq, CATCH_UP_ENTRIES),
        )
        return [(int(s), bytes(state)) for s, state in tx.fetchall()]

    def _insert(
        self, tx: Any, lid: uuid.UUID, entries: Sequence[Entry], pending: Sequence[Pending]
    ) -> None:
        stored = [StoredEvent(lid, e.seq, ENTRY_TOPIC, e.encode()) for e in entries]
        tx.executemany(
            self.recorder.insert_events_statement,
            [(lid.hex, s.originator_version, s.topic, s.state) for s in stored],
        )
        tx.executemany(
            "INSERT INTO ledger_event_ids (ledger_id, event_id, seq, fingerprint)"
            " VALUES (?, ?, ?, ?)",
            [(lid.hex, p.event_id, e.seq, p.fingerprint)
             for p, e in zip(pending, entries, strict=True)],
        )

    def _insert_nodes(self, tx: Any, lid: uuid.UUID, nodes: Sequence[SubtreeHash]) -> None:
        key = lid.hex
        tx.executemany(
            "INSERT INTO merkle_nodes (ledger_id, level, idx, hash) VALUES (?, ?, ?, ?)",
            [(key, level, idx, digest) for level, idx, digest in nodes],
        )

    def _select_nodes(self, curs: Any, lid: uuid.UUID, nodes: Sequence[Node]) -> dict[Node, bytes]:
        found: dict[Node, bytes] = {}
        for start in range(0, len(nodes), IN_CHUNK // 2):
            chunk = nodes[start : start + IN_CHUNK // 2]
            # A VALUES list joined on the primary key: one index probe per node.
            curs.execute(
                "WITH w(level, idx) AS (VALUES " + ",".join(["(?, ?)"] * len(chunk)) + ")"
                " SELECT n.level, n.idx, n.hash FROM w JOIN merkle_nodes n"
                " ON n.ledger_id = ? AND n.level = w.level AND n.idx = w.idx",
                (*(v for n in chunk for v in n), lid.hex),
            )
            found.update({Node(level, idx): bytes(h) for level, idx, h in curs.fetchall()})
        return found

    def _select_leaves(self, curs: Any, lid: uuid.UUID, seqs: Sequence[int]) -> dict[int, bytes]:
        rows = select_in(
            curs, "SELECT originator_version, state FROM stored_events WHERE originator_id = ?"
            " AND originator_version IN ({marks})", (lid.hex,), list(seqs), "?")
        return {int(seq): stored_hash(state) for seq, state in rows}

    def _stored_at(self, tx: Any, lid: uuid.UUID, seqs: list[int]) -> dict[int, bytes]:
        rows = select_in(
            tx, "SELECT originator_version, state FROM stored_events WHERE originator_id = ?"
            " AND originator_version IN ({marks})", (lid.hex,), seqs, "?")
        return {int(seq): bytes(state) for seq, state in rows}

    def _entries_at(self, tx: Any, lid: uuid.UUID, seqs: list[int]) -> dict[int, Entry]:
        rows = select_in(
            tx, "SELECT originator_version, state FROM stored_events WHERE originator_id = ?"
            " AND originator_version IN ({marks})", (lid.hex,), seqs, "?")
        return {int(seq): Entry.decode(bytes(state)) for seq, state in rows}

    def _register_ledger(self, tx: Any, name: str, lid: uuid.UUID, created_at: str) -> None:
        tx.execute(
            "INSERT OR IGNORE INTO ledgers (name, ledger_id, created_at) VALUES (?, ?, ?)",
            (name, lid.hex, created_at),
        )

    # -- other tables ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._write_transaction() as curs:
            yield curs

    def cursor_beside(self, tx: Any) -> Any:
        curs = tx.connection.cursor()
        curs.row_factory = None  # plain tuples, as psycopg gives on PostgreSQL
        return curs

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?")

    def key_of(self, ledger: str) -> Any:
        return ledger_id(ledger).hex

    # -- reading -------------------------------------------------------------------

    def head(self, ledger: str) -> Head:
        with self._connection(writer=False) as raw:
            return self._head(raw.cursor(), ledger_id(ledger))

    def read(self, ledger: str, after: int, limit: int) -> list[bytes]:
        with self._connection(writer=False) as raw:
            rows = raw.execute(
                "SELECT state FROM stored_events WHERE originator_id = ?"
                " AND originator_version > ? ORDER BY originator_version LIMIT ?",
                (ledger_id(ledger).hex, after, limit),
            ).fetchall()
            return [bytes(row[0]) for row in rows]

    def stream(
        self, ledger: str, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        query = (
            "SELECT originator_version, state FROM stored_events WHERE originator_id = ?"
            " AND originator_version > ?"
        )
        params: list[Any] = [ledger_id(ledger).hex, after]
        if upto is not None:
            query += " AND originator_version <= ?"
            params.append(upto)
        query += " ORDER BY originator_version"
        with self._connection(writer=False) as raw:
            curs = raw.execute(query, params)
            while rows := curs.fetchmany(STREAM_BATCH):
                for seq, state in rows:
                    yield seq, bytes(state)

    def ledgers(self) -> list[str]:
        with self._connection(writer=False) as raw:
            return [row[0] for row in raw.execute("SELECT name FROM ledgers ORDER BY name")]

    def stream_ids(self) -> list[Any]:
        with self._connection(writer=False) as raw:
            rows = raw.execute("SELECT DISTINCT originator_id FROM stored_events").fetchall()
            return [row[0] for row in rows]

    def first_entry(self, stream_id: Any) -> bytes | None:
        with self._connection(writer=False) as raw:
            row = raw.execute(
                "SELECT state FROM stored_events WHERE originator_id = ?"
                " ORDER BY originator_version LIMIT 1",
                (stream_id,),
            ).fetchone()
            return bytes(row[0]) if row else None

    # -- following -------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Any]:
        with self._connection(writer=False) as raw:
            curs = raw.cursor()
            curs.row_factory = None  # plain tuples, as psycopg gives on PostgreSQL
            try:
                yield curs
            finally:
                curs.close()

    def notifications(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        # The library's notification id on SQLite is the table's rowid; read here, not
        # through its recorder, so that an unusable database answers StoreUnavailable.
        with self._connection(writer=False) as raw:
            rows = raw.execute(
                "SELECT rowid, state FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            ).fetchall()
            return [(int(rowid), bytes(state)) for rowid, state in rows]

    def last_notification(self) -> int:
        with self._connection(writer=False) as raw:
            row = raw.execute("SELECT max(rowid) FROM stored_events").fetchone()
            return int(row[0] or 0)

    def notification_of(self, ledger: str, seq: int) -> int | None:
        with self._connection(writer=False) as raw:
            row = raw.execute(
                "SELECT rowid FROM stored_events WHERE originator_id = ?"
                " AND originator_version = ?",
                (ledger_id(ledger).hex, seq),
            ).fetchone()
            return None if row is None else int(row[0])

    def ping(self) -> None:
        with self._connection(writer=False) as raw:
            raw.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self.datastore.close()
