"""A bad event never fails a group (issue 17, finding 3): the group committer commits
around a submission the database refuses, so one caller's input never answers 503 to
another. On SQLite and PostgreSQL, with a real refusal by each, not a mock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from ledger.admission import Outcome, Pending
from ledger.migrate import migrate
from ledger.store import LedgerStore, open_store
from ledger.writer import GroupCommitWriter
from tests.support import accepted, make_event

LEDGERS = ("default", "other")


@pytest.fixture
def store(database_url: str) -> Iterator[LedgerStore]:
    migrate(database_url)
    opened = open_store(database_url)
    try:
        yield opened
    finally:
        opened.close()


def _valid(ledger: str) -> list[Pending]:
    event = make_event()
    return [Pending(event["event_id"], f"fp-{ledger}-{event['event_id']}", event)]


def _poison() -> list[Pending]:
    # An event id no backend can bind (a lone surrogate cannot be encoded as UTF-8):
    # validation refuses it at the door; here it is handed to the writer directly, as a
    # stand-in for anything the database refuses that validation let through.
    event = make_event(event_id="\ud800" + str(uuid.uuid4())[1:])
    return [Pending(event["event_id"], "fp-poison", event)]


def test_a_refused_submission_fails_alone_and_everyone_else_commits(
    store: LedgerStore,
) -> None:
    writer = GroupCommitWriter(store)
    # Callers on threads of their own submit while the writer is not yet running, so
    # every submission is in its queue, and in one group, once it starts: no clock.
    submitted = threading.Barrier(13)
    futures: dict[int, Future[Outcome]] = {}
    lock = threading.Lock()

    def caller(i: int) -> None:
        pending = _poison() if i == 6 else _valid(LEDGERS[i % 2])
        future = writer.submit(LEDGERS[i % 2], pending)
        with lock:
            futures[i] = future
        submitted.wait()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    submitted.wait()
    writer.start()
    try:
        poisoned = futures.pop(6)
        with pytest.raises(Exception):  # noqa: B017 - the poison's own failure, any kind
            poisoned.result(timeout=60)
        outcomes = {i: future.result(timeout=60) for i, future in futures.items()}
    finally:
        writer.stop()
        for thread in threads:
            thread.join()
    assert writer.stats.splits >= 1
    # Every other caller's event is committed, each ledger's chain gapless.
    for ledger in LEDGERS:
        seqs = sorted(accepted(o).receipts[0].seq for i, o in outcomes.items()
                      if LEDGERS[i % 2] == ledger)
        assert seqs == list(range(1, len(seqs) + 1))
        assert store.head(ledger).seq == len(seqs)
    assert len(outcomes) == 11


def test_a_group_without_fault_is_one_transaction(store: LedgerStore) -> None:
    writer = GroupCommitWriter(store)
    futures = [writer.submit("default", _valid("default")) for _ in range(8)]
    writer.start()
    try:
        assert ([accepted(f.result(timeout=60)).receipts[0].seq for f in futures]
                == list(range(1, 9)))
    finally:
        writer.stop()
    assert writer.stats.splits == 0 and writer.stats.transactions == 1


def test_a_submission_whose_caller_gave_up_is_committed_and_the_writer_goes_on(
    store: LedgerStore,
) -> None:
    """Its future cancelled before the writer answers it (an asyncio wait on it was
    cancelled): setting a cancelled future raises, and used to end the committer
    thread, so that every later submission waited for ever."""
    writer = GroupCommitWriter(store)
    given_up = writer.submit("default", _valid("default"))
    assert given_up.cancel()  # not started yet: the writer has not taken it
    writer.start()
    try:
        later = writer.submit("default", _valid("default")).result(timeout=60)
        refused = writer.submit("default", _poison())
        assert given_up.cancelled() and accepted(later).created
        with pytest.raises(Exception):  # noqa: B017 -- answered, not left waiting
            refused.result(timeout=60)
    finally:
        writer.stop()
    assert store.head("default").seq == 2  # the given-up submission is in the ledger too
