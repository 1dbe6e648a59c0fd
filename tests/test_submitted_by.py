"""Entries say who submitted them: ``submitted_by``, written by the service, hashed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ledger.attestation import BY_SERVICE, Attestation, Submitter
from ledger.chain import EMPTY_HEAD, check_chain, extend
from tests.support import make_event

T = "2026-12-05T16:00:00.000000Z"


def _chain(members: bool) -> list[tuple[int, bytes]]:
    by = Attestation(Submitter("id-0123456789", "key-0123456789")).members()
    events = [{"event_id": f"e{i}", "n": i} for i in range(3)]
    entries = extend(EMPTY_HEAD, "default", events, T, [by] * 3 if members else None)
    return [(e.seq, e.encode()) for e in entries]


def test_old_style_chain_without_submitted_by_still_verifies() -> None:
    rows = _chain(members=False)
    assert b"submitted_by" not in rows[0][1]
    assert check_chain("default", rows).ok


def test_chain_with_submitted_by_verifies_and_tampering_it_breaks_the_hash() -> None:
    rows = _chain(members=True)
    member = b'"submitted_by":{"credential":"key-0123456789","identity":"id-0123456789"}'
    assert member in rows[1][1]
    assert check_chain("default", rows).ok
    forged = rows[1][1].replace(b"id-0123456789", b"id-9999999999")
    verdict = check_chain("default", [rows[0], (2, forged), rows[2]])
    assert not verdict.ok and verdict.first_bad_seq == 2
    assert verdict.reason == "hash does not match the entry's content"


def test_a_malformed_submitted_by_is_refused() -> None:
    rows = _chain(members=True)
    bad = rows[0][1].replace(b'"credential":"key-0123456789",', b"")
    assert check_chain("default", [(1, bad)]).reason == "entry's submitted_by is not well-formed"


def test_posted_entries_name_the_key_that_submitted_them(client: TestClient) -> None:
    r = client.post("/v1/events", json=make_event())
    assert r.status_code == 201, r.text
    entry = client.get("/v1/ledger/entries").json()["entries"][0]
    who = entry["submitted_by"]
    assert who["identity"].startswith("app-") and who["credential"].startswith("key-")
    assert who != BY_SERVICE.submitted_by.as_member()


def test_clients_cannot_post_the_services_own_source(client: TestClient) -> None:
    r = client.post("/v1/events", json=make_event(source={"system": "phi-ledger"}))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["fields"] == ["source.system"]
    batch = {"events": [make_event(), make_event(source={"system": "phi-ledger"})]}
    r = client.post("/v1/events/batch", json=batch)
    assert r.status_code == 400 and r.json()["error"]["fields"] == ["events[1].source.system"]
    assert client.get("/v1/ledger").json()["seq"] == 0


def test_every_entry_says_who_submitted_it_and_only_the_service_is_the_service(
        client: TestClient) -> None:
    """Reads the service records and investigation actions carry the service's own
    ``submitted_by`` (investigation actions had none); a client's entries never do."""
    seq = client.post("/v1/events", json=make_event()).json()["seq"]
    r = client.get("/v1/patients/MRN-0012345/accesses",
                   params={"purpose": "HOPERAT", "min_seq": seq, "wait_ms": 10_000})
    assert r.status_code == 200, r.text
    r = client.post("/v1/investigations", json={
        "title": "Lost badge", "discovered_at": "2026-11-26T09:00:00Z",
        "scope": {"from": "2026-11-24T00:00:00Z", "to": "2026-12-01T00:00:00Z",
                  "actors": ["agent-0042"]}})
    assert r.status_code == 201, r.text
    entries = client.get("/v1/ledger/entries").json()["entries"]
    assert all("submitted_by" in e for e in entries), [e["event"]["action"] for e in entries]
    by_service = {e["event"]["action"] for e in entries
                  if e["submitted_by"] == BY_SERVICE.submitted_by.as_member()}
    assert by_service == {"query", "investigation_opened"}
    assert entries[0]["submitted_by"]["identity"].startswith("app-")
