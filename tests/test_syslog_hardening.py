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
from api.syslog.intake import AtnaIntake, Sender
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
    event = atna.to_event(_system_only("http://consumer.example/ipf", "4711"),
                          event_id=EVENT_ID)
    assert event["actor"] == {"id": "4711", "kind": "application", "ip": "192.0.2.10"}
    # No alternative: the URL itself, its '/' (and '%') percent-encoded: still that system.
    alone = atna.to_event(_system_only("http://consumer.example/ipf%7E", None),
                          event_id=EVENT_ID)
    assert alone["actor"]["id"] == "http:%2F%2Fconsumer.example%2Fipf%257E"
    plain = atna.to_event(_system_only("consumer-ipf", "4711"), event_id=EVENT_ID)
    assert plain["actor"]["id"] == "consumer-ipf"


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


def test_a_letter_whose_mapping_raises_stops_no_replay_behind_it(
        settings: Settings, svc: Services) -> None:
    intake = intake_of(svc)
    intake.default_purpose = None
    sender = _sender(svc, "atna-sender")
    # An encoding Python does not know: the parser raises LookupError (no FormatRejected).
    broken = msgs.ipf_registry_query().replace(b'encoding="UTF-8"', b'encoding="x-unknown"')
    assert b"x-unknown" in broken
    fixable = msgs.ipf_registry_query().replace(b"<PurposeOfUse", b"<NotPurpose")
    unopenable = fixable.replace(b"Northside", b"Southside")  # unmappable too, other bytes
    assert _settled(intake, sender, broken, unopenable, fixable) == ["dead", "dead", "dead"]
    letters = intake.dead_letters.letters()
    assert letters[0].reason == "internal: LookupError while mapping"
    # A letter whose sealed bytes no longer open (tampered with, its key gone).
    with svc.store.transaction() as tx:
        svc.store.execute(tx, "UPDATE dead_letters SET message = %s WHERE id = %s",
                          (b"tampered", letters[1].id))
    svc.writer.stop()
    svc.store.close()
    env = {**os.environ, "LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "warning",
           "LEDGER_FORMATS_DEFAULT_PURPOSE": "TREAT"}  # the fix, for the second
    replayed = _cli(env, "replay")
    assert replayed.returncode == 1, replayed.stderr  # one letter could not be tried
    answers = [json.loads(line) for line in replayed.stdout.splitlines()
               if line.startswith("{")]  # beside the log's lines
    assert [a.get("seq", "error") for a in answers] == [None, "error", 1]
    assert "x-unknown" not in replayed.stdout + replayed.stderr
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
            async with asyncio.timeout(60):  # only a hang fails here
                while len(_events(svc)) < 3:
                    await asyncio.sleep(0.01)
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


def test_a_connection_that_never_finishes_tls_is_closed_and_too_many_are_refused(
        svc: Services, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    sender = _sender(svc, "atna-sender")
    intake = intake_of(svc)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities),
                                tls=f"127.0.0.1:{port}",
                                context=server_context(*pki.server, pki.ca),
                                handshake=0.5, most=1)
        try:
            # A bare TCP connect that never starts TLS: closed once the handshake's time
            # is up (it would otherwise hold a descriptor for 60 s).
            bare_reader, bare_writer = await asyncio.open_connection("127.0.0.1", port)
            async with asyncio.timeout(60):  # only a hang fails here
                assert await bare_reader.read() == b""
            bare_writer.close()
            # One sender connected: the most allowed. A second is refused, the first
            # goes on.
            _, first_writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
            first_writer.write(frame(syslog_message(msgs.login())))
            await first_writer.drain()
            async with asyncio.timeout(60):
                while intake.inbox.depth() + len(_events(svc)) < 1:
                    await asyncio.sleep(0.01)
            second_reader, second_writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
            # Closed during or right after the handshake: refused either way.
            async with asyncio.timeout(60):
                with contextlib.suppress(ssl.SSLError, ConnectionError):
                    assert await second_reader.read() == b""
            second_writer.close()
            first_writer.write(frame(syslog_message(msgs.logout())))
            await first_writer.drain()
            async with asyncio.timeout(60):
                while intake.inbox.depth() + len(_events(svc)) < 2:
                    await asyncio.sleep(0.01)
            first_writer.close()
        finally:
            await listeners.close()

    asyncio.run(scenario())
    assert intake.stats.refused_senders == 1
    assert sender.ledger == "default"


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
