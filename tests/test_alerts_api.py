"""GET /v1/alerts and triage: the contract's shape, filters, paging, recorded reads,
investigator-only triage in the ledger, no triage of one's own alerts, tenant isolation."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from projections.runner import Projector
from tests.monitoring_support import at, read, record, staff_added, trained
from tests.support import auth_headers, fastapi_app, service_key


def _svc(client: TestClient) -> Any:
    return fastapi_app(client.app).state.services


def _post(client: TestClient, events: list[dict[str, Any]],
          headers: dict[str, str] | None = None) -> list[int]:
    answer = client.post("/v1/events/batch", json={"events": events}, headers=headers or {})
    assert answer.status_code == 201, answer.text
    return [r["seq"] for r in answer.json()["receipts"]]


def _catch_up(client: TestClient) -> None:
    svc = _svc(client)
    Projector(svc.store, protection=svc.protection).catch_up()


def _scenario(client: TestClient, agent: str = "agent-1",
              headers: dict[str, str] | None = None) -> list[int]:
    return _post(client, [
        staff_added(agent, name="Ana M. Reyes"), trained(agent),
        record("MRN-1", name="Luis Reyes", dob="1980-01-01", vip=True),
        read("MRN-1", at(10), actor=agent),
        read("MRN-2", at(20), actor=agent, purpose="ETREAT"),
    ], headers)


def test_list_shape_filters_and_recorded_reads(client: TestClient) -> None:
    seqs = _scenario(client)
    _catch_up(client)
    answer = client.get("/v1/alerts", params={"purpose": "HOPERAT", "actor": "agent-1"})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert {(i["seq"], i["rule"]) for i in items} == {
        (seqs[3], "same_last_name"), (seqs[3], "vip_access"), (seqs[4], "break_glass")}
    one = next(i for i in items if i["rule"] == "vip_access")
    assert set(one) >= {"alert_id", "rule", "severity", "status", "seq", "event_id",
                        "occurred_at", "actor", "patient", "explained_by", "details"}
    assert one["patient"] == {"id": "MRN-1"} and one["status"] == "open"
    assert one["severity"] == "medium" and "VIP" in one["details"]["why"]
    # A query per patient shown, naming the purpose.
    entries = client.get("/v1/ledger/entries", params={"after": seqs[-1], "limit": 50}).json()
    queries = [e["event"] for e in entries["entries"] if e["event"]["action"] == "query"]
    assert len(queries) == 2
    assert {q["purpose"] for q in queries} == {"HOPERAT"}
    assert {q["resource"]["type"] for q in queries} == {"alert_list"}
    # Filters.
    only = client.get("/v1/alerts", params={"purpose": "HOPERAT", "rule": "break_glass"})
    assert [i["seq"] for i in only.json()["items"]] == [seqs[4]]
    by_patient = client.get("/v1/alerts", params={"purpose": "HOPERAT", "patient": "MRN-1",
                                                  "actor": "agent-1"}).json()["items"]
    assert {i["rule"] for i in by_patient} == {"same_last_name", "vip_access"}


def test_paging_and_bad_parameters(client: TestClient) -> None:
    _scenario(client)
    _catch_up(client)
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"purpose": "HOPERAT", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/alerts", params=params).json()
        seen += [i["alert_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = client.get("/v1/alerts", params={"purpose": "HOPERAT"}).json()["items"]
    assert seen == [i["alert_id"] for i in everything] and len(set(seen)) == len(seen) > 2
    bad = client.get("/v1/alerts", params={"rule": "nope", "status": "weird"})
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"purpose", "rule", "status"}


def test_triage_by_investigator_in_the_ledger(client: TestClient) -> None:
    seqs = _scenario(client)
    _catch_up(client)
    ident = f"{seqs[3]}-vip_access"
    answer = client.post(f"/v1/alerts/{ident}/acknowledge", json={"reason": "ticket 7"})
    assert answer.status_code == 200, answer.text
    entry = client.get("/v1/ledger/entries",
                       params={"after": answer.json()["seq"] - 1, "limit": 1}).json()
    assert entry["entries"][0]["event"]["action"] == "alert_acknowledged"
    _catch_up(client)
    listed = client.get("/v1/alerts", params={"purpose": "HOPERAT",
                                              "status": "acknowledged"}).json()["items"]
    assert [i["alert_id"] for i in listed] == [ident]
    dismissed = client.post(f"/v1/alerts/{seqs[4]}-break_glass/dismiss",
                            json={"reason": "drill"})
    assert dismissed.status_code == 200
    _catch_up(client)
    statuses = {i["alert_id"]: i["status"] for i in client.get(
        "/v1/alerts", params={"purpose": "HOPERAT"}).json()["items"]}
    assert statuses[f"{seqs[4]}-break_glass"] == "dismissed"
    assert statuses[f"{seqs[3]}-same_last_name"] == "open"
    assert client.post(f"/v1/alerts/{ident}/dismiss", json={}).status_code == 400
    assert client.post("/v1/alerts/99999-vip_access/dismiss",
                       json={"reason": "x"}).status_code == 404


def test_triage_needs_the_investigator_role(client: TestClient) -> None:
    seqs = _scenario(client)
    _catch_up(client)
    auditor = auth_headers(service_key(_svc(client), roles=("auditor",)))
    answer = client.post(f"/v1/alerts/{seqs[3]}-vip_access/acknowledge",
                         json={"reason": "x"}, headers=auditor)
    assert answer.status_code == 403
    assert client.get("/v1/alerts", params={"purpose": "HOPERAT"},
                      headers=auditor).status_code == 403


def test_applications_cannot_post_triage_actions(client: TestClient) -> None:
    forged = read("MRN-1", at(1)) | {"action": "alert_dismissed"}
    answer = client.post("/v1/events", json=forged)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["fields"] == ["action"]
    assert client.get("/v1/ledger").json()["seq"] == 0


def test_no_triage_of_ones_own_alert(client: TestClient) -> None:
    me = client.get("/v1/auth/whoami").json()
    mine = me.get("id") or me["identity"]["id"]
    seqs = _scenario(client, agent=mine)
    _catch_up(client)
    answer = client.post(f"/v1/alerts/{seqs[3]}-vip_access/dismiss", json={"reason": "x"})
    assert answer.status_code == 403
    assert "your own actions" in answer.json()["error"]["message"]


def test_alerts_of_one_ledger_never_show_in_another(client: TestClient) -> None:
    svc = _svc(client)
    other = auth_headers(service_key(svc, ledger="other"))
    _scenario(client)
    _post(client, [read("MRN-9", at(5), purpose="ETREAT")], other)  # same actor id
    _catch_up(client)
    mine = client.get("/v1/alerts", params={"purpose": "HOPERAT"}).json()["items"]
    theirs = client.get("/v1/alerts", params={"purpose": "HOPERAT"}, headers=other).json()
    assert {i["patient"]["id"] for i in mine if i["patient"]} == {"MRN-1", "MRN-2"}
    assert [(i["rule"], i["patient"]["id"]) for i in theirs["items"]] == [
        ("break_glass", "MRN-9")]
    refused = client.post(f"/v1/alerts/{theirs['items'][0]['alert_id']}/dismiss",
                          json={"reason": "x"})
    assert refused.status_code == 404  # ids are per ledger: this one's seq 1 raised nothing


def test_metrics_count_alerts_by_rule_and_status(client: TestClient) -> None:
    seqs = _scenario(client)
    _catch_up(client)
    client.post(f"/v1/alerts/{seqs[4]}-break_glass/dismiss", json={"reason": "drill"})
    _catch_up(client)
    text = client.get("/metrics").text
    assert 'phi_ledger_alerts{rule="vip_access",status="open"} 1.0' in text
    assert 'phi_ledger_alerts{rule="break_glass",status="dismissed"} 1.0' in text
    assert "MRN-" not in text and "Reyes" not in text


def test_from_is_inclusive_and_to_exclusive(client: TestClient) -> None:
    """``from <= occurred_at < to``, compared as instants (an offset other than the
    events' own names the same moment)."""
    seqs = _post(client, [read(f"MRN-{i}", at(10 * i), purpose="ETREAT") for i in (1, 2, 3)])
    _catch_up(client)

    def listed(**bounds: str) -> list[int]:
        answer = client.get("/v1/alerts", params={"purpose": "HOPERAT", **bounds})
        assert answer.status_code == 200, answer.text
        return sorted(i["seq"] for i in answer.json()["items"])

    assert listed() == seqs
    assert listed(**{"from": at(20)}) == seqs[1:]  # the alert at exactly `from` is in
    assert listed(to=at(20)) == seqs[:1]  # the alert at exactly `to` is out
    assert listed(**{"from": at(10), "to": at(30)}) == seqs[:2]
    assert listed(**{"from": at(19.99), "to": at(20.01)}) == seqs[1:2]
    # 09:20 at -05:00 is 14:20 UTC: the same bound, spelled in UTC.
    assert listed(**{"from": "2026-11-02T14:20:00Z"}) == seqs[1:]
    assert listed(to="2026-11-02T14:20:00.001Z") == seqs[:2]
    same = client.get("/v1/alerts", params={"purpose": "HOPERAT", "from": at(20),
                                            "to": at(20)})
    assert same.status_code == 400 and same.json()["error"]["fields"] == ["from"]
