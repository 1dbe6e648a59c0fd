"""IHE ATNA over syslog: AuditMessages in the shapes IPF, dcm4che and OpenHIM send (both
attribute spellings) mapped to contract events; XML attacks and malformed frames refused;
the TLS listener (mutual TLS: the client certificate names an ingest identity) and the
UDP listener (listed senders only) recording each message durably, unmappable ones as
dead letters that a replay turns into entries after a fix -- on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from api.app import create_app
from api.auth.identities import Actor
from api.formats import atna
from api.formats.fhir_audit import FormatRejected, to_audit_event
from api.formats.fhir_audit import to_event as fhir_to_event
from api.formats.fhir_validation import rendered_is_valid
from api.formats.syslog import (
    MAX_FRAME,
    FrameError,
    OctetFramer,
    frame,
    parse_message,
    syslog_message,
)
from api.services import Services
from api.syslog.dead_letters import DeadLetters
from api.syslog.intake import CONFLICT, AtnaIntake, Sender, map_message
from api.syslog.listener import SenderCheck, resolver, server_context, start
from api.syslog.service import intake_of
from ledger.crypto.envelope import EnvelopeError
from ledger.entry import Entry, format_recorded_at
from ledger.settings import Settings
from ledger.store import open_store
from ledger.verifier import verify_ledger
from tests import atna_messages as msgs
from tests.certs import Pki
from tests.monitoring_support import alerts
from tests.support import fastapi_app

EVENT_ID = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("shape", sorted(msgs.SHAPES))
def test_each_sender_shape_maps_to_its_event(shape: str) -> None:
    make, action, outcome, actor, patient, purpose = msgs.SHAPES[shape]
    event = atna.to_event(make(), event_id=EVENT_ID, default_purpose="HOPERAT")
    assert (event["action"], event["outcome"], event["actor"]["id"]) == (action, outcome, actor)
    assert event.get("patient") == ({"id": patient} if patient else None)
    phi = action in ("read", "create", "query", "disclose")
    assert event.get("purpose") == (purpose or ("HOPERAT" if phi else None))
    assert event["source"]["system"]


def test_details_of_the_mapping() -> None:
    ipf = atna.to_event(msgs.ipf_registry_query(), event_id=EVENT_ID)
    assert ipf["actor"] == {"id": "alice@hospital", "kind": "user"}  # the human requestor
    assert ipf["source"] == {"system": "ipf-consumer", "site": "Northside"}
    assert ipf["occurred_at"] == "2026-11-26T14:03:22.120+01:00"
    read = atna.to_event(msgs.dcm4che_patient_read(), event_id=EVENT_ID,
                         default_purpose="TREAT")
    assert read["actor"] == {"id": "bob", "kind": "user", "role": "radiologist",
                             "ip": "198.51.100.7"}
    assert read["resource"] == {"type": "Study Instance UID", "id": "1.2.840.99.1"}
    out = atna.to_event(msgs.dcm4che_export_disclosure(), event_id=EVENT_ID)
    assert out["disclosure"]["recipient"] == {"name": "State Cancer Registry", "kind": "other",
                                              "address": "203.0.113.5"}
    pix = atna.to_event(msgs.openhim_pix_query(), event_id=EVENT_ID, default_purpose="TREAT")
    assert pix["actor"]["kind"] == "application" and pix["actor"]["ip"] == "10.0.0.7"


def test_no_purpose_and_no_default_is_refused_by_path() -> None:
    with pytest.raises(FormatRejected) as refused:
        atna.to_event(msgs.dcm4che_patient_read(), event_id=EVENT_ID)
    assert [p for p, _ in refused.value.problems] == [
        "AuditMessage/EventIdentification/PurposeOfUse"]


def test_bom_and_namespaces_are_accepted() -> None:
    body = b"\xef\xbb\xbf" + msgs.login().replace(
        b"<AuditMessage>", b'<AuditMessage xmlns="urn:x">')
    assert atna.to_event(body, event_id=EVENT_ID)["action"] == "login"


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "SECRET">]><AuditMessage>&x;</AuditMessage>',
    b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://example.invalid/a.dtd"><AuditMessage/>',
    b"<AuditMessage><unclosed></AuditMessage>",
    b"<Other/>",
    b"<AuditMessage>" + b"x" * (64 * 1024) + b"</AuditMessage>",
])
def test_dangerous_or_broken_xml_is_refused_without_echo(body: bytes) -> None:
    with pytest.raises(FormatRejected) as refused:
        atna.to_event(body, event_id=EVENT_ID)
    assert "SECRET" not in str(refused.value)


def test_octet_framer_cuts_frames_wherever_the_bytes_split() -> None:
    messages = [syslog_message(m()) for m in (msgs.login, msgs.logout, msgs.ipf_registry_query)]
    stream = b"".join(frame(m) for m in messages)
    for step in (1, 7, 1000, len(stream)):
        framer, out = OctetFramer(), []
        for i in range(0, len(stream), step):
            framer.feed(stream[i:i + step])
            while (f := framer.next_frame()) is not None:
                out.append(f)
        assert out == messages and framer.pending == 0
    with pytest.raises(FrameError):
        big = OctetFramer(100)
        big.feed(b"101 ")
        big.next_frame()
    with pytest.raises(FrameError):
        junk = OctetFramer()
        junk.feed(b"<85>1 no length")
        junk.next_frame()


def test_rfc5424_structured_data_and_bom() -> None:
    raw = (b'<85>1 2026-11-26T19:03:22Z host app 42 IHE+RFC-3881 [ex@1 a="x\\]y" b="]"]'
           b'[other@2] \xef\xbb\xbf<AuditMessage/>')
    message = parse_message(raw)
    assert (message.msgid, message.hostname, message.msg) == (
        "IHE+RFC-3881", "host", b"<AuditMessage/>")
    with pytest.raises(ValueError):
        parse_message(b"not syslog")


def test_a_message_refused_on_several_counts_names_each_in_its_reason() -> None:
    """The reason a dead letter keeps is the mapping's refusal as it words it: every
    problem, path and rule, so that the operator fixes them all at once."""
    body = b"<AuditMessage><EventIdentification/></AuditMessage>"
    with pytest.raises(FormatRejected) as refused:
        atna.to_event(body, event_id=EVENT_ID)
    assert len(refused.value.problems) > 1
    assert map_message(syslog_message(body), "id-1", None).reason == str(refused.value)


def test_the_same_message_maps_to_the_same_event_id_per_sender() -> None:
    raw = syslog_message(msgs.login())
    first = map_message(raw, "id-1", None).event
    again = map_message(syslog_message(msgs.login(), hostname="relay"), "id-1", None).event
    other = map_message(raw, "id-2", None).event
    assert first and again and other
    assert first["event_id"] == again["event_id"] != other["event_id"]


# -- the listeners, in process ---------------------------------------------------------


def _events(svc: Services) -> list[dict[str, Any]]:
    entries = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10_000)]
    return svc.protection.reveal_many("default", [e.event for e in entries])


def _identity(svc: Services, name: str, roles: tuple[str, ...] = ("ingest",)) -> str:
    """A sender identity; its key's id."""
    return svc.access.identities.issue_key("default", list(roles), name=name,
                                           actor=Actor("test"), record=False).key_id


def _taken(intake: AtnaIntake, sender: Sender, frame: bytes) -> str:
    """Hold ``frame`` as the listener does, then settle it; its outcome."""
    held = asyncio.run(intake.take(sender, frame))
    message = intake.inbox.held(held - 1, 1)
    assert [m.id for m in message] == [held]
    return intake.settle(message)[0]


async def _until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for ``check``; the deadline only catches a hang."""
    async def loop() -> None:
        while not check():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the listener closes the connection (False when it keeps it open: a
    connection it should have closed would otherwise hang the test)."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except TimeoutError:
        return False


def _run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tls_listener_records_every_shape_and_dead_letters_the_rest(
        svc: Services, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    _identity(svc, "atna-sender")
    intake = intake_of(svc)
    intake.default_purpose = None  # LEDGER_FORMATS_DEFAULT_PURPOSE=off
    port = _port()
    messages = [syslog_message(make()) for make, *_ in msgs.SHAPES.values()]
    messages.append(b"<85>1 not really syslog")
    messages.append(syslog_message(b"<AuditMessage><EventIdentification/></AuditMessage>"))

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities), tls=f"127.0.0.1:{port}",
                                context=server_context(*pki.server, pki.ca))
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
            for m in messages + messages:  # everything twice: recorded once
                writer.write(frame(m))
            await writer.drain()
            total = 2 * len(messages)
            await _until(lambda: intake.stats.accepted + intake.stats.replayed
                         + intake.stats.dead >= total)
            writer.close()
        finally:
            await listeners.close()

    _run(scenario)
    events = _events(svc)
    # With the default purpose off, the two reads that name none are dead letters.
    assert sorted(e["action"] for e in events) == sorted(
        a for name, (_, a, *_rest) in msgs.SHAPES.items()
        if name not in ("dcm4che_patient_read", "openhim_pix_query"))
    assert len({e["event_id"] for e in events}) == len(events)
    assert verify_ledger(svc.store, "default").ok
    for seq, event in enumerate(events, 1):  # each rendered back as a valid R4 AuditEvent
        rendered = to_audit_event(event, resource_id=str(seq))
        rendered_is_valid(rendered)
        assert fhir_to_event(rendered, event_id=event["event_id"]) == event
    letters = intake.dead_letters.letters()
    assert len(letters) == 4
    assert all(letter.sender for letter in letters)
    reasons = " ".join(letter.reason for letter in letters)
    assert "PurposeOfUse" in reasons and "syslog" in reasons and "pat-4711" not in reasons
    assert intake.dead_letters.message(letters[0].id) in messages

    # after the fix (a default purpose configured), the replay turns two into entries
    intake.default_purpose = "HOPERAT"
    seqs = [intake.replay(letter.id) for letter in letters]
    assert sum(s is not None for s in seqs) == 2
    assert len(intake.dead_letters.letters()) == 2
    assert len(_events(svc)) == len(events) + 2
    # Every entry, taken live or replayed, names the digest of the message sent for it.
    digests = {hashlib.sha256(m).hexdigest() for m in messages}
    received = [Entry.decode(raw).members["received"]
                for raw in svc.store.read("default", 0, 10_000)]
    assert {r["format"] for r in received} == {"atna-syslog"}
    assert {r["sha256"] for r in received} <= digests
    assert len({r["sha256"] for r in received}) == len(received)
    assert intake.replay(letters[0].id) == seqs[0]  # replaying again writes nothing
    assert len(_events(svc)) == len(events) + 2


def test_syslog_entries_name_their_sender_and_never_claim_the_service(svc: Services) -> None:
    """Entries taken over syslog say which sender submitted them (issue 17): they were
    marked as the service's own records, and a sender could then post an AuditSourceID
    of ``phi-ledger``, indistinguishable from the service's reads."""
    _identity(svc, "atna-sender")
    found = svc.access.identities.by_name("atna-sender")
    assert found is not None
    sender, intake = Sender(found.id, found.ledger), intake_of(svc)
    forged = msgs.login().replace(b'AuditSourceID="ehr"', b'AuditSourceID="phi-ledger"')
    assert forged != msgs.login()
    assert _taken(intake, sender, syslog_message(msgs.login())) == "accepted"
    assert _taken(intake, sender, syslog_message(forged)) == "dead"
    entries = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10_000)]
    assert [e.members["submitted_by"] for e in entries] == [
        {"identity": found.id, "credential": "syslog"}]
    (letter,) = intake.dead_letters.letters()
    assert "source.system" in letter.reason and "reserved" in letter.reason
    intake.default_purpose = "HOPERAT"
    assert intake.replay(letter.id) is None, "a replay is the sender's too: still refused"


def test_tls_refuses_unknown_untrusted_and_non_ingest_senders(
        svc: Services, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    _identity(svc, "auditor-only", roles=("auditor",))
    intake = intake_of(svc)
    port = _port()

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities), tls=f"127.0.0.1:{port}",
                                context=server_context(*pki.server, pki.ca))
        try:
            for cn in ("nobody", "auditor-only"):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=pki.client_context(cn))
                writer.write(frame(syslog_message(msgs.login())))
                await writer.drain()
                assert await reader.read() == b""  # closed by the listener
                writer.close()
            with pytest.raises((ssl.SSLError, ConnectionError)):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=pki.client_context("atna-sender", self_signed=True))
                writer.write(frame(syslog_message(msgs.login())))
                await writer.drain()
                if await reader.read() == b"":
                    raise ConnectionError("closed")
        finally:
            await listeners.close()

    _run(scenario)
    assert intake.stats.refused_senders == 2
    assert _events(svc) == [] and intake.dead_letters.letters() == []


def test_udp_takes_listed_senders_only(svc: Services) -> None:
    _identity(svc, "udp-sender")
    intake = intake_of(svc)
    port = _port()

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities), udp=f"127.0.0.1:{port}",
                                udp_senders={"127.0.0.1": "udp-sender"})
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(syslog_message(msgs.login()), ("127.0.0.1", port))
                s.sendto(syslog_message(msgs.logout()), ("127.0.0.1", port))
            await _until(lambda: intake.stats.accepted >= 2)
        finally:
            await listeners.close()

    _run(scenario)
    assert sorted(e["action"] for e in _events(svc)) == ["login", "logout"]
    unlisted = intake_of(svc)

    async def stranger() -> None:
        listeners = await start(unlisted, resolver(svc.access.identities),
                                udp=f"127.0.0.1:{port}", udp_senders={"192.0.2.1": "udp-sender"})
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(syslog_message(msgs.ipf_registry_query()), ("127.0.0.1", port))
            await _until(lambda: unlisted.stats.refused_senders >= 1)
        finally:
            await listeners.close()

    _run(stranger)
    assert len(_events(svc)) == 2


def test_serve_runs_the_listener_and_metrics_count_dead_letters(
        settings: Settings, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    port = _port()
    configured = replace(settings, syslog_tls=f"127.0.0.1:{port}", syslog_cert=pki.server[0],
                         syslog_key=pki.server[1], syslog_ca=pki.ca)
    app = create_app(configured, configure_logs=False)
    with TestClient(app) as client:
        svc = fastapi_app(app).state.services
        _identity(svc, "atna-sender")
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                pki.client_context("atna-sender").wrap_socket(
                    raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(frame(syslog_message(msgs.login())))
            tls.sendall(frame(syslog_message(b"<AuditMessage/>")))
            deadline = time.monotonic() + 60  # only a hang fails here
            while not DeadLetters(svc.store, None).letters():
                assert time.monotonic() < deadline
                time.sleep(0.02)
        metrics = client.get("/metrics").text
        assert 'phi_ledger_dead_letters{format="atna-syslog",ledger="default"} 1.0' in metrics
        assert [e["action"] for e in _events(svc)] == ["login"]


def test_a_sender_configured_with_our_address_and_a_certificate_only_reaches_the_ledger(
        settings: Settings, tmp_path: Path) -> None:
    """A HAPI/IPF-style sender sends no PurposeOfUse and knows nothing of ours: with the
    service configured from its environment and no LEDGER_FORMATS_DEFAULT_PURPOSE, its
    PHI reads are recorded (purpose HOPERAT), not dead-lettered."""
    pki = Pki(tmp_path)
    port = _port()
    configured = Settings.from_env({
        "LEDGER_DATABASE_URL": settings.database_url, "LEDGER_KEY_FILE": str(settings.key_file),
        "LEDGER_SYSLOG_TLS": f"127.0.0.1:{port}", "LEDGER_SYSLOG_CERT": str(pki.server[0]),
        "LEDGER_SYSLOG_KEY": str(pki.server[1]), "LEDGER_SYSLOG_CA": str(pki.ca)})
    app = create_app(configured, configure_logs=False)
    read = msgs.dcm4che_patient_read()
    assert b"PurposeOfUse" not in read
    with TestClient(app):
        svc = fastapi_app(app).state.services
        _identity(svc, "atna-sender")
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                pki.client_context("atna-sender").wrap_socket(
                    raw, server_hostname="127.0.0.1") as tls:
            sent = syslog_message(read)
            tls.sendall(frame(sent))
            deadline = time.monotonic() + 60  # only a hang fails here
            while not _events(svc):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert DeadLetters(svc.store, None).letters() == []
        (event,) = _events(svc)
        # The auditor re-computes the digest from the message the sender sent.
        (entry,) = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10)]
        assert entry.members["received"] == {"format": "atna-syslog",
                                             "sha256": hashlib.sha256(sent).hexdigest()}
        assert verify_ledger(svc.store, "default").ok
    assert (event["action"], event["purpose"], event["patient"]) == (
        "read", "HOPERAT", {"id": msgs.PATIENT})


@pytest.mark.parametrize(("configured", "purpose"), [
    (None, "HOPERAT"), ("", "HOPERAT"), ("TREAT", "TREAT"), ("off", None), ("None", None)])
def test_the_default_purpose_setting(configured: str | None, purpose: str | None) -> None:
    env = {} if configured is None else {"LEDGER_FORMATS_DEFAULT_PURPOSE": configured}
    assert Settings.from_env(env).fhir_default_purpose == purpose


def test_break_the_glass_over_atna_raises_the_break_glass_alert(svc: Services) -> None:
    """110113 Security Alert with 110127 Emergency Override on a patient's record is the
    PHI access itself under ETREAT: monitoring's break_glass rule fires on its entry."""
    _identity(svc, "atna-sender")
    found = svc.access.identities.by_name("atna-sender")
    assert found is not None
    intake = intake_of(svc)
    sender = Sender(found.id, found.ledger)
    assert _taken(intake, sender, syslog_message(msgs.emergency_override())) \
        == "accepted"
    (event,) = _events(svc)
    assert (event["action"], event["purpose"], event["actor"]["kind"]) == (
        "read", "ETREAT", "user")
    assert [(a["seq"], a["rule"]) for a in alerts(svc) if a["rule"] == "break_glass"] == [
        (1, "break_glass")]


def test_an_emergency_override_without_a_patient_stays_a_security_alert() -> None:
    bare = re.sub(rb"<ParticipantObjectIdentification.*?/>", b"", msgs.emergency_override(),
                  flags=re.S)
    assert msgs.PATIENT.encode() not in bare
    event = atna.to_event(bare, event_id=EVENT_ID)
    assert (event["action"], event["purpose"]) == ("security_alert", "ETREAT")
    update = msgs.emergency_override().replace(b'EventActionCode="E"', b'EventActionCode="U"')
    assert atna.to_event(update, event_id=EVENT_ID)["action"] == "update"


def test_a_revoked_sender_is_refused_at_connection_and_mid_stream(
        svc: Services, tmp_path: Path) -> None:
    """Revoking a sender's keys (``phi-ledger admin revoke-key``) revokes its
    certificate's access: an open connection is closed before its next message is
    taken, a new one is refused, a listed UDP address is refused."""
    pki = Pki(tmp_path)
    key = _identity(svc, "atna-sender")
    intake = intake_of(svc)
    port, udp_port = _port(), _port()

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities), tls=f"127.0.0.1:{port}",
                                context=server_context(*pki.server, pki.ca),
                                udp=f"127.0.0.1:{udp_port}",
                                udp_senders={"127.0.0.1": "atna-sender"}, recheck=0)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
            writer.write(frame(syslog_message(msgs.login())))
            await writer.drain()
            await _until(lambda: intake.stats.accepted == 1)
            await asyncio.to_thread(svc.access.identities.revoke, key, actor=Actor("test"))
            writer.write(frame(syslog_message(msgs.logout())))
            await writer.drain()
            assert await _closed(reader)  # closed by the listener
            writer.close()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
            writer.write(frame(syslog_message(msgs.logout())))
            await writer.drain()
            assert await _closed(reader)
            writer.close()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(syslog_message(msgs.logout()), ("127.0.0.1", udp_port))
            await _until(lambda: intake.stats.refused_senders >= 3)
        finally:
            await listeners.close()

    _run(scenario)
    assert intake.stats.refused_senders == 3
    # the login, then the service's own record of the revocation; no logout
    assert [e["action"] for e in _events(svc)] == ["login", "key_revoked"]
    assert intake.dead_letters.letters() == []


def test_a_sender_is_looked_up_again_once_its_check_is_older_than_the_interval() -> None:
    sender = Sender("app-1", "default")
    standing: list[Sender | None] = [sender]
    looked: list[str] = []
    now = [100.0]

    def resolve(name: str) -> Sender | None:
        looked.append(name)
        return standing[0]

    check = SenderCheck(resolve, "atna-sender", sender, 2.0, clock=lambda: now[0])
    assert asyncio.run(check.still()) == sender and looked == []  # trusted for 2 s
    now[0] += 1.999
    standing[0] = None
    assert asyncio.run(check.still()) == sender and looked == []
    now[0] += 0.001
    assert asyncio.run(check.still()) is None and looked == ["atna-sender"]
    standing[0] = Sender("app-2", "default")  # the name now belongs to another identity
    assert asyncio.run(check.still()) is None
    standing[0] = sender
    assert asyncio.run(check.still()) == sender and len(looked) == 3


def _sized(size: int) -> bytes:
    """A login message of exactly ``size`` bytes (padded with XML whitespace)."""
    short = syslog_message(msgs.login())
    padded = syslog_message(msgs.login().replace(
        b"</AuditMessage>", b" " * (size - len(short)) + b"</AuditMessage>"))
    assert len(padded) == size
    return padded


def test_a_frame_of_64_kib_is_taken_and_one_byte_more_is_refused(
        svc: Services, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    _identity(svc, "atna-sender")
    intake = intake_of(svc)
    port = _port()
    largest, over = _sized(MAX_FRAME), _sized(MAX_FRAME + 1)

    async def scenario() -> None:
        listeners = await start(intake, resolver(svc.access.identities), tls=f"127.0.0.1:{port}",
                                context=server_context(*pki.server, pki.ca))
        try:
            for message in (largest, over):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=pki.client_context("atna-sender"))
                writer.write(frame(message))
                await writer.drain()
                if message is largest:
                    await _until(lambda: intake.stats.accepted == 1)
                else:
                    assert await _closed(reader)  # the stream is refused
                writer.close()
        finally:
            await listeners.close()

    _run(scenario)
    assert [e["action"] for e in _events(svc)] == ["login"]
    (entry,) = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10)]
    assert entry.members["received"]["sha256"] == hashlib.sha256(largest).hexdigest()
    assert intake.dead_letters.letters() == []


# -- dead letters, as kept --------------------------------------------------------------


def test_a_dead_letter_is_sealed_at_rest_and_opens_only_in_its_row(svc: Services) -> None:
    """A dead letter names patients as much as an entry does: with PHI encrypted at rest its
    bytes are sealed (no PHI in the stored row) and bound to its ledger, so moved to
    another ledger's row it does not open."""
    intake = intake_of(svc)
    assert intake.dead_letters.ring is not None  # the test service encrypts PHI
    raw = syslog_message(msgs.dcm4che_patient_read())
    with capture_logs() as logs:
        letter = intake.bury("default", "ident-1", raw, "syslog: test")
    # The log line leads an operator to the letter (never to its contents).
    assert logs == [{"event": "syslog.dead_letter", "letter": letter, "ledger": "default",
                     "log_level": "info"}]
    with svc.store.transaction() as tx:
        kek_id, stored = svc.store.execute(
            tx, "SELECT kek_id, message FROM dead_letters WHERE id = %s", (letter,)).fetchone()
    assert kek_id is not None and msgs.PATIENT.encode() not in bytes(stored)
    assert intake.dead_letters.message(letter) == raw
    other = open_store(svc.settings.database_url)  # committed: another connection opens it
    try:
        assert DeadLetters(other, intake.dead_letters.ring).message(letter) == raw
    finally:
        other.close()
    with svc.store.transaction() as tx:
        svc.store.execute(tx, "UPDATE dead_letters SET ledger = %s WHERE id = %s",
                          ("other", letter))
    with pytest.raises(EnvelopeError):
        intake.dead_letters.message(letter)


def test_a_dead_letters_reason_is_cut_to_its_first_2000_characters(svc: Services) -> None:
    """A reason lists a message's problems, and a message may have many: what is kept,
    buried or updated by a replay, is bounded."""
    intake = intake_of(svc)
    many = "; ".join(f"AuditMessage/ActiveParticipant[{i}]/UserID: missing"
                     for i in range(200))
    assert len(many) > 2000
    letter = intake.bury("default", "ident-1", b"<AuditMessage/>", many)
    (kept,) = intake.dead_letters.letters()
    assert kept.reason == many[:2000]
    intake.dead_letters.still_dead(letter, many.upper())
    (kept,) = intake.dead_letters.letters()
    assert kept.reason == many.upper()[:2000]


def test_a_letter_that_does_not_exist_is_a_key_error_naming_it(svc: Services) -> None:
    """Reading or replaying a letter id that is not there (a typo on the command line) is
    a KeyError for that id, never another letter's bytes or a crash of another kind."""
    intake = intake_of(svc)
    letter = intake.bury("default", "ident-1", b"<AuditMessage/>", "syslog: test")
    for read in (intake.dead_letters.message, intake.replay):
        with pytest.raises(KeyError) as missing:
            read(letter + 1)
        assert missing.value.args == (letter + 1,)


# -- replaying a dead letter ------------------------------------------------------------


def _sender_of(svc: Services, name: str = "atna-sender") -> Sender:
    _identity(svc, name)
    found = svc.access.identities.by_name(name)
    assert found is not None
    return Sender(found.id, found.ledger)


def test_a_replayed_letter_is_its_senders_entry_the_event_its_message_makes_live(
        svc: Services) -> None:
    """A letter replayed after the fix becomes the entry the message would have made when
    it came: submitted by its sender, with the event id derived from that sender (so the
    message sent again is a replay of it, not a second entry), and the letter records when
    it was replayed."""
    sender, intake = _sender_of(svc), intake_of(svc)
    read = syslog_message(msgs.dcm4che_patient_read())
    intake.default_purpose = None  # no purpose in the message, none configured: a letter
    assert _taken(intake, sender, read) == "dead"
    (letter,) = intake.dead_letters.letters()
    intake.default_purpose = "HOPERAT"  # the fix
    now = intake.clock()
    intake.clock = lambda: now
    seq = intake.replay(letter.id)
    assert seq is not None
    (replayed,) = intake.dead_letters.letters(include_replayed=True)
    assert (replayed.replayed_seq, replayed.replayed_at) == (seq, format_recorded_at(now))
    (entry,) = [Entry.decode(raw) for raw in svc.store.read("default", 0, 10)]
    assert entry.members["submitted_by"] == {"identity": sender.identity,
                                             "credential": "syslog"}
    assert _taken(intake, sender, read) == "replayed"
    assert len(_events(svc)) == 1


def test_a_replay_that_still_does_not_map_gives_the_letter_todays_reason(
        svc: Services) -> None:
    """Replayed before the fix, a letter stays open and its reason is the one the mapping
    gives now (what the operator must still fix), not the one it was buried with."""
    intake = intake_of(svc)
    intake.default_purpose = None
    read = syslog_message(msgs.dcm4che_patient_read())
    letter = intake.bury("default", "ident-1", read, "an older mapping's reason")
    assert intake.replay(letter) is None
    (kept,) = intake.dead_letters.letters()
    assert kept.reason == map_message(read, "ident-1", None).reason
    assert "PurposeOfUse" in kept.reason


def test_a_replay_the_contract_still_refuses_gives_the_contracts_reason(
        svc: Services) -> None:
    """Replayed while the contract still refuses its event (a sender claiming the
    service's own source.system), the letter stays open with the contract's reason."""
    sender, intake = _sender_of(svc), intake_of(svc)
    forged = msgs.login().replace(b'AuditSourceID="ehr"', b'AuditSourceID="phi-ledger"')
    assert forged != msgs.login()
    letter = intake.bury("default", sender.identity, syslog_message(forged),
                         "an older mapping's reason")
    assert intake.replay(letter) is None
    (kept,) = intake.dead_letters.letters()
    assert kept.reason.startswith("contract: ") and "source.system" in kept.reason


def test_a_replay_whose_event_id_is_taken_by_another_body_is_a_conflict(
        svc: Services) -> None:
    """The letter's message was recorded meanwhile with another body (sent again under a
    different default purpose): its replay writes nothing and says so."""
    sender, intake = _sender_of(svc), intake_of(svc)
    read = syslog_message(msgs.dcm4che_patient_read())
    intake.default_purpose = None
    assert _taken(intake, sender, read) == "dead"
    (letter,) = intake.dead_letters.letters()
    intake.default_purpose = "TREAT"
    assert _taken(intake, sender, read) == "accepted"
    intake.default_purpose = "HOPERAT"
    assert intake.replay(letter.id) is None
    (kept,) = intake.dead_letters.letters()
    assert kept.reason == CONFLICT
    assert [e["purpose"] for e in _events(svc)] == ["TREAT"]
