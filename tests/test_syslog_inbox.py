"""The syslog inbox and the intake's settling, on SQLite and PostgreSQL: a held message is
durable and sealed at rest; settling makes each an entry or a dead letter exactly once,
however often it is settled again (a process that died between settling and releasing);
recovery settles what no settler has in hand, and leaves this process's own alone."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.auth.identities import Actor
from api.formats.syslog import syslog_message
from api.services import Services
from api.syslog.holding import Holding
from api.syslog.inbox import Arrival, Inbox
from api.syslog.intake import RECOVER_AFTER, RECOVERY_LOCK, AtnaIntake, Sender
from api.syslog.service import intake_of
from ledger.entry import Entry
from ledger.store import StoreUnavailable, open_store
from tests import atna_messages as msgs
from tests.support import fastapi_app


def _sender(svc: Services) -> Sender:
    key = svc.access.identities.issue_key("default", ["ingest"], name="atna-sender",
                                          actor=Actor("test"), record=False)
    found = svc.access.identities.by_name("atna-sender")
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
                assert intake.recover() == 0
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
    assert intake.settle(intake.inbox.held()) == ["accepted", "dead", "accepted"]
    (letter,) = intake.dead_letters.letters()
    assert letter.reason == "internal: RecursionError while mapping"
    assert intake.inbox.depth() == 0


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
