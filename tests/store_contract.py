"""What every :class:`~ledger.store.base.LedgerStore` must do, whatever the database.

One set of tests, written against the abstract store only, that each backend runs by
subclassing :class:`LedgerStoreContract` and saying how to make a fresh, migrated
database (tests/test_store_contract.py does it for SQLite and PostgreSQL): the pattern of
the eventsourcing library's ``ApplicationRecorderTestCase``, whose backends all pass one
suite. A new backend passes this file before anything else runs on it.

The promises, as ledger/store/base.py states them: an append commits a whole group or
nothing; event ids are idempotent per ledger (the same id and content answer the first
receipt, other content is refused); reads come in seq order; notification ids follow
commit order; the Merkle tree always covers exactly the chain; a reopened store reads
and continues the same chains; a closed or unreachable store answers
:class:`StoreUnavailable`; and writers racing on one ledger never fork it.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger.admission import Accepted, Conflicted, Outcome, Pending
from ledger.chain import EMPTY_HEAD, VerdictKind, check_chain
from ledger.entry import GENESIS_HASH, Entry
from ledger.migrate import migrate
from ledger.store import LedgerStore, StoreUnavailable, open_store
from ledger.transparency.tree import Node, root_of
from tests.support import make_event

A, B = "clinic-a", "clinic-b"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# How long an append holding the write lock waits for a rival that should be unable to
# commit meanwhile: elapses in full when the store is right.
PAUSE = 2.0


def pending(**overrides: Any) -> Pending:
    """One event ready for the store: its fingerprint names its content."""
    event = make_event(**overrides)
    return Pending(event["event_id"], f"fp-{event['event_id']}-{event['action']}", event)


def pendings(n: int) -> list[Pending]:
    return [pending() for _ in range(n)]


def accepted(outcome: Outcome) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


def entries(store: LedgerStore, ledger: str) -> list[Entry]:
    return [Entry.decode(data) for _, data in store.stream(ledger)]


def assert_intact(store: LedgerStore, ledger: str, length: int) -> None:
    """The chain is gapless, linked and correctly hashed through exactly ``length``."""
    verdict = check_chain(ledger, store.stream(ledger))
    assert (verdict.kind, verdict.verified_through) == (VerdictKind.INTACT, length), verdict
    assert store.head(ledger).seq == length


class LedgerStoreContract(ABC):
    """Every test takes ``store`` (open on a fresh migrated database) or ``url``."""

    # How long a follower waits for word of an append: a generous bound where the
    # database notifies (it only runs out on a lost notification), the poll where not.
    listen_timeout: float = 30.0

    @abstractmethod
    def database(self, tmp_path: Path) -> AbstractContextManager[str]:
        """A fresh, empty database (not yet migrated): its LEDGER_DATABASE_URL, dropped
        on exit."""

    @abstractmethod
    def unreachable_url(self, tmp_path: Path) -> str:
        """A URL of this backend that names a database the store cannot use."""

    @pytest.fixture
    def url(self, tmp_path: Path) -> Iterator[str]:
        with self.database(tmp_path) as url:
            migrate(url)
            yield url

    @pytest.fixture
    def store(self, url: str) -> Iterator[LedgerStore]:
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()

    # -- append and head -------------------------------------------------------------

    def test_a_new_store_is_empty(self, store: LedgerStore) -> None:
        assert store.head(A) == EMPTY_HEAD
        assert store.read(A, 0, 10) == []
        assert list(store.stream(A)) == []
        assert store.ledgers() == []
        assert store.chains() == ([], [])
        assert store.last_notification() == 0
        assert store.notifications(0, 10) == []
        assert store.notification_of(A, 1) is None
        store.ping()

    def test_an_append_chains_its_entries_onto_the_head(self, store: LedgerStore) -> None:
        first = pendings(3)
        [outcome] = store.append({A: [first]}, NOW)[A]
        receipts = accepted(outcome).receipts
        assert accepted(outcome).created
        assert [r.seq for r in receipts] == [1, 2, 3]
        assert [r.event_id for r in receipts] == [p.event_id for p in first]
        assert [r.prev_hash for r in receipts] == [GENESIS_HASH, receipts[0].hash,
                                                   receipts[1].hash]
        head = store.head(A)
        assert (head.seq, head.hash) == (3, receipts[-1].hash)
        assert head.recorded_at == receipts[-1].recorded_at

        [later] = store.append({A: [pendings(2)]}, NOW)[A]
        assert [r.seq for r in accepted(later).receipts] == [4, 5]
        assert accepted(later).receipts[0].prev_hash == head.hash
        assert_intact(store, A, 5)
        assert [e.event for e in entries(store, A)][:3] == [p.event for p in first]

    def test_one_append_commits_every_ledger_and_submission_of_its_group(
        self, store: LedgerStore
    ) -> None:
        results = store.append({A: [pendings(2), pendings(1)], B: [pendings(4)]}, NOW)
        assert [[r.seq for r in accepted(o).receipts] for o in results[A]] == [[1, 2], [3]]
        assert [[r.seq for r in accepted(o).receipts] for o in results[B]] == [[1, 2, 3, 4]]
        assert_intact(store, A, 3)
        assert_intact(store, B, 4)
        assert {e.ledger for e in entries(store, B)} == {B}
        assert store.ledgers() == [A, B]
        assert store.chains() == ([A, B], [])

    def test_a_failing_step_of_an_append_writes_nothing(self, store: LedgerStore) -> None:
        """``before`` runs in the append's transaction: what it wrote and the entries go
        together, or neither does."""
        def listing(tx: Any) -> None:
            store.execute(tx, "INSERT INTO ledgers (name, ledger_id, created_at)"
                              " VALUES (%s, %s, %s)", ("listed", store.key_of("listed"), "x"))

        def failing(tx: Any) -> None:
            listing(tx)
            raise RuntimeError("the step failed")

        with pytest.raises(RuntimeError, match="the step failed"):
            store.append({A: [pendings(2)]}, NOW, before=failing)
        assert store.head(A) == EMPTY_HEAD and store.ledgers() == []
        assert store.last_notification() == 0

        store.append({A: [pendings(2)]}, NOW, before=listing)
        assert store.ledgers() == [A, "listed"]
        assert store.chains() == ([A], ["ledger 'listed' is listed but its chain holds no"
                                        " entries"])
        assert_intact(store, A, 2)

    def test_a_ledger_name_is_checked_before_anything_is_written(
        self, store: LedgerStore
    ) -> None:
        with pytest.raises(ValueError, match="ledger name"):
            store.append({A: [pendings(1)], "Not A Name": [pendings(1)]}, NOW)
        assert store.head(A) == EMPTY_HEAD and store.ledgers() == []

    # -- idempotent event ids --------------------------------------------------------

    def test_the_same_event_id_with_the_same_content_answers_its_first_receipt(
        self, store: LedgerStore
    ) -> None:
        events = pendings(2)
        [first] = store.append({A: [events]}, NOW)[A]
        [again] = store.append({A: [[events[1], events[0]]]}, NOW)[A]
        assert not accepted(again).created
        assert accepted(again).receipts == accepted(first).receipts[::-1]
        # twice in one group, and beside a new event: one entry each
        extra = pending()
        both = store.append({A: [[extra, events[0]], [extra]]}, NOW)[A]
        assert [[r.seq for r in accepted(o).receipts] for o in both] == [[3, 1], [3]]
        assert_intact(store, A, 3)

    def test_the_same_event_id_with_other_content_is_refused_and_writes_nothing(
        self, store: LedgerStore
    ) -> None:
        taken = pending(action="read")
        store.append({A: [[taken]]}, NOW)
        head = store.head(A)
        other = Pending(taken.event_id, "fp-other-content", make_event(
            event_id=taken.event_id, action="update"))
        fresh = pending()
        refused, fine = store.append({A: [[fresh, other], pendings(1)]}, NOW)[A]
        assert refused == Conflicted([taken.event_id])
        # the refused submission wrote nothing, not even its fresh event; the other went in
        assert [r.seq for r in accepted(fine).receipts] == [2]
        assert store.head(A).seq == head.seq + 1
        assert fresh.event_id not in {e.event["event_id"] for e in entries(store, A)}
        assert_intact(store, A, 2)

    def test_event_ids_are_per_ledger(self, store: LedgerStore) -> None:
        """The same id in another ledger is that ledger's own event: no conflict, no
        replay of the other tenant's receipt."""
        event = pending()
        other = Pending(event.event_id, "fp-another-tenant", event.event)
        [in_a] = store.append({A: [pendings(1), [event]]}, NOW)[A][1:]
        [in_b] = store.append({B: [[other]]}, NOW)[B]
        assert accepted(in_a).receipts[0].seq == 2 and accepted(in_b).created
        assert (accepted(in_b).receipts[0].ledger, accepted(in_b).receipts[0].seq) == (B, 1)

    # -- reading ---------------------------------------------------------------------

    def test_reads_come_in_seq_order_and_within_bounds(self, store: LedgerStore) -> None:
        for n in (3, 1, 4, 1, 5):
            store.append({A: [pendings(n)], B: [pendings(1)]}, NOW)
        chain = entries(store, A)
        assert [e.seq for e in chain] == list(range(1, 15))
        assert [Entry.decode(d).seq for d in store.read(A, 2, 3)] == [3, 4, 5]
        assert store.read(A, 12, 10) == [chain[12].encode(), chain[13].encode()]
        assert store.read(A, 14, 10) == []
        assert [s for s, _ in store.stream(A, after=4, upto=7)] == [5, 6, 7]
        assert [s for s, _ in store.stream(B)] == [1, 2, 3, 4, 5]
        assert {s: e.hash for s, e in store.entries_at(A, [9, 2, 99]).items()} == {
            2: chain[1].hash, 9: chain[8].hash}
        assert store.stored_at(A, [14, 1]) == {1: chain[0].encode(), 14: chain[13].encode()}
        assert store.entries_at(A, []) == {} and store.stored_at(A, []) == {}

    def test_reading_after_reopening_and_appending_on(self, url: str) -> None:
        store = open_store(url)
        try:
            store.append({A: [pendings(20)]}, NOW)
            before = entries(store, A)
        finally:
            store.close()
        reopened = open_store(url)
        try:
            assert entries(reopened, A) == before
            assert reopened.head(A).hash == before[-1].hash
            [more] = reopened.append({A: [pendings(13)]}, NOW)[A]
            assert accepted(more).receipts[0].prev_hash == before[-1].hash
            assert_intact(reopened, A, 33)
            leaves = [bytes.fromhex(e.hash) for e in entries(reopened, A)]
            # the reopened store grew the same tree (its edge read back from the table)
            assert reopened.subtrees(A, [Node(5, 0)]) == {Node(5, 0): root_of(leaves[:32])}
        finally:
            reopened.close()

    # -- notifications ---------------------------------------------------------------

    def test_notification_ids_follow_commit_order_across_ledgers(
        self, store: LedgerStore
    ) -> None:
        order: list[tuple[str, int]] = []
        for ledger, n in ((A, 2), (B, 3), (A, 1), (B, 1)):
            [outcome] = store.append({ledger: [pendings(n)]}, NOW)[ledger]
            order += [(ledger, r.seq) for r in accepted(outcome).receipts]
        found = store.notifications(0, 100)
        ids = [i for i, _ in found]
        assert ids == sorted(set(ids)) and len(ids) == len(order)
        assert [(Entry.decode(d).ledger, Entry.decode(d).seq) for _, d in found] == order
        assert store.last_notification() == ids[-1]
        assert [store.notification_of(ledger, seq) for ledger, seq in order] == ids
        assert store.notification_of(A, 4) is None
        # paging: after an id, at most limit, nothing twice
        assert store.notifications(ids[2], 2) == found[3:5]
        assert store.notifications(ids[-1], 10) == []

    def test_a_listener_wakes_after_another_store_appended(self, url: str) -> None:
        """``wait`` returns True once entries may be new: at once where the database
        notifies (PostgreSQL), after its sleep where followers poll (SQLite)."""
        follower, writer = open_store(url), open_store(url)
        try:
            with follower.listener() as wait:
                writer.append({A: [pendings(1)]}, NOW)
                assert wait(self.listen_timeout) is True
        finally:
            follower.close()
            writer.close()

    # -- the other tables --------------------------------------------------------------

    def test_other_tables_commit_on_a_clean_exit_only(self, store: LedgerStore) -> None:
        insert = "INSERT INTO ledgers (name, ledger_id, created_at) VALUES (%s, %s, %s)"
        with pytest.raises(RuntimeError, match="undone"), store.transaction() as tx:
            store.execute(tx, insert, ("undone", store.key_of("undone"), "x"))
            raise RuntimeError("undone")
        with store.transaction() as tx:
            assert store.execute(tx, insert, ("kept", store.key_of("kept"), "x")).rowcount == 1
        with store.reading() as curs:
            curs.execute(store.sql("SELECT name FROM ledgers WHERE name = %s"), ("kept",))
            assert curs.fetchall() == [("kept",)]
        assert store.ledgers() == ["kept"]

    def test_a_read_inside_a_transaction_while_another_writer_waits(
        self, store: LedgerStore
    ) -> None:
        """A view opens a data key (a read) while it applies a batch (a transaction), and
        the writer's sealing thread asks for a transaction meanwhile: the read must not
        wait for the waiting writer, which waits for this transaction (on SQLite the pool
        let one thread at a time wait, and that was the writer: a deadlock that answered
        an ingest 503 after the pool's timeout)."""
        insert = "INSERT INTO ledgers (name, ledger_id, created_at) VALUES (%s, %s, %s)"
        asking, done = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def other_writer() -> None:
            asking.set()
            try:
                with store.transaction() as tx:
                    store.execute(tx, insert, ("second", store.key_of("second"), "x"))
            except BaseException as error:  # reported by the test below
                errors.append(error)
            done.set()

        with store.transaction() as tx:
            store.execute(tx, insert, ("first", store.key_of("first"), "x"))
            waiter = threading.Thread(target=other_writer, daemon=True)
            waiter.start()
            asking.wait()
            # Give the other writer time to queue behind this transaction: without that the
            # read below passes whatever the store does (it can never fail because of it).
            time.sleep(0.5)
            with store.reading() as curs:
                curs.execute(store.sql("SELECT count(*) FROM ledgers"))
                assert len(curs.fetchall()) == 1
        waiter.join(timeout=120)
        assert done.is_set() and errors == []
        assert store.ledgers() == ["first", "second"]

    # -- the Merkle tree -------------------------------------------------------------

    def test_subtrees_are_the_tree_of_the_chain(self, store: LedgerStore) -> None:
        for n in (5, 17, 1, 14):  # 37 entries, across stored and hashed levels
            store.append({A: [pendings(n)]}, NOW)
        leaves = [bytes.fromhex(e.hash) for e in entries(store, A)]
        wanted = [Node(0, 0), Node(0, 36), Node(2, 3), Node(3, 1), Node(4, 0), Node(4, 1),
                  Node(5, 0)]
        expected = {n: root_of(leaves[n.start:n.end]) for n in wanted}
        assert store.subtrees(A, wanted) == expected
        # beyond the head: not (yet) in the tree, so absent rather than wrong
        assert store.subtrees(A, [Node(0, 37), Node(4, 2), Node(6, 0)]) == {}
        assert store.subtrees(B, [Node(0, 0)]) == {}

    # -- an unusable store -----------------------------------------------------------

    def test_a_closed_store_is_unavailable(self, url: str) -> None:
        store = open_store(url)
        store.append({A: [pendings(1)]}, NOW)
        store.close()
        calls = [("ping", ()), ("head", (A,)), ("read", (A, 0, 1)), ("ledgers", ()),
                 ("last_notification", ()), ("notification_of", (A, 1)),
                 ("notifications", (0, 1))]
        for name, args in calls:
            with pytest.raises(StoreUnavailable):
                getattr(store, name)(*args)
        with pytest.raises(StoreUnavailable):
            list(store.stream(A))
        with pytest.raises(StoreUnavailable):
            store.append({A: [pendings(1)]}, NOW)
        reopened = open_store(url)
        try:
            assert_intact(reopened, A, 1)  # the refused append wrote nothing
        finally:
            reopened.close()

    def test_an_unreachable_store_is_unavailable(self, tmp_path: Path) -> None:
        try:
            store = open_store(self.unreachable_url(tmp_path))
        except StoreUnavailable:
            return  # refused at once: the same answer, earlier
        try:
            for call in (store.ping, lambda: store.head(A),
                         lambda: store.append({A: [pendings(1)]}, NOW)):
                with pytest.raises(StoreUnavailable) as raised:
                    call()
                assert str(raised.value).startswith("database unavailable")
        finally:
            store.close()

    # -- racing writers --------------------------------------------------------------

    def test_concurrent_appenders_never_fork_a_chain(self, url: str) -> None:
        """Writers with stores of their own (as separate processes have) and writers
        sharing one, all appending to the same ledgers at once: one gapless chain each,
        every event in it exactly once, notification order matching seq order."""
        writers, rounds = 6, 8
        stores = [open_store(url) for _ in range(writers // 2)]
        start = threading.Barrier(writers)
        errors: list[BaseException] = []
        sent: dict[str, list[str]] = {A: [], B: []}

        def write(store: LedgerStore, number: int) -> None:
            try:
                start.wait()
                for round_ in range(rounds):
                    groups = {A: [pendings(1 + (number + round_) % 3)], B: [pendings(1)]}
                    for ledger, subs in groups.items():
                        sent[ledger] += [p.event_id for s in subs for p in s]
                    store.append(groups, NOW)
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=write, args=(stores[k % len(stores)], k))
                   for k in range(writers)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            check = stores[0]
            for ledger in (A, B):
                chain = entries(check, ledger)
                assert_intact(check, ledger, len(sent[ledger]))
                assert sorted(e.event["event_id"] for e in chain) == sorted(sent[ledger])
                ids = [check.notification_of(ledger, e.seq) or 0 for e in chain]
                assert 0 not in ids and ids == sorted(ids)
        finally:
            for store in stores:
                store.close()

    def test_a_follower_never_finds_an_earlier_notification_committed_later(
        self, url: str
    ) -> None:
        """While one append has written its entries but not committed, no other append
        commits (every append holds the write lock): else a follower that read past the
        second's notification ids would never see the first's, lower ones (the hazard
        the eventsourcing library's NonInterleavingNotificationIDsBaseCase races for).

        The first append is held after its inserts until the second returns, or for
        ``PAUSE`` seconds: with the lock the pause runs out and the second commits after
        the first; only a missing lock lets the second return inside it."""
        size = 300  # above PostgreSQL's pipelined size: its inserts run before COMMIT
        first, second = open_store(url), open_store(url)
        inserted, second_done = threading.Event(), threading.Event()
        seen: list[list[tuple[int, bytes]]] = []
        errors: list[BaseException] = []
        insert = first._insert

        def pausing(tx: Any, lid: Any, new: Any, waiting: Any) -> None:
            insert(tx, lid, new, waiting)
            inserted.set()
            second_done.wait(PAUSE)

        first._insert = pausing  # type: ignore[method-assign,assignment]  # a pause, no mock

        def run(step: Any) -> None:
            try:
                step()
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)
                inserted.set()

        def append_second() -> None:
            inserted.wait()
            second.append({B: [pendings(size)]}, NOW)
            seen.append(second.notifications(0, 4 * size))
            second_done.set()

        threads = [threading.Thread(target=run, args=(step,)) for step in (
            lambda: first.append({A: [pendings(size)]}, NOW), append_second)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            final = second.notifications(0, 4 * size)
            assert len(final) == 2 * size
            assert seen[0] == final[: len(seen[0])], "an earlier id became visible later"
        finally:
            first.close()
            second.close()
