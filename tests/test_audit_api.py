"""The audit queries over HTTP, end to end, on SQLite and PostgreSQL.

Events go in through ``POST /v1/events/batch`` (sealed at rest as in production); the
service's own in-process projector keeps the views current and every read asks for
``min_seq`` (read-your-writes), so no test sleeps. What is checked:

* ``GET /v1/patients/{id}``: the record folded from create/update (null removes a field;
  failed events change nothing), delete -> 404 ``patient_deleted``, revival, unknown -> 404;
* ``GET /v1/patients/{id}/accesses`` and ``/v1/users/{id}/accesses``: the ``from``
  (inclusive), ``to`` (exclusive), ``action``, ``actor`` and ``patient`` filters; time order
  across UTC offsets with ``seq`` breaking ties (also below a microsecond); ``order=desc``;
  cursor paging that walks every row exactly once while new events keep arriving between
  pages; a cursor reused with other filters or order, or forged -> 400 naming ``cursor``;
  bad parameters -> one 400 naming every bad field; no ``purpose`` -> 400 ``purpose``;
* read-your-writes: a GET with ``min_seq`` = a receipt's seq right after the POST sees the
  event, every time; ``min_seq`` beyond the head -> 400 ``min_seq``;
* the accounting of disclosures (45 CFR 164.528): TPO, to the individual, authorized,
  involved in care, failed and pre-compliance disclosures left out with their reasons in
  ``exempt``; public health, legal, research listed; repeats to one recipient for one
  purpose summarised (count and last date) unless ``summarize=false``; the six-year window
  (older disclosures out unless ``from`` reaches them); CSV (parsed) and HTML (a printable
  document that escapes markup injected in a recipient name);
* every read appends ``query`` events (the caller, the purpose given, the patient shown,
  what was looked at), visible in ``GET /v1/ledger/entries``, and a patient's access report
  shows the earlier reads of it;
* after a crypto-shred (in process, and with ``phi-ledger shred`` beside the running
  service) the record, the access history's patient ids and the accounting's recipient and
  description read ``[erased]``, other patients read normally, and a rebuild of the views
  gives the same answers.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

import httpx
from fastapi.testclient import TestClient

from api.services import Services
from ledger.clock import utc_now
from ledger.settings import Settings
from ledger.shredding import shred_patient
from projections.runner import Projector
from tests.support import ROOT, envelope_of, fastapi_app, make_event
from tests.test_projection_model import utc_text

LEDGER = "default"
ERASED = "[erased]"
P, Q, R = "MRN-5200001", "MRN-5200002", "MRN-5200003"
ALICE = {"id": "agent-alice", "kind": "user", "role": "call_agent", "organization": "Northside",
         "mfa": True, "device_id": "ws-3", "ip": "198.51.100.23", "session_id": "s-a1"}
BOB = {"id": "agent-bob", "kind": "user", "role": "supervisor", "mfa": False}
EHR = {"id": "ehr-bridge", "kind": "application"}
NOW = datetime.now(UTC)


# -- helpers -------------------------------------------------------------------------------


def services(client: TestClient) -> Services:
    return fastapi_app(client.app).state.services


def at(days_ago: float, offset_hours: float = -5, **extra: float) -> str:
    """An RFC 3339 time ``days_ago`` days before now, written in a UTC offset."""
    moment = NOW - timedelta(days=days_ago, **extra)
    tz = timezone(timedelta(hours=offset_hours))
    return moment.astimezone(tz).isoformat(timespec="milliseconds")


def event(action: str = "read", patient: str = P, actor: dict[str, Any] = ALICE,
          when: str | None = None, **fields: Any) -> dict[str, Any]:
    if action in ("create", "update") and "data" in fields and "resource" not in fields:
        fields["resource"] = {"type": "patient"}  # writes to the record itself
    body = make_event(action=action, actor=dict(actor), patient={"id": patient},
                      occurred_at=when or at(10), **fields)
    return body


def disclosure(recipient: str, kind: str, purpose: str, when: str, *, address: str | None = None,
               description: str = "lab results", authorization: str | None = None,
               outcome: str = "success", patient: str = P) -> dict[str, Any]:
    d: dict[str, Any] = {"recipient": {"name": recipient, "kind": kind},
                         "description": description, "encrypted": True}
    if address is not None:
        d["recipient"]["address"] = address
    if authorization is not None:
        d["authorization_id"] = authorization
    return event("disclose", patient, BOB, when, purpose=purpose, outcome=outcome,
                 channel="fax", disclosure=d)


def post(client: TestClient, *events: dict[str, Any]) -> list[int]:
    r = client.post("/v1/events/batch", json={"events": list(events)})
    assert r.status_code == 201, r.text
    return [receipt["seq"] for receipt in r.json()["receipts"]]


def head(client: TestClient) -> int:
    r = client.get("/v1/ledger")
    assert r.status_code == 200, r.text
    return r.json()["seq"]


def read(client: TestClient, path: str, purpose: str | None = "HOPERAT",
         **params: Any) -> httpx.Response:
    """GET ``path`` as of the ledger's head (read-your-writes) with ``purpose``."""
    query = {"min_seq": head(client), **params}
    if purpose is not None:
        query["purpose"] = purpose
    return client.get(path, params={k: v for k, v in query.items() if v is not None})


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"code", "message", "fields"}, body
    return body


def entries_after(client: TestClient, after: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = ok(client.get("/v1/ledger/entries", params={"after": after, "limit": 1000}))
        out.extend(page["entries"])
        if page["next_after"] is None:
            return out
        after = page["next_after"]


def queries_after(client: TestClient, after: int) -> list[dict[str, Any]]:
    """The ``query`` events appended after seq ``after``, each with ``shown``: the patient
    the event names, opened with the service's own keys."""
    svc = services(client)
    stored = [e["event"] for e in entries_after(client, after) if e["event"]["action"] == "query"]
    opened = svc.protection.reveal_many(LEDGER, stored)
    return [{**s, "shown": o["patient"]["id"]} for s, o in zip(stored, opened, strict=True)]


def whoami(client: TestClient) -> str:
    return ok(client.get("/v1/auth/whoami"))["id"]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["event_id"] for i in items]


def not_queries(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["action"] != "query"]


def walk(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(200):
        page = ok(read(client, path, cursor=cursor, **params))
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


def order_key(item: dict[str, Any]) -> tuple[str, int]:
    return utc_text(item["occurred_at"]), item["seq"]


# -- the patient record --------------------------------------------------------------------


RECORD = {"type": "patient"}


def test_patient_record_is_folded_from_create_update_delete(client: TestClient) -> None:
    start = head(client)
    created, updated, _, _, _ = post(
        client,
        event("create", data={"name": "Ann Example", "phone": "555-0101", "dob": "1961-04-09",
                               "allergies": ["latex", "penicillin"], "visits": 3},
              resource=RECORD),
        event("update", data={"phone": "555-0199", "dob": None, "notes": "call after 5"},
              resource=RECORD),
        event("update", outcome="failure", data={"name": "Wrong Person"}, resource=RECORD),
        event("update", patient=Q, data={"name": "Someone Else"}, resource=RECORD),
        # A message about the patient is an access, not a change to the record.
        event("create", data={"name": "Not The Record"}, resource={"type": "message"}),
    )
    body = ok(read(client, f"/v1/patients/{P}"))
    assert body["patient"] == {"id": P}
    assert body["record"] == {"allergies": ["latex", "penicillin"], "name": "Ann Example",
                              "notes": "call after 5", "phone": "555-0199", "visits": 3}
    assert (body["created_seq"], body["updated_seq"], body["shredded"]) == (
        created, updated, False)

    missing = error(read(client, "/v1/patients/MRN-0000404"), 404)
    assert missing["code"] == "patient_not_found" and missing["fields"] == ["patient_id"]

    (deleted,) = post(client, event("delete", resource={"type": "patient"}))
    gone = error(read(client, f"/v1/patients/{P}"), 404)
    assert gone["code"] == "patient_deleted"
    # The history stays readable after the delete.
    history = ok(read(client, f"/v1/patients/{P}/accesses"))
    assert deleted in [i["seq"] for i in history["items"]]

    (revived,) = post(client, event("create", data={"name": "Ann Example", "phone": "555-0000"},
                                    resource=RECORD))
    body = ok(read(client, f"/v1/patients/{P}", purpose="TREAT"))
    assert body["record"] == {"name": "Ann Example", "phone": "555-0000"}
    assert body["created_seq"] == revived

    # Each record shown was recorded, with the purpose given; the 404s recorded nothing.
    records = [q for q in queries_after(client, start)
               if q["resource"]["type"] == "patient_record"]
    assert [(q["shown"], q["purpose"]) for q in records] == [(P, "HOPERAT"), (P, "TREAT")]


# -- access histories ----------------------------------------------------------------------


def history_events() -> list[dict[str, Any]]:
    """P's history, posted out of time order, with ties: the same instant in two offsets,
    and two times 300 ns apart (one microsecond once normalised)."""
    same = NOW - timedelta(days=3)
    tie_a = same.astimezone(timezone(timedelta(hours=-5))).isoformat(timespec="milliseconds")
    tie_b = same.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(
        timespec="milliseconds")
    nano = (NOW - timedelta(days=2)).replace(microsecond=123456).strftime("%Y-%m-%dT%H:%M:%S")
    return [
        event("read", actor=ALICE, when=at(5)),
        event("update", actor=EHR, when=at(9), data={"phone": "555-0123"}),
        event("read", actor=BOB, when=tie_b),
        event("read", actor=ALICE, when=tie_a),
        event("print", actor=BOB, when=nano + ".1234567Z"),
        event("read", actor=ALICE, when=nano + ".1234564+00:00"),
        disclosure("County Health", "public_health", "PUBHLTH", at(1)),
        event("export", actor=ALICE, when=at(7), outcome="denied"),
        event("read", patient=Q, actor=ALICE, when=at(4)),
        event("read", patient=R, actor=ALICE, when=at(4, minutes=1)),
        {**make_event(action="login", actor=dict(ALICE), occurred_at=at(6)),
         "patient": None, "purpose": None, "channel": None, "resource": None},
    ]


def expected(posted: list[dict[str, Any]], seqs: list[int], keep: Any) -> list[str]:
    rows = [(utc_text(e["occurred_at"]), s, e["event_id"])
            for e, s in zip(posted, seqs, strict=True) if keep(e)]
    return [event_id for _, _, event_id in sorted(rows)]


def test_access_histories_filter_and_order(client: TestClient) -> None:
    posted = history_events()
    seqs = post(client, *posted)
    of_p = [e for e in posted if (e.get("patient") or {}).get("id") == P]

    body = ok(read(client, f"/v1/patients/{P}/accesses"))
    assert body["patient"] == {"id": P} and body["next_cursor"] is None
    items = not_queries(body["items"])
    assert ids(items) == expected(posted, seqs, lambda e: e in of_p)
    # The ties: the same instant in two offsets, and 300 ns apart -> posted (seq) order.
    by_id = {i["event_id"]: i for i in items}
    assert by_id[posted[2]["event_id"]]["seq"] < by_id[posted[3]["event_id"]]["seq"]
    assert ids(items).index(posted[2]["event_id"]) + 1 == ids(items).index(posted[3]["event_id"])
    assert ids(items).index(posted[4]["event_id"]) + 1 == ids(items).index(posted[5]["event_id"])
    # One item in full: as posted, the patient opened.
    item = by_id[posted[0]["event_id"]]
    assert item["actor"] == ALICE and item["patient"] == {"id": P}
    assert (item["occurred_at"], item["action"], item["purpose"], item["channel"],
            item["resource"], item["source"]) == (
        posted[0]["occurred_at"], "read", "TREAT", "ehr", posted[0]["resource"],
        posted[0]["source"])

    desc = not_queries(ok(read(client, f"/v1/patients/{P}/accesses", order="desc"))["items"])
    assert ids(desc) == ids(items)[::-1]

    # from is inclusive, to exclusive; both compare instants, whatever the offset.
    lo, hi = posted[1]["occurred_at"], posted[0]["occurred_at"]
    window = not_queries(ok(read(client, f"/v1/patients/{P}/accesses", **{
        "from": lo, "to": hi}))["items"])
    assert ids(window) == expected(posted, seqs, lambda e: e in of_p and utc_text(lo)
                                   <= utc_text(e["occurred_at"]) < utc_text(hi))
    assert posted[1]["event_id"] in ids(window) and posted[0]["event_id"] not in ids(window)
    shifted = datetime.fromisoformat(lo).astimezone(timezone(timedelta(hours=9))).isoformat()
    assert ids(not_queries(ok(read(client, f"/v1/patients/{P}/accesses", **{
        "from": shifted, "to": hi}))["items"])) == ids(window)

    reads = ok(read(client, f"/v1/patients/{P}/accesses", action="read,print"))["items"]
    assert ids(reads) == expected(posted, seqs,
                                  lambda e: e in of_p and e["action"] in ("read", "print"))
    by_bob = ok(read(client, f"/v1/patients/{P}/accesses", actor=BOB["id"]))["items"]
    assert ids(by_bob) == expected(posted, seqs, lambda e: e in of_p and e["actor"] == BOB)

    # A user's history: every patient they touched, and their login.
    alice = ok(read(client, f"/v1/users/{ALICE['id']}/accesses"))
    assert alice["user"] == {"id": ALICE["id"]}
    assert ids(alice["items"]) == expected(posted, seqs, lambda e: e["actor"] == ALICE)
    assert [i["patient"] for i in alice["items"]] == [
        None if e.get("patient") is None else {"id": e["patient"]["id"]}
        for e in sorted((e for e in posted if e["actor"] == ALICE),
                        key=lambda e: (utc_text(e["occurred_at"]), seqs[posted.index(e)]))]
    only_q = ok(read(client, f"/v1/users/{ALICE['id']}/accesses", patient=Q))["items"]
    assert ids(only_q) == [posted[8]["event_id"]]
    denied = ok(read(client, f"/v1/users/{ALICE['id']}/accesses", action="export",
                     order="desc"))["items"]
    assert ids(denied) == [posted[7]["event_id"]] and denied[0]["outcome"] == "denied"

    assert error(read(client, "/v1/users/nobody-at-all/accesses"), 404)["code"] == "user_not_found"
    assert error(read(client, "/v1/patients/MRN-0000404/accesses"), 404)["fields"] == [
        "patient_id"]


def test_cursor_paging_walks_every_row_once_while_events_arrive(client: TestClient) -> None:
    actors: list[dict[str, Any]] = [ALICE, BOB, EHR]
    first = [event("read", actor=actors[i % 3], when=at(20 - i * 0.5))
             for i in range(30)]
    post(client, *first)
    seen: list[dict[str, Any]] = []
    late_ahead: list[str] = []
    late_behind: list[str] = []
    cursor = None
    pages = 0
    while True:
        # (Reads only: the `query` events each page adds are stamped "now", which would
        # put every later arrival behind the cursor.)
        page = ok(read(client, f"/v1/patients/{P}/accesses", limit=4, cursor=cursor,
                       action="read"))
        assert len(page["items"]) <= 4
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        pages += 1
        if cursor is None:
            break
        # Between pages: one event older than anything (behind the cursor: not shown)
        # and one newer than every first event (ahead of it: shown once).
        behind, ahead = event(when=at(40 + pages)), event(when=at(2, minutes=-pages))
        post(client, behind, ahead)
        late_behind.append(behind["event_id"])
        late_ahead.append(ahead["event_id"])
    assert pages >= 8
    keys = [order_key(i) for i in seen]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), "a row shown twice or out of order"
    shown = set(ids(seen))
    assert set(ids(first)) <= shown
    assert set(late_ahead) <= shown
    assert not shown & set(late_behind)

    # Backwards, up to a fixed time (so the reads recorded meanwhile stay out): every
    # row once, in reverse order.
    everything = ok(read(client, f"/v1/patients/{P}/accesses", limit=1000))["items"]
    cut = everything[-1]["occurred_at"]
    backwards = walk(client, f"/v1/patients/{P}/accesses", limit=7, order="desc", to=cut)
    assert ids(backwards) == [i["event_id"] for i in everything
                              if utc_text(i["occurred_at"]) < utc_text(cut)][::-1]
    assert len(backwards) > len(first)


def test_a_cursor_belongs_to_its_query(client: TestClient) -> None:
    post(client, *[event(when=at(10 - i)) for i in range(6)])
    cursor = ok(read(client, f"/v1/patients/{P}/accesses", limit=2))["next_cursor"]
    assert cursor
    assert ok(read(client, f"/v1/patients/{P}/accesses", limit=2, cursor=cursor))["items"]
    for other in ({"action": "read"}, {"order": "desc"}, {"actor": ALICE["id"]},
                  {"from": at(30)}, {"to": at(0)}):
        body = error(read(client, f"/v1/patients/{P}/accesses", limit=2, cursor=cursor,
                          **other), 400)
        assert body["fields"] == ["cursor"], (other, body)
    # Another patient's list, the user list, and a forged cursor are refused the same way.
    post(client, event(patient=Q))
    for path in (f"/v1/patients/{Q}/accesses", f"/v1/users/{ALICE['id']}/accesses"):
        assert error(read(client, path, cursor=cursor), 400)["fields"] == ["cursor"]
    for forged in ("not-a-cursor", cursor[:-3], cursor + "AA", "W10"):
        body = error(read(client, f"/v1/patients/{P}/accesses", limit=2, cursor=forged), 400)
        assert body["fields"] == ["cursor"], forged


def test_bad_parameters_are_all_named_in_one_400(client: TestClient) -> None:
    post(client, event(), event(patient=Q))
    start = head(client)
    body = error(read(client, f"/v1/patients/{P}/accesses", purpose=None, order="sideways",
                      limit=0, action="read,fly", **{"from": "yesterday", "to": "2026-13-01"}),
                 400)
    assert set(body["fields"]) == {"purpose", "order", "limit", "action", "from", "to"}, body
    body = error(read(client, f"/v1/users/{ALICE['id']}/accesses", purpose="GOSSIP",
                      limit=1001, **{"from": at(1), "to": at(2)}), 400)
    assert set(body["fields"]) == {"purpose", "limit", "from"}, body
    body = error(read(client, f"/v1/patients/{P}/disclosures", purpose=None, format="pdf",
                      **{"from": "2026-11-31"}), 400)
    assert set(body["fields"]) == {"purpose", "format", "from"}, body
    # A bad cursor is named beside the other bad parameters.
    body = error(read(client, f"/v1/patients/{P}/accesses", cursor="forged", limit=0), 400)
    assert set(body["fields"]) == {"cursor", "limit"}, body
    # Without a purpose nothing PHI-bearing answers, on every route.
    for path in (f"/v1/patients/{P}", f"/v1/patients/{P}/accesses",
                 f"/v1/patients/{P}/disclosures", f"/v1/users/{ALICE['id']}/accesses"):
        body = error(read(client, path, purpose=None), 400)
        assert body["fields"] == ["purpose"], (path, body)
        assert P not in body["message"]
    # No refusal was recorded as a read.
    assert queries_after(client, start) == []


# -- read-your-writes ------------------------------------------------------------------------


def test_read_your_writes(client: TestClient) -> None:
    for i in range(15):
        e = event("update" if i else "create", when=at(1, minutes=-i),
                  data={"phone": f"555-01{i:02d}"}, resource=RECORD)
        r = client.post("/v1/events", json=e)
        assert r.status_code == 201, r.text
        seq = r.json()["seq"]
        history = ok(client.get(f"/v1/patients/{P}/accesses", params={
            "purpose": "HOPERAT", "min_seq": seq, "order": "desc", "limit": 1000}))
        assert e["event_id"] in ids(history["items"]), i
        record = ok(client.get(f"/v1/patients/{P}", params={"purpose": "HOPERAT",
                                                            "min_seq": seq}))
        assert record["record"]["phone"] == f"555-01{i:02d}" and record["updated_seq"] == seq
    beyond = head(client) + 1000
    for path in (f"/v1/patients/{P}", f"/v1/patients/{P}/accesses",
                 f"/v1/patients/{P}/disclosures", f"/v1/users/{ALICE['id']}/accesses"):
        body = error(client.get(path, params={"purpose": "HOPERAT", "min_seq": beyond}), 400)
        assert body["fields"] == ["min_seq"], (path, body)


# -- the accounting of disclosures -------------------------------------------------------------


def accounting_events() -> dict[str, dict[str, Any]]:
    return {
        "tpo": disclosure("Dr. A. Rivera", "provider", "TREAT", at(30)),
        "payment": disclosure("Acme Health Plan", "health_plan", "HPAYMT", at(29)),
        "individual": disclosure("Ann Example", "patient", "PATRQT", at(28)),
        "representative": disclosure("Ann's lawyer", "personal_representative", "LEGAL",
                                     at(27.5)),
        "authorized": disclosure("Study 12", "researcher", "HRESCH", at(27),
                                 authorization="auth-77"),
        "care": disclosure("J. Example (sister)", "family", "FAMRQT", at(26)),
        "failed": disclosure("County Health Dept", "public_health", "PUBHLTH", at(25),
                             outcome="failure"),
        "health_1": disclosure("County Health Dept", "public_health", "PUBHLTH", at(200),
                               address="1 Main St", description="TB case report"),
        "health_2": disclosure("County Health Dept", "public_health", "PUBHLTH", at(100),
                               address="1 Main St", description="TB follow-up"),
        "health_3": disclosure("County Health Dept", "public_health", "PUBHLTH", at(20),
                               address="1 Main St", description="TB closed"),
        "court": disclosure("<script>alert('x')</script> County Court", "court", "LEGAL",
                            at(15), address="Dept. 4 & annex", description="subpoena <b>42</b>"),
        "research": disclosure("Study 9", "researcher", "HRESCH", at(10)),
        "seven_years": disclosure("County Health Dept", "public_health", "PUBHLTH",
                                  at(7 * 365 + 10), address="1 Main St",
                                  description="old report"),
        "pre_rule": disclosure("State Court", "court", "LEGAL", "2002-06-01T09:00:00-04:00"),
        "other_patient": disclosure("County Health Dept", "public_health", "PUBHLTH", at(5),
                                    address="1 Main St", patient=Q),
    }


def test_accounting_of_disclosures(client: TestClient) -> None:
    posted = accounting_events()
    seq = dict(zip(posted, post(client, *posted.values()), strict=True))
    start = head(client)

    body = ok(read(client, f"/v1/patients/{P}/disclosures", purpose="PATRQT"))
    assert body["patient"] == {"id": P}
    period_from = datetime.fromisoformat(body["period"]["from"].replace("Z", "+00:00"))
    assert abs((NOW - period_from) - timedelta(days=6 * 365)) < timedelta(days=3)
    # Accountable: the public health reports (summarised), the court, the research study.
    assert body["disclosures"] == 5
    entries = body["entries"]
    assert [e["seq"] for e in entries] == [seq["health_1"], seq["court"], seq["research"]]
    health = entries[0]
    assert health["disclosures"] == 3
    assert health["last_occurred_at"] == posted["health_3"]["occurred_at"]
    assert health["occurred_at"] == posted["health_1"]["occurred_at"]
    assert health["recipient"] == {"name": "County Health Dept", "address": "1 Main St",
                                   "kind": "public_health"}
    assert health["description"] == "TB case report" and health["purpose"] == "PUBHLTH"
    assert "PUBHLTH" in health["purpose_statement"]
    court = entries[1]
    assert court["disclosures"] == 1 and "last_occurred_at" not in court
    assert court["recipient"]["name"] == "<script>alert('x')</script> County Court"
    # Left out, each with its reason (the six-year-old one and the pre-rule one are
    # outside the period, so not even listed as exempt).
    reasons = {e["seq"]: e["exemption"] for e in body["exempt"]}
    assert reasons == {seq["tpo"]: "tpo", seq["payment"]: "tpo",
                       seq["individual"]: "to_individual",
                       seq["representative"]: "to_individual",
                       seq["authorized"]: "authorized", seq["care"]: "involved_in_care",
                       seq["failed"]: "not_made"}
    assert all(e["reason"] and "164.528" in e["reason"]
               for e in body["exempt"] if e["exemption"] != "not_made")
    assert seq["other_patient"] not in reasons and seq["other_patient"] not in [
        e["seq"] for e in entries]

    listed = ok(read(client, f"/v1/patients/{P}/disclosures", summarize="false"))
    assert [(e["seq"], e["disclosures"]) for e in listed["entries"]] == [
        (seq["health_1"], 1), (seq["health_2"], 1), (seq["health_3"], 1), (seq["court"], 1),
        (seq["research"], 1)]
    assert listed["disclosures"] == 5

    # `from` reaches past six years; before the compliance date nothing is accountable.
    old = ok(read(client, f"/v1/patients/{P}/disclosures", **{"from": "2000-01-01T00:00:00Z"}))
    assert old["disclosures"] == 6
    assert old["entries"][0]["seq"] == seq["seven_years"]
    assert old["entries"][0]["disclosures"] == 4  # the same recipient, purpose and address
    assert {e["seq"]: e["exemption"] for e in old["exempt"]}[seq["pre_rule"]] == (
        "before_compliance")
    narrow = ok(read(client, f"/v1/patients/{P}/disclosures", **{
        "from": posted["health_2"]["occurred_at"], "to": posted["court"]["occurred_at"]}))
    assert [(e["seq"], e["disclosures"]) for e in narrow["entries"]] == [(seq["health_2"], 2)]

    r = read(client, f"/v1/patients/{P}/disclosures", purpose="LEGAL", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["date", "recipient_name", "recipient_address", "description",
                             "purpose", "disclosures", "last_date", "channel", "seq"]
    assert [(row["seq"], row["disclosures"], row["last_date"]) for row in rows] == [
        (str(seq["health_1"]), "3", posted["health_3"]["occurred_at"]),
        (str(seq["court"]), "1", ""), (str(seq["research"]), "1", "")]
    assert rows[1]["recipient_name"] == "<script>alert('x')</script> County Court"
    assert rows[1]["recipient_address"] == "Dept. 4 & annex"
    assert rows[0]["date"] == posted["health_1"]["occurred_at"]

    r = read(client, f"/v1/patients/{P}/disclosures", format="html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "County Health Dept" in page and "Study 9" in page and P in page
    assert "<script>" not in page and "<b>42</b>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;42&lt;/b&gt;" in page
    assert "Dept. 4 &amp; annex" in page
    tags = TagCounter()
    tags.feed(page)
    tags.close()
    assert "script" not in tags.opened and tags.opened["tr"] == 4  # header + three entries
    assert tags.opened["html"] == tags.closed["html"] == 1
    assert tags.opened["table"] == tags.closed["table"] == 1

    error(read(client, "/v1/patients/MRN-0000404/disclosures"), 404)
    # Every accounting shown was recorded, with the purpose given and the patient shown.
    recorded = [(q["shown"], q["purpose"]) for q in queries_after(client, start)
                if q["resource"]["type"] == "disclosure_accounting"]
    assert recorded == [(P, "PATRQT"), (P, "HOPERAT"), (P, "HOPERAT"), (P, "HOPERAT"),
                        (P, "LEGAL"), (P, "HOPERAT")]


class TagCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.opened: dict[str, int] = {}
        self.closed: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.opened[tag] = self.opened.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        self.closed[tag] = self.closed.get(tag, 0) + 1


# -- every read is recorded ---------------------------------------------------------------------


def test_every_read_is_a_query_event_and_shows_in_the_next_report(client: TestClient) -> None:
    post(client, event("create", data={"name": "Ann"}), event(patient=Q), event(patient=R),
         disclosure("County Health Dept", "public_health", "PUBHLTH", at(3)))
    me = whoami(client)
    start = head(client)
    ok(read(client, f"/v1/patients/{P}", purpose="TREAT"))
    ok(read(client, f"/v1/patients/{P}/accesses", purpose="HOPERAT"))
    ok(read(client, f"/v1/patients/{P}/disclosures", purpose="PATRQT"))
    ok(read(client, f"/v1/users/{ALICE['id']}/accesses", purpose="HCOMPL", action="read"))
    recorded = queries_after(client, start)
    assert [(q["shown"], q["purpose"], q["resource"]["type"]) for q in recorded] == [
        (P, "TREAT", "patient_record"), (P, "HOPERAT", "access_report"),
        (P, "PATRQT", "disclosure_accounting"),
        # A user's history names every patient it showed: one event each.
        (Q, "HCOMPL", "user_access_report"), (R, "HCOMPL", "user_access_report")]
    for q in recorded:
        assert q["actor"]["id"] == me and q["outcome"] == "success" and q["channel"] == "api"
        # Sealed like any other event: the patient is stored by blind index and token.
        assert q["patient"]["ref"] == services(client).protection.patient_ref(LEDGER, q["shown"])
        assert q["patient"]["id"].startswith("enc:v1:")

    # The report now shows the reads of it (and of the record), who made them and why.
    items = ok(read(client, f"/v1/patients/{P}/accesses", purpose="HOPERAT"))["items"]
    reads = [(i["actor"]["id"], i["purpose"], i["resource"]["type"]) for i in items
             if i["action"] == "query"]
    assert reads == [(me, "TREAT", "patient_record"), (me, "HOPERAT", "access_report"),
                     (me, "PATRQT", "disclosure_accounting")]
    # And the auditor's own history lists every read they made.
    mine = ok(read(client, f"/v1/users/{me}/accesses", purpose="HOPERAT"))["items"]
    assert [i["patient"]["id"] for i in mine] == [P, P, P, Q, R, P]


def test_a_read_that_cannot_be_recorded_shows_nothing(client: TestClient) -> None:
    """No PHI leaves unless its read is durably in the ledger: with the writer gone, every
    route that shows PHI answers 503, and the answer names no patient."""
    post(client, event("create", data={"name": "Ann"}), event(patient=Q),
         disclosure("County Health Dept", "public_health", "PUBHLTH", at(3)))
    start = head(client)
    services(client).writer.stop()
    for path in (f"/v1/patients/{P}", f"/v1/patients/{P}/accesses",
                 f"/v1/patients/{P}/disclosures", f"/v1/users/{ALICE['id']}/accesses"):
        response = read(client, path)
        assert response.status_code == 503, (path, response.text)
        for shown in (P, Q, "Ann", "County Health Dept"):
            assert shown not in response.text, (path, shown)
    assert head(client) == start


# -- crypto-shredding ----------------------------------------------------------------------------


def shred_world(client: TestClient) -> dict[str, Any]:
    posted = {
        "create": event("create", data={"name": "Ann Example", "phone": "555-0101"}),
        "disclose": disclosure("County Health Dept", "public_health", "PUBHLTH", at(8),
                               address="1 Main St", description="TB case report"),
        "read": event(when=at(7)),
        "other": event("create", patient=Q, data={"name": "Bea Other"}),
        "other_disclose": disclosure("County Health Dept", "public_health", "PUBHLTH",
                                     at(6), description="flu report", patient=Q),
    }
    return {"posted": posted, "seqs": dict(zip(posted, post(client, *posted.values()),
                                               strict=True))}


def assert_p_reads_erased(client: TestClient, world: dict[str, Any]) -> dict[str, Any]:
    seqs = world["seqs"]
    record = ok(read(client, f"/v1/patients/{P}"))
    assert record["record"] == {"name": ERASED, "phone": ERASED}
    assert record["shredded"] is True
    history = {i["seq"]: i for i in ok(read(client, f"/v1/patients/{P}/accesses"))["items"]}
    for name in ("create", "disclose", "read"):
        assert history[seqs[name]]["patient"] == {"id": ERASED}, name
    assert any(i["action"] == "patient_shredded" for i in history.values())
    accounting = ok(read(client, f"/v1/patients/{P}/disclosures"))
    (entry,) = accounting["entries"]
    assert entry["recipient"] == {"name": ERASED, "address": ERASED, "kind": "public_health"}
    assert entry["description"] == ERASED and entry["seq"] == seqs["disclose"]
    # Nothing of P's PHI anywhere in those answers; Q reads as posted.
    other = ok(read(client, f"/v1/patients/{Q}"))
    assert other["record"] == {"name": "Bea Other"}
    (q_entry,) = ok(read(client, f"/v1/patients/{Q}/disclosures"))["entries"]
    assert q_entry["recipient"]["name"] == "County Health Dept"
    assert q_entry["description"] == "flu report"
    return {"record": record["record"], "entries": accounting["entries"],
            "patients": {s: i["patient"] for s, i in history.items()}}


def test_a_shredded_patient_reads_erased_and_the_views_still_rebuild(
    client: TestClient,
) -> None:
    world = shred_world(client)
    before = ok(read(client, f"/v1/patients/{P}"))
    assert before["record"] == {"name": "Ann Example", "phone": "555-0101"}
    svc = services(client)
    shred_patient(svc.store, envelope_of(svc), LEDGER, P, actor="privacy-officer",
                  reason="REQ-1", clock=utc_now)
    seen = assert_p_reads_erased(client, world)
    # The reads after the shred name P under a new key, and open.
    assert any(p == {"id": P} for p in seen["patients"].values())

    Projector(svc.store).rebuild()
    again = assert_p_reads_erased(client, world)
    assert again["record"] == seen["record"] and again["entries"] == seen["entries"]
    assert {s: p for s, p in again["patients"].items() if s in seen["patients"]} == seen[
        "patients"]


def test_phi_ledger_shred_beside_the_running_service(client: TestClient, settings: Settings
                                                     ) -> None:
    """The operator's way: `phi-ledger shred` in its own process while the service runs
    (and has P's key cached from the reads before)."""
    world = shred_world(client)
    ok(read(client, f"/v1/patients/{P}"))
    ok(read(client, f"/v1/patients/{P}/disclosures"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": settings.database_url, "LEDGER_KEY_FILE": str(settings.key_file)}
    done = subprocess.run([sys.executable, "-m", "api.cli", "shred", "--patient", P,
                           "--reason", "REQ-2", "--yes"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "data key destroyed" in done.stdout
    assert_p_reads_erased(client, world)
    rebuilt = subprocess.run([sys.executable, "-m", "api.cli", "rebuild"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert_p_reads_erased(client, world)


def test_helpers_see_what_they_should(client: TestClient) -> None:
    """Guards the helpers: the query events really are found and opened, so the empty
    list in test_bad_parameters_are_all_named_in_one_400 means something."""
    post(client, event())
    start = head(client)
    assert queries_after(client, start) == []
    ok(read(client, f"/v1/patients/{P}/accesses", purpose="HQUALIMP"))
    (q,) = queries_after(client, start)
    assert (q["shown"], q["purpose"]) == (P, "HQUALIMP")
    assert uuid.UUID(q["event_id"])


def test_a_shredded_patients_accounting_keeps_distinct_recipients_apart(
    client: TestClient,
) -> None:
    """Summarising (164.528(b)(3)) is for repeated disclosures to one recipient: once the
    recipients all read "[erased]" the service can no longer tell them apart, so it must
    not merge them into one summary line."""
    seqs = post(client,
                disclosure("County Health Dept", "public_health", "PUBHLTH", at(30),
                           address="1 Main St"),
                disclosure("State Lab", "public_health", "PUBHLTH", at(20), address="2 Lab Rd"),
                disclosure("County Court", "court", "LEGAL", at(10)))
    before = ok(read(client, f"/v1/patients/{P}/disclosures"))
    assert [(e["seq"], e["disclosures"]) for e in before["entries"]] == [(s, 1) for s in seqs]
    svc = services(client)
    shred_patient(svc.store, envelope_of(svc), LEDGER, P, actor="privacy-officer",
                  reason="REQ-3", clock=utc_now)
    after = ok(read(client, f"/v1/patients/{P}/disclosures"))
    assert all(e["recipient"]["name"] == ERASED for e in after["entries"])
    assert [(e["seq"], e["disclosures"]) for e in after["entries"]] == [(s, 1) for s in seqs]
    assert after["disclosures"] == 3
