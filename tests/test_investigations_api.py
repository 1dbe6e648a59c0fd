"""Breach investigations over HTTP, end to end, on SQLite and PostgreSQL.

A laptop (device ``ws-stolen``) is taken on a Tuesday; the responder opens an
investigation over that device and the week after, and checks: the timeline (logins and
failed logins included, out-of-window and out-of-scope entries left out, time order across
offsets), the affected patients (failed actions and the service's own read records left
out; secured only for an encrypted disclosure), counts by state from the record (a later
move of state is not seen ``as_of`` before it), duties with their deadlines, paging, the
reads recorded under the investigator's purpose, amend and close as ledger entries with
factor 3 pre-filled, the role (deny by default), bad input named, and tenant isolation.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.support import auth_headers, fastapi_app, make_event, service_key

THIEF = {"id": "agent-kim", "kind": "user", "role": "call_agent", "mfa": True,
         "device_id": "ws-stolen", "ip": "203.0.113.9"}
CLERK = {"id": "agent-lee", "kind": "user", "role": "call_agent", "mfa": True,
         "device_id": "ws-2", "ip": "198.51.100.2"}
EHR = {"id": "ehr-bridge", "kind": "application"}
P1, P2, P3, P4, P5 = (f"MRN-90000{i}" for i in range(1, 6))
WINDOW = {"from": "2026-11-24T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


def ev(action: str, actor: dict[str, Any], when: str, patient: str | None = None,
       **fields: Any) -> dict[str, Any]:
    body = make_event(action=action, actor=dict(actor), occurred_at=when, **fields)
    if patient is None:
        for name in ("patient", "resource", "purpose", "channel"):
            body.pop(name, None)
    else:
        body["patient"] = {"id": patient}
    return body


def record(patient: str, when: str, **data: Any) -> dict[str, Any]:
    return ev("create", EHR, when, patient, resource={"type": "patient", "id": patient},
              data=data)


def post(client: httpx.Client, *events: dict[str, Any]) -> list[int]:
    r = client.post("/v1/events/batch", json={"events": list(events)})
    assert r.status_code == 201, r.text
    return [x["seq"] for x in r.json()["receipts"]]


def open_investigation(client: TestClient, **scope: Any) -> str:
    r = client.post("/v1/investigations", json={
        "title": "Stolen laptop ws-stolen", "discovered_at": "2026-11-26T09:00:00-05:00",
        "scope": {**WINDOW, **scope}})
    assert r.status_code == 201, r.text
    return str(r.json()["investigation_id"])


def answer(client: TestClient, inv: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/investigations/{inv}", params={"purpose": "HOPERAT", **params})
    assert r.status_code == 200, r.text
    return dict(r.json())


def scenario(client: httpx.Client) -> dict[str, int]:
    """The stolen laptop's week; returns seqs by name."""
    seqs = post(
        client,
        record(P1, "2026-11-01T10:00:00Z", state="NY", name="Ana Reyes"),
        record(P2, "2026-11-01T10:00:00Z", **{"address.state": "CA"}),
        record(P3, "2026-11-01T10:00:00Z", name="No State"),
        ev("login_failed", THIEF, "2026-11-24T22:00:00-05:00", outcome="failure"),
        ev("login", THIEF, "2026-11-24T22:01:00-05:00"),
        ev("read", THIEF, "2026-11-25T03:05:00Z", P1),
        ev("read", THIEF, "2026-11-25T03:06:00Z", P2,
           resource={"type": "message", "id": "m1", "phi": ["name", "condition"]}),
        ev("export", THIEF, "2026-11-25T03:07:00Z", P3, channel="email"),
        ev("disclose", THIEF, "2026-11-25T03:08:00Z", P4, channel="fax",
           disclosure={"recipient": {"name": "Dr X", "kind": "provider"},
                       "description": "labs", "encrypted": True}),
        ev("read", THIEF, "2026-11-25T03:09:00Z", P5, outcome="denied"),
        ev("read", CLERK, "2026-11-25T03:10:00Z", P1),  # other device: out of scope
        ev("read", THIEF, "2026-12-02T00:00:00Z", P1),  # after the window
        ev("read", THIEF, "2026-11-23T23:59:59Z", P1),  # before the window
    )
    names = ["r1", "r2", "r3", "failed_login", "login", "read1", "read2", "export", "disclose",
             "denied", "clerk", "after", "before"]
    return dict(zip(names, seqs, strict=True))


def test_an_investigation_answers_timeline_affected_counts_and_duties(client: TestClient
                                                                     ) -> None:
    s = scenario(client)
    inv = open_investigation(client, devices=["ws-stolen"])
    body = answer(client, inv)
    timeline = [i["seq"] for i in body["timeline"]]
    assert timeline == [s["failed_login"], s["login"], s["read1"], s["read2"], s["export"],
                        s["disclose"], s["denied"]]
    assert all(i["alerts"] == [] for i in body["timeline"])
    by_id = {a["patient"]["id"]: a for a in body["affected"]}
    assert set(by_id) == {P1, P2, P3, P4}
    assert by_id[P1]["state"] == "NY" and by_id[P2]["state"] == "CA"
    assert by_id[P3]["state"] == "unknown"
    assert by_id[P4]["secured"] is True and by_id[P1]["secured"] is False
    assert by_id[P2]["phi"] == ["condition", "name"]
    assert by_id[P3]["actions"] == {"export": 1} and by_id[P3]["channels"] == ["email"]
    assert by_id[P1]["first"] == "2026-11-25T03:05:00Z"
    assert body["counts"] == {"patients": 4, "unsecured": 3,
                              "by_state": {"CA": 1, "NY": 1, "unknown": 1}}
    assert body["duties"] == [
        {"to": "individuals", "deadline": "2027-01-25", "basis": body["duties"][0]["basis"]},
        {"to": "hhs", "deadline": "2027-03-01", "basis": body["duties"][1]["basis"]}]
    assert "164.408(c)" in body["duties"][1]["basis"]
    assert body["risk_assessment"]["acquired_or_viewed"]["acquired_or_viewed"] is True
    assert body["through_seq"] >= s["before"]


def test_every_patient_shown_is_a_recorded_query_and_not_itself_an_exposure(
        client: TestClient) -> None:
    scenario(client)
    inv = open_investigation(client, devices=["ws-stolen"], patients=[P1], to=None)
    first = answer(client, inv)
    head = client.get("/v1/ledger").json()["seq"]
    entries = client.get("/v1/ledger/entries",
                         params={"after": first["through_seq"], "limit": 100}).json()["entries"]
    queries = [e["event"] for e in entries if e["event"]["action"] == "query"]
    # P1-P4 affected, P5 in the timeline (its read was denied): five patients shown.
    assert len(queries) == 5 and {q["purpose"] for q in queries} == {"HOPERAT"}
    assert {q["resource"]["type"] for q in queries} == {"investigation"}
    # P1 is in scope by patient: the investigator's reads of P1 are in the timeline now,
    # but reading is not an exposure, so affected and counts do not change.
    again = answer(client, inv)
    assert again["through_seq"] == head
    assert again["counts"] == first["counts"]
    assert len(again["timeline"]) > len(first["timeline"])


def test_pages_walk_both_lists_once_at_one_seq(client: TestClient) -> None:
    scenario(client)
    inv = open_investigation(client, devices=["ws-stolen"])
    whole = answer(client, inv)
    seen: list[int] = []
    patients: list[str] = []
    cursor = None
    throughs = set()
    while True:
        page = answer(client, inv, limit=2, **({"cursor": cursor} if cursor else {}))
        throughs.add(page["through_seq"])
        seen += [i["seq"] for i in page["timeline"]]
        patients += [a["patient"]["id"] for a in page["affected"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        post(client, ev("read", THIEF, "2026-11-25T03:05:30Z", P5))  # arrives meanwhile
    assert len(throughs) == 1  # every page computed through the first page's seq
    assert seen == [i["seq"] for i in whole["timeline"]]
    assert patients == [a["patient"]["id"] for a in whole["affected"]]
    bad = client.get(f"/v1/investigations/{inv}",
                     params={"purpose": "HOPERAT", "cursor": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == ["cursor"]


def test_as_of_answers_as_the_ledger_stood(client: TestClient) -> None:
    s = scenario(client)
    inv = open_investigation(client, devices=["ws-stolen"])
    before = answer(client, inv)
    stood = client.get("/v1/ledger").json()["recorded_at"]
    post(client, ev("print", THIEF, "2026-11-26T01:00:00Z", P5),
         ev("update", EHR, "2026-11-27T00:00:00Z", P1,
            resource={"type": "patient", "id": P1}, data={"state": "NJ"}))
    now = answer(client, inv)
    then = answer(client, inv, as_of=stood)
    assert then["through_seq"] < now["through_seq"]
    assert [i["seq"] for i in then["timeline"]] == [i["seq"] for i in before["timeline"]]
    assert then["counts"] == before["counts"]
    assert now["counts"]["by_state"] == {"CA": 1, "NJ": 1, "unknown": 2}
    assert s["read1"] in [i["seq"] for i in now["timeline"]]
    bad = client.get(f"/v1/investigations/{inv}", params={"purpose": "HOPERAT",
                                                          "as_of": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == ["as_of"]


def test_amend_and_close_are_ledger_entries_with_factor_three_prefilled(
        client: TestClient) -> None:
    s = scenario(client)
    inv = open_investigation(client, actors=["agent-nobody"])
    assert answer(client, inv)["timeline"] == []
    r = client.post(f"/v1/investigations/{inv}/amend",
                    json={"scope": {"ips": ["203.0.113.9"]}, "note": "IP from the VPN log"})
    assert r.status_code == 200, r.text
    body = answer(client, inv)
    assert s["export"] in [i["seq"] for i in body["timeline"]]
    assert body["investigation"]["scope"]["ips"] == ["203.0.113.9"]
    assert body["investigation"]["notes"][0]["note"] == "IP from the VPN log"
    r = client.post(f"/v1/investigations/{inv}/close", json={
        "outcome": "breach", "risk_assessment": {
            "nature_and_extent": "names, conditions", "recipient": "unknown thief",
            "mitigation": "device wiped remotely"}, "note": "wipe confirmed by MDM"})
    assert r.status_code == 200, r.text
    entry = client.get("/v1/ledger/entries", params={"after": r.json()["seq"] - 1,
                                                     "limit": 1}).json()["entries"][0]
    assert entry["event"]["action"] == "investigation_closed"
    assert entry["event"]["data"]["risk.acquired_or_viewed.from_ledger"] is True
    assert entry["event"]["data"]["note"] == "wipe confirmed by MDM"
    listed = client.get("/v1/investigations").json()["items"]
    assert [i["status"] for i in listed] == ["closed"]
    assert listed[0]["closed"]["risk_assessment"]["acquired_or_viewed"] is True
    assert [n["note"] for n in listed[0]["notes"]] == ["IP from the VPN log",
                                                       "wipe confirmed by MDM"]
    again = client.post(f"/v1/investigations/{inv}/amend", json={"note": "late"})
    assert again.status_code == 409


def test_applications_cannot_post_investigation_actions(client: TestClient) -> None:
    body = make_event(action="investigation_opened")
    r = client.post("/v1/events", json=body)
    assert r.status_code == 422 and "action" in r.json()["error"]["fields"]


def test_bad_input_is_named_and_writes_nothing(client: TestClient) -> None:
    head = client.get("/v1/ledger").json()["seq"]
    for body, field in (
        ({"title": "x", "discovered_at": "soon", "scope": {**WINDOW, "actors": ["a"]}},
         "discovered_at"),
        ({"title": "x", "discovered_at": "2026-11-26T09:00:00Z", "scope": WINDOW}, "scope"),
        ({"title": "x", "discovered_at": "2026-11-26T09:00:00Z",
          "scope": {"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z",
                    "actors": ["a"]}}, "scope.to"),
        ({"discovered_at": "2026-11-26T09:00:00Z", "scope": {**WINDOW, "actors": ["a"]}},
         "title"),
    ):
        r = client.post("/v1/investigations", json=body)
        assert r.status_code == 400, r.text
        assert any(field in f for f in r.json()["error"]["fields"]), r.json()
    assert client.get("/v1/ledger").json()["seq"] == head
    missing = client.get(f"/v1/investigations/{uuid.uuid4()}", params={"purpose": "HOPERAT"})
    assert missing.status_code == 404
    assert client.get(f"/v1/investigations/{uuid.uuid4()}").status_code == 400  # purpose


def test_only_investigators_may_investigate(client: TestClient) -> None:
    svc = fastapi_app(client.app).state.services
    auditor = auth_headers(service_key(svc, roles=("auditor",)))
    inv = open_investigation(client, actors=["x"])
    assert client.post("/v1/investigations", headers=auditor, json={}).status_code == 403
    assert client.get("/v1/investigations", headers=auditor).status_code == 403
    assert client.get(f"/v1/investigations/{inv}", headers=auditor,
                      params={"purpose": "HOPERAT"}).status_code == 403


def test_tenants_see_only_their_own_investigations_and_entries(client: TestClient) -> None:
    svc = fastapi_app(client.app).state.services
    other = auth_headers(service_key(svc, ledger="clinic-b"))
    scenario(client)
    same = ev("read", THIEF, "2026-11-25T04:00:00Z", P1)
    r = client.post("/v1/events", headers=other, json=same)
    assert r.status_code == 201, r.text
    inv = open_investigation(client, devices=["ws-stolen"])
    mine = answer(client, inv)
    assert same["event_id"] not in {i["event_id"] for i in mine["timeline"]}
    r = client.get(f"/v1/investigations/{inv}", headers=other, params={"purpose": "HOPERAT"})
    assert r.status_code == 404
    assert client.get("/v1/investigations", headers=other).json()["items"] == []
    theirs = client.post("/v1/investigations", headers=other, json={
        "title": "b", "discovered_at": "2026-11-26T09:00:00Z",
        "scope": {**WINDOW, "devices": ["ws-stolen"]}}).json()["investigation_id"]
    body = client.get(f"/v1/investigations/{theirs}", headers=other,
                      params={"purpose": "HOPERAT"}).json()
    assert [i["event_id"] for i in body["timeline"]] == [same["event_id"]]
    assert body["counts"]["by_state"] == {"unknown": 1}  # no record of P1 in clinic-b


def test_csv_neutralises_formulas(client: TestClient) -> None:
    scenario(client)
    post(client, ev("read", {**THIEF, "id": "=HYPERLINK(1)"}, "2026-11-25T05:00:00Z", P1))
    inv = open_investigation(client, devices=["ws-stolen"])
    r = client.get(f"/v1/investigations/{inv}", params={"purpose": "HOPERAT",
                                                        "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][0] == "seq"
    assert any(row and row[4] == "'=HYPERLINK(1)" for row in rows)
    assert all(not cell.startswith(("=", "+", "@")) for row in rows for cell in row)
    blank = rows.index([])
    assert rows[blank + 1][0] == "patient_id"
    assert {row[0] for row in rows[blank + 2:]} == {P1, P2, P3, P4}


def test_the_timeline_carries_the_alerts_raised_on_each_entry(client: TestClient) -> None:
    no_mfa, fine = post(client, ev("read", {**THIEF, "mfa": False}, "2026-11-25T03:00:00Z", P1),
                        ev("read", THIEF, "2026-11-25T03:01:00Z", P1))
    inv = open_investigation(client, devices=["ws-stolen"])
    items = {i["seq"]: i for i in answer(client, inv)["timeline"]}
    assert "no_mfa" in {a["rule"] for a in items[no_mfa]["alerts"]}
    assert all(a["seq"] == no_mfa for a in items[no_mfa]["alerts"])
    assert "no_mfa" not in {a["rule"] for a in items[fine]["alerts"]}
    html = client.get(f"/v1/investigations/{inv}",
                      params={"purpose": "HOPERAT", "format": "html"}).text
    assert f'class="alert" data-seq="{no_mfa}"' in html
    assert f'class="alert" data-seq="{fine}"' not in html
