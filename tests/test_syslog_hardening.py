"""The ATNA intake where senders and operators push it: a system that names itself by a
URL, a BOM that contradicts its XML declaration, one message from two senders, a letter
whose mapping raises, a restart with messages left held, alerts that clear, connections
that never finish TLS or come in too many. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import Gauge

from api.app import create_app
from api.auth.identities import Actor
from api.formats import atna
from api.formats.syslog import frame, syslog_message
from api.metrics import Metrics
from api.services import Services
from api.syslog.intake import AtnaIntake, Sender, map_message
from api.syslog.listener import resolver, server_context, start
from api.syslog.service import intake_of
from ledger.entry import Entry
from ledger.settings import Settings
from ledger.store import StoreUnavailable, open_store
from tests import atna_messages as msgs
from tests.certs import Pki
from tests.support import ROOT, fastapi_app

EVENT_ID = "00000000-0000-4000-8000-000000000000"


def _sender(svc: Services, name: str) -> Sender:
    svc.access.identities.issue_key("default", ["ingest"], name=name, actor=Actor("test"),
                                    record=False)
    found = svc.access.identities.by_name(name)
    assert found is not None
    return Sender(found.id, found.ledger)


def _events(svc: Services) -> list[dict[str, Any]]:
    entries = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10_000)]
    return svc.protection.reveal_many("default", [e.event for e in entries])


async def _until_entries(svc: Services, count: int) -> None:
    async with asyncio.timeout(60):  # only a hang fails here
        while len(_events(svc)) < count:
            await asyncio.sleep(0.01)


def _settled(intake: AtnaIntake, sender: Sender, *messages: bytes) -> list[str]:
    async def take() -> list[int]:
        return [await intake.take(sender, syslog_message(m)) for m in messages]
    ids = asyncio.run(take())
    return intake.settle([h for h in intake.inbox.held() if h.id in ids])


def _system_only(user: str, alternative: str | None) -> bytes:
    """IPF's registry query with no human participant: the requestor is the consumer
    system, named by the URL it answers on."""
    xml = msgs.ipf_registry_query().decode()
    xml = xml.replace('<ActiveParticipant UserID="alice@hospital" UserName="Alice" '
                      'UserIsRequestor="true"/>', "")
    xml = xml.replace('UserID="http://consumer.example/ipf" AlternativeUserID="4711"',
                      f'UserID="{user}"' + (f' AlternativeUserID="{alternative}"'
                                            if alternative else ""))
    return xml.encode()


def test_a_system_named_by_a_url_is_recorded_under_an_id_that_is_one_segment() -> None:
    # The URL itself, its '/' (and '%') percent-encoded: still that system, and stable
    # (an AlternativeUserID is a process id, another after each restart).
    event = atna.to_event(_system_only("http://consumer.example/ipf%7E", "4711"),
                          event_id=EVENT_ID)
    assert event["actor"] == {"id": "http:%2F%2Fconsumer.example%2Fipf%257E",
                              "kind": "application", "ip": "192.0.2.10"}
    plain = atna.to_event(_system_only("consumer-ipf", "4711"), event_id=EVENT_ID)
    assert plain["actor"]["id"] == "consumer-ipf"
    assert atna.to_event(_system_only("..", None), event_id=EVENT_ID)["actor"]["id"] == \
        "%2E%2E"
    # Too long once encoded: the AlternativeUserID, else a dead letter that says so.
    long_url = "http://consumer.example/" + "a/" * 60
    assert atna.to_event(_system_only(long_url, "4711"), event_id=EVENT_ID
                         )["actor"]["id"] == "4711"


def test_an_encoding_python_does_not_know_is_a_format_refusal() -> None:
    broken = msgs.ipf_registry_query().replace(b'encoding="UTF-8"', b'encoding="x-unknown"')
    mapped = map_message(syslog_message(broken), "sender", "TREAT")
    assert mapped.event is None
    assert mapped.reason == ("AuditMessage: declares an encoding that is not supported "
                             "(send UTF-8)")


def test_a_bom_says_utf8_whatever_the_xml_declaration_names() -> None:
    # RFC 5424: a BOM means the MSG is UTF-8; decoding it again as Latin-1 would record
    # a patient id no one could find.
    for declared in ("ISO-8859-1", "windows-1252", "UTF-8"):
        xml = msgs.ipf_registry_query().replace(
            b'encoding="UTF-8"', f'encoding="{declared}"'.encode()).replace(
            msgs.PATIENT.encode(), "M\u00fcller-1".encode())
        event = atna.to_event(atna.BOM + xml, event_id=EVENT_ID)
        assert event["patient"] == {"id": "M\u00fcller-1"}, declared


def test_the_same_bytes_from_two_senders_are_two_letters_and_two_entries(
        svc: Services) -> None:
    intake = intake_of(svc)
    intake.default_purpose = None
    first, second = _sender(svc, "sender-a"), _sender(svc, "sender-b")
    unmappable = msgs.ipf_registry_query().replace(b"<PurposeOfUse", b"<NotPurpose")
    assert _settled(intake, first, unmappable) == ["dead"]
    assert _settled(intake, second, unmappable) == ["dead"]
    letters = {d.sender: d.id for d in intake.dead_letters.letters()}
    assert sorted(letters) == sorted([first.identity, second.identity])
    # Buried again by its sender (two settlers at once): that sender's open letter.
    again = intake.bury("default", second.identity, syslog_message(unmappable), "again")
    assert again == letters[second.identity]
    intake.default_purpose = "TREAT"  # the fix
    assert all(intake.replay(d.id) is not None for d in intake.dead_letters.letters())
    entries = [Entry.decode(raw) for raw in svc.store.read("default", 0, 100)]
    assert sorted(e.members["submitted_by"]["identity"] for e in entries) == sorted(
        [first.identity, second.identity])


def test_a_letter_whose_mapping_raises_or_that_no_longer_opens_stops_no_replay(
        settings: Settings, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.syslog.intake as intake_module

    intake = intake_of(svc)
    intake.default_purpose = None
    sender = _sender(svc, "atna-sender")
    fixable = msgs.ipf_registry_query().replace(b"<PurposeOfUse", b"<NotPurpose")
    choking = fixable.replace(b"Northside", b"Westside")  # the mapping raises on it
    unopenable = fixable.replace(b"Northside", b"Southside")  # its bytes will not open
    assert _settled(intake, sender, choking, unopenable, fixable) == ["dead"] * 3
    letters = intake.dead_letters.letters()
    mapping = intake_module.map_message

    def raising(frame: bytes, sender: str, purpose: str | None) -> Any:
        if b"Westside" in frame:
            raise RecursionError("deep")
        return mapping(frame, sender, purpose)

    # A replay whose mapping raises (a bug): the letter stays, its reason says so.
    monkeypatch.setattr(intake_module, "map_message", raising)
    assert intake.replay(letters[0].id) is None
    assert intake.dead_letters.letter(letters[0].id).reason == (  # type: ignore[union-attr]
        "internal: RecursionError while mapping")
    # A letter whose sealed bytes no longer open (tampered with, its key gone).
    with svc.store.transaction() as tx:
        svc.store.execute(tx, "UPDATE dead_letters SET message = %s WHERE id = %s",
                          (b"tampered", letters[1].id))
    svc.writer.stop()
    svc.store.close()
    env = {**os.environ, "LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "warning",
           "LEDGER_FORMATS_DEFAULT_PURPOSE": "TREAT"}  # the fix
    replayed = _cli(env, "replay", str(letters[1].id), str(letters[2].id))
    assert replayed.returncode == 1, replayed.stderr  # one letter could not be tried
    answers = [json.loads(line) for line in replayed.stdout.splitlines()
               if line.startswith("{")]  # beside the log's lines
    assert [a.get("seq", "error") for a in answers] == ["error", 1]
    missing = _cli(env, "replay", "999")
    assert missing.returncode == 1
    assert [json.loads(line) for line in missing.stdout.splitlines()
            if line.startswith("{")] == [{"id": 999, "error": "no such letter"}]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", "dead-letters", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_after_a_restart_what_was_held_before_is_settled_first(svc: Services) -> None:
    """A process held u1 and u2 and died before settling them; its successor starts and
    the sender, reconnected at once, sends u3: the ledger has u1, u2, u3 in that order,
    not u3 first (recovery's age rule would otherwise leave u1 and u2 for 5 s)."""
    sender = _sender(svc, "atna-sender")
    dead = intake_of(svc)  # no settler: a process that died after holding

    async def before() -> None:
        for user in ("u1", "u2"):
            await dead.take(sender, syslog_message(msgs.login().replace(
                b'UserID="dave"', f'UserID="{user}"'.encode())))
    asyncio.run(before())
    successor = intake_of(svc)

    async def after() -> None:
        settler = asyncio.create_task(successor.run_settler())
        await successor.take(sender, syslog_message(msgs.login().replace(
            b'UserID="dave"', b'UserID="u3"')))
        try:
            await _until_entries(svc, 3)
        finally:
            settler.cancel()
    asyncio.run(after())
    assert [e["actor"]["id"] for e in _events(svc)] == ["u1", "u2", "u3"]


def test_a_count_that_falls_to_nothing_reads_zero() -> None:
    """The last open dead letter replayed, the last open alert closed: the query of
    counts no longer finds the label, and the gauge must say 0, or its alert never
    clears."""
    metrics = Metrics()
    gauge = Gauge("phi_ledger_test_counts", "test", ["ledger", "format"],
                  registry=metrics.registry)
    metrics.set_counts(gauge, {("default", "atna-syslog"): 2, ("other", "fhir"): 1})
    metrics.set_counts(gauge, {("other", "fhir"): 3})
    assert gauge.labels("default", "atna-syslog")._value.get() == 0
    assert gauge.labels("other", "fhir")._value.get() == 3


def test_metrics_clear_a_replayed_letter_and_count_refused_senders(
        settings: Settings, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    configured = replace(settings, syslog_tls=f"127.0.0.1:{port}", syslog_cert=pki.server[0],
                         syslog_key=pki.server[1], syslog_ca=pki.ca)
    app = create_app(configured, configure_logs=False)
    with TestClient(app) as client:
        svc = fastapi_app(app).state.services
        intake = intake_of(svc)
        intake.default_purpose = None
        sender = _sender(svc, "atna-sender")
        unmappable = msgs.ipf_registry_query().replace(b"<PurposeOfUse", b"<NotPurpose")
        assert _settled(intake, sender, unmappable) == ["dead"]
        letter = 'phi_ledger_dead_letters{format="atna-syslog",ledger="default"}'
        assert f"{letter} 1.0" in client.get("/metrics").text
        intake.default_purpose = "TREAT"
        assert intake.replay(intake.dead_letters.letters()[0].id) is not None
        assert f"{letter} 0.0" in client.get("/metrics").text
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                pki.client_context("nobody").wrap_socket(raw,
                                                         server_hostname="127.0.0.1") as tls:
            tls.settimeout(60)  # only a hang fails here
            assert tls.recv(1) == b""  # refused: closed by the listener
        assert "phi_ledger_syslog_refused_senders 1.0" in client.get("/metrics").text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_connection_that_never_finishes_tls_is_closed(svc: Services, tmp_path: Path
                                                         ) -> None:
    pki, port = Pki(tmp_path), _free_port()
    intake = intake_of(svc)

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities),
                                tls=f"127.0.0.1:{port}",
                                context=server_context(*pki.server, pki.ca), handshake=0.5)
        try:
            # A bare TCP connect that never starts TLS: closed once the handshake's time
            # is up (with asyncio's default it would hold a descriptor for 60 s).
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            async with asyncio.timeout(30):  # only a hang fails here: 30 s is not 0.5
                assert await reader.read() == b""
            writer.close()
        finally:
            await listeners.close()

    asyncio.run(scenario())


def test_one_sender_too_many_is_refused_and_the_others_go_on(svc: Services, tmp_path: Path
                                                             ) -> None:
    pki, port = Pki(tmp_path), _free_port()
    _sender(svc, "atna-sender")
    intake = intake_of(svc)

    async def until(count: int) -> None:
        async with asyncio.timeout(60):  # only a hang fails here
            while intake.inbox.depth() + len(_events(svc)) < count:
                await asyncio.sleep(0.01)

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities),
                                tls=f"127.0.0.1:{port}",
                                context=server_context(*pki.server, pki.ca), most=1)
        try:
            _, first = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
            first.write(frame(syslog_message(msgs.login())))
            await first.drain()
            await until(1)  # the first is connected: the most allowed
            second_reader, second = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
            # Closed during or right after the handshake: refused either way.
            async with asyncio.timeout(60):
                with contextlib.suppress(ssl.SSLError, ConnectionError):
                    assert await second_reader.read() == b""
            second.close()
            first.write(frame(syslog_message(msgs.logout())))
            await first.drain()
            await until(2)
            first.close()
        finally:
            await listeners.close()

    asyncio.run(scenario())
    assert intake.stats.refused_senders == 1


def test_a_starting_settler_waits_for_another_process_recovering(postgres_url: str,
                                                                  tmp_path: Path) -> None:
    """On PostgreSQL, where one process at a time recovers: a settler that starts while
    another recovers tries again, rather than settle new messages ahead of what was
    held before it started."""
    from api.app import build_services
    from api.syslog.intake import RECOVERY_LOCK

    svc = build_services(Settings(database_url=postgres_url, key_file=tmp_path / "k.json"))
    try:
        sender = _sender(svc, "atna-sender")
        dead = intake_of(svc)

        def login(user: str) -> bytes:
            return syslog_message(msgs.login().replace(b'UserID="dave"',
                                                       f'UserID="{user}"'.encode()))

        async def held_before() -> None:
            for user in ("u1", "u2"):
                await dead.take(sender, login(user))
        asyncio.run(held_before())
        successor = intake_of(svc)
        peer_store = open_store(postgres_url)  # another process, recovering
        peer = contextlib.ExitStack()
        try:
            assert peer.enter_context(peer_store.sole(RECOVERY_LOCK))

            async def after() -> None:
                settler = asyncio.create_task(successor.run_settler())
                await successor.take(sender, login("u3"))
                await asyncio.sleep(0.3)  # the settler's first try meets the peer's lock
                assert _events(svc) == []  # u3 is not settled ahead of u1 and u2
                peer.close()  # the peer is done
                try:
                    await _until_entries(svc, 3)
                finally:
                    settler.cancel()
            asyncio.run(after())
        finally:
            peer.close()
            peer_store.close()
        assert [e["actor"]["id"] for e in _events(svc)] == ["u1", "u2", "u3"]
    finally:
        svc.writer.stop()
        svc.store.close()


def test_the_service_raises_its_open_files_limit_to_the_hard_limit() -> None:
    # In a child: the test process keeps its own limit.
    code = ("import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
            "from ledger.runtime import allow_open_files\n"
            "allow_open_files()\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"


def test_migration_0017_lets_two_senders_keep_a_letter_each(database_url: str) -> None:
    """A database that ran revision 0016 in its first form has open letters unique on
    (ledger, sha256) alone; after 0017 the same bytes from two senders are two letters,
    and a duplicate of one sender's open letter is still refused."""
    from alembic import command
    from ledger.migrate import alembic_config, migrate

    command.upgrade(alembic_config(database_url), "0016")
    store = open_store(database_url)
    try:
        with store.transaction() as tx:  # 0016 as it first was
            store.execute(tx, "DROP INDEX dead_letters_open")
            store.execute(tx, "CREATE UNIQUE INDEX dead_letters_open ON dead_letters"
                              " (ledger, sha256) WHERE replayed_seq IS NULL")
        migrate(database_url)
        insert = ("INSERT INTO dead_letters (ledger, received_at, format, sender, sha256,"
                  " reason, message) VALUES ('default', 't', 'atna-syslog', %s, 'a', 'r',"
                  " %s)")
        for sender in ("s1", "s2"):
            with store.transaction() as tx:
                store.execute(tx, insert, (sender, b"m"))
        with pytest.raises(StoreUnavailable, match="IntegrityError"), \
                store.transaction() as tx:
            store.execute(tx, insert, ("s1", b"m"))
        with store.reading() as curs:
            senders = [r[0] for r in store.execute(
                curs, "SELECT sender FROM dead_letters ORDER BY id").fetchall()]
    finally:
        store.close()
    assert senders == ["s1", "s2"]


def test_downgrading_0017_refuses_rather_than_lose_a_senders_letter(database_url: str
                                                                    ) -> None:
    from alembic import command
    from ledger.migrate import alembic_config, migrate

    migrate(database_url)
    store = open_store(database_url)
    try:
        insert = ("INSERT INTO dead_letters (ledger, received_at, format, sender, sha256,"
                  " reason, message) VALUES ('default', 't', 'atna-syslog', %s, 'a', 'r',"
                  " %s)")
        with store.transaction() as tx:
            for sender in ("s1", "s2"):
                store.execute(tx, insert, (sender, b"m"))
        with pytest.raises(RuntimeError, match="replay them"):
            command.downgrade(alembic_config(database_url), "0016")
        with store.reading() as curs:
            kept = store.execute(curs, "SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        assert kept == 2
        with store.transaction() as tx:  # replayed: the downgrade may go
            store.execute(tx, "UPDATE dead_letters SET replayed_seq = 1 WHERE sender = 's2'")
        command.downgrade(alembic_config(database_url), "0016")
    finally:
        store.close()
