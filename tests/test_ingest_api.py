"""Ingest over HTTP, on SQLite and PostgreSQL: receipts, idempotency, batches, refusals."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.settings import Settings
from tests.support import auth_headers, contract_example, make_event, provision_key


def _head(client: TestClient) -> dict[str, Any]:
    return client.get("/v1/ledger").json()


def _entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"\x00" + data.encode()).hexdigest()


def test_post_gives_a_receipt_that_matches_the_stored_entry(client: TestClient) -> None:
    event = contract_example()
    r = client.post("/v1/events", json=event)
    assert r.status_code == 201, r.text
    receipt = r.json()
    assert set(receipt) == {"event_id", "ledger", "seq", "hash", "prev_hash", "recorded_at"}
    assert receipt["event_id"] == event["event_id"]
    assert receipt["seq"] == 1 and receipt["prev_hash"] == "0" * 64
    assert receipt["recorded_at"].endswith("Z")
    entries = client.get("/v1/ledger/entries").json()["entries"]
    assert entries[0]["hash"] == receipt["hash"] == _entry_hash(entries[0])
    assert _head(client)["seq"] == 1 and _head(client)["hash"] == receipt["hash"]


def test_replay_returns_the_first_receipt_and_writes_nothing(client: TestClient) -> None:
    event = make_event()
    first = client.post("/v1/events", json=event)
    again = client.post("/v1/events", json=event)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert _head(client)["seq"] == 1


def test_same_id_with_another_body_is_409_and_writes_nothing(client: TestClient) -> None:
    event = make_event()
    client.post("/v1/events", json=event)
    r = client.post("/v1/events", json={**event, "purpose": "HOPERAT"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "event_id_conflict"
    assert _head(client)["seq"] == 1


def test_chain_links_across_requests(client: TestClient) -> None:
    receipts = [client.post("/v1/events", json=make_event()).json() for _ in range(5)]
    assert [r["seq"] for r in receipts] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(receipts):
        assert after["prev_hash"] == before["hash"]
    assert client.post("/v1/ledger/verify").json() == {
        "ok": True, "verified_through": 5, "first_bad_seq": None, "reason": None}


def test_batch_receipts_in_posted_order(client: TestClient) -> None:
    events = [make_event() for _ in range(10)]
    r = client.post("/v1/events/batch", json={"events": events})
    assert r.status_code == 201
    receipts = r.json()["receipts"]
    assert [x["event_id"] for x in receipts] == [e["event_id"] for e in events]
    assert [x["seq"] for x in receipts] == list(range(1, 11))
    # Replaying the whole batch writes nothing and answers 200.
    again = client.post("/v1/events/batch", json={"events": events})
    assert again.status_code == 200 and again.json()["receipts"] == receipts


def test_batch_is_all_or_nothing_on_a_bad_event(client: TestClient) -> None:
    events = [make_event() for _ in range(5)]
    events[3]["occurred_at"] = "2026-11-26T14:03:22"
    events[4]["actor"] = {"id": "x", "kind": "robot"}
    r = client.post("/v1/events/batch", json={"events": events})
    assert r.status_code == 422
    fields = r.json()["error"]["fields"]
    assert "events[3].occurred_at" in fields and "events[4].actor.kind" in fields
    assert _head(client)["seq"] == 0


def test_batch_is_all_or_nothing_on_a_conflict(client: TestClient) -> None:
    taken = make_event()
    client.post("/v1/events", json=taken)
    events = [make_event(), {**taken, "channel": "fax"}, make_event()]
    r = client.post("/v1/events/batch", json={"events": events})
    assert r.status_code == 409
    assert _head(client)["seq"] == 1


def test_batch_limits(client: TestClient) -> None:
    assert client.post("/v1/events/batch", json={"events": []}).status_code == 422
    too_many = [make_event() for _ in range(1001)]
    r = client.post("/v1/events/batch", json={"events": too_many})
    assert r.status_code == 422 and r.json()["error"]["fields"] == ["events"]
    dup = make_event()
    r = client.post("/v1/events/batch", json={"events": [dup, dup]})
    assert r.status_code == 422 and "events[1].event_id" in r.json()["error"]["fields"]
    assert client.post("/v1/events/batch", json={"evts": []}).status_code == 422
    assert _head(client)["seq"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"occurred_at": "2026-11-26 14:03:22"}, "occurred_at"),
        ({"occurred_at": "2026-11-26T14:03:22"}, "occurred_at"),
        ({"action": "peek"}, "action"),
        ({"outcome": "maybe"}, "outcome"),
        ({"purpose": "FUN"}, "purpose"),
        ({"channel": "pigeon"}, "channel"),
        ({"patient": None}, "patient"),
        ({"surprise": 1}, "(event)"),
        ({"data": {"weight": "70 kg"}}, "data"),
        ({"action": "update", "data": {"weight": 70.5}}, "data.weight"),
        ({"action": "disclose"}, "disclosure"),
        ({"actor": {"id": "a", "kind": "user", "ip": "300.1.1.1"}}, "actor.ip"),
        ({"actor": {"kind": "user"}}, "actor.id"),
    ],
)
def test_bad_events_name_the_field_and_write_nothing(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    event = make_event(**change)
    r = client.post("/v1/events", json=event)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_event" and field in error["fields"]
    assert "MRN-0012345" not in r.text
    assert _head(client)["seq"] == 0


def test_required_fields_missing(client: TestClient) -> None:
    r = client.post("/v1/events", json={"action": "read"})
    fields = r.json()["error"]["fields"]
    for name in ("event_id", "occurred_at", "outcome", "actor"):
        assert name in fields


def test_malformed_json_and_wrong_types(client: TestClient) -> None:
    r = client.post(
        "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["fields"] == ["(body)"]
    assert client.post("/v1/events", json=[1, 2]).status_code == 422
    assert client.post("/v1/events", json=make_event(actor={"id": 5, "kind": "user"})).json()[
        "error"]["fields"] == ["actor.id"]


def test_oversized_event_is_refused(client: TestClient) -> None:
    event = make_event(action="update", data={"note": "x" * 8000, **{
        f"f{i}": "y" * 8000 for i in range(9)}})
    r = client.post("/v1/events", json=event)
    assert r.status_code == 422 and "(event)" in r.json()["error"]["fields"]
    huge = b'{"x":"' + b"a" * (300 * 1024) + b'"}'
    r = client.post("/v1/events", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _head(client)["seq"] == 0


def test_entries_paging_and_bounds(client: TestClient) -> None:
    client.post("/v1/events/batch", json={"events": [make_event() for _ in range(7)]})
    page = client.get("/v1/ledger/entries", params={"after": 0, "limit": 3}).json()
    assert [e["seq"] for e in page["entries"]] == [1, 2, 3] and page["next_after"] == 3
    page = client.get("/v1/ledger/entries", params={"after": 6, "limit": 3}).json()
    assert [e["seq"] for e in page["entries"]] == [7] and page["next_after"] is None
    r = client.get("/v1/ledger/entries", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"]["fields"] == ["limit"]
    r = client.get("/v1/ledger/entries", params={"after": -1})
    assert r.status_code == 400 and r.json()["error"]["fields"] == ["after"]


def test_ledgers_are_separate_chains(client: TestClient, settings: Settings) -> None:
    # Each identity's ledger is the one it appends to and reads (tests/test_auth_*).
    clinic_a = auth_headers(provision_key(settings.database_url, ledger="clinic-a"))
    clinic_b = auth_headers(provision_key(settings.database_url, ledger="clinic-b"))
    a = client.post("/v1/events", json=make_event(), headers=clinic_a).json()
    b = client.post("/v1/events?ledger=clinic-b", json=make_event(), headers=clinic_b).json()
    assert a["seq"] == b["seq"] == 1 and a["ledger"] == "clinic-a" and b["ledger"] == "clinic-b"
    assert client.get("/v1/ledger", headers=clinic_a).json()["seq"] == 1
    assert client.get("/v1/ledger").json()["seq"] == 0
    assert client.get("/v1/ledger?ledger=clinic-a").status_code == 403


def test_request_id_is_echoed_and_generated(client: TestClient) -> None:
    r = client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    client.post("/v1/events", json=make_event())
    text = client.get("/metrics").text
    assert 'phi_ledger_http_requests_total{method="POST",route="/v1/events",status="201"}' in text
    assert "phi_ledger_writer_events 1.0" in text


def test_openapi_documents_the_event(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "Event" in schema["components"]["schemas"]
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/Event")
