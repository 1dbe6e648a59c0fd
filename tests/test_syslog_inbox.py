"""The syslog inbox and the intake's settling, on SQLite and PostgreSQL: a held message is
durable and sealed at rest; settling makes each an entry or a dead letter exactly once,
however often it is settled again (a process that died between settling and releasing);
recovery settles what no settler has in hand, and leaves this process's own alone."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from api.auth.identities import Actor
from api.formats.syslog import syslog_message
from api.services import Services
from api.syslog.dead_letters import DeadLetters
from api.syslog.holding import GROUP_AT_MOST, Holding
from api.syslog.inbox import Arrival, Inbox
from api.syslog.intake import CONFLICT, RECOVER_AFTER, RECOVERY_LOCK, AtnaIntake, Sender
from api.syslog.service import intake_of
from ledger.crypto.envelope import EnvelopeError
from ledger.entry import Entry
from ledger.store import StoreUnavailable, open_store
from tests import atna_messages as msgs
from tests.support import fastapi_app


def _sender(svc: Services, name: str = "atna-sender") -> Sender:
    key = svc.access.identities.issue_key("default", ["ingest"], name=name,
                                          actor=Actor("test"), record=False)
    found = svc.access.identities.by_name(name)
    assert found is not None and key.key_id
    return Sender(found.id, found.ledger)


def _hold(intake: AtnaIntake, sender: Sender, *messages: bytes) -> list[int]:
    async def take() -> list[int]:
        return [await intake.take(sender, syslog_message(m)) for m in messages]
    return asyncio.run(take())


def _hold_earlier(intake: AtnaIntake, sender: Sender, *messages: bytes) -> list[int]:
    """Held a minute ago (by a process that then died): old enough for recovery."""
    clock = intake.clock
    intake.clock = lambda: clock() - timedelta(minutes=1)
    try:
        return _hold(intake, sender, *messages)
    finally:
        intake.clock = clock


def _entries(svc: Services) -> list[dict[str, Any]]:
    entries = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10_000)]
    return svc.protection.reveal_many("default", [e.event for e in entries])


def _raw_rows(svc: Services) -> list[bytes]:
    with svc.store.transaction() as tx:
        return [bytes(r[0]) for r in svc.store.execute(
            tx, "SELECT message FROM syslog_inbox ORDER BY id").fetchall()]


def test_a_held_message_is_durable_sealed_and_opens_only_in_its_row(svc: Services) -> None:
    intake, sender = intake_of(svc), _sender(svc)
    ids = _hold(intake, sender, msgs.dcm4che_patient_read(), msgs.login())
    assert ids[0] < ids[1] and intake.inbox.depth() == 2
    # Committed: another connection to the database sees both.
    other = open_store(svc.settings.database_url)
    try:
        held = Inbox(other, intake.inbox.ring).held()
    finally:
        other.close()
    assert [h.id for h in held] == ids
    assert [h.frame for h in held] == [syslog_message(msgs.dcm4che_patient_read()),
                                       syslog_message(msgs.login())]
    assert {(h.ledger, h.sender) for h in held} == {("default", sender.identity)}
    # Sealed at rest: no PHI in the stored bytes.
    assert intake.inbox.ring is not None
    assert all(msgs.PATIENT.encode() not in raw for raw in _raw_rows(svc))
    # Bound to its ledger and sender: moved to another sender's row, it does not open.
    with svc.store.transaction() as tx:
        svc.store.execute(tx, "UPDATE syslog_inbox SET sender = %s WHERE id = %s",
                          ("someone-else", ids[0]))
    assert [h.id for h in intake.inbox.held()] == [ids[1]]  # left out, not a stop
    assert intake.inbox.depth() == 2  # still there, for an operator
    intake.inbox.release(ids)
    assert intake.inbox.depth() == 0 and intake.inbox.held() == []


def test_many_held_at_once_keep_their_order(svc: Services) -> None:
    intake = intake_of(svc)
    frames = [syslog_message(m) for m in (msgs.login(), msgs.logout(), msgs.login_failed())]
    ids = intake.inbox.hold_many([Arrival("default", f"s{i}", f, "t")
                                  for i, f in enumerate(frames)])
    held = intake.inbox.held()
    assert [h.id for h in held] == ids and ids == sorted(ids)
    assert [(h.sender, h.frame) for h in held] == [(f"s{i}", f) for i, f in enumerate(frames)]


def test_held_pages_by_id(svc: Services) -> None:
    intake, sender = intake_of(svc), _sender(svc)
    ids = _hold(intake, sender, *(msgs.login() for _ in range(5)))
    assert [h.id for h in intake.inbox.held(ids[1], 2)] == ids[2:4]
    intake.inbox.release(ids[:2])
    assert [h.id for h in intake.inbox.held()] == ids[2:]


def test_settling_again_changes_nothing(svc: Services) -> None:
    """A process that died after settling and before releasing: its messages are settled
    again at restart, to an entry recorded once and one dead letter."""
    intake, sender = intake_of(svc), _sender(svc)
    intake.default_purpose = None  # the dcm4che read names no purpose: a dead letter
    good, bad = msgs.login(), msgs.dcm4che_patient_read()
    _hold(intake, sender, good, bad)
    assert intake.settle(intake.inbox.held()) == ["accepted", "dead"]
    assert intake.inbox.depth() == 0
    _hold(intake, sender, good, bad)  # as if never released
    assert intake.settle(intake.inbox.held()) == ["replayed", "dead"]
    assert len(_entries(svc)) == 1
    assert len(intake.dead_letters.letters()) == 1
    assert (intake.stats.accepted, intake.stats.replayed, intake.stats.dead) == (1, 1, 2)


def test_one_settling_holds_each_outcome_apart(svc: Services) -> None:
    """One group of many: a message sent twice is one entry; one that cannot be mapped,
    one the contract refuses and one whose event id is taken by another body do not stop
    the others."""
    intake, sender = intake_of(svc), _sender(svc)
    login, override = msgs.login(), msgs.emergency_override()
    forged = login.replace(b'AuditSourceID="ehr"', b'AuditSourceID="phi-ledger"')
    assert forged != login
    _hold(intake, sender, login, b"<AuditMessage/>", login, forged, override)
    outcomes = intake.settle(intake.inbox.held())
    assert outcomes == ["accepted", "dead", "replayed", "dead", "accepted"]
    assert [e["action"] for e in _entries(svc)] == ["login", "read"]
    reasons = sorted(letter.reason for letter in intake.dead_letters.letters())
    assert reasons[0].startswith("AuditMessage") and reasons[1].startswith("contract:")


def test_recovery_settles_what_no_settler_has_in_hand(svc: Services) -> None:
    intake, sender = intake_of(svc), _sender(svc)
    left = _hold_earlier(intake, sender, msgs.login(), msgs.logout())  # a dead process's

    async def scenario() -> list[int]:
        settler = asyncio.get_running_loop().create_task(intake.run_settler())
        try:
            while intake.inbox.depth():  # recovery at the settler's start
                await asyncio.sleep(0.01)
            # Held by this process while its settler runs: settled from memory.
            mine = await intake.take(sender, syslog_message(msgs.emergency_override()))
            while intake.stats.accepted < 3:
                await asyncio.sleep(0.01)
            return [mine]
        finally:
            settler.cancel()

    asyncio.run(scenario())
    assert intake.inbox.depth() == 0
    assert sorted(e["action"] for e in _entries(svc)) == ["login", "logout", "read"]
    assert intake.stats.accepted == 3 and intake.stats.replayed == 0 and left


def test_recovery_leaves_this_processs_own_and_yields_to_another(svc: Services) -> None:
    intake, sender = intake_of(svc), _sender(svc)
    first, second = _hold_earlier(intake, sender, msgs.login(), msgs.logout())
    intake._mine.add(second)  # in this process's settler's hands
    assert intake.recover() == 1
    assert [h.id for h in intake.inbox.held()] == [second]
    intake._mine.clear()
    if svc.store.dialect == "postgresql":
        # Another process is recovering: this one leaves it alone.
        other = open_store(svc.settings.database_url)
        try:
            with other.sole(RECOVERY_LOCK) as alone:
                assert alone
                assert intake.recover() is None  # not done: another process is
        finally:
            other.close()
    assert intake.recover() == 1 and intake.inbox.depth() == 0
    assert intake.stats.accepted == 2 and first < second


def test_sole_is_one_process_at_a_time_on_postgres(postgres_url: str) -> None:
    """About PostgreSQL's advisory lock (on SQLite every process is told it is alone)."""
    from ledger.migrate import migrate

    migrate(postgres_url)
    one, two = open_store(postgres_url), open_store(postgres_url)
    try:
        with one.sole("x") as first:
            with two.sole("x") as second, two.sole("y") as other_name:
                assert (first, second, other_name) == (True, False, True)
            with one.sole("x") as again:  # a session lock: another session of one store
                assert not again
        with two.sole("x") as after:
            assert after
    finally:
        one.close()
        two.close()


def test_commit_statement_commits_and_answers_its_rows(database_url: str) -> None:
    from ledger.migrate import migrate

    migrate(database_url)
    store, other = open_store(database_url), open_store(database_url)
    try:
        rows = store.commit_statement(
            "INSERT INTO syslog_inbox (ledger, sender, received_at, message) VALUES"
            " (%s, %s, %s, %s), (%s, %s, %s, %s) RETURNING id, ledger",
            ("l", "s", "t", b"m", "k", "s", "t", b"n"))
        assert sorted(r[1] for r in rows) == ["k", "l"]
        assert [h.id for h in Inbox(other, None).held()] == sorted(r[0] for r in rows)
        assert store.commit_statement("DELETE FROM syslog_inbox WHERE ledger = %s",
                                      ("l",)) == []
        assert Inbox(other, None).depth() == 1
    finally:
        store.close()
        other.close()


def test_metrics_show_the_messages_held(client: TestClient) -> None:
    svc = fastapi_app(client.app).state.services
    intake, sender = intake_of(svc), _sender(svc)
    _hold(intake, sender, msgs.login(), msgs.logout())
    body = client.get("/metrics").text
    assert "phi_ledger_syslog_inbox 2.0" in body
    intake.settle(intake.inbox.held())
    assert "phi_ledger_syslog_inbox 0.0" in client.get("/metrics").text


def test_holding_holds_concurrent_arrivals_and_passes_on_a_store_failure(
        svc: Services) -> None:
    holding = Holding(Inbox(svc.store, None))
    arrivals = [Arrival("default", f"s{i}", syslog_message(msgs.login()), "t")
                for i in range(6)]

    async def hold_all(on: Holding) -> list[int]:
        return list(await asyncio.gather(*(on.hold(a) for a in arrivals)))

    try:
        ids = asyncio.run(hold_all(holding))
        holding.close()
        ids += asyncio.run(hold_all(holding))  # closed, it starts again when asked
    finally:
        holding.close()
    held = Inbox(svc.store, None).held()
    assert sorted(ids) == [h.id for h in held] and len(set(ids)) == 12
    assert {h.id: h.sender for h in held} == {i: a.sender for i, a in zip(
        ids, arrivals + arrivals, strict=True)}
    closed = open_store(svc.settings.database_url)
    closed.close()
    failing = Holding(Inbox(closed, None))
    try:
        with pytest.raises(StoreUnavailable):
            asyncio.run(hold_all(failing))
    finally:
        failing.close()


def test_a_message_the_mapping_chokes_on_is_a_dead_letter_not_a_stop(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """An input that makes the mapping raise what it never should (a bug) becomes a dead
    letter naming the error's type; the messages beside it are settled."""
    import api.syslog.intake as intake_module

    mapping = intake_module.map_message
    poison = syslog_message(msgs.logout())

    def choking(frame: bytes, sender: str, purpose: str | None) -> Any:
        if frame == poison:
            raise RecursionError("deep")
        return mapping(frame, sender, purpose)

    monkeypatch.setattr(intake_module, "map_message", choking)
    intake, sender = intake_of(svc), _sender(svc)
    _hold(intake, sender, msgs.login(), msgs.logout(), msgs.emergency_override())
    with capture_logs() as logs:
        assert intake.settle(intake.inbox.held()) == ["accepted", "dead", "accepted"]
    (letter,) = intake.dead_letters.letters()
    assert letter.reason == "internal: RecursionError while mapping"
    assert intake.inbox.depth() == 0
    # A bug, not a bad message: said at error level, by the error's type only.
    assert {"event": "syslog.unmappable", "error": "RecursionError",
            "log_level": "error"} in logs


def test_the_settler_keeps_a_group_it_could_not_settle_and_tries_again(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.syslog.intake as intake_module

    monkeypatch.setattr(intake_module, "RETRY_SECONDS", 0.01)
    intake, sender = intake_of(svc), _sender(svc)
    settle = intake.settle
    failures: list[int] = []

    def failing_once(held: Any) -> list[str]:
        if not failures:
            failures.append(len(held))
            raise StoreUnavailable("database unavailable (OperationalError)")
        return settle(held)

    monkeypatch.setattr(intake, "settle", failing_once)
    monkeypatch.setattr(intake, "_answers", lambda: False)  # the database is down

    async def scenario() -> None:
        settler = asyncio.get_running_loop().create_task(intake.run_settler())
        try:
            await intake.take(sender, syslog_message(msgs.login()))
            while intake.stats.accepted < 1:
                await asyncio.sleep(0.01)
        finally:
            settler.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 60))  # the deadline only catches a hang
    assert failures == [1] and intake.inbox.depth() == 0
    assert [e["action"] for e in _entries(svc)] == ["login"]


def test_recovery_leaves_what_was_held_moments_ago(svc: Services) -> None:
    """A message held moments ago is a live settler's, about to be taken (this process's
    own before its id is in hand, or a peer's): recovery leaves it, so it cannot be
    settled ahead of its connection's earlier messages."""
    intake, sender = intake_of(svc), _sender(svc)
    (old,) = _hold_earlier(intake, sender, msgs.login())
    (new,) = _hold(intake, sender, msgs.logout())
    assert intake.recover() == 1
    assert [h.id for h in intake.inbox.held()] == [new] and old < new
    later = intake.clock
    intake.clock = lambda: later() + timedelta(seconds=RECOVER_AFTER + 1)
    assert intake.recover() == 1 and intake.inbox.depth() == 0


def test_a_message_that_fails_alone_is_buried_and_the_rest_settle(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """One message whose append keeps failing while the database answers (a row it
    refuses, a data key that no longer opens) becomes a dead letter; the messages of
    its group settle. While the database does not answer, nothing is buried."""
    intake, sender = intake_of(svc), _sender(svc)
    _hold(intake, sender, msgs.login(), msgs.logout(), msgs.emergency_override())
    held = intake.inbox.held()
    settle = intake.settle

    def refusing_the_logout(messages: Any) -> list[str]:
        if any(m.id == held[1].id for m in messages):
            raise StoreUnavailable("append failed")
        return settle(messages)

    monkeypatch.setattr(intake, "settle", refusing_the_logout)
    monkeypatch.setattr(intake, "_answers", lambda: False)
    with pytest.raises(StoreUnavailable):
        intake.settle_apart(held)
    assert intake.dead_letters.letters() == [] and intake.inbox.depth() == 3
    monkeypatch.setattr(intake, "_answers", lambda: True)
    intake.settle_apart(held)
    assert sorted(e["action"] for e in _entries(svc)) == ["login", "read"]
    (letter,) = intake.dead_letters.letters()
    assert letter.reason == "internal: StoreUnavailable while appending"
    assert intake.inbox.depth() == 0


def test_holding_skips_a_message_whose_connection_gave_up_and_goes_on(
        svc: Services) -> None:
    """A connection cancelled while its message waited (it went away, or the listener
    closed): that message is not held, and the holding threads live on for the rest."""
    from concurrent.futures import Future

    holding = Holding(Inbox(svc.store, None))
    gone: Future[int] = Future()
    gone.cancel()
    try:
        first = asyncio.run(holding.hold(Arrival("default", "here", b"w", "t")))
        assert holding._running is not None
        holding._running[0].put((Arrival("default", "gone", b"x", "t"), gone))
        held = asyncio.run(holding.hold(Arrival("default", "here", b"y", "t")))
        again = asyncio.run(holding.hold(Arrival("default", "here", b"z", "t")))
    finally:
        holding.close()
    assert [(h.id, h.sender, h.frame) for h in Inbox(svc.store, None).held()] == [
        (first, "here", b"w"), (held, "here", b"y"), (again, "here", b"z")]


def test_the_migration_keeps_one_open_letter_of_a_message_buried_twice(
        database_url: str) -> None:
    """Before revision 0016 two listeners could each bury the same message; the unique
    index of open letters needs one: the first stays."""
    from alembic import command
    from ledger.migrate import alembic_config, migrate

    command.upgrade(alembic_config(database_url), "0015")
    store = open_store(database_url)
    try:
        with store.transaction() as tx:
            for sha, replayed in (("a", None), ("a", None), ("a", 7), ("b", None)):
                store.execute(
                    tx, "INSERT INTO dead_letters (ledger, received_at, format, sender,"
                    " sha256, reason, message, replayed_seq) VALUES ('default', 't',"
                    " 'atna-syslog', 's', %s, 'r', %s, %s)", (sha, b"m", replayed))
        migrate(database_url)
        with store.transaction() as tx:
            rows = store.execute(tx, "SELECT id, sha256, replayed_seq FROM dead_letters"
                                 " ORDER BY id").fetchall()
    finally:
        store.close()
    assert [(r[1], r[2]) for r in rows] == [("a", None), ("a", 7), ("b", None)]
    assert rows[0][0] == 1  # the first letter of the two


def test_reading_the_inbox_and_dead_letters_waits_for_no_writer(svc: Services) -> None:
    """What /metrics and the CLI read (depth, held messages, open letters) takes no write
    lock: on SQLite, where one writer at a time holds it, a scrape would otherwise wait
    behind every append and, while it read, hold up the ledger's writer."""
    intake, sender = intake_of(svc), _sender(svc)
    _hold(intake, sender, msgs.login())
    letter = intake.bury("default", sender.identity, b"not a syslog message", "syslog: test")
    answered: list[object] = []

    def read() -> None:
        answered.extend([intake.inbox.depth(), len(intake.inbox.held()),
                         intake.dead_letters.open_counts(),
                         len(intake.dead_letters.letters()),
                         intake.dead_letters.message(letter)])

    with svc.store.transaction() as tx:  # a writer holds the write lock meanwhile
        svc.store.execute(tx, "DELETE FROM syslog_inbox WHERE id < 0")
        reader = threading.Thread(target=read)
        reader.start()
        # A hang detector, not a timing: the reads answer at once or wait for the lock
        # this thread holds until the join gives up.
        reader.join(timeout=60)
        alive = reader.is_alive()
    reader.join()
    assert not alive, "a read waited for the write lock"
    assert answered == [1, 1, {("default", "atna-syslog"): 1}, 1, b"not a syslog message"]


def test_a_held_message_that_does_not_open_is_logged_by_its_id_for_an_operator(
        svc: Services) -> None:
    """Left out of what is settled, a message that does not open must still be findable:
    the log names its inbox id and the error's type (never its bytes), the one trace an
    operator has of a row that otherwise only counts in the depth."""
    intake, sender = intake_of(svc), _sender(svc)
    moved, kept = _hold(intake, sender, msgs.login(), msgs.logout())
    with svc.store.transaction() as tx:  # bound to its sender: another's row does not open
        svc.store.execute(tx, "UPDATE syslog_inbox SET sender = %s WHERE id = %s",
                          ("someone-else", moved))
    with capture_logs() as logs:
        held = intake.inbox.held()
    assert [h.id for h in held] == [kept]
    assert logs == [{"event": "syslog.inbox_unopenable", "id": moved,
                     "error": EnvelopeError.__name__, "log_level": "error"}]


def test_a_held_message_keeps_when_it_was_received_through_to_its_dead_letter(
        svc: Services) -> None:
    """A message's received_at is when it was held, not when it was settled: a dead letter
    settled from the inbox (by recovery, long after a process died) says when the sender
    sent it."""
    intake, sender = intake_of(svc), _sender(svc)
    intake.default_purpose = None  # the dcm4che read names no purpose: a dead letter
    (held_id,) = _hold_earlier(intake, sender, msgs.dcm4che_patient_read())
    with svc.store.transaction() as tx:
        (stored,) = svc.store.execute(
            tx, "SELECT received_at FROM syslog_inbox WHERE id = %s", (held_id,)).fetchone()
    (held,) = intake.inbox.held()
    assert held.received_at == stored
    assert intake.recover() == 1
    (letter,) = intake.dead_letters.letters()
    # Held a minute before now: a letter stamped at settling would differ.
    assert letter.received_at == stored


def _waiting(*arrivals: tuple[Arrival, Future[int]]) -> queue.SimpleQueue[Any]:
    """A holding thread's queue with ``arrivals`` already waiting, then the stop mark: run
    through Holding._run in the test's thread, every group is decided before it starts."""
    waits: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for wait in (*arrivals, None):
        waits.put(wait)
    return waits


def test_holding_holds_at_most_a_group_in_one_statement(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """However many connections wait, one insert holds at most GROUP_AT_MOST of them: six
    parameters an arrival, a group of all of them would pass SQLite's limit of bound
    parameters (32,766) once 5,462 wait, and every one of those connections would fail."""
    inbox = Inbox(svc.store, None)
    groups: list[int] = []
    hold_many = inbox.hold_many

    def counted(arrivals: Any) -> list[int]:
        groups.append(len(arrivals))
        return hold_many(arrivals)

    monkeypatch.setattr(inbox, "hold_many", counted)
    waits = [(Arrival("default", f"s{i}", b"m", "t"), Future[int]())
             for i in range(2 * GROUP_AT_MOST + 1)]
    Holding(inbox, threads=1)._run(_waiting(*waits))
    assert groups == [GROUP_AT_MOST, GROUP_AT_MOST, 1]
    ids = [future.result() for _, future in waits]  # each connection gets its own id
    assert ids == sorted(ids) and len(set(ids)) == len(waits) == inbox.depth()


def test_a_holding_thread_goes_on_after_a_group_whose_connections_all_gave_up(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group made only of cancelled waits holds nothing; the thread then takes the next
    group, it does not end (with one thread left, every later hold would wait for ever)."""
    import api.syslog.holding as holding_module

    monkeypatch.setattr(holding_module, "GROUP_AT_MOST", 1)  # each arrival a group alone
    gone: Future[int] = Future()
    gone.cancel()
    here: Future[int] = Future()
    Holding(Inbox(svc.store, None), threads=1)._run(_waiting(
        (Arrival("default", "gone", b"x", "t"), gone),
        (Arrival("default", "here", b"y", "t"), here)))
    assert here.done(), "the arrival after the cancelled one was never held"
    assert [(h.id, h.sender) for h in Inbox(svc.store, None).held()] == [
        (here.result(), "here")]


def test_holding_threads_do_not_keep_a_process_alive(svc: Services) -> None:
    """The holding threads wait on their queue for ever; a process that ends without
    closing its holding (an intake whose listener never started, or stopped on an error)
    must not wait for them at exit, so they are daemon threads."""
    holding = Holding(Inbox(svc.store, None))
    try:
        asyncio.run(holding.hold(Arrival("default", "s", b"m", "t")))
        assert holding._running is not None
        threads = holding._running[1]
        assert threads and all(thread.daemon for thread in threads)
    finally:
        holding.close()


def test_a_sealed_message_read_without_the_key_ring_says_the_ring_is_needed(
        svc: Services) -> None:
    """A service without its key ring (started with LEDGER_UNSAFE_PLAINTEXT after messages
    were sealed) cannot open what it kept: a dead letter's bytes raise an error that tells
    the operator what is missing rather than suggesting tampering, and a held message is
    left in the inbox, logged as such."""
    intake, sender = intake_of(svc), _sender(svc)
    assert intake.inbox.ring is not None  # sealed at rest
    (held,) = _hold(intake, sender, msgs.login())
    letter = intake.bury("default", sender.identity, b"not a syslog message", "syslog: test")
    with pytest.raises(ValueError) as refused:
        DeadLetters(svc.store, None).message(letter)
    assert str(refused.value) == "this message is sealed; the key ring is needed to open it"
    with capture_logs() as logs:
        assert Inbox(svc.store, None).held() == []
    assert [(e["id"], e["error"]) for e in logs] == [(held, ValueError.__name__)]
    assert intake.dead_letters.message(letter) == b"not a syslog message"  # with its ring



# -- settling and recovery: what the intake's own choices decide --------------------------


def test_the_same_message_from_two_senders_is_an_entry_of_each(svc: Services) -> None:
    """The event id is derived from the sender as well as the message: two systems that
    send the same bytes made two records, each an entry submitted by its sender (not one
    taken for the other's replay)."""
    intake, one, other = intake_of(svc), _sender(svc), _sender(svc, "atna-sender-2")
    _hold(intake, one, msgs.login())
    _hold(intake, other, msgs.login())
    assert intake.settle(intake.inbox.held()) == ["accepted", "accepted"]
    entries = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10)]
    assert [e.members["submitted_by"]["identity"] for e in entries] == [
        one.identity, other.identity]


def test_a_message_whose_event_id_is_taken_by_another_body_is_a_conflict_letter(
        svc: Services) -> None:
    """One message mapped twice to different bodies (the default purpose changed between
    two sends): the entry it made stays, and the second becomes a dead letter that says
    why, rather than stopping its group."""
    intake, sender = intake_of(svc), _sender(svc)
    read = msgs.dcm4che_patient_read()  # names no purpose: the default fills it in
    intake.default_purpose = "TREAT"
    _hold(intake, sender, read)
    assert intake.settle(intake.inbox.held()) == ["accepted"]
    intake.default_purpose = "HOPERAT"
    _hold(intake, sender, read, msgs.login())
    assert intake.settle(intake.inbox.held()) == ["dead", "accepted"]
    (letter,) = intake.dead_letters.letters()
    assert letter.reason == CONFLICT
    assert [e.get("purpose") for e in _entries(svc)] == ["TREAT", None]
    assert intake.inbox.depth() == 0


def test_a_message_buried_because_its_append_keeps_failing_keeps_its_received_time(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Buried after its group and its own append failed while the database answers (the
    intake asks it: nothing stubbed here), the letter says when the message was received,
    not when it was buried; the message is no longer in this process's hands, and the
    burial is logged as an error."""
    intake, sender = intake_of(svc), _sender(svc)
    _hold_earlier(intake, sender, msgs.login(), msgs.logout())  # a minute before burial
    held = intake.inbox.held()
    intake._mine.update(h.id for h in held)  # in this process's settler's hands
    settle = intake.settle

    def refusing_the_logout(messages: Any) -> list[str]:
        if any(m.id == held[1].id for m in messages):
            raise StoreUnavailable("append failed")
        return settle(messages)

    monkeypatch.setattr(intake, "settle", refusing_the_logout)
    with capture_logs() as logs:
        intake.settle_apart(held)
    (letter,) = intake.dead_letters.letters()
    assert letter.received_at == held[1].received_at
    assert intake.inbox.depth() == 0 and intake._mine == set()
    assert {"event": "syslog.unsettleable", "error": "StoreUnavailable",
            "log_level": "error"} in logs


def test_a_message_is_buried_only_while_the_database_answers(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database answered when the group failed, and no longer does when one of its
    messages fails alone: that message is not buried (its failure may be the outage, not
    the message), it and those after it stay held, and the failure is raised."""
    intake, sender = intake_of(svc), _sender(svc)
    _hold(intake, sender, msgs.login(), msgs.logout(), msgs.emergency_override())
    held = intake.inbox.held()
    settle = intake.settle

    def refusing_the_logout(messages: Any) -> list[str]:
        if any(m.id == held[1].id for m in messages):
            raise StoreUnavailable("append failed")
        return settle(messages)

    answers = iter([True, False])  # up when the group failed, down when the logout did
    monkeypatch.setattr(intake, "settle", refusing_the_logout)
    monkeypatch.setattr(intake, "_answers", lambda: next(answers))
    with pytest.raises(StoreUnavailable):
        intake.settle_apart(held)
    assert intake.dead_letters.letters() == []
    assert [h.id for h in intake.inbox.held()] == [held[1].id, held[2].id]


def test_an_intake_whose_database_does_not_answer_buries_nothing(svc: Services) -> None:
    """Whether the database answers is asked of the inbox's store itself: here its
    connection is gone after the group's appends, so the failure to release is an outage
    and the messages stay held, not dead letters (the ledger's append was idempotent)."""
    intake, sender = intake_of(svc), _sender(svc)
    _hold(intake, sender, msgs.login(), msgs.logout())
    held = intake.inbox.held()
    gone = open_store(svc.settings.database_url)
    gone.close()
    intake.inbox = Inbox(gone, intake.inbox.ring)
    with pytest.raises(StoreUnavailable):
        intake.settle_apart(held)
    assert intake.dead_letters.letters() == []
    assert [h.id for h in Inbox(svc.store, intake.inbox.ring).held()] == [h.id for h in held]


def test_recovery_settles_everything_left_a_page_at_a_time(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """More left than one page: recovery goes on past the first, counts every message it
    settled, and logs how many."""
    import api.syslog.intake as intake_module

    monkeypatch.setattr(intake_module, "SETTLE_AT_MOST", 2)
    intake, sender = intake_of(svc), _sender(svc)
    left = _hold_earlier(intake, sender, msgs.login(), msgs.logout(), msgs.login_failed(),
                         msgs.emergency_override(), msgs.login())
    with capture_logs() as logs:
        assert intake.recover() == len(left)
    assert intake.inbox.depth() == 0
    assert (intake.stats.accepted, intake.stats.replayed) == (4, 1)
    assert {"event": "syslog.recovered", "messages": len(left), "log_level": "info"} in logs


async def _settled(intake: AtnaIntake, count: int) -> None:
    """Until ``count`` messages are entries; the caller's deadline only catches a hang."""
    while intake.stats.accepted + intake.stats.replayed < count:
        await asyncio.sleep(0.01)


async def _stopped(settler: asyncio.Task[None]) -> None:
    settler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await settler


def test_a_settler_with_nothing_of_its_own_still_recovers_what_others_left(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery comes round every RECOVER_SECONDS whether or not this process takes
    anything: nothing wakes the settler for a message a dead peer left behind."""
    import api.syslog.intake as intake_module

    monkeypatch.setattr(intake_module, "RECOVER_SECONDS", 0.05)
    intake, sender = intake_of(svc), _sender(svc)
    peer = intake_of(svc)  # another process's intake on the same database, no settler
    peer.clock = lambda: intake.clock() - timedelta(minutes=1)  # its messages are old

    async def scenario() -> None:
        await peer.take(sender, syslog_message(msgs.login()))
        settler = asyncio.get_running_loop().create_task(intake.run_settler())
        try:
            await _settled(intake, 1)  # the recovery at the settler's start took it
            await peer.take(sender, syslog_message(msgs.logout()))  # left since
            await _settled(intake, 2)
        finally:
            await _stopped(settler)

    asyncio.run(asyncio.wait_for(scenario(), 60))  # the deadline only catches a hang
    assert intake.inbox.depth() == 0
    assert sorted(e["action"] for e in _entries(svc)) == ["login", "logout"]


def test_an_idle_settler_waits_rather_than_settling_empty_groups(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between messages the settler waits to be woken (or for recovery): it does not go
    round settling nothing, which would keep a core and the database busy."""
    intake, sender = intake_of(svc), _sender(svc)
    groups: list[int] = []
    settle_apart = intake.settle_apart

    def counted(held: Any) -> None:
        groups.append(len(held))
        settle_apart(held)

    monkeypatch.setattr(intake, "settle_apart", counted)

    async def scenario() -> None:
        settler = asyncio.get_running_loop().create_task(intake.run_settler())
        try:
            await intake.take(sender, syslog_message(msgs.login()))
            await _settled(intake, 1)
            await intake.take(sender, syslog_message(msgs.logout()))
            await _settled(intake, 2)
        finally:
            await _stopped(settler)

    asyncio.run(asyncio.wait_for(scenario(), 60))  # the deadline only catches a hang
    assert groups and 0 not in groups


def test_a_message_taken_after_the_settler_stopped_is_held_for_recovery(
        svc: Services) -> None:
    """Once the settler has stopped (the listener closing), a message still being taken
    is held and its id returned: it is left for the next settler's recovery, not handed
    to one that is gone."""
    intake, sender = intake_of(svc), _sender(svc)

    async def scenario() -> int:
        settler = asyncio.get_running_loop().create_task(intake.run_settler())
        await intake.take(sender, syslog_message(msgs.login()))
        await _settled(intake, 1)
        await _stopped(settler)
        return await intake.take(sender, syslog_message(msgs.logout()))

    held = asyncio.run(asyncio.wait_for(scenario(), 60))  # the deadline only catches a hang
    assert [h.id for h in intake.inbox.held()] == [held]
    assert intake._mine == set()  # in no settler's hands: recovery's


class _HeldUp:
    """The intake's settle_apart, its first call held up until the test lets it go on: a
    message stays in the settler's hands while the test looks."""

    def __init__(self, intake: AtnaIntake) -> None:
        self.settle_apart = intake.settle_apart
        self.calls: list[list[int]] = []
        self.entered, self.go_on = threading.Event(), threading.Event()

    def __call__(self, held: Any) -> None:
        self.calls.append([h.id for h in held])
        if len(self.calls) == 1:
            self.entered.set()
            self.go_on.wait(60)  # a hang detector: the test sets it
        self.settle_apart(held)

    async def in_hand(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 60), "the settler never settled"


async def _settler_started(intake: AtnaIntake) -> asyncio.Task[None]:
    """The intake's settler, once running: what is taken from now on is its own."""
    settler = asyncio.get_running_loop().create_task(intake.run_settler())
    while intake._waiting is None:
        await asyncio.sleep(0.01)
    return settler


def test_recovery_leaves_a_message_this_processs_settler_has_in_hand(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Taken while this process's settler runs, a message is that settler's until it is
    settled: recovery, even once the message is old enough for it, does not take it
    (settled beside the settler, it could overtake its connection's earlier messages)."""
    intake, sender = intake_of(svc), _sender(svc)
    held_up = _HeldUp(intake)
    monkeypatch.setattr(intake, "settle_apart", held_up)
    now = intake.clock

    async def scenario() -> tuple[int, int | None]:
        settler = await _settler_started(intake)
        try:
            mine = await intake.take(sender, syslog_message(msgs.login()))
            await held_up.in_hand()
            intake.clock = lambda: now() + timedelta(seconds=RECOVER_AFTER + 1)
            recovered = await asyncio.to_thread(intake.recover)
            held_up.go_on.set()
            await _settled(intake, 1)
            return mine, recovered
        finally:
            held_up.go_on.set()
            await _stopped(settler)

    mine, recovered = asyncio.run(asyncio.wait_for(scenario(), 60))  # catches a hang only
    assert recovered == 0 and held_up.calls == [[mine]]
    assert intake.inbox.depth() == 0


def test_a_letter_the_settler_makes_says_when_its_message_came(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message this process takes and settles as a dead letter: the letter's received_at
    is when the message was held, even when it is settled later (here: a minute)."""
    intake, sender = intake_of(svc), _sender(svc)
    intake.default_purpose = None  # the dcm4che read names no purpose: a dead letter
    held_up = _HeldUp(intake)
    monkeypatch.setattr(intake, "settle_apart", held_up)
    now = intake.clock

    async def scenario() -> str:
        settler = await _settler_started(intake)
        try:
            await intake.take(sender, syslog_message(msgs.dcm4che_patient_read()))
            await held_up.in_hand()
            (held,) = await asyncio.to_thread(intake.inbox.held)
            intake.clock = lambda: now() + timedelta(minutes=1)
            held_up.go_on.set()
            while intake.stats.dead < 1:
                await asyncio.sleep(0.01)
            return held.received_at
        finally:
            held_up.go_on.set()
            await _stopped(settler)

    received_at = asyncio.run(asyncio.wait_for(scenario(), 60))  # catches a hang only
    (letter,) = intake.dead_letters.letters()
    assert letter.received_at == received_at


def test_a_settling_that_fails_is_logged_as_the_runbook_says(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/standard-formats.md tells an operator whose inbox keeps growing to look for
    ``syslog.settle_failed``: it names how many messages are held and the error's type."""
    import api.syslog.intake as intake_module

    monkeypatch.setattr(intake_module, "RETRY_SECONDS", 0.01)
    intake, sender = intake_of(svc), _sender(svc)
    settle = intake.settle
    failures: list[int] = []

    def failing_once(held: Any) -> list[str]:
        if not failures:
            failures.append(len(held))
            raise StoreUnavailable("database unavailable (OperationalError)")
        return settle(held)

    monkeypatch.setattr(intake, "settle", failing_once)
    monkeypatch.setattr(intake, "_answers", lambda: False)  # the database is down

    async def scenario() -> None:
        settler = await _settler_started(intake)  # the message is its own, not recovery's
        try:
            await intake.take(sender, syslog_message(msgs.login()))
            await _settled(intake, 1)
        finally:
            await _stopped(settler)

    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(scenario(), 60))  # the deadline only catches a hang
    assert failures == [1]
    assert {"event": "syslog.settle_failed", "held": 1, "error": "StoreUnavailable",
            "log_level": "warning"} in logs


def test_a_recovery_that_fails_is_logged_and_the_settler_goes_on(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.syslog.intake as intake_module

    monkeypatch.setattr(intake_module, "RETRY_SECONDS", 0.01)
    intake, sender = intake_of(svc), _sender(svc)
    recover = intake.recover
    failures: list[int] = []

    def failing_once(*args: Any) -> int | None:
        if not failures:
            failures.append(1)
            raise StoreUnavailable("database unavailable (OperationalError)")
        return recover(*args)

    monkeypatch.setattr(intake, "recover", failing_once)

    async def scenario() -> None:
        settler = asyncio.get_running_loop().create_task(intake.run_settler())
        try:
            await intake.take(sender, syslog_message(msgs.login()))
            await _settled(intake, 1)
        finally:
            await _stopped(settler)

    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(scenario(), 60))  # the deadline only catches a hang
    assert failures == [1] and intake.inbox.depth() == 0
    assert {"event": "syslog.recovery_failed", "error": "StoreUnavailable",
            "log_level": "warning"} in logs


def test_stopping_the_settler_does_not_wait_for_the_settling_in_hand(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelling the settler (the listener closing) returns at once: the settling in
    progress finishes on its own thread. Waiting for it would stop the event loop, and
    every connection on it, for as long as that settling takes."""
    intake, sender = intake_of(svc), _sender(svc)
    entered, go_on, finished = threading.Event(), threading.Event(), threading.Event()
    settle_apart = intake.settle_apart

    def held_up(held: Any) -> None:
        entered.set()
        go_on.wait(60)  # a hang detector: set by the test once the settler has stopped
        settle_apart(held)
        finished.set()

    monkeypatch.setattr(intake, "settle_apart", held_up)

    async def scenario() -> bool:
        settler = asyncio.get_running_loop().create_task(intake.run_settler())
        await intake.take(sender, syslog_message(msgs.login()))
        assert await asyncio.to_thread(entered.wait, 60)
        await _stopped(settler)
        return finished.is_set()

    waited = asyncio.run(scenario())
    go_on.set()
    assert finished.wait(60)
    assert not waited, "stopping the settler waited for its settling to end"
    assert intake.inbox.depth() == 0 and intake.stats.accepted == 1
