"""What the service received, kept: entries made from a FHIR AuditEvent carry
``received`` (the format and the SHA-256 of the exact bytes posted; for a Bundle the whole
Bundle's digest and the resource's index), covered by the hash, checked by the verifier,
rendered back, never written by a client. Also: the default purpose of standard formats,
and a round trip AuditEvent -> entry -> AuditEvent element by element. SQLite and
PostgreSQL."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from typing import Any

import orjson
from fastapi.testclient import TestClient

from api.app import create_app
from api.formats.fhir_audit import EXT
from ledger.attestation import Attestation, Received, Submitter
from ledger.chain import EMPTY_HEAD, check_chain, extend
from ledger.settings import Settings
from tests import fhir_messages as m
from tests.support import auth_headers, fastapi_app, make_event, service_key
from tests.test_tamper import run_cli

FHIR = {"Content-Type": "application/fhir+json"}
T = "2026-12-05T16:00:00.000000Z"


def _entries(client: TestClient) -> list[dict[str, Any]]:
    r = client.get("/v1/ledger/entries", params={"after": 0, "limit": 1000})
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def _sent(resource: dict[str, Any]) -> bytes:
    """What a sender puts on the wire: its own formatting, not our canonical form."""
    return orjson.dumps(resource, option=orjson.OPT_INDENT_2)


def _extensions(resource: dict[str, Any]) -> dict[str, Any]:
    return {e["url"].removeprefix(EXT): e.get("valueString", e.get("valueInteger"))
            for e in resource.get("extension", [])}


def test_an_auditor_recomputes_the_digest_of_a_posted_audit_event(
        client: TestClient, settings: Settings) -> None:
    body = _sent(m.read())
    r = client.post("/fhir/AuditEvent", content=body, headers=FHIR)
    assert r.status_code == 201, r.text
    (entry,) = _entries(client)
    # The auditor holds `body` (what was sent) and nothing of ours.
    assert entry["received"] == {"format": "fhir-r4-json",
                                 "sha256": hashlib.sha256(body).hexdigest()}
    back = client.get(r.headers["Location"], params={"purpose": "HOPERAT"})
    assert back.status_code == 200, back.text
    ext = _extensions(back.json())
    assert (ext["received-format"], ext["received-sha256"]) == (
        "fhir-r4-json", hashlib.sha256(body).hexdigest())
    assert "received-entry" not in ext
    assert client.post("/v1/ledger/verify").json()["ok"] is True
    verified = run_cli(settings, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_resources_of_a_bundle_carry_the_bundles_digest_and_their_index(
        client: TestClient) -> None:
    for kind in ("transaction", "batch"):
        resources = [m.create(), m.update(), m.delete()]
        for resource in resources:
            resource["id"] = f"{kind}-{resource['id']}"
        bad = m.read()
        bad["recorded"] = "not an instant"
        entries = [{"resource": r, "request": {"method": "POST", "url": "AuditEvent"}}
                   for r in resources]
        if kind == "batch":  # a refused entry in the middle: the others keep their index
            entries.insert(1, {"resource": bad, "request": {"method": "POST",
                                                            "url": "AuditEvent"}})
        body = _sent({"resourceType": "Bundle", "type": kind, "entry": entries})
        before = len(_entries(client))
        r = client.post("/fhir", content=body, headers=FHIR)
        assert r.status_code == 200, r.text
        written = _entries(client)[before:]
        digest = hashlib.sha256(body).hexdigest()
        indexes = [0, 1, 2] if kind == "transaction" else [0, 2, 3]
        assert [e["received"] for e in written] == [
            {"format": "fhir-r4-json", "sha256": digest, "entry": i} for i in indexes]
        seq = written[-1]["seq"]
        back = client.get(f"/fhir/AuditEvent/{seq}", params={"purpose": "HOPERAT"}).json()
        assert _extensions(back)["received-entry"] == indexes[-1]
    assert client.post("/v1/ledger/verify").json()["ok"] is True


def test_a_batch_submitted_entry_by_entry_keeps_each_index(client: TestClient) -> None:
    """When the Bundle cannot go as one (an id recorded with another body), each entry
    goes alone: each still names its own index."""
    taken = m.create()
    assert client.post("/fhir/AuditEvent", content=_sent(taken), headers=FHIR
                       ).status_code == 201
    changed = copy.deepcopy(taken)
    changed["recorded"] = "2026-11-27T10:00:00Z"
    fresh = [m.update(), m.delete()]
    entries = [{"resource": r} for r in (fresh[0], changed, fresh[1])]
    body = _sent({"resourceType": "Bundle", "type": "batch", "entry": entries})
    r = client.post("/fhir", content=body, headers=FHIR)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["201 Created", "409 Conflict", "201 Created"]
    written = _entries(client)[1:]
    digest = hashlib.sha256(body).hexdigest()
    assert [e["received"] for e in written] == [
        {"format": "fhir-r4-json", "sha256": digest, "entry": i} for i in (0, 2)]


def test_clients_cannot_write_or_forge_received(client: TestClient) -> None:
    r = client.post("/v1/events", json={
        **make_event(), "received": {"format": "fhir-r4-json", "sha256": "0" * 64}})
    assert r.status_code == 422, r.text  # an unknown member, refused (named by position)
    assert _entries(client) == []
    plain = client.post("/v1/events", json=make_event())
    assert plain.status_code == 201
    assert "received" not in _entries(client)[-1]  # contract JSON: nothing received to keep
    forged = m.read()
    forged["extension"] = [{"url": EXT + "received-sha256", "valueString": "0" * 64},
                           {"url": EXT + "received-format", "valueString": "atna-syslog"}]
    body = _sent(forged)
    r = client.post("/fhir/AuditEvent", content=body, headers=FHIR)
    assert r.status_code == 201, r.text
    assert _entries(client)[-1]["received"] == {
        "format": "fhir-r4-json", "sha256": hashlib.sha256(body).hexdigest()}


def _chain(received: list[Received | None] | None) -> list[tuple[int, bytes]]:
    by = Attestation(Submitter("id-0123456789", "key-0123456789"))
    events = [{"event_id": f"e{i}", "n": i} for i in range(3)]
    members = None if received is None else [by.members(r) for r in received]
    return [(e.seq, e.encode()) for e in extend(EMPTY_HEAD, "default", events, T, members)]


def test_the_verifier_checks_received_and_older_entries_stay_valid() -> None:
    assert check_chain("default", _chain(None)).ok  # before submitted_by and received
    assert check_chain("default", _chain([None, None, None])).ok  # submitted_by only
    digest = hashlib.sha256(b"sent").hexdigest()
    rows = _chain([Received("atna-syslog", digest), None, Received("fhir-r4-json", digest, 7)])
    assert b'"received":{"format":"atna-syslog","sha256":"' + digest.encode() in rows[0][1]
    assert check_chain("default", rows).ok
    forged = rows[0][1].replace(digest.encode(), hashlib.sha256(b"other").hexdigest().encode())
    verdict = check_chain("default", [(1, forged), *rows[1:]])
    assert (verdict.first_bad_seq, verdict.reason) == (
        1, "hash does not match the entry's content")
    for bad in (b'"sha256":"' + digest[:-1].encode() + b'"',  # not 64 hex digits
                b'"sha256":"' + digest.upper().encode() + b'"'):
        malformed = rows[0][1].replace(b'"sha256":"' + digest.encode() + b'"', bad)
        assert check_chain("default", [(1, malformed)]).reason == \
            "entry's received is not well-formed"
    for member in ({"format": "x", "sha256": digest, "entry": -1},
                   {"format": "x", "sha256": digest, "entry": True},
                   {"format": "", "sha256": digest}, {"format": "x"},
                   {"format": "x", "sha256": digest, "more": 1}, "x"):
        entry = orjson.loads(rows[0][1])
        entry["received"] = member
        data = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
        assert check_chain("default", [(1, data)]).reason == \
            "entry's received is not well-formed", member


def test_the_default_purpose_of_standard_formats(settings: Settings) -> None:
    """A FHIR server that sends no purpose is recorded (HOPERAT) unless the default is
    turned off, when the refusal names the element."""
    silent = m.read()
    del silent["purposeOfEvent"]
    for purpose, status in (("HOPERAT", 201), (None, 422)):
        app = create_app(replace(settings, fhir_default_purpose=purpose),
                         configure_logs=False)
        with TestClient(app) as client:
            client.headers.update(auth_headers(service_key(fastapi_app(app).state.services)))
            silent["id"] = f"silent-{status}"
            r = client.post("/fhir/AuditEvent", content=_sent(silent), headers=FHIR)
            assert r.status_code == status, r.text
            if status == 201:
                svc = fastapi_app(app).state.services
                (entry,) = _entries(client)
                event = svc.protection.reveal_many("default", [entry["event"]])[0]
                assert event["purpose"] == "HOPERAT"
            else:
                assert ["AuditEvent.purposeOfEvent"] in [
                    i.get("expression") for i in r.json()["issue"]]


def test_round_trip_keeps_every_element_the_contract_holds(client: TestClient) -> None:
    """AuditEvent -> entry -> AuditEvent, element by element. Not kept (the contract has
    no place for them): the non-requestor source agent, resource versions, codings'
    systems and displays of free codes (a role is kept as its code)."""
    sent = m.disclosure_source()
    r = client.post("/fhir/AuditEvent", content=_sent(sent), headers=FHIR)
    assert r.status_code == 201, r.text
    back = client.get(r.headers["Location"], params={"purpose": "HOPERAT"}).json()
    assert (back["type"]["code"], back["action"], back["recorded"], back["outcome"]) == (
        sent["type"]["code"], sent["action"], sent["recorded"], sent["outcome"])
    assert [c["code"] for c in back["subtype"]] == [c["code"] for c in sent["subtype"]]
    assert [c["code"] for p in back["purposeOfEvent"] for c in p["coding"]] == [
        c["code"] for p in sent["purposeOfEvent"] for c in p["coding"]]
    requestor = next(a for a in sent["agent"] if a["requestor"])
    (agent,) = [a for a in back["agent"] if a["requestor"]]
    assert agent["who"]["identifier"]["value"] == requestor["who"]["identifier"]["value"]
    assert agent["network"] == requestor["network"]
    assert [x["text"] for x in agent["role"]] == [
        c["code"] for x in requestor["role"] for c in x["coding"]]
    recipient = next(a for a in sent["agent"]
                     if a["type"]["coding"][0]["code"] == "IRCP")
    (shown,) = [a for a in back["agent"] if not a["requestor"]]
    assert shown["who"]["display"] == recipient["who"]["display"]
    assert back["source"]["site"] == sent["source"]["site"]
    assert back["source"]["observer"]["identifier"]["value"] == \
        sent["source"]["observer"]["display"]
    patient = {e["what"]["identifier"]["value"] for e in back["entity"]
               if e.get("role", {}).get("code") == "1"}
    assert patient == {sent["entity"][0]["what"]["reference"].removeprefix("Patient/")}
    document = sent["entity"][1]["what"]["reference"]  # "DocumentReference/doc-9"
    kept = [(e["type"]["code"], e["what"]["identifier"]["value"]) for e in back["entity"]
            if e.get("role", {}).get("code") != "1"]
    assert kept == [tuple(document.split("/"))]
    described = _extensions(shown)
    assert described["disclosure-description"] == sent["entity"][1]["description"]
