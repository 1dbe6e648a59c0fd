"""Tenants: every append and every query is confined to the caller's own ledger, and
every look at PHI is a `query` entry naming the caller. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from tests.support import auth_headers, make_event, provision_key

A, B = "clinic-a", "clinic-b"


@pytest.fixture
def tenants(settings: Settings) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    keys = {
        f"{role}@{ledger}": auth_headers(provision_key(settings.database_url, roles=[role],
                                                       ledger=ledger))
        for role in ("ingest", "auditor", "verifier") for ledger in (A, B)
    }
    with TestClient(create_app(settings, configure_logs=False)) as client:
        yield client, keys


def _entries(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = client.get("/v1/ledger/entries", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def test_appends_and_reads_stay_in_the_callers_ledger(
    tenants: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, keys = tenants
    a = client.post("/v1/events", json=make_event(), headers=keys[f"ingest@{A}"]).json()
    b1 = client.post("/v1/events/batch", json={"events": [make_event(), make_event()]},
                     headers=keys[f"ingest@{B}"]).json()["receipts"]
    assert a["ledger"] == A and a["seq"] == 1
    assert [r["ledger"] for r in b1] == [B, B] and [r["seq"] for r in b1] == [1, 2]
    # an ingest key naming another ledger is refused, and nothing is written there
    r = client.post(f"/v1/events?ledger={B}", json=make_event(), headers=keys[f"ingest@{A}"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/ledger", headers=keys[f"verifier@{B}"]).json()["seq"] == 2

    head_a = client.get("/v1/ledger", headers=keys[f"verifier@{A}"]).json()
    assert head_a == {**head_a, "ledger": A, "seq": 1, "hash": a["hash"]}
    seen_a = {e["event"]["event_id"] for e in _entries(client, keys[f"verifier@{A}"])}
    seen_b = {e["event"]["event_id"] for e in _entries(client, keys[f"verifier@{B}"])}
    assert seen_a == {a["event_id"]} and seen_b == {r["event_id"] for r in b1}
    verdict = client.post("/v1/ledger/verify", headers=keys[f"verifier@{B}"]).json()
    assert verdict["ok"] and verdict["verified_through"] == 2
    for path in ("/v1/ledger", "/v1/ledger/entries"):
        crossing = client.get(path, params={"ledger": A}, headers=keys[f"verifier@{B}"])
        assert crossing.status_code == 403
    # naming a ledger that does not exist is the same answer: nothing about other tenants
    assert client.get("/v1/ledger", params={"ledger": "no-such-org"},
                      headers=keys[f"verifier@{B}"]).status_code == 403


def test_phi_reads_are_recorded_as_query_events_naming_the_caller(
    tenants: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, keys = tenants
    posted = client.post("/v1/events", json=make_event(patient={"id": "MRN-A-1"}),
                         headers=keys[f"ingest@{A}"]).json()
    auditor = keys[f"auditor@{A}"]
    me = client.get("/v1/auth/whoami", headers=auditor).json()
    r = client.get("/v1/patients/MRN-A-1/accesses",
                   params={"purpose": "HOPERAT", "min_seq": posted["seq"]}, headers=auditor)
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 1
    query = _entries(client, keys[f"verifier@{A}"])[-1]["event"]
    assert query["action"] == "query" and query["purpose"] == "HOPERAT"
    assert query["actor"]["id"] == me["id"] and query["actor"]["kind"] == "application"
    assert "MRN-A-1" not in str(query), "the patient is named, sealed like any PHI"

    # reading the report again shows the earlier read of it
    again = client.get("/v1/patients/MRN-A-1/accesses",
                       params={"purpose": "HOPERAT", "min_seq": posted["seq"] + 1},
                       headers=auditor).json()
    queries = [i for i in again["items"] if i["action"] == "query"]
    assert [(q["seq"], q["actor"]["id"]) for q in queries] == [(posted["seq"] + 1, me["id"])]

    # an auditor of another tenant finds nothing of clinic A's patient, in its own ledger
    other = client.get("/v1/patients/MRN-A-1/accesses", params={"purpose": "HOPERAT"},
                       headers=keys[f"auditor@{B}"])
    assert other.status_code == 404, other.text
    assert other.json()["error"]["code"] == "patient_not_found" and "MRN-A-1" not in other.text
    assert all(e["event"]["action"] != "read" for e in _entries(client, keys[f"verifier@{B}"]))
    crossing = client.get("/v1/patients/MRN-A-1/accesses",
                          params={"purpose": "HOPERAT", "ledger": A}, headers=keys[f"auditor@{B}"])
    assert crossing.status_code == 403
