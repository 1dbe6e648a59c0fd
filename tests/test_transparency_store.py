"""The Merkle tree in the database is the tree of the chain, whoever appends.

Every append stores the perfect subtrees its entries complete, in its own transaction;
these tests compare what the ``merkle_nodes`` table holds with the tree computed here from
the chain's entry hashes the slow, obvious way (RFC 9162's recursion and level-by-level
pairing, no product code), after appends from several threads and several processes, on
SQLite and PostgreSQL. Also: the fast frontier growth the store uses equals the pure
core's append, and migration 0005 builds the tree of a ledger written before it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alembic import command
from ledger.admission import Pending
from ledger.chain import EMPTY_HEAD, Head, extend
from ledger.entry import Entry
from ledger.migrate import alembic_config, migrate
from ledger.store import ledger_id, open_store
from ledger.store.base import (
    CATCH_UP_ENTRIES,
    STORED_LEVELS_FROM,
    StoreUnavailable,
    TreeIncomplete,
    caught_up,
)
from ledger.store.postgres import PIPELINED_EVENTS
from ledger.tlog import TransparencyLog
from ledger.transparency.tree import Frontier, root_of
from tests.support import accepted, make_event

LEDGER = "default"


def _h(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def expected_nodes(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree of level >= 4 (the table keeps those; smaller ones are
    hashed from the entries), pairing level by level."""
    nodes: dict[tuple[int, int], bytes] = {}
    level, row = 0, leaves
    while len(row) >= 2:
        row = [_h(row[2 * i], row[2 * i + 1]) for i in range(len(row) // 2)]
        level += 1
        if level >= STORED_LEVELS_FROM:
            nodes.update({(level, i): h for i, h in enumerate(row)})
    return nodes


def stored_nodes(url: str, ledger: str = LEDGER) -> dict[tuple[int, int], bytes]:
    """Every row of ``merkle_nodes`` for the ledger, through a raw connection."""
    lid = ledger_id(ledger)
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as pg:
            rows = pg.execute("SELECT level, idx, hash FROM merkle_nodes WHERE ledger_id = %s",
                              (lid,)).fetchall()
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = conn.execute("SELECT level, idx, hash FROM merkle_nodes WHERE ledger_id = ?",
                                (lid.hex,)).fetchall()
        finally:
            conn.close()
    return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}


def chain_leaves(url: str, ledger: str = LEDGER) -> list[bytes]:
    store = open_store(url)
    try:
        entries = [Entry.decode(data) for _, data in store.stream(ledger)]
    finally:
        store.close()
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    return [bytes.fromhex(e.hash) for e in entries]


def assert_tree_is_the_chain(url: str, ledger: str = LEDGER) -> int:
    """The table holds exactly the chain's subtrees, and every size's root is right."""
    leaves = chain_leaves(url, ledger)
    assert stored_nodes(url, ledger) == expected_nodes(leaves)
    store = open_store(url)
    try:
        tlog = TransparencyLog(store)
        for size in range(1, len(leaves) + 1):
            assert tlog.root(ledger, size) == root_of(leaves[:size]), size
    finally:
        store.close()
    return len(leaves)


def _pending(n: int, rng: random.Random | None = None) -> list[Pending]:
    events = [make_event(event_id=str(uuid.UUID(int=(rng or random).getrandbits(128),
                                                 version=4))) for _ in range(n)]
    return [Pending(e["event_id"], "fp-" + e["event_id"], e) for e in events]


def _append_many(url: str, seed: int, rounds: int) -> int:
    """Appends from one process (also the target of the spawned workers)."""
    rng = random.Random(seed)
    store = open_store(url)
    try:
        for _ in range(rounds):
            groups = {LEDGER: [_pending(rng.randint(1, 7), rng) for _ in range(rng.randint(1, 3))]}
            store.append(groups, datetime.now(UTC))
    finally:
        store.close()
    return rounds


def test_the_tree_is_the_chain_after_appends_from_threads_and_processes(
    database_url: str,
) -> None:
    migrate(database_url)
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        # Three processes, and three threads here, appending at once.
        results = pool.starmap_async(_append_many, [(database_url, seed, 15) for seed in (1, 2, 3)])
        threads = [threading.Thread(target=_append_many, args=(database_url, seed, 15))
                   for seed in (4, 5, 6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.get(timeout=300) == [15, 15, 15]
    n = assert_tree_is_the_chain(database_url)
    assert n > 90  # at least one entry per append


SIZES = (3, 1, 4, 1, 5, 9, 2, 6, 17, 30, 1)


def test_one_store_catches_its_edge_up_after_another_process_appended(
    database_url: str,
) -> None:
    """The cached edge is keyed by the head: when another writer moved the head, the edge
    is caught up over the entries appended since (read with the head), not read from the
    tree again -- and a stale edge never stores wrong nodes."""
    migrate(database_url)
    mine, theirs = open_store(database_url), open_store(database_url)
    loads = {id(mine): 0, id(theirs): 0}
    for store in (mine, theirs):
        def counting(tx: Any, lid: uuid.UUID, head: Any, store: Any = store,
                     load: Any = store._load_frontier) -> Any:
            loads[id(store)] += 1
            return load(tx, lid, head)
        # The ignore: a test's spy in place of a method, counting the tree reads.
        store._load_frontier = counting  # type: ignore[method-assign]
    try:
        for size in SIZES:
            mine.append({LEDGER: [_pending(size)]}, datetime.now(UTC))
            theirs.append({LEDGER: [_pending(size + 1)]}, datetime.now(UTC))
    finally:
        mine.close()
        theirs.close()
    assert assert_tree_is_the_chain(database_url) == 2 * sum(SIZES) + len(SIZES)
    # Each read the edge once, on its first append (an empty edge for the first of them).
    assert loads == {id(mine): 1, id(theirs): 1}


def test_an_edge_too_far_behind_is_read_from_the_tree(database_url: str) -> None:
    """More than CATCH_UP_ENTRIES appended elsewhere: the edge comes from the tree."""
    migrate(database_url)
    mine, theirs = open_store(database_url), open_store(database_url)
    loads: list[int] = []
    load = mine._load_frontier

    def counting(tx: Any, lid: uuid.UUID, head: Any) -> Any:
        loads.append(head.seq)
        return load(tx, lid, head)

    mine._load_frontier = counting  # type: ignore[method-assign]  # a spy: the tree reads
    try:
        mine.append({LEDGER: [_pending(5)]}, datetime.now(UTC))
        theirs.append({LEDGER: [_pending(CATCH_UP_ENTRIES + 1)]}, datetime.now(UTC))
        mine.append({LEDGER: [_pending(3)]}, datetime.now(UTC))
        theirs.append({LEDGER: [_pending(CATCH_UP_ENTRIES)]}, datetime.now(UTC))
        mine.append({LEDGER: [_pending(2)]}, datetime.now(UTC))
    finally:
        mine.close()
        theirs.close()
    far = 5 + CATCH_UP_ENTRIES + 1
    assert loads == [0, far]  # the first append, then the one too far behind; not the last
    assert assert_tree_is_the_chain(database_url) == far + 3 + CATCH_UP_ENTRIES + 2


def test_small_and_large_groups_write_the_same_ledger(database_url: str) -> None:
    """On PostgreSQL a group of up to PIPELINED_EVENTS is written by INSERTs in a
    pipeline and a larger one by COPY; SQLite has one way. Groups on both sides of the
    line, in turn, give one chain, one tree, and event ids that answer every re-post
    with its first receipt."""
    migrate(database_url)
    sizes = (1, PIPELINED_EVENTS + 1, 5, PIPELINED_EVENTS, 2 * PIPELINED_EVENTS, 40, 3)
    store = open_store(database_url)
    try:
        posted = []
        for size in sizes:
            group = _pending(size)
            [outcome] = store.append({LEDGER: [group]}, datetime.now(UTC))[LEDGER]
            first = accepted(outcome)
            assert first.created
            posted.append((group, first.receipts))
        for group, receipts in posted:  # answered from ledger_event_ids, writing nothing
            [outcome] = store.append({LEDGER: [group]}, datetime.now(UTC))[LEDGER]
            again = accepted(outcome)
            assert not again.created
            assert again.receipts == receipts
    finally:
        store.close()
    assert assert_tree_is_the_chain(database_url) == sum(sizes)


def test_a_step_of_a_small_append_sees_its_statements_outcome(database_url: str) -> None:
    """A ``before`` step (an identity's change, a shred) runs inside the append's
    transaction; through ``store.execute`` it sees each statement's row count even where
    the append pipelines its statements, and what it raises rolls the append back."""
    migrate(database_url)
    store = open_store(database_url)
    counts: list[int] = []

    def step(tx: Any, moved: int) -> None:
        store.execute(tx, "INSERT INTO key_shreds (ledger, shreds) VALUES (%s, 0)"
                      " ON CONFLICT (ledger) DO NOTHING", (LEDGER,))
        cursor = store.execute(tx, "UPDATE key_shreds SET shreds = shreds + 1"
                               " WHERE ledger = %s AND shreds = %s", (LEDGER, moved))
        counts.append(cursor.rowcount)
        if cursor.rowcount != 1:
            raise RuntimeError("raced")

    try:
        store.append({LEDGER: [_pending(2)]}, datetime.now(UTC),
                     before=lambda tx: step(tx, 0))
        with pytest.raises(RuntimeError):
            store.append({LEDGER: [_pending(2)]}, datetime.now(UTC),
                         before=lambda tx: step(tx, 0))
        assert store.head(LEDGER).seq == 2  # the refused append wrote nothing
    finally:
        store.close()
    assert counts == [1, 0]


def test_an_append_that_fails_leaves_nothing_and_its_connection_ready(
    database_url: str,
) -> None:
    """A small append runs its transaction block as statements of one pipeline (BEGIN
    with the reads, COMMIT with the rows): whether a step fails in Python or one of its
    statements fails in the database, nothing commits, and the one pooled connection
    goes back out of the block, so the next append chains on."""
    migrate(database_url)
    store = open_store(database_url, pool_size=1)

    def fails_in_python(tx: Any) -> None:
        tx.execute(store.sql("INSERT INTO key_shreds (ledger, shreds) VALUES (%s, 7)"),
                   (LEDGER,))
        raise RuntimeError("a step failed")

    def fails_in_the_database(tx: Any) -> None:
        tx.execute("SELECT shreds FROM no_such_table")

    try:
        store.append({LEDGER: [_pending(3)]}, datetime.now(UTC))
        with pytest.raises(RuntimeError):
            store.append({LEDGER: [_pending(2)]}, datetime.now(UTC), before=fails_in_python)
        with pytest.raises((StoreUnavailable, sqlite3.OperationalError)):
            store.append({LEDGER: [_pending(2)]}, datetime.now(UTC),
                         before=fails_in_the_database)
        assert store.head(LEDGER).seq == 3
        store.append({LEDGER: [_pending(2)]}, datetime.now(UTC))
        assert store.head(LEDGER).seq == 5
        with store.reading() as curs:
            curs.execute("SELECT COUNT(*) FROM key_shreds")
            assert curs.fetchone()[0] == 0  # the failed step's row was rolled back
    finally:
        store.close()
    assert assert_tree_is_the_chain(database_url) == 5


def test_a_step_reads_its_own_rows_behind_the_appends_reads(database_url: str) -> None:
    """A ``before`` step's reads go out behind the append's lock and reads (one round
    trip on PostgreSQL, where they share a pipeline) and fetch their own rows, in a
    small append and a large one. (That they do under contention, when the lock's own
    result arrives late, is what test_four_servers_share_one_postgres_chain caught.)"""
    migrate(database_url)
    store = open_store(database_url)
    seen: list[Any] = []

    def step(tx: Any) -> None:
        tx.execute(store.sql("SELECT name FROM ledgers WHERE name <> %s"), ("-",))
        seen.append([tuple(row) for row in tx.fetchall()])
        tx.execute("SELECT 41 + 1")
        seen.append(tuple(tx.fetchone()))

    try:
        store.append({LEDGER: [_pending(1)]}, datetime.now(UTC))
        store.append({LEDGER: [_pending(2)]}, datetime.now(UTC), before=step)
        store.append({LEDGER: [_pending(PIPELINED_EVENTS + 1)]}, datetime.now(UTC),
                     before=step)
    finally:
        store.close()
    assert seen == [[(LEDGER,)], (42,)] * 2


def test_two_ledgers_have_two_trees(database_url: str) -> None:
    migrate(database_url)
    store = open_store(database_url)
    try:
        for _ in range(12):
            store.append({LEDGER: [_pending(3)], "other": [_pending(2)]}, datetime.now(UTC))
    finally:
        store.close()
    assert assert_tree_is_the_chain(database_url, LEDGER) == 36
    assert assert_tree_is_the_chain(database_url, "other") == 24


def test_a_ledger_appended_without_the_tree_refuses_to_grow_one(database_url: str) -> None:
    """LEDGER_UNSAFE_NO_TREE (benchmarks only) leaves the table without the edge: a later
    append with the tree fails and writes nothing, rather than store a wrong tree."""
    migrate(database_url)
    store = open_store(database_url, maintain_tree=False)
    try:
        store.append({LEDGER: [_pending(19)]}, datetime.now(UTC))
    finally:
        store.close()
    assert stored_nodes(database_url) == {}
    store = open_store(database_url)
    try:
        # 19 = 16 + 3: the edge needs the subtree of the first 16, never stored.
        with pytest.raises(TreeIncomplete):
            store.append({LEDGER: [_pending(2)]}, datetime.now(UTC))
        assert store.head(LEDGER).seq == 19
    finally:
        store.close()


def test_migration_0005_builds_the_tree_of_an_existing_ledger(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "0004")
    store = open_store(database_url, maintain_tree=False)
    try:
        for size in (5, 8, 1, 7, 40):
            store.append({LEDGER: [_pending(size)]}, datetime.now(UTC))
    finally:
        store.close()
    migrate(database_url)
    assert assert_tree_is_the_chain(database_url) == 61
    store = open_store(database_url)  # and appends go on from the migrated tree
    try:
        store.append({LEDGER: [_pending(6)]}, datetime.now(UTC))
    finally:
        store.close()
    assert assert_tree_is_the_chain(database_url) == 67


# -- the pure growth the store uses -------------------------------------------------------


def _leaves(n: int, start: int = 0) -> list[bytes]:
    return [hashlib.sha256(b"\x00leaf %d" % i).digest() for i in range(start, start + n)]


@given(st.lists(st.integers(0, 40), max_size=8), st.integers(0, 3))
def test_grow_keeps_what_append_creates_from_its_level(batches: list[int], keep: int) -> None:
    slow, fast = Frontier(), Frontier()
    done = 0
    for n in batches:
        leaves = _leaves(n, done)
        slow, created = slow.append(leaves)
        fast, kept = fast.grow(leaves, keep)
        assert fast == slow
        assert kept == [c for c in created if c.level >= keep]
        done += n
    assert fast.root() == root_of(_leaves(done))


@given(st.integers(0, 6), st.integers(0, 200), st.data())
def test_extend_joins_aligned_trees(exponent: int, blocks: int, data: Any) -> None:
    """A tree of k * 2^e leaves followed by one of at most 2^e is the tree of both."""
    left_size = blocks * (1 << exponent)
    right_size = data.draw(st.integers(0, 1 << exponent))
    leaves = _leaves(left_size + right_size)
    left = Frontier().append(leaves[:left_size])[0]
    right = Frontier().append(leaves[left_size:])[0]
    joined = left.extend(right)
    assert joined == Frontier().append(leaves)[0]
    assert joined.root() == root_of(leaves)


def test_extend_refuses_an_unaligned_join() -> None:
    left = Frontier().append(_leaves(3))[0]
    right = Frontier().append(_leaves(2, 3))[0]
    with pytest.raises(ValueError, match="unaligned"):
        left.extend(right)


@given(st.integers(1, 40), st.integers(1, 40))
def test_an_edge_caught_up_over_the_entries_since_is_the_edge_at_the_head(
    before: int, since: int
) -> None:
    entries = extend(EMPTY_HEAD, LEDGER, [make_event() for _ in range(before + since)],
                     "2026-11-27T00:00:00Z")
    leaves = [bytes.fromhex(e.hash) for e in entries]
    edge = Frontier().grow(leaves[:before])[0]
    states = [(e.seq, e.encode()) for e in entries[before:]]
    head = Head.of(entries[-1])
    assert caught_up(edge, entries[before - 1].hash, states, head) == Frontier().grow(leaves)[0]
    # Anything but exactly the chain from the edge to the head is refused, never guessed:
    other = extend(EMPTY_HEAD, LEDGER, [make_event() for _ in range(before + since)],
                   "2026-11-27T00:00:00Z")
    assert caught_up(edge, entries[before - 1].hash,
                     [(e.seq, e.encode()) for e in other[before:]], head) is None
    assert caught_up(edge, entries[before - 1].hash, states,
                     Head(head.seq + 1, head.hash, head.recorded_at)) is None
    if since > 2:
        assert caught_up(edge, entries[before - 1].hash, states[:1] + states[2:], head) is None
