"""ITI-81 search read as FHIR reads it, on SQLite and PostgreSQL: a date value is the span
its precision names (``le2026-11-22`` is the whole of that day), a parameter given twice
is refused rather than half read (FHIR ANDs repeats: here they could only contradict),
``_count`` is a plain number, ``action=E`` finds every entry rendered with E, and the last
page has no ``next``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.routers.fhir import ACTION_CODES
from ledger.event import SYSTEM_ACTIONS
from tests.support import fastapi_app, make_event

TIMES = ["2026-11-21T10:00:00Z", "2026-11-22T10:00:00Z", "2026-11-22T10:00:00.5Z",
         "2026-11-22T23:59:59.999999Z", "2026-11-23T00:00:00Z"]


def _post_at(client: TestClient, times: list[str], **fields: Any) -> None:
    for at in times:
        r = client.post("/v1/events", json=make_event(occurred_at=at, **fields))
        assert r.status_code == 201, r.text
    svc = fastapi_app(client.app).state.services
    head = client.get("/v1/ledger").json()["seq"]
    assert svc.projector.wait_for(svc.store.notification_of("default", head), 60)


def _found(client: TestClient, **params: Any) -> list[str]:
    r = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT", "_count": "100",
                                               **params})
    assert r.status_code == 200, r.text
    return [e["resource"]["recorded"] for e in r.json()["entry"]]


@pytest.mark.parametrize("dates, expected", [
    (["le2026-11-22T10:00:00Z"], TIMES[:3]),  # that second is in: .5 too
    (["lt2026-11-22T10:00:00Z"], TIMES[:1]),
    (["gt2026-11-22T10:00:00Z"], TIMES[3:]),  # after that second: .5 is not
    (["ge2026-11-22T10:00:00Z"], TIMES[1:]),
    (["sa2026-11-22T10:00:00Z"], TIMES[3:]),
    (["eb2026-11-22T10:00:00Z"], TIMES[:1]),
    (["le2026-11-22"], TIMES[:4]),  # the whole of the 22nd
    (["gt2026-11-22"], TIMES[4:]),
    (["2026-11-22"], TIMES[1:4]),
    (["eq2026-11-22T10:00:00Z"], TIMES[1:3]),
    (["eq2026-11-22T10:00:00.5Z"], TIMES[2:3]),
    (["ge2026-11-22", "lt2026-11-23"], TIMES[1:4]),
])
def test_a_date_is_the_span_its_precision_names(
        client: TestClient, dates: list[str], expected: list[str]) -> None:
    _post_at(client, TIMES)
    assert _found(client, date=dates) == expected


@pytest.mark.parametrize("params", [
    {"patient": ["Patient/MRN-0012345", "Patient/someone-else"]},
    {"_count": ["1", "3"]}, {"action": ["C", "R"]}, {"outcome": ["8", "0"]},
    {"agent": ["a", "b"]}, {"entity-type": ["1", "2"]},
    {"patient": "Patient/MRN-0012345", "patient.identifier": "MRN-0012345"},
])
def test_a_parameter_given_twice_is_refused(client: TestClient, params: dict[str, Any]
                                             ) -> None:
    _post_at(client, TIMES[:1])
    r = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT", **params})
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    named = {e for i in r.json()["issue"] for e in i["expression"]}
    assert named & set(params), named


def test_purpose_given_twice_is_refused_not_the_last_believed(client: TestClient) -> None:
    r = client.get("/fhir/AuditEvent", params={"purpose": ["NOPE", "HOPERAT"]})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["purpose"]


@pytest.mark.parametrize("count", ["1_0", " 2", "+2", "\u0662", "0", "101", "2.0", ""])
def test_count_is_a_plain_number_from_1_to_100(client: TestClient, count: str) -> None:
    r = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT", "_count": count})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["_count"]


@pytest.mark.parametrize("date", ["ap2026-11-22", "ne2026-11-22", "ge2026-11",
                                  "le2026-11-22T10:00Z"])
def test_unsupported_date_forms_are_refused(client: TestClient, date: str) -> None:
    r = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT", "date": date})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["date"]


def test_the_last_page_has_no_next_link(client: TestClient) -> None:
    _post_at(client, TIMES[:4])
    # Reads only: each page records a query event of the patient it showed, which the
    # views may already hold when the next page is asked for.
    url: str | None = "/fhir/AuditEvent?purpose=HOPERAT&_count=2&action=R"
    pages = []
    while url is not None:
        page = client.get(url).json()
        pages.append([e["resource"]["recorded"] for e in page["entry"]])
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert pages == [TIMES[:2], TIMES[2:4]]
    exact = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT", "_count": "4",
                                                   "action": "R"}).json()
    assert [link["relation"] for link in exact["link"]] == ["self"]


def test_action_e_finds_every_entry_rendered_with_e(client: TestClient) -> None:
    _post_at(client, TIMES[:1], action="staff_added", patient=None, purpose=None,
             channel=None, resource=None, data={"staff_id": "u1", "role": "nurse"})
    _post_at(client, TIMES[1:2], action="query")
    _post_at(client, TIMES[2:3])  # a read: R
    r = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT", "action": "E"})
    assert r.status_code == 200, r.text
    found = r.json()["entry"]
    assert [e["resource"]["recorded"] for e in found] == TIMES[:2]
    assert {e["resource"]["action"] for e in found} == {"E"}


def test_action_e_covers_the_services_own_records() -> None:
    # Identities, keys, shredding, alerts, checkpoints: entries the service writes, all
    # rendered with E, all found by it.
    assert set(ACTION_CODES["E"]) >= SYSTEM_ACTIONS
    assert {code for action in SYSTEM_ACTIONS for code in ACTION_CODES
            if action in ACTION_CODES[code]} == {"E"}


def test_paging_an_open_ended_search_ends(client: TestClient) -> None:
    """Each page records a query event of the patient it shows, timestamped now, which
    an open-ended search matches: pages hold what the ledger held at the first page, so
    following `next` ends, and finds each entry once."""
    _post_at(client, TIMES[:3])
    url: str | None = "/fhir/AuditEvent?purpose=HOPERAT&_count=1&patient=MRN-0012345"
    seen: list[str] = []
    for _ in range(10):  # more than enough: a loop that never ends fails here
        if url is None:
            break
        page = client.get(url)
        assert page.status_code == 200, page.text
        seen += [e["resource"]["id"] for e in page.json()["entry"]]
        url = next((link["url"] for link in page.json()["link"]
                    if link["relation"] == "next"), None)
        svc = fastapi_app(client.app).state.services
        head = client.get("/v1/ledger").json()["seq"]
        assert svc.projector.wait_for(svc.store.notification_of("default", head), 60)
    assert url is None
    assert seen == ["1", "2", "3"]
    tampered = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT", "_at": "x"})
    assert tampered.status_code == 400
