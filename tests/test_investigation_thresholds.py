"""The duties at their thresholds, end to end through the API, on SQLite and PostgreSQL.

45 CFR 164.408(b) wants HHS told at once when 500 or more are affected (unsecured), and
164.406 the media when more than 500 residents of one State are: the pure rule is tested
in tests/test_investigation_duties.py; here each edge is a real ledger of 500 or 501
patients (loaded in batches through the ingest service), an investigation over the stolen
device, and the answer's counts, duties and deadlines. The discoveries fall on 31 December:
of a leap year (2028, late in the evening west of UTC, so the UTC date is already 1
January: the clock starts on the local date) and of the year before one (60 days later is
29 February 2028).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support import auth_headers, fastapi_app, service_key
from tests.test_investigation_reports import DUTIES, parse
from tests.test_investigations_api import EHR, THIEF, WINDOW, ev

BATCH = 500  # events per ingest call
_ledgers = itertools.count()


def _patients(prefix: str, n: int, state: str, secured: bool = False
              ) -> list[dict[str, Any]]:
    """``n`` patients living in ``state`` (their record says so), each then read from the
    stolen laptop -- or, ``secured``, disclosed from it encrypted."""
    events = []
    for i in range(n):
        patient = f"{prefix}-{i:04d}"
        field = "state" if i % 2 else "address.state"  # both spellings of the contract
        events.append(ev("create", EHR, "2026-11-01T10:00:00Z", patient,
                         resource={"type": "patient", "id": patient}, data={field: state}))
        when = f"2026-11-25T{i // 60 % 24:02d}:{i % 60:02d}:00Z"
        if secured:
            events.append(ev("disclose", THIEF, when, patient, channel="fax", disclosure={
                "recipient": {"name": "Dr X", "kind": "provider"}, "description": "labs",
                "encrypted": True}))
        else:
            events.append(ev("read", THIEF, when, patient))
    return events


Duty = tuple[str, str, list[str] | None, str]  # to, deadline, states, basis
CASES: dict[str, tuple[list[dict[str, Any]], str, dict[str, Any], list[Duty]]] = {
    # 500 unsecured in NY (and one secured there): HHS at once; no media (not > 500).
    "500-unsecured": (_patients("U", 500, "NY") + _patients("S", 1, "NY", secured=True),
                      "2028-12-31T23:30:00-05:00",
                      {"patients": 501, "unsecured": 500, "by_state": {"NY": 500}},
                      [("individuals", "2029-03-01", None, "164.404(b)"),
                       ("hhs", "2029-03-01", None, "164.408(b)")]),
    # 499 unsecured and two secured: fewer than 500, so HHS in the annual log.
    "499-unsecured": (_patients("U", 499, "NY") + _patients("S", 2, "NY", secured=True),
                      "2028-12-31T23:30:00-05:00",
                      {"patients": 501, "unsecured": 499, "by_state": {"NY": 499}},
                      [("individuals", "2029-03-01", None, "164.404(b)"),
                       ("hhs", "2029-03-01", None, "164.408(c)")]),
    # 501 unsecured residents of NY: the media of NY too; the deadline is a leap day.
    "501-residents": (_patients("U", 501, "NY"), "2027-12-31T09:00:00-05:00",
                      {"patients": 501, "unsecured": 501, "by_state": {"NY": 501}},
                      [("individuals", "2028-02-29", None, "164.404(b)"),
                       ("hhs", "2028-02-29", None, "164.408(b)"),
                       ("media", "2028-02-29", ["NY"], "164.406")]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hhs_at_once_and_media_at_500_and_501_through_the_api(client: TestClient,
                                                              case: str) -> None:
    events, discovered, counts, duties = CASES[case]
    svc = fastapi_app(client.app).state.services
    ledger = f"edge-{next(_ledgers)}"
    for start in range(0, len(events), BATCH):
        svc.ingest.record_sync(ledger, events[start:start + BATCH], batch=True)
    headers = auth_headers(service_key(svc, ledger=ledger))
    r = client.post("/v1/investigations", headers=headers, json={
        "title": "Stolen laptop", "discovered_at": discovered,
        "scope": {**WINDOW, "devices": [THIEF["device_id"]]}})
    assert r.status_code == 201, r.text
    inv = r.json()["investigation_id"]
    r = client.get(f"/v1/investigations/{inv}", headers=headers,
                   params={"purpose": "HOPERAT", "limit": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timeline_total"] == counts["patients"]
    assert body["counts"] == counts
    assert [(d["to"], d["deadline"], d.get("states"), d["basis"].split(":")[0])
            for d in body["duties"]] == [(to, deadline, states, f"45 CFR {basis}")
                                         for to, deadline, states, basis in duties]
    if case == "501-residents":  # the printed report names the media duty and its state
        html = client.get(f"/v1/investigations/{inv}", headers=headers,
                          params={"purpose": "HOPERAT", "format": "html"}).text
        assert [row[:3] for row in parse(html).table(DUTIES)] == [
            [to, deadline, ", ".join(states or [])] for to, deadline, states, _ in duties]
