"""Investigations against a brute-force reading of the export, on SQLite and PostgreSQL.

Hypothesis generates small ledgers (accesses by a few actors from a few devices and IPs,
logins, failed and denied actions, disclosures encrypted or not over various channels,
patient records whose state changes) and scopes; the ledger is posted in two parts.
Each investigation's answer -- now and ``as_of`` the end of the first part -- is checked
against what a reader of the exported entries (opened with the patients' keys) finds by
the contract's words alone, field by field: the scope as posted; which entries are in
scope, in time order, each item as exported; each affected patient's state (from the
record as it stood), actions, PHI categories, channels, first and last access and whether
secured; the counts by state; the duties with their deadlines and basis (discoveries on 31
December drawn often); factor 3 of the risk assessment; the ``as_of`` instant echoed and
the seq the answer is computed through. Each example uses a ledger of its own.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date, timedelta
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.instants import utc_of
from tests.support import auth_headers, fastapi_app, make_event, service_key

ACTORS = ["u1", "u2", "u3"]
DEVICES = ["d1", "d2"]
IPS = ["192.0.2.1", "192.0.2.2"]
PATIENTS = ["M1", "M2", "M3", "M4"]
PHI = {"read", "create", "update", "delete", "disclose", "export", "print", "query"}
DAY = date(2026, 3, 1)
_ledgers = itertools.count()
# Examples and ledger sizes: what runs in about 20 s on SQLite on the 2-core machine of
# docs/benchmarks.md; PostgreSQL, slower per request, runs fewer of the same.
EXAMPLES = 60
PG_EXAMPLES = 25
FIRST = 40  # events before the investigation opens (the as_of point)
SECOND = 20  # events after
# Discoveries on 31 December: of a leap year, of the year before one, of another year.
YEAR_ENDS = [date(2028, 12, 31), date(2027, 12, 31), date(2025, 12, 31), date(2028, 2, 29)]


def _at(minute: int) -> str:
    return f"2026-03-01T{minute // 60:02d}:{minute % 60:02d}:00{'Z' if minute % 2 else '-00:00'}"


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["access", "access", "access", "auth", "record"]))
    actor = {"id": draw(st.sampled_from(ACTORS)), "kind": "user", "mfa": True}
    if draw(st.booleans()):
        actor["device_id"] = draw(st.sampled_from(DEVICES))
    if draw(st.booleans()):
        actor["ip"] = draw(st.sampled_from(IPS))
    when = _at(draw(st.integers(0, 600)))
    outcome = draw(st.sampled_from(["success", "success", "success", "failure", "denied"]))
    patient = draw(st.sampled_from(PATIENTS))
    if kind == "auth":
        body = make_event(action=draw(st.sampled_from(["login", "login_failed", "logout"])),
                          actor=actor, occurred_at=when, outcome=outcome)
        for name in ("patient", "resource", "purpose", "channel"):
            body.pop(name)
        return body
    if kind == "record":
        field = draw(st.sampled_from(["state", "address.state"]))
        value = draw(st.sampled_from(["NY", "CA", "TX", None, "Texas"]))
        return make_event(action=draw(st.sampled_from(["create", "update"])), actor=actor,
                          occurred_at=when, outcome=outcome, patient={"id": patient},
                          resource={"type": "patient", "id": patient},
                          data={field: value})
    action = draw(st.sampled_from(["read", "export", "print", "disclose", "query", "create"]))
    channel = draw(st.sampled_from(["ehr", "fax", "secure_sms", "encrypted_email", "email"]))
    body = make_event(action=action, actor=actor, occurred_at=when, outcome=outcome,
                      patient={"id": patient}, channel=channel,
                      resource={"type": "message", "id": "m",
                                "phi": draw(st.lists(st.sampled_from(["name", "dob", "dx"]),
                                                     max_size=2, unique=True))})
    if action == "disclose":
        body["disclosure"] = {"recipient": {"name": "R", "kind": "provider"},
                              "description": "d", "encrypted": draw(st.booleans())}
    return body


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "actors": draw(st.lists(st.sampled_from(ACTORS), max_size=2, unique=True)),
        "devices": draw(st.lists(st.sampled_from(DEVICES), max_size=1, unique=True)),
        "ips": draw(st.lists(st.sampled_from(IPS), max_size=1, unique=True)),
        "patients": draw(st.lists(st.sampled_from(PATIENTS), max_size=2, unique=True))}
    if not any(scope.values()):
        scope["actors"] = [ACTORS[0]]
    start = draw(st.integers(0, 500))
    scope["from"] = _at(start)
    if draw(st.booleans()):
        scope["to"] = _at(start + draw(st.integers(1, 300)))
    return scope


# -- the brute-force reader --------------------------------------------------------------


def _covers(scope: dict[str, Any], event: dict[str, Any]) -> bool:
    when = utc_of(event["occurred_at"])
    if when < utc_of(scope["from"]) or ("to" in scope and when >= utc_of(scope["to"])):
        return False
    actor = event["actor"]
    patient = (event.get("patient") or {}).get("id")
    return (actor["id"] in scope["actors"] or actor.get("device_id") in scope["devices"]
            or actor.get("ip") in scope["ips"] or patient in scope["patients"])


def _state(entries: list[dict[str, Any]], patient: str) -> str | None:
    state = None
    for e in entries:
        ev = e["event"]
        if ((ev.get("patient") or {}).get("id") != patient or ev["outcome"] != "success"
                or ev["action"] not in ("create", "update")
                or (ev.get("resource") or {}).get("type") not in (None, "patient")):
            continue
        data = ev.get("data") or {}
        if ev["action"] == "create":
            state = None
        for name in ("state", "address.state"):
            if name in data:
                v = data[name]
                state = v if isinstance(v, str) and len(v) == 2 and v.isupper() else None
    return state


ACQUIRING = ("read", "export", "print", "disclose")
ACTOR_FIELDS = ("id", "kind", "role", "organization", "device_id", "ip", "session_id")


def _item(entry: dict[str, Any]) -> dict[str, Any]:
    """A timeline item (less its alerts), from the opened exported entry."""
    ev = entry["event"]
    actor = {k: ev["actor"][k] for k in ACTOR_FIELDS if ev["actor"].get(k) is not None}
    if "mfa" in ev["actor"]:
        actor["mfa"] = ev["actor"]["mfa"]
    resource, source, patient = ev.get("resource"), ev.get("source"), ev.get("patient")
    return {"seq": entry["seq"], "event_id": ev["event_id"], "occurred_at": ev["occurred_at"],
            "recorded_at": entry["recorded_at"], "action": ev["action"],
            "outcome": ev["outcome"], "purpose": ev.get("purpose"),
            "channel": ev.get("channel"), "actor": actor,
            "patient": None if patient is None else {"id": patient["id"]},
            "resource": None if resource is None else {
                "type": resource["type"], "id": resource.get("id"),
                "phi": resource.get("phi")},
            "source": None if source is None else {"system": source["system"],
                                                   "site": source.get("site")}}


def _duties(discovered: date, unsecured: list[str]) -> list[dict[str, Any]]:
    """164.404-408 read off the contract: ``unsecured`` holds one state per patient."""
    if not unsecured:
        return []
    due = (discovered + timedelta(days=60)).isoformat()
    duties: list[dict[str, Any]] = [{"to": "individuals", "deadline": due,
                                     "basis": "164.404(b)"}]
    if len(unsecured) >= 500:
        duties.append({"to": "hhs", "deadline": due, "basis": "164.408(b)"})
    else:
        year_end = date(discovered.year, 12, 31)
        duties.append({"to": "hhs", "deadline": (year_end + timedelta(days=60)).isoformat(),
                       "basis": "164.408(c)"})
    media = sorted(s for s, n in Counter(unsecured).items() if s != "unknown" and n > 500)
    if media:
        duties.append({"to": "media", "deadline": due, "basis": "164.406", "states": media})
    return duties


def expected(entries: list[dict[str, Any]], scope: dict[str, Any], discovered: date
             ) -> dict[str, Any]:
    """The answer, read from opened exported entries by the contract's words."""
    in_scope = [e for e in entries if _covers(scope, e["event"])]
    in_scope.sort(key=lambda e: (utc_of(e["event"]["occurred_at"]), e["seq"]))
    patients: dict[str, list[dict[str, Any]]] = {}
    for e in in_scope:
        ev = e["event"]
        if (ev["action"] in PHI and ev["outcome"] == "success"
                and not (ev["action"] == "query" and ev["source"]["system"] == "phi-ledger")):
            patients.setdefault(ev["patient"]["id"], []).append(ev)
    affected = {}
    for pid, evs in patients.items():
        secured = all(ev["action"] == "disclose" and (
            ev["disclosure"].get("encrypted") is True
            or ev["channel"] in ("secure_sms", "encrypted_email")) for ev in evs)
        times = sorted(utc_of(ev["occurred_at"]) for ev in evs)
        affected[pid] = {
            "state": _state(entries, pid) or "unknown", "secured": secured,
            "actions": dict(Counter(ev["action"] for ev in evs)),
            "phi": sorted({c for ev in evs for c in (ev.get("resource") or {}).get("phi")
                           or []}),
            "channels": sorted({ev["channel"] for ev in evs if ev.get("channel")}),
            # the instant as posted: any entry at that instant shows it (offsets differ
            # only between instants here, see _at)
            "first": next(ev["occurred_at"] for ev in evs
                          if utc_of(ev["occurred_at"]) == times[0]),
            "last": next(ev["occurred_at"] for ev in evs
                         if utc_of(ev["occurred_at"]) == times[-1])}
    unsecured = [a["state"] for a in affected.values() if not a["secured"]]
    acquired = Counter(e["event"]["action"] for e in in_scope
                       if e["event"]["action"] in ACQUIRING
                       and e["event"]["outcome"] == "success" and e["event"].get("patient"))
    return {"timeline": [_item(e) for e in in_scope], "affected": affected,
            "counts": {"patients": len(affected), "unsecured": len(unsecured),
                       "by_state": dict(Counter(unsecured))},
            "duties": _duties(discovered, unsecured),
            "acquired_or_viewed": {"acquired_or_viewed": bool(acquired),
                                   "entries": {a: acquired[a] for a in ACQUIRING}}}


def _opened_entries(client: TestClient, headers: dict[str, str], through: int
                    ) -> list[dict[str, Any]]:
    svc = fastapi_app(client.app).state.services
    body = client.get("/v1/ledger/entries", headers=headers,
                      params={"limit": 1000}).json()["entries"]
    body = [e for e in body if e["seq"] <= through]
    ledger = body[0]["ledger"] if body else "default"
    opened = svc.protection.reveal_many(ledger, [e["event"] for e in body])
    return [{**e, "event": ev} for e, ev in zip(body, opened, strict=True)]


def _check(got: dict[str, Any], want: dict[str, Any], scope: dict[str, Any]) -> None:
    assert got["next_cursor"] is None  # one page holds the whole answer
    assert [{k: v for k, v in i.items() if k != "alerts"} for i in got["timeline"]
            ] == want["timeline"]
    assert got["timeline_total"] == len(want["timeline"])
    by_patient = {a["patient"]["id"]: {k: v for k, v in a.items() if k != "patient"}
                  for a in got["affected"]}
    assert by_patient == want["affected"] and len(got["affected"]) == len(by_patient)
    # listed by first access (ties by blind index, which a reader cannot see)
    firsts = [utc_of(a["first"]) for a in got["affected"]]
    assert firsts == sorted(firsts)
    assert got["counts"] == want["counts"]
    assert [{**d, "basis": d["basis"].removeprefix("45 CFR ").split(":")[0]}
            for d in got["duties"]] == want["duties"]
    assert got["risk_assessment"] == {"acquired_or_viewed": want["acquired_or_viewed"]}
    shown = got["investigation"]["scope"]
    assert {k: shown[k] for k in ("actors", "devices", "ips", "from")} == {
        k: scope[k] for k in ("actors", "devices", "ips", "from")}
    assert shown["to"] == scope.get("to") and len(shown["patients"]) == len(scope["patients"])


def test_answers_agree_with_a_brute_force_reading_of_the_export(client: TestClient,
                                                                database_url: str) -> None:
    svc = fastapi_app(client.app).state.services
    examples = EXAMPLES if database_url.startswith("sqlite") else PG_EXAMPLES

    @settings(max_examples=examples, suppress_health_check=list(HealthCheck))
    @given(first=st.lists(events(), min_size=1, max_size=FIRST),
           second=st.lists(events(), max_size=SECOND), scope=scopes(),
           discovered=st.one_of(st.dates(date(2024, 1, 1), date(2028, 12, 31)),
                                st.sampled_from(YEAR_ENDS)))
    def check(first: list[dict[str, Any]], second: list[dict[str, Any]],
              scope: dict[str, Any], discovered: date) -> None:
        headers = auth_headers(service_key(svc, ledger=f"model-{next(_ledgers)}"))
        r = client.post("/v1/events/batch", headers=headers, json={"events": first})
        assert r.status_code == 201, r.text
        stood = r.json()["receipts"][-1]
        r = client.post("/v1/investigations", headers=headers, json={
            "title": "t", "discovered_at": f"{discovered.isoformat()}T12:00:00-08:00",
            "scope": scope})
        assert r.status_code == 201, r.text
        inv = r.json()["investigation_id"]
        if second:
            assert client.post("/v1/events/batch", headers=headers,
                               json={"events": second}).status_code == 201
        now = client.get(f"/v1/investigations/{inv}", headers=headers,
                         params={"purpose": "HOPERAT", "limit": 500}).json()
        assert now["as_of"] is None
        _check(now, expected(_opened_entries(client, headers, now["through_seq"]), scope,
                             discovered), scope)
        then = client.get(f"/v1/investigations/{inv}", headers=headers,
                          params={"purpose": "HOPERAT", "limit": 500,
                                  "as_of": stood["recorded_at"]}).json()
        every = client.get("/v1/ledger/entries", headers=headers,
                           params={"limit": 1000}).json()["entries"]
        assert then["through_seq"] == max(e["seq"] for e in every
                                          if e["recorded_at"] <= stood["recorded_at"])
        assert then["as_of"] == utc_of(stood["recorded_at"])
        _check(then, expected(_opened_entries(client, headers, then["through_seq"]), scope,
                              discovered), scope)

    check()
