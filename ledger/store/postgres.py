"""The ledger on PostgreSQL, through the eventsourcing library's application recorder.

Every append transaction first takes the recorder's write lock (the library's mechanism
for making commit order equal ``notification_id`` order, which the projections rely on),
then reads each chain's head *under that lock*. So however many processes write, each
one chains onto the true head, and the primary key would refuse a fork even if one
tried. Readers are never blocked.

The lock is a transaction-scoped advisory lock rather than the library's default
``LOCK TABLE ... IN EXCLUSIVE MODE``: PostgreSQL grants EXCLUSIVE table locks only to
roles with UPDATE, DELETE or TRUNCATE privilege, and the service's role should hold no
more than INSERT and SELECT on the ledger. Every writer of ``stored_events`` is this
class, so serialising on the advisory lock gives the same ordering guarantee.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any, cast

import psycopg
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.admission import Pending, Recorded
from ledger.chain import Head
from ledger.entry import Entry
from ledger.store.base import (
    CATCH_UP_ENTRIES,
    ENTRY_TOPIC,
    LedgerStore,
    Snapshot,
    StoreUnavailable,
    ledger_id,
    stored_hash,
)
from ledger.transparency.tree import Node, SubtreeHash

STREAM_BATCH = 10_000
# A group of at most this many events is appended in two round trips: BEGIN, the lock and
# the reads in one pipeline; its rows, as INSERTs from arrays, and COMMIT in another.
# COPY cannot run in a pipeline and costs two round trips a table (six for entries, event
# ids and tree nodes), all spent holding the write lock that every other writer waits
# for: single-event POSTs went from ~3,180 to ~3,310 a second. Per row, COPY stays the
# cheaper, so larger groups keep it.
PIPELINED_EVENTS = 256
# Arbitrary, fixed: every process that appends to the ledger takes this advisory lock.
WRITE_LOCK_KEY = 0x5048494C45444752  # "PHILEDGR"
HEAD_QUERY = (
    "SELECT originator_version, state FROM stored_events WHERE originator_id = %s"
    " ORDER BY originator_version DESC LIMIT 1"
)
# What other processes appended after this one's edge of the tree: a range of the primary
# key, read in key order (tests/test_append_plans.py checks the plan it settles on).
STATES_AFTER_QUERY = (
    "SELECT originator_version, state FROM stored_events WHERE originator_id = %s"
    f" AND originator_version > %s ORDER BY originator_version LIMIT {CATCH_UP_ENTRIES}"
)
# The reads the append makes under the write lock are prepared statements, and a prepared
# statement keeps the plan chosen at its first executions. On a table without statistics
# (a new deployment, or any server without autovacuum, as these machines have it) that
# plan compared each row against the whole array -- a scan of the table that grew with it:
# 2.3 ms of a 31-event append at 25,000 entries, and rising. Spelled as one probe per
# wanted key (LATERAL ... LIMIT 1), the plan is the primary-key lookup whatever the
# statistics say, and a lookup stays a lookup as the table grows. Arrays come first.
NODES_QUERY = (
    "SELECT n.level, n.idx, n.hash FROM unnest(%s::int2[], %s::int8[]) AS w(level, idx)"
    " CROSS JOIN LATERAL (SELECT level, idx, hash FROM merkle_nodes WHERE ledger_id = %s"
    " AND level = w.level AND idx = w.idx LIMIT 1) AS n"
)
LEAVES_QUERY = (
    "SELECT e.originator_version, e.state FROM unnest(%s::int8[]) AS w(seq)"
    " CROSS JOIN LATERAL (SELECT originator_version, state FROM stored_events"
    " WHERE originator_id = %s AND originator_version = w.seq LIMIT 1) AS e"
)
INSERT_ENTRIES = (
    "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
    " SELECT %s, v, %s, s FROM unnest(%b::int8[], %b::bytea[]) AS t(v, s)"
)
# Event ids travel as text and become uuids in the server: psycopg dumps a list of
# uuid.UUID element by element in Python, and making the UUIDs costs as much again --
# ~100 us of a 31-event append (a page of a user's history) against ~20 as text.
INSERT_EVENT_IDS = (
    "INSERT INTO ledger_event_ids (ledger_id, event_id, seq, fingerprint)"
    " SELECT %s, e::uuid, q, f FROM unnest(%b::text[], %b::int8[], %b::text[]) AS t(e, q, f)"
)
INSERT_NODES = (
    "INSERT INTO merkle_nodes (ledger_id, level, idx, hash)"
    " SELECT %s, l, i, h FROM unnest(%b::int2[], %b::int8[], %b::bytea[]) AS t(l, i, h)"
)
RECORDED_QUERY = (
    "SELECT r.event_id::text, r.seq, r.fingerprint FROM unnest(%b::text[]::uuid[])"
    " AS w(event_id)"
    " CROSS JOIN LATERAL (SELECT event_id, seq, fingerprint FROM ledger_event_ids"
    " WHERE ledger_id = %s AND event_id = w.event_id LIMIT 1) AS r"
)


# libpq counts whole seconds and takes 2 as its least.
CONNECT_TIMEOUT_SECONDS = 2


def _pipelined(curs: Any) -> bool:
    """Whether ``curs``'s connection is in pipeline mode (a small group's append)."""
    return bool(curs.connection.pgconn.pipeline_status)


@contextmanager
def _pipelined_transaction(conn: Any) -> Iterator[Any]:
    """BEGIN and COMMIT as two more statements of the pipeline they run in.

    psycopg's ``conn.transaction()`` in pipeline mode syncs after BEGIN and again before
    COMMIT, and waits each time: two round trips more per append, all but the first
    spent holding the write lock. An explicit transaction block is not ended by a sync
    (only an implicit one is), so a step that syncs (see :meth:`PostgresLedgerStore.execute`)
    stays inside it. Leaving by an exception queues no COMMIT: :func:`_roll_back` ends
    the block once the pipeline is closed.

    Yields the cursor that COMMIT goes through, whose status ``_begin`` reads once the
    pipeline has synced."""
    commit = conn.cursor()
    conn.cursor().execute("BEGIN")
    yield commit
    commit.execute("COMMIT")


def _committed(commit: Any) -> None:
    """Raise unless the pipelined block's COMMIT (run through ``commit``) committed: an
    aborted block answers COMMIT with ROLLBACK, and no error, and nothing may be
    acknowledged unless it says COMMIT."""
    if commit.statusmessage != "COMMIT":
        raise StoreUnavailable("the transaction did not commit")


def _roll_back(conn: Any) -> None:
    """End whatever transaction block an append left open (an error in a pipeline leaves
    it aborted until ROLLBACK), so that the pooled connection goes back idle."""
    if conn.closed or conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        conn.close()  # the pool discards a closed connection


def postgres_conninfo(url: str) -> dict[str, Any]:
    """psycopg connection parameters from a ``postgresql://`` URL."""
    url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    return conninfo_to_dict(url)


class PostgresLedgerStore(LedgerStore):
    """Chains in the library's ``stored_events`` table on PostgreSQL."""

    dialect = "postgresql"
    recorder: PostgresApplicationRecorder

    def __init__(
        self, datastore: PostgresDatastore, conninfo: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.datastore = datastore
        self.conninfo = conninfo or {}
        self.recorder = PostgresApplicationRecorder(datastore, events_table_name="stored_events")
        # The statements every append starts with, rendered once, not on every append.
        # Run here rather than through the recorder (whose lock step is private): every
        # writer of ``stored_events`` is this class, so this is the lock they all take.
        self.lock_statements = [
            statement.as_string() for statement in (
                SQL("SET LOCAL lock_timeout = '{0}s'").format(datastore.lock_timeout),
                # NOTIFY as a function, so it rides on the lock's round trip.
                SQL("SELECT pg_advisory_xact_lock({0}), pg_notify({1}, '')").format(
                    WRITE_LOCK_KEY, self.recorder.channel_name
                ),
            )
        ]
        # The recorder's own inserts (none today) would take the same lock.
        self.recorder.lock_table_statements = list(self.lock_statements)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 4, statement_timeout: float | None = None,
                 **_: Any) -> PostgresLedgerStore:
        """``statement_timeout`` (seconds) bounds every statement of every connection (the
        service sets it, so a database that takes statements but never finishes them
        answers within seconds); a new connection's whole handshake is bounded either
        way, as is the wait for a pooled connection (``connect_timeout``)."""
        info = postgres_conninfo(url)
        datastore = PostgresDatastore(
            dbname=info.get("dbname", "postgres"),
            host=info.get("host", "127.0.0.1"),
            port=info.get("port", 5432),
            user=info.get("user", "postgres"),
            password=info.get("password", ""),
            pool_size=pool_size,
            max_overflow=pool_size,
            # How long a request waits for a connection: an outage answers 503 in
            # seconds, not after a readiness probe has given up.
            connect_timeout=1.5,
            lock_timeout=10,
            # No ping per checkout (a round trip each time): a dead connection fails
            # its transaction, and the writer retries once on a fresh one.
            pre_ping=False,
        )
        # libpq's own bound on connecting (TCP, TLS and the startup exchange): a server
        # that accepts and never answers fails the connection, not the request's thread.
        extra: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if statement_timeout:
            extra["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
        # eventsourcing builds its pool with a dict of connection arguments, not a factory.
        cast("dict[str, Any]", datastore.pool.kwargs).update(extra)
        try:
            return cls(datastore, info)
        except (PersistenceError, psycopg.Error) as error:
            datastore.close()
            raise StoreUnavailable(_describe(error)) from None

    # -- writing -------------------------------------------------------------------

    @contextmanager
    def _write_transaction(self) -> Iterator[Any]:
        with self._begin({}) as (curs, _):
            yield curs

    @contextmanager
    def _begin(
        self, wanted: Mapping[str, tuple[uuid.UUID, list[str]]],
        before: Callable[[Any], None] | None = None,
    ) -> Iterator[tuple[Any, dict[str, Snapshot]]]:
        # The lock (and NOTIFY) and every snapshot's reads go out as one pipeline: one
        # round trip. The reads still run after the lock is granted -- the server
        # executes a pipeline in order -- and each takes its own snapshot then.
        # A small group stays in pipeline mode to the end (see PIPELINED_EVENTS): BEGIN
        # rides with the reads, and its INSERTs with the COMMIT, which the pipeline's
        # last sync waits for. A larger one leaves it after the reads, for its COPYs.
        events = sum(len(ids) for _, ids in wanted.values())
        with self._connection() as conn:
            commit = None
            with ExitStack() as stack:
                pipelined = 0 < events <= PIPELINED_EVENTS
                if pipelined:
                    stack.enter_context(conn.pipeline())
                    commit = stack.enter_context(_pipelined_transaction(conn))
                else:
                    stack.enter_context(conn.transaction())
                yield self._snapshots(conn, stack, wanted, before, pipelined)
            if commit is not None:
                _committed(commit)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection whose block, left by an exception, is rolled back before
        the connection goes back to the pool; driver errors become StoreUnavailable."""
        try:
            with self.datastore.get_connection() as conn:
                try:
                    yield conn
                except BaseException:
                    _roll_back(conn)
                    raise
        except (PersistenceError, psycopg.Error) as error:
            raise StoreUnavailable(_describe(error)) from None

    def _snapshots(
        self, conn: Any, stack: ExitStack, wanted: Mapping[str, tuple[uuid.UUID, list[str]]],
        before: Callable[[Any], None] | None, pipelined: bool,
    ) -> tuple[Any, dict[str, Snapshot]]:
        """The append's cursor, and each ledger's head, recorded ids and the entries
        other processes appended since this one's edge of the tree: read under the lock.

        ``before`` runs right behind the reads, before their results are fetched, so its
        own reads (the data keys' shred count, when settling) share their round trip:
        the first fetch asks the server for everything queued so far. In the append's
        own pipeline when it is ``pipelined`` (a nested pipeline block would sync as it
        opened, behind the queued BEGIN: a round trip more); else in one of their own."""
        curs = stack.enter_context(conn.cursor(row_factory=tuple_row))

        def cursor() -> Any:
            return stack.enter_context(conn.cursor(row_factory=tuple_row))

        reads = {}
        with nullcontext() if pipelined else conn.pipeline():
            for statement in self.lock_statements:
                curs.execute(statement, prepare=True)
            for ledger, (lid, event_ids) in wanted.items():
                head, ids = cursor(), cursor()
                head.execute(HEAD_QUERY, (lid,), prepare=True)
                ids.execute(RECORDED_QUERY, (event_ids, lid), prepare=True)
                cached = self._frontiers.get(lid) if self.maintain_tree else None
                since = None
                if cached is not None:
                    since = cursor()
                    since.execute(STATES_AFTER_QUERY, (lid, cached[0]), prepare=True,
                                  binary=True)
                reads[ledger] = (head, ids, since)
            if before is not None:
                # A cursor of its own: in a pipeline a cursor's fetch returns the first
                # result that reached it, which on ``curs`` may be the lock's.
                before(cursor())
        return curs, {
            ledger: Snapshot(
                self._head_of(head.fetchone()), self._recorded_of(ids.fetchall()),
                None if since is None
                else [(int(seq), bytes(state)) for seq, state in since.fetchall()],
            )
            for ledger, (head, ids, since) in reads.items()
        }

    def _head(self, tx: Any, lid: uuid.UUID) -> Head:
        tx.execute(HEAD_QUERY, (lid,), prepare=True)
        return self._head_of(tx.fetchone())

    def _recorded(self, tx: Any, lid: uuid.UUID, event_ids: list[str]) -> dict[str, Recorded]:
        tx.execute(RECORDED_QUERY, (event_ids, lid), prepare=True)
        return self._recorded_of(tx.fetchall())

    def _states_after(self, tx: Any, lid: uuid.UUID, seq: int) -> list[tuple[int, bytes]]:
        tx.execute(STATES_AFTER_QUERY, (lid, seq), prepare=True, binary=True)
        return [(int(s), bytes(state)) for s, state in tx.fetchall()]

    def _insert(
        self, tx: Any, lid: uuid.UUID, entries: Sequence[Entry], pending: Sequence[Pending]
    ) -> None:
        if _pipelined(tx):
            tx.execute(INSERT_ENTRIES, (lid, ENTRY_TOPIC, [e.seq for e in entries],
                                        [e.encode() for e in entries]), prepare=True)
            tx.execute(INSERT_EVENT_IDS, (lid, [p.event_id for p in pending],
                                          [e.seq for e in entries],
                                          [p.fingerprint for p in pending]), prepare=True)
            return
        # COPY in binary, into the library's own table and columns: the recorder's
        # INSERT ... FROM unnest(composite[]) sends bytea through the text protocol, escaping
        # every byte with a regex (~6,000 rows/s here); COPY takes ~190,000. (Binary INSERT
        # ... FROM unnest(arrays) pipelined was slower even for single-event groups.)
        with tx.copy(
            "COPY stored_events (originator_id, originator_version, topic, state)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea"])
            for entry in entries:
                copy.write_row((lid, entry.seq, ENTRY_TOPIC, entry.encode()))
        with tx.copy(
            "COPY ledger_event_ids (ledger_id, event_id, seq, fingerprint)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "uuid", "int8", "text"])
            for p, entry in zip(pending, entries, strict=True):
                copy.write_row((lid, uuid.UUID(p.event_id), entry.seq, p.fingerprint))

    def _insert_nodes(self, tx: Any, lid: uuid.UUID, nodes: Sequence[SubtreeHash]) -> None:
        if _pipelined(tx):
            levels, indexes, hashes = (list(column) for column in zip(*nodes, strict=True))
            tx.execute(INSERT_NODES, (lid, levels, indexes, hashes), prepare=True)
            return
        with tx.copy(
            "COPY merkle_nodes (ledger_id, level, idx, hash) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "int2", "int8", "bytea"])
            for node in nodes:
                copy.write_row((lid, *node))

    def _select_nodes(self, curs: Any, lid: uuid.UUID, nodes: Sequence[Node]) -> dict[Node, bytes]:
        if not nodes:
            return {}
        curs.execute(NODES_QUERY, ([n.level for n in nodes], [n.index for n in nodes], lid),
                     prepare=True, binary=True)
        return {Node(level, idx): bytes(digest) for level, idx, digest in curs.fetchall()}

    def _select_tree(self, curs: Any, lid: uuid.UUID, nodes: Sequence[Node],
                     seqs: Sequence[int]) -> tuple[dict[Node, bytes], dict[int, bytes]]:
        if not (nodes and seqs):
            return super()._select_tree(curs, lid, nodes, seqs)
        with curs.connection.cursor(row_factory=tuple_row) as leaves:
            with curs.connection.pipeline():
                curs.execute(NODES_QUERY, ([n.level for n in nodes], [n.index for n in nodes],
                                           lid), prepare=True, binary=True)
                leaves.execute(LEAVES_QUERY, (list(seqs), lid), prepare=True, binary=True)
            found = {Node(level, idx): bytes(h) for level, idx, h in curs.fetchall()}
            return found, {int(seq): stored_hash(state) for seq, state in leaves.fetchall()}

    def _select_leaves(self, curs: Any, lid: uuid.UUID, seqs: Sequence[int]) -> dict[int, bytes]:
        curs.execute(LEAVES_QUERY, (list(seqs), lid), prepare=True, binary=True)
        return {int(seq): stored_hash(state) for seq, state in curs.fetchall()}

    def _stored_at(self, tx: Any, lid: uuid.UUID, seqs: list[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        tx.execute(LEAVES_QUERY, (seqs, lid), prepare=True, binary=True)
        return {int(seq): bytes(state) for seq, state in tx.fetchall()}

    def _entries_at(self, tx: Any, lid: uuid.UUID, seqs: list[int]) -> dict[int, Entry]:
        if not seqs:
            return {}
        tx.execute(LEAVES_QUERY, (seqs, lid), prepare=True, binary=True)
        return {int(seq): Entry.decode(bytes(state)) for seq, state in tx.fetchall()}

    def _register_ledger(self, tx: Any, name: str, lid: uuid.UUID, created_at: str) -> None:
        tx.execute(
            "INSERT INTO ledgers (name, ledger_id, created_at) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (name, lid, created_at),
        )

    # -- other tables ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        try:
            with (
                self.datastore.get_connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=tuple_row) as curs,
            ):
                yield curs
        except (PersistenceError, psycopg.Error) as error:
            raise StoreUnavailable(_describe(error)) from None

    def commit_statement(self, statement: str, params: Sequence[Any] = ()
                         ) -> list[tuple[Any, ...]]:
        # Autocommit: the statement alone, no BEGIN and COMMIT of their own (three round
        # trips become one, and the CPU each costs the client).
        with self._connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor(row_factory=tuple_row) as curs:
                    curs.execute(statement, tuple(params), prepare=True)
                    return list(curs.fetchall()) if curs.description else []
            finally:
                conn.autocommit = False

    @contextmanager
    def sole(self, name: str) -> Iterator[bool]:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            got = bool(curs.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
            conn.commit()  # the lock is the session's: no transaction left open beside it
            try:
                yield got
            finally:
                if got:
                    curs.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    conn.commit()

    @contextmanager
    def pipelined_transaction(self) -> Iterator[Any]:
        with self._connection() as conn:
            with conn.pipeline(), _pipelined_transaction(conn) as commit:
                yield conn.cursor(row_factory=tuple_row)
            _committed(commit)

    def pipeline(self, tx: Any) -> AbstractContextManager[Any]:
        return cast(AbstractContextManager[Any], tx.connection.pipeline())

    def cursor_beside(self, tx: Any) -> Any:
        return tx.connection.cursor(row_factory=tuple_row)

    def sql(self, statement: str) -> str:
        return statement

    def execute(self, tx: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        if not _pipelined(tx):
            return super().execute(tx, statement, params)
        # A small append's steps run in pipeline mode, where a statement's outcome
        # arrives only at the next sync: a nested pipeline block syncs as it closes.
        with tx.connection.pipeline():
            tx.execute(statement, tuple(params))
        return tx

    def key_of(self, ledger: str) -> Any:
        return ledger_id(ledger)

    # -- reading -------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        try:
            with (
                self.datastore.get_connection() as conn,
                conn.cursor(row_factory=tuple_row) as curs,
            ):
                yield curs
        except (PersistenceError, psycopg.Error) as error:
            raise StoreUnavailable(_describe(error)) from None

    def head(self, ledger: str) -> Head:
        with self._reading() as curs:
            return self._head(curs, ledger_id(ledger))

    def read(self, ledger: str, after: int, limit: int) -> list[bytes]:
        with self._reading() as curs:
            curs.execute(
                "SELECT state FROM stored_events WHERE originator_id = %s"
                " AND originator_version > %s ORDER BY originator_version LIMIT %s",
                (ledger_id(ledger), after, limit),
                prepare=True,
            )
            return [bytes(row[0]) for row in curs.fetchall()]

    def stream(
        self, ledger: str, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        query = (
            "SELECT originator_version, state FROM stored_events WHERE originator_id = %s"
            " AND originator_version > %s"
        )
        params: list[Any] = [ledger_id(ledger), after]
        if upto is not None:
            query += " AND originator_version <= %s"
            params.append(upto)
        # Explicit ORDER BY: a plain sequential scan may start mid-table (NOTES.md).
        query += " ORDER BY originator_version"
        try:
            with (
                self.datastore.get_connection() as conn,
                conn.transaction(),
                conn.cursor(name="ledger_stream", row_factory=tuple_row, binary=True) as curs,
            ):
                curs.itersize = STREAM_BATCH
                curs.execute(query, params)
                while rows := curs.fetchmany(STREAM_BATCH):
                    yield from rows
        except (PersistenceError, psycopg.Error) as error:
            raise StoreUnavailable(_describe(error)) from None

    def ledgers(self) -> list[str]:
        with self._reading() as curs:
            curs.execute("SELECT name FROM ledgers ORDER BY name")
            return [row[0] for row in curs.fetchall()]

    def stream_ids(self) -> list[Any]:
        with self._reading() as curs:
            # A loose index scan: one index probe per stream, not a scan of every entry.
            curs.execute(
                "WITH RECURSIVE s AS ("
                " (SELECT originator_id FROM stored_events ORDER BY originator_id LIMIT 1)"
                " UNION ALL"
                " SELECT (SELECT e.originator_id FROM stored_events e"
                "  WHERE e.originator_id > s.originator_id ORDER BY e.originator_id LIMIT 1)"
                " FROM s WHERE s.originator_id IS NOT NULL)"
                " SELECT originator_id FROM s WHERE originator_id IS NOT NULL"
            )
            return [row[0] for row in curs.fetchall()]

    def first_entry(self, stream_id: Any) -> bytes | None:
        with self._reading() as curs:
            curs.execute(
                "SELECT state FROM stored_events WHERE originator_id = %s"
                " ORDER BY originator_version LIMIT 1",
                (stream_id,),
            )
            row = curs.fetchone()
            return bytes(row[0]) if row else None

    # -- following -------------------------------------------------------------------

    def reading(self) -> AbstractContextManager[Any]:
        return self._reading()

    def notifications(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        # The library's select_notifications, as plain binary rows: it builds a dict and a
        # Notification per row and sends bytea as hex text, a third of a follower's time.
        with self._reading() as curs:
            curs.execute(
                "SELECT notification_id, state FROM stored_events WHERE notification_id > %s"
                " ORDER BY notification_id LIMIT %s",
                (after, limit), prepare=True, binary=True,
            )
            return [(row[0], row[1]) for row in curs.fetchall()]

    def last_notification(self) -> int:
        with self._reading() as curs:
            curs.execute("SELECT max(notification_id) FROM stored_events")
            row = curs.fetchone()
            return int(row[0] or 0)

    def notification_of(self, ledger: str, seq: int) -> int | None:
        with self._reading() as curs:
            curs.execute(
                "SELECT notification_id FROM stored_events WHERE originator_id = %s"
                " AND originator_version = %s",
                (ledger_id(ledger), seq),
                prepare=True,
            )
            row = curs.fetchone()
            return None if row is None else int(row[0])

    @contextmanager
    def listener(self) -> Iterator[Callable[[float], bool]]:
        # Its own connection, outside the pool: it stays open for as long as a follower
        # runs, and a pooled one would be missed by the writers.
        try:
            conn = psycopg.connect(**self.conninfo, autocommit=True, connect_timeout=5)
        except psycopg.Error as error:
            raise StoreUnavailable(_describe(error)) from None
        try:
            conn.execute(SQL("LISTEN {0}").format(Identifier(self.recorder.channel_name)))

            def wait(timeout: float) -> bool:
                try:
                    return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
                except psycopg.Error as error:
                    raise StoreUnavailable(_describe(error)) from None

            yield wait
        finally:
            conn.close()

    def ping(self) -> None:
        with self._reading() as curs:
            curs.execute("SELECT 1")

    def close(self) -> None:
        self.datastore.close()


def _describe(error: BaseException) -> str:
    # The class name, not the message: driver messages can quote parameters (PHI).
    return f"database unavailable ({type(error).__name__})"
