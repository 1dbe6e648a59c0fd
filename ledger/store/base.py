"""What every ledger store does, whatever the database behind it."""

from __future__ import annotations

import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any, NamedTuple

from eventsourcing.persistence import ApplicationRecorder

from ledger.admission import Outcome, Pending, Recorded, chain_plan, outcomes, plan_admission
from ledger.chain import EMPTY_HEAD, Head
from ledger.entry import Entry, format_recorded_at
from ledger.transparency.tree import Frontier, Node, SubtreeHash, node_hash, range_nodes

LEDGER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LEDGER_NAMESPACE = uuid.UUID("5f0c3e1e-8d57-4c4e-9a55-0c8f1a3f6b21")
ENTRY_TOPIC = "ledger.entry:Entry"


# The lowest level of the Merkle tree kept in ``merkle_nodes``. Each level stored costs
# a row per 2^level entries in every append: levels 1-3 would be seven rows for every
# eight entries, and the tree would cost ingest about 17% instead of a few percent. The
# subtrees below this level that a proof needs lie in at most two runs of 16 consecutive
# entries (around the leaf, at the tree's edge): read and hashed in the same round trip as
# the stored nodes.
STORED_LEVELS_FROM = 4


# How far behind its head a process's cached tree edge may be and still be caught up from
# the entries appended since (read with the head, in the same round trip) rather than read
# again from the tree: while two server processes take turns at the lock, each finds the
# other's last group (a page of history records ~30 reads) on top of its own edge.
CATCH_UP_ENTRIES = 128


class Snapshot(NamedTuple):
    """What an append reads of a chain under the write lock."""

    head: Head
    recorded: dict[str, Recorded]
    # (seq, stored entry) after the head this process last appended at, in seq order, up
    # to CATCH_UP_ENTRIES of them: None where it holds no edge of this chain.
    since: list[tuple[int, bytes]] | None = None


class TreeIncomplete(Exception):
    """The Merkle tree table lacks a node the chain says it must hold (it was appended
    without the tree, or rows were removed); nothing is written until it is repaired."""


class StoreUnavailable(Exception):
    """The database cannot be reached or refused the transaction; nothing was written
    (or, if the commit itself was lost, a retry with the same event ids is answered from
    the ledger)."""


def ledger_id(name: str) -> uuid.UUID:
    """The stream id of a ledger: stable, derived from its name."""
    if not LEDGER_NAME.fullmatch(name):
        raise ValueError("a ledger name is 1-63 lower-case letters, digits, '-' or '_'")
    return uuid.uuid5(_LEDGER_NAMESPACE, name)


Submission = Sequence[Pending]


class LedgerStore(ABC):
    """An append-only home for chains of entries, and the Merkle tree over each chain.

    Guarantees: :meth:`append` commits a whole group of submissions in one transaction or
    nothing; while it runs no other writer (thread or process) appends to the same
    store, so every chain stays gapless and fork-free; reads never see a partly written
    group. The same transaction stores every perfect subtree of level
    :data:`STORED_LEVELS_FROM` and up the new entries complete (table ``merkle_nodes``;
    smaller ones are hashed from the entries, whose ``hash`` is the leaf hash), so the
    tree always covers exactly the chain: :meth:`subtrees` serves any tree size up to the
    head.
    """

    dialect: str
    # The eventsourcing recorder each backend opens on its database.
    recorder: ApplicationRecorder
    # Off only where a benchmark measures what the tree costs (LEDGER_UNSAFE_NO_TREE): a
    # ledger appended without it has no proofs and no checkpoints, ever.
    maintain_tree: bool = True
    # The LEDGER_DATABASE_URL it was opened from: other processes open the same store.
    database_url: str = ""

    def __init__(self) -> None:
        # Each ledger's tree edge as of the head it was computed at (seq, hash): reused
        # while no other process appended, read again from the table when one did.
        self._frontiers: dict[uuid.UUID, tuple[int, str, Frontier]] = {}

    # -- writing -------------------------------------------------------------------

    def append(
        self,
        groups: Mapping[str, Sequence[Submission]],
        now: datetime,
        *,
        before: Callable[[Any], Mapping[str, Sequence[Submission]] | None] | None = None,
    ) -> dict[str, list[Outcome]]:
        """Admit and chain each ledger's submissions, all in one transaction.

        ``before(cursor)`` runs first in the same transaction: a change that must commit
        together with the entries recording it (crypto-shredding a patient). What it
        returns, if anything, replaces those ledgers' submissions (the same events, their
        stored forms settled under the write lock); ``groups`` itself is never changed."""
        recorded_at = format_recorded_at(now)
        results: dict[str, list[Outcome]] = {}
        wanted = {
            ledger: (ledger_id(ledger), list({p.event_id for s in submissions for p in s}))
            for ledger, submissions in groups.items()
        }
        grown: dict[uuid.UUID, tuple[int, str, Frontier]] = {}
        settled: dict[str, Sequence[Submission]] = {}

        def step(tx: Any) -> None:
            assert before is not None
            settled.update(before(tx) or {})

        with self._begin(wanted, step if before is not None else None) as (tx, snapshots):
            # ``before`` has run by now (under the lock, ahead of the snapshots' reads).
            for ledger, submissions in {**groups, **settled}.items():
                lid = wanted[ledger][0]
                head, recorded, since = snapshots[ledger]
                plan = plan_admission(submissions, recorded)
                entries = chain_plan(plan, head, ledger, recorded_at)
                if entries:
                    if head.seq == 0:
                        self._register_ledger(tx, ledger, lid, recorded_at)
                    self._insert(tx, lid, entries, plan.new)
                    if self.maintain_tree:
                        grown[lid] = self._grow_tree(tx, lid, head, entries, since)
                replayed = self._entries_at(tx, lid, sorted(plan.replayed_seqs()))
                results[ledger] = outcomes(plan, entries, replayed)
        self._frontiers.update(grown)  # committed: the new edges are the heads' edges
        return results

    def _grow_tree(
        self, tx: Any, lid: uuid.UUID, head: Head, entries: Sequence[Entry],
        since: Sequence[tuple[int, bytes]] | None = None,
    ) -> tuple[int, str, Frontier]:
        """Store the subtrees ``entries`` complete, under the write lock: the edge of the
        tree at ``head`` is all it needs (at most log2(n) hashes)."""
        frontier = self._edge_at(tx, lid, head, since)
        frontier, created = frontier.grow([bytes.fromhex(e.hash) for e in entries],
                                          STORED_LEVELS_FROM)
        if created:
            self._insert_nodes(tx, lid, created)
        return frontier.size, entries[-1].hash, frontier

    def _edge_at(
        self, tx: Any, lid: uuid.UUID, head: Head, since: Sequence[tuple[int, bytes]] | None
    ) -> Frontier:
        """The tree's edge at ``head``: the one this process left, caught up over what
        other processes appended ``since``, or else read from the tables."""
        cached = self._frontiers.get(lid)
        if cached is not None:
            seq, digest, frontier = cached
            if (seq, digest) == (head.seq, head.hash):
                return frontier
            if since:
                caught = caught_up(frontier, digest, since, head)
                if caught is not None:
                    return caught
        return self._load_frontier(tx, lid, head)

    def _load_frontier(self, tx: Any, lid: uuid.UUID, head: Head) -> Frontier:
        nodes = range_nodes(0, head.seq) if head.seq else []
        found = self._subtrees(tx, lid, nodes)
        try:
            return Frontier(head.seq, tuple(found[n] for n in nodes))
        except KeyError:
            raise TreeIncomplete(
                f"the Merkle tree of a ledger lacks nodes of its edge at seq {head.seq}"
            ) from None

    def _subtrees(self, curs: Any, lid: uuid.UUID, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """Stored nodes from ``merkle_nodes``; the small ones hashed from their entries."""
        wanted = list(dict.fromkeys(nodes))
        small = [n for n in wanted if n.level < STORED_LEVELS_FROM]
        large = [n for n in wanted if n.level >= STORED_LEVELS_FROM]
        seqs = sorted({seq for n in small for seq in range(n.start + 1, n.end + 1)})
        found, leaves = self._select_tree(curs, lid, large, seqs)
        if small:
            for node in small:
                covered = range(node.start + 1, node.end + 1)
                if any(seq not in leaves for seq in covered):
                    continue  # not (yet) in the tree
                row = [leaves[seq] for seq in covered]
                while len(row) > 1:
                    row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
                found[node] = row[0]
        return found

    def _select_tree(self, curs: Any, lid: uuid.UUID, nodes: Sequence[Node],
                     seqs: Sequence[int]) -> tuple[dict[Node, bytes], dict[int, bytes]]:
        """Stored ``nodes`` and the hashes of the entries at ``seqs`` (PostgreSQL sends
        both queries in one round trip)."""
        found = self._select_nodes(curs, lid, nodes) if nodes else {}
        return found, self._select_leaves(curs, lid, seqs) if seqs else {}

    @abstractmethod
    def _insert_nodes(self, tx: Any, lid: uuid.UUID, nodes: Sequence[SubtreeHash]) -> None:
        """Write new ``merkle_nodes`` rows (level >= STORED_LEVELS_FROM) in the append's
        transaction."""

    @abstractmethod
    def _select_nodes(self, curs: Any, lid: uuid.UUID, nodes: Sequence[Node]) -> dict[Node, bytes]:
        """The stored hashes of ``nodes`` (all of level >= STORED_LEVELS_FROM) that exist."""

    @abstractmethod
    def _select_leaves(self, curs: Any, lid: uuid.UUID, seqs: Sequence[int]) -> dict[int, bytes]:
        """``seq -> entry hash`` (raw bytes) for the entries at ``seqs`` that exist."""

    def subtrees(self, ledger: str, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """The hashes of perfect subtrees of ``ledger``'s tree, read in one go: the large
        ones from ``merkle_nodes`` (one index probe each), those below
        :data:`STORED_LEVELS_FROM` hashed from the at most 2^(STORED_LEVELS_FROM - 1)
        entries each covers (one query for all). A subtree not (yet) in the tree is absent
        from the answer."""
        with self.reading() as curs:
            return self._subtrees(curs, ledger_id(ledger), nodes)

    @abstractmethod
    def _write_transaction(self) -> AbstractContextManager[Any]:
        """A transaction holding the store's write lock, committed on a clean exit."""

    @contextmanager
    def _begin(
        self, wanted: Mapping[str, tuple[uuid.UUID, list[str]]],
        before: Callable[[Any], None] | None = None,
    ) -> Iterator[tuple[Any, dict[str, Snapshot]]]:
        """Open the write transaction, run ``before`` in it, and take, under its lock,
        each wanted ledger's :class:`Snapshot`."""
        with self._write_transaction() as tx:
            if before is not None:
                before(tx)
            yield tx, {
                ledger: self._snapshot(tx, lid, event_ids)
                for ledger, (lid, event_ids) in wanted.items()
            }

    def _snapshot(self, tx: Any, lid: uuid.UUID, event_ids: list[str]) -> Snapshot:
        """The chain's head, the already recorded ids among ``event_ids`` and the entries
        after this process's edge of the tree, read under the write lock."""
        cached = self._frontiers.get(lid) if self.maintain_tree else None
        since = None if cached is None else self._states_after(tx, lid, cached[0])
        return Snapshot(self._head(tx, lid), self._recorded(tx, lid, event_ids), since)

    @abstractmethod
    def _head(self, tx: Any, lid: uuid.UUID) -> Head: ...

    @abstractmethod
    def _recorded(self, tx: Any, lid: uuid.UUID, event_ids: list[str]) -> dict[str, Recorded]:
        ...

    @abstractmethod
    def _states_after(self, tx: Any, lid: uuid.UUID, seq: int) -> list[tuple[int, bytes]]:
        """``(seq, stored entry)`` of the first :data:`CATCH_UP_ENTRIES` entries after
        ``seq``, in order."""

    @abstractmethod
    def _insert(
        self, tx: Any, lid: uuid.UUID, entries: Sequence[Entry], pending: Sequence[Pending]
    ) -> None: ...

    @abstractmethod
    def _entries_at(self, tx: Any, lid: uuid.UUID, seqs: list[int]) -> dict[int, Entry]: ...

    @abstractmethod
    def _register_ledger(self, tx: Any, name: str, lid: uuid.UUID, created_at: str) -> None:
        ...

    # -- other tables ----------------------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """A plain transaction (no ledger lock) for the store's other tables, committed
        on a clean exit. Queries use ``%s`` placeholders (see :meth:`sql`)."""

    def commit_statement(self, statement: str, params: Sequence[Any] = ()
                         ) -> list[tuple[Any, ...]]:
        """Run one statement (``%s`` placeholders) as a transaction of its own, committed
        when this returns; the rows it returns (``RETURNING``), if any. PostgreSQL: one
        round trip."""
        with self.transaction() as tx:
            cursor = self.execute(tx, statement, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def sole(self, name: str) -> AbstractContextManager[bool]:
        """Whether this process alone runs the block named ``name`` among the processes
        sharing the database (True: it holds the lock until the block ends; False: another
        does, and this one should leave the work to it). PostgreSQL: a session advisory
        lock, released when its holder ends the block or dies. Elsewhere always True: a
        SQLite file is served by the processes of one host, and the work guarded this way
        must be safe to do twice."""
        return nullcontext(True)

    def pipelined_transaction(self) -> AbstractContextManager[Any]:
        """:meth:`transaction`, on PostgreSQL sent with its BEGIN and COMMIT as one
        pipeline: one round trip, at the block's end, where :meth:`transaction` takes one
        per statement. So a statement's result is read *after* the block, from a cursor
        of its own (:meth:`cursor_beside`). Elsewhere: :meth:`transaction` (there, read
        results inside the block)."""
        return self.transaction()

    def pipeline(self, tx: Any) -> AbstractContextManager[Any]:
        """A block whose statements on ``tx``'s connection go to the database together
        where it pipelines (PostgreSQL: one round trip, at the first fetch); elsewhere
        each runs as it is issued. Each statement whose result is read needs a cursor of
        its own (:meth:`cursor_beside`): a result is read from the cursor that ran it."""
        return nullcontext()

    @abstractmethod
    def cursor_beside(self, tx: Any) -> Any:
        """Another cursor on ``tx``'s connection, giving rows as tuples."""

    @abstractmethod
    def sql(self, statement: str) -> str:
        """``statement`` in this database's placeholder style."""

    def execute(self, tx: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        """Run ``statement`` (``%s`` placeholders) in ``tx``; the cursor comes back with
        this statement's outcome in hand -- ``rowcount`` included -- wherever it runs,
        a step of an append (``before``) as well."""
        tx.execute(self.sql(statement), tuple(params))
        return tx

    @abstractmethod
    def key_of(self, ledger: str) -> Any:
        """The ledger's stream id as this database stores it."""

    # -- reading -------------------------------------------------------------------

    @abstractmethod
    def head(self, ledger: str) -> Head:
        """The newest entry of ``ledger`` (seq 0 when it is empty)."""

    @abstractmethod
    def read(self, ledger: str, after: int, limit: int) -> list[bytes]:
        """Up to ``limit`` stored entries with seq > ``after``, in seq order."""

    @abstractmethod
    def stream(
        self, ledger: str, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """Every ``(position, stored bytes)`` after ``after`` in seq order, streamed."""

    def entries_at(self, ledger: str, seqs: Sequence[int]) -> dict[int, Entry]:
        """The stored entries of ``ledger`` at ``seqs`` (those that exist), by seq."""
        if not seqs:
            return {}
        with self.transaction() as tx:
            return self._entries_at(tx, ledger_id(ledger), list(seqs))

    def stored_at(self, ledger: str, seqs: Sequence[int]) -> dict[int, bytes]:
        """The stored bytes (canonical JSON) of ``ledger``'s entries at ``seqs``, by seq,
        undecoded: for readers that need one member of many entries."""
        if not seqs:
            return {}
        with self.transaction() as tx:
            return self._stored_at(tx, ledger_id(ledger), list(seqs))

    def _stored_at(self, tx: Any, lid: uuid.UUID, seqs: list[int]) -> dict[int, bytes]:
        return {seq: entry.encode() for seq, entry in self._entries_at(tx, lid, seqs).items()}

    @abstractmethod
    def ledgers(self) -> list[str]:
        """The names of every ledger that holds at least one entry."""

    @abstractmethod
    def stream_ids(self) -> list[Any]:
        """The stream id of every chain that holds entries, found from the entries
        themselves (not from the ``ledgers`` table, which an insider could edit)."""

    @abstractmethod
    def first_entry(self, stream_id: Any) -> bytes | None:
        """The stored bytes of a stream's lowest-seq entry."""

    def chains(self) -> tuple[list[str], list[str]]:
        """``(names, problems)``: every chain in the store, named by its own first
        entry, and any disagreement between the chains and the ``ledgers`` table."""
        names: list[str] = []
        problems: list[str] = []
        for stream in self.stream_ids():
            first = self.first_entry(stream)
            try:
                name = Entry.decode(first).ledger if first else None
                named = name is not None and str(self.key_of(name)) == str(stream)
            except (ValueError, KeyError, TypeError):
                named = False
            if not named or name is None:
                problems.append(f"stream {stream} holds entries that do not name their ledger")
                continue
            names.append(name)
        for listed in self.ledgers():
            if listed not in names:
                problems.append(f"ledger '{listed}' is listed but its chain holds no entries")
        return sorted(names), problems

    # -- following (the read side) -------------------------------------------------

    @abstractmethod
    def reading(self) -> AbstractContextManager[Any]:
        """A cursor for queries of the store's other tables (views), taking no write lock.
        Queries use ``%s`` placeholders (see :meth:`sql`)."""

    @abstractmethod
    def notifications(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` ``(notification id, stored entry)`` of every ledger, in commit
        order, with ids above ``after``. Ids increase with commit order (every append
        holds the write lock), so a follower that remembers the last id it applied
        misses nothing and sees nothing twice."""

    @abstractmethod
    def last_notification(self) -> int:
        """The id of the newest entry of any ledger (0 when there is none)."""

    @abstractmethod
    def notification_of(self, ledger: str, seq: int) -> int | None:
        """The notification id of one entry, or None when it is not recorded (yet)."""

    def listener(self) -> AbstractContextManager[Callable[[float], bool]]:
        """A ``wait(timeout)`` that returns when new entries may have been appended.

        Without notifications from the database (SQLite) it simply sleeps: followers poll."""
        return _polling()

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""

    @abstractmethod
    def close(self) -> None: ...

    # -- shared helpers ----------------------------------------------------------------

    @staticmethod
    def _head_of(row: tuple[int, bytes] | None) -> Head:
        if row is None:
            return EMPTY_HEAD
        entry = Entry.decode(bytes(row[1]))
        return Head(int(row[0]), entry.hash, entry.recorded_at)

    @staticmethod
    def _recorded_of(rows: Iterable[tuple[Any, int, str]]) -> dict[str, Recorded]:
        return {str(event_id): Recorded(int(seq), fp) for event_id, seq, fp in rows}


@contextmanager
def _polling() -> Iterator[Callable[[float], bool]]:
    def wait(timeout: float) -> bool:
        time.sleep(timeout)
        return True

    yield wait


def stored_hash(state: bytes) -> bytes:
    """The ``hash`` of a stored entry, as bytes, without parsing it: stored entries are
    canonical JSON, whose top-level ``hash`` member is the last ``,"hash":"`` (only
    scalars follow it, and a quote inside a string is always escaped)."""
    data = bytes(state)
    cut = data.rfind(b',"hash":"')
    return bytes.fromhex(data[cut + 9 : cut + 73].decode("ascii"))


def caught_up(
    edge: Frontier, digest: str, since: Sequence[tuple[int, bytes]], head: Head
) -> Frontier | None:
    """``edge`` (the tree's edge at the entry whose hash is ``digest``) grown by the
    stored entries ``since``, when they are exactly the chain from there to ``head``;
    None when they are not (too many to read, or not that chain's continuation)."""
    first, state = since[0]
    last, last_state = since[-1]
    if (first != edge.size + 1 or last != head.seq or len(since) != last - edge.size
            or stored_prev_hash(state) != digest or stored_hash(last_state).hex() != head.hash):
        return None
    # keep_from above any level: the other process stored the subtrees these completed.
    return edge.grow([stored_hash(s) for _, s in since], keep_from=64)[0]


def stored_prev_hash(state: bytes) -> str:
    """The ``prev_hash`` of a stored entry, without parsing it (see :func:`stored_hash`:
    ``prev_hash`` follows ``ledger``, which follows ``hash``, and only scalars follow)."""
    data = bytes(state)
    cut = data.rfind(b',"prev_hash":"')
    return data[cut + 14 : cut + 78].decode("ascii")


IN_CHUNK = 500  # below SQLite's limit on bound parameters, small enough for any planner


def select_in(
    tx: Any, statement: str, params: Sequence[Any], values: Sequence[Any], mark: str = "%s"
) -> list[Any]:
    """Rows of ``statement`` -- whose ``{marks}`` stands for an ``IN (...)`` list -- for
    all ``values``, queried a chunk at a time; ``params`` come before the list."""
    rows: list[Any] = []
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        tx.execute(statement.format(marks=",".join([mark] * len(chunk))), (*params, *chunk))
        rows.extend(tx.fetchall())
    return rows


def probe_each(tx: Any, select: str, key: str, keys: Sequence[str],
               params: Sequence[Any]) -> list[Any]:
    """Rows of ``select`` (``SELECT ... WHERE ...``, ``%s`` placeholders for ``params``)
    whose ``key`` is one of ``keys``, on PostgreSQL, in one statement.

    Spelled as one primary-key probe per key, so that no plan can be anything else:
    ``key = ANY(...)`` or ``key IN (...)`` on a table without statistics yet (a new
    deployment, a view being rebuilt, any server without autovacuum) was planned as a scan
    of every row against the whole list. The keys go as one binary array (text arrays are
    quoted through a regular expression per element): one prepared plan whatever their
    number."""
    send_probe_each(tx, select, key, keys, params)
    return list(tx.fetchall())


def send_probe_each(tx: Any, select: str, key: str, keys: Sequence[str],
                    params: Sequence[Any]) -> None:
    """:func:`probe_each`'s statement, its rows left on ``tx`` to fetch (in a pipeline:
    sent with the statements around it)."""
    tx.execute(
        "SELECT found.* FROM unnest(%b::text[]) AS wanted(key) CROSS JOIN LATERAL ("
        f"{select} AND {key} = wanted.key LIMIT 1) AS found",
        (list(keys), *params), prepare=True,
    )


def select_keyed(
    tx: Any, dialect: str, placeholders: Callable[[str], str], select: str, key: str,
    keys: Sequence[str], params: Sequence[Any],
) -> list[Any]:
    """Rows of ``select`` (``SELECT ... WHERE ...``, ``%s`` placeholders for ``params``)
    whose ``key`` is one of ``keys``: on PostgreSQL one probe per key (:func:`probe_each`),
    elsewhere an ``IN`` list a chunk at a time (:func:`select_in`). ``placeholders``
    turns ``%s`` into the database's own (a store's ``sql``)."""
    if dialect == "postgresql":
        return probe_each(tx, select, key, keys, params)
    return select_in(tx, placeholders(f"{select} AND {key} IN ({{marks}})"), params, keys,
                     placeholders("%s"))


def open_store(database_url: str, *, maintain_tree: bool = True, **options: Any) -> LedgerStore:
    """Open the store a ``LEDGER_DATABASE_URL`` names (the schema must be migrated)."""
    store: LedgerStore
    if database_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from ledger.store.postgres import PostgresLedgerStore

        store = PostgresLedgerStore.from_url(database_url, **options)
    elif database_url.startswith("sqlite:///"):
        from ledger.store.sqlite import SQLiteLedgerStore

        store = SQLiteLedgerStore.from_url(database_url, **options)
    else:
        raise ValueError("LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://")
    store.maintain_tree = maintain_tree
    store.database_url = database_url
    return store
