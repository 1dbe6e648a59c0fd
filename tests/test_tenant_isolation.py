"""Tenant isolation where it is enforced: in the queries over the views.

Two ledgers hold the same actor id and the same patient id. Every question an auditor or
investigator can ask -- a user's history, a patient's record, a patient's accesses, the
accounting of disclosures, the alerts monitoring raised, an investigation's timeline and
affected patients -- answers from the caller's own ledger only. With PHI encrypted, each
ledger's blind index already gives the patient a different ``patient_ref``, which would hide
a missing ``ledger = ...`` filter; the plaintext mode (``LEDGER_UNSAFE_PLAINTEXT``) keys the
views by the patient id itself, so only the filter keeps the tenants apart. Both modes, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from ledger.store import open_store
from projections.queries import AuditQueries
from projections.runner import Projector
from tests.support import (
    auth_headers,
    contract_example,
    fastapi_app,
    make_event,
    provision_key,
)

A, B = "clinic-a", "clinic-b"
ACTOR, PATIENT, ONLY_A = "agent-0042", "MRN-SAME-1", "MRN-ONLY-A"
Keys = dict[str, dict[str, str]]


@pytest.fixture(params=["encrypted", "plaintext"])
def two_tenants(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, Keys, dict[str, dict[str, Any]]]]:
    """Both ledgers filled with one actor id and one patient id; what each ledger got."""
    env = {"LEDGER_UNSAFE_PLAINTEXT": "1"} if request.param == "plaintext" else {}
    settings = replace(Settings.from_env(env), database_url=database_url,
                       key_file=tmp_path / "keys.json")
    assert settings.unsafe_plaintext is (request.param == "plaintext")
    keys = {f"{role}@{ledger}": auth_headers(provision_key(database_url, roles=[role],
                                                           ledger=ledger))
            for role in ("ingest", "auditor", "investigator") for ledger in (A, B)}
    actor = {**make_event()["actor"], "id": ACTOR}
    posted: dict[str, dict[str, Any]] = {}
    with TestClient(create_app(settings, configure_logs=False)) as client:
        # B's record moves state after its first entries: with another ledger's record
        # events, A's patient would take B's seqs' entries for its own (investigations).
        for ledger, name, states in ((A, "Alice Tenant-A", ["NY"]),
                                     (B, "Bobby Tenant-B", ["NV", "CA"])):
            events = [
                make_event(action="create", actor=actor, patient={"id": PATIENT},
                           data={"name": name, "state": states[0]}),
                {**contract_example(), "actor": actor, "patient": {"id": PATIENT},
                 "disclosure": {**contract_example()["disclosure"],
                                "description": f"callback for {ledger}"}},
                # a break-glass read: monitoring raises an alert on it
                make_event(actor=actor, patient={"id": PATIENT}, purpose="ETREAT"),
            ] + [make_event(action="update", actor=actor, patient={"id": PATIENT},
                            data={"state": state}) for state in states[1:]]
            r = client.post("/v1/events/batch", json={"events": events},
                            headers=keys[f"ingest@{ledger}"])
            assert r.status_code == 201, r.text
            posted[ledger] = {"name": name, "ids": {e["event_id"] for e in events},
                              "record": {"name": name, "state": states[-1]},
                              "seq": r.json()["receipts"][-1]["seq"],
                              "break_glass": events[2]["event_id"]}
        only_a = make_event(action="create", actor=actor, patient={"id": ONLY_A},
                            data={"name": "Carol Only-A", "state": "TX"})
        r = client.post("/v1/events", json=only_a, headers=keys[f"ingest@{A}"])
        assert r.status_code == 201, r.text
        # A's questions wait for its last entry: its history holds the ONLY_A event too
        posted[A]["only"] = posted[A]["seq"] = r.json()["seq"]
        posted[A]["actor_ids"] = posted[A]["ids"] | {only_a["event_id"]}
        posted[B]["actor_ids"] = posted[B]["ids"]
        yield client, keys, posted


def _get(client: TestClient, headers: dict[str, str], path: str, seq: int) -> dict[str, Any]:
    r = client.get(path, params={"purpose": "HOPERAT", "min_seq": seq, "wait_ms": 10_000},
                   headers=headers)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def _event_ids(items: list[dict[str, Any]]) -> set[str]:
    return {i["event_id"] for i in items if i["action"] != "query"}


@pytest.mark.parametrize("ledger", [A, B])
def test_every_query_answers_from_the_callers_ledger_only(
    two_tenants: tuple[TestClient, Keys, dict[str, dict[str, Any]]], ledger: str
) -> None:
    client, keys, posted = two_tenants
    mine, theirs = posted[ledger], posted[B if ledger == A else A]
    auditor = keys[f"auditor@{ledger}"]

    record = _get(client, auditor, f"/v1/patients/{PATIENT}", mine["seq"])
    assert record["ledger"] == ledger and record["record"] == mine["record"]

    accesses = _get(client, auditor, f"/v1/patients/{PATIENT}/accesses", mine["seq"])
    assert _event_ids(accesses["items"]) == mine["ids"]

    history = _get(client, auditor, f"/v1/users/{ACTOR}/accesses", mine["seq"])
    assert _event_ids(history["items"]) == mine["actor_ids"]

    accounting = _get(client, auditor, f"/v1/patients/{PATIENT}/disclosures", mine["seq"])
    text = str(accounting)
    assert f"callback for {ledger}" in text
    assert f"callback for {B if ledger == A else A}" not in text
    assert theirs["name"] not in str([record, accesses, history, accounting])


def test_a_patient_of_another_ledger_is_not_found(
    two_tenants: tuple[TestClient, Keys, dict[str, dict[str, Any]]]
) -> None:
    """Clinic A's patient is unknown to clinic B's auditor (the same 404 as a patient no
    one ever recorded), and known to A's."""
    client, keys, posted = two_tenants
    _get(client, keys[f"auditor@{A}"], f"/v1/patients/{ONLY_A}/disclosures", posted[A]["only"])
    for path in (f"/v1/patients/{ONLY_A}", f"/v1/patients/{ONLY_A}/accesses",
                 f"/v1/patients/{ONLY_A}/disclosures", "/v1/patients/MRN-NEVER/accesses"):
        r = client.get(path, params={"purpose": "HOPERAT", "min_seq": posted[B]["seq"]},
                       headers=keys[f"auditor@{B}"])
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "patient_not_found"
        assert "Carol" not in r.text


def _alerts(client: TestClient, headers: dict[str, str], **where: str) -> set[str]:
    """The event ids the caller's alerts are about (``actor``/``patient`` filters)."""
    r = client.get("/v1/alerts", params={"purpose": "HOPERAT", **where}, headers=headers)
    assert r.status_code == 200, r.text
    return {i["event_id"] for i in r.json()["items"]}


@pytest.mark.parametrize("ledger", [A, B])
def test_alerts_answer_from_the_callers_ledger_only(
    two_tenants: tuple[TestClient, Keys, dict[str, dict[str, Any]]], ledger: str
) -> None:
    client, keys, posted = two_tenants
    svc = fastapi_app(client.app).state.services
    Projector(svc.store, protection=svc.protection).catch_up()
    mine, theirs = posted[ledger], posted[B if ledger == A else A]
    investigator = keys[f"investigator@{ledger}"]
    for where in ({}, {"actor": ACTOR}, {"patient": PATIENT}):
        seen = _alerts(client, investigator, **where)
        assert mine["break_glass"] in seen, where
        assert seen <= mine["actor_ids"], where  # none of the other tenant's events
        assert not seen & theirs["actor_ids"], where
    assert _alerts(client, keys[f"investigator@{B}"], patient=ONLY_A) == set()


def test_investigations_answer_from_the_callers_ledger_only(
    two_tenants: tuple[TestClient, Keys, dict[str, dict[str, Any]]]
) -> None:
    """Each tenant investigates the same actor and the same patient: its timeline, its
    affected patients and their states of residence (from its own record events), its
    list of investigations; the other's investigation is not found."""
    client, keys, posted = two_tenants
    window = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    states = {A: {PATIENT: "NY", ONLY_A: "TX"}, B: {PATIENT: "CA"}}
    opened: dict[str, list[str]] = {A: [], B: []}
    for ledger in (A, B):
        investigator = keys[f"investigator@{ledger}"]
        for scope in ({"actors": [ACTOR]}, {"patients": [PATIENT]}):
            r = client.post("/v1/investigations", headers=investigator, json={
                "title": "same ids, two tenants", "discovered_at": "2026-11-30T09:00:00Z",
                "scope": {**window, **scope}})
            assert r.status_code == 201, r.text
            opened[ledger].append(r.json()["investigation_id"])
            body = client.get(f"/v1/investigations/{opened[ledger][-1]}",
                              headers=investigator, params={"purpose": "HOPERAT"})
            assert body.status_code == 200, body.text
            timeline = {i["event_id"] for i in body.json()["timeline"]}
            affected = {a["patient"]["id"]: a["state"] for a in body.json()["affected"]}
            by_actor = "actors" in scope
            assert timeline == posted[ledger]["actor_ids" if by_actor else "ids"], scope
            assert affected == (states[ledger] if by_actor
                                else {PATIENT: states[ledger][PATIENT]}), scope
    for ledger, other in ((A, B), (B, A)):
        investigator = keys[f"investigator@{ledger}"]
        listed = client.get("/v1/investigations", headers=investigator).json()["items"]
        assert {i["investigation_id"] for i in listed} == set(opened[ledger])
        for theirs in opened[other]:
            crossing = client.get(f"/v1/investigations/{theirs}", headers=investigator,
                                  params={"purpose": "HOPERAT"})
            assert crossing.status_code == 404, crossing.text


def test_a_users_daily_patient_counts_are_per_ledger(
    two_tenants: tuple[TestClient, Keys, dict[str, dict[str, Any]]], database_url: str
) -> None:
    """The console's volume picture of a user (distinct patients a day): clinic A's actor
    touched two patients, clinic B's actor of the same id one, all on the example's day."""
    client, keys, posted = two_tenants
    for ledger in (A, B):  # wait until both ledgers' views hold every event posted
        newest = posted[ledger].get("only", posted[ledger]["seq"])
        _get(client, keys[f"auditor@{ledger}"], f"/v1/users/{ACTOR}/accesses", newest)
    store = open_store(database_url)
    try:
        counts = {ledger: AuditQueries(store).daily_patients(
            ledger, ACTOR, ("create", "disclose"), "2026-11-26T00:00:00Z",
            "2026-11-28T00:00:00Z") for ledger in (A, B)}
    finally:
        store.close()
    assert counts == {A: {"2026-11-26": 2}, B: {"2026-11-26": 1}}


def test_the_newest_entries_are_the_callers_ledgers_only(
    two_tenants: tuple[TestClient, Keys, dict[str, dict[str, Any]]], database_url: str
) -> None:
    """The console's list of a ledger's newest entries (``AuditQueries.recent``)."""
    client, keys, posted = two_tenants
    for ledger in (A, B):  # wait until both ledgers' views hold every event posted
        newest = posted[ledger].get("only", posted[ledger]["seq"])
        _get(client, keys[f"auditor@{ledger}"], f"/v1/users/{ACTOR}/accesses", newest)
    store = open_store(database_url)
    try:
        rows = {ledger: AuditQueries(store).recent(ledger, limit=100) for ledger in (A, B)}
    finally:
        store.close()
    for ledger in (A, B):
        assert {r["ledger"] for r in rows[ledger]} == {ledger}
        assert _event_ids(rows[ledger]) == posted[ledger]["actor_ids"]
