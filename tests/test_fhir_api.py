"""FHIR AuditEvent over REST, on SQLite and PostgreSQL: one message per IHE BALP profile
posted (single and in batch/transaction Bundles), stored as the contract event it means,
verified, read back as a valid R4 AuditEvent (the read recorded), and searched (ITI-81).
Refusals are OperationOutcomes naming FHIRPaths and never a value."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from api.formats.fhir_audit import to_audit_event, to_event
from tests import fhir_messages as m
from tests.support import auth_headers, contract_example, fastapi_app, make_event, service_key

FHIR = {"Content-Type": "application/fhir+json"}


def _entries(client: TestClient) -> list[dict[str, Any]]:
    r = client.get("/v1/ledger/entries", params={"after": 0, "limit": 1000})
    assert r.status_code == 200
    return r.json()["entries"]


def _stored_event(client: TestClient, seq: int) -> dict[str, Any]:
    svc = fastapi_app(client.app).state.services
    entry = next(e for e in _entries(client) if e["seq"] == seq)
    return svc.protection.reveal_many("default", [entry["event"]])[0]


def _wait_views(client: TestClient) -> None:
    svc = fastapi_app(client.app).state.services
    head = client.get("/v1/ledger").json()["seq"]
    position = svc.store.notification_of("default", head)
    assert svc.projector.wait_for(position, 60)


def _post(client: TestClient, resource: dict[str, Any], **headers: str) -> Any:
    return client.post("/fhir/AuditEvent", content=orjson.dumps(resource),
                       headers={**FHIR, **headers})


@pytest.mark.parametrize("profile", sorted(m.PROFILES))
def test_each_balp_profile_is_stored_as_its_contract_event_and_read_back(
        client: TestClient, profile: str) -> None:
    make, action = m.PROFILES[profile]
    message = make()
    r = _post(client, message)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    seq = int(r.headers["Location"].rsplit("/", 1)[1])
    assert r.json()["resourceType"] == "OperationOutcome"
    event = _stored_event(client, seq)
    assert event["action"] == action
    assert event["patient"] == {"id": m.PATIENT}
    assert event["occurred_at"] == message["recorded"]
    assert event["actor"]["id"] == "dr-rivera"
    assert event["actor"]["ip"] == "198.51.100.7"
    assert event["actor"]["role"] == "physician"
    assert event["source"] == {"system": "fhir-server-1", "site": "Northside"}
    if action in ("create", "read", "update", "delete", "query", "disclose"):
        assert event["purpose"] == "TREAT"
    if action == "disclose":
        assert event["disclosure"]["recipient"]["name"] == "County Public Health"
        assert event["disclosure"]["description"] == "discharge summary"
    if profile in ("Create", "Read", "Update", "Delete"):
        assert event["resource"] == {"type": "Observation", "id": "obs-1"}
    assert client.post("/v1/ledger/verify").json()["ok"] is True

    # read back: a valid R4 AuditEvent, the read recorded as a query of this patient
    back = client.get(f"/fhir/AuditEvent/{seq}", params={"purpose": "HOPERAT"})
    assert back.status_code == 200, back.text
    rendered = back.json()
    AuditEvent.model_validate(rendered)
    assert rendered["id"] == str(seq)
    assert to_event(rendered, event_id=event["event_id"]) == _without_nulls(event)
    last = _entries(client)[-1]
    read = fastapi_app(client.app).state.services.protection.reveal_many(
        "default", [last["event"]])[0]
    assert read["action"] == "query" and read["patient"] == {"id": m.PATIENT}
    assert read["resource"] == {"type": "audit_event"} and read["purpose"] == "HOPERAT"


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def test_replay_by_id_writes_nothing_and_another_body_is_a_conflict(client: TestClient) -> None:
    message = m.read()
    first = _post(client, message)
    again = _post(client, message, **{"Content-Type": "application/json"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.headers["Location"] == again.headers["Location"]
    changed = copy.deepcopy(message)
    changed["outcome"] = "4"
    clash = _post(client, changed)
    assert clash.status_code == 409
    assert clash.json()["issue"][0]["expression"] == ["AuditEvent.id"]
    assert len(_entries(client)) == 1


def test_no_id_is_idempotent_by_its_bytes(client: TestClient) -> None:
    message = m.patient_read()
    del message["id"]
    assert _post(client, message).status_code == 201
    assert _post(client, message).status_code == 200
    assert len(_entries(client)) == 1


def test_stu3_names_are_accepted(client: TestClient) -> None:
    r = _post(client, m.stu3_read())
    assert r.status_code == 201, r.text
    event = _stored_event(client, 1)
    assert event["actor"]["id"] == "dr-stu3" and event["patient"] == {"id": m.PATIENT}
    assert event["source"] == {"system": "old-server"}


def test_stu3_lifecycle_disclosure_is_a_disclosure(client: TestClient) -> None:
    message = m.stu3_read()
    message["entity"][0]["lifecycle"] = {"code": "11"}
    message["agent"].append({"role": [{"coding": [{"code": "IRCP"}]}],
                             "name": "County Public Health", "requestor": False})
    r = _post(client, message)
    assert r.status_code == 201, r.text
    event = _stored_event(client, 1)
    assert event["action"] == "disclose"
    assert event["disclosure"]["recipient"]["name"] == "County Public Health"


def test_refusals_name_fhirpaths_and_never_values(client: TestClient) -> None:
    message = m.read()
    message["recorded"] = "SECRET-not-an-instant"
    message["agent"][1]["network"]["address"] = "SECRET-host"
    r = _post(client, message)
    assert r.status_code == 422
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    paths = {e for issue in body["issue"] for e in issue.get("expression", [])}
    assert "AuditEvent.recorded" in paths
    assert "AuditEvent.agent[1].network.address" in paths
    assert "SECRET" not in r.text
    assert _entries(client) == []


def test_no_patient_and_unknown_type_are_refused(client: TestClient) -> None:
    message = m.read()
    message["entity"] = message["entity"][1:]
    r = _post(client, message)
    assert r.status_code == 422
    assert ["AuditEvent.entity"] in [i.get("expression") for i in r.json()["issue"]]
    odd = m.read()
    odd["action"] = "E"
    odd["subtype"] = [{"system": "urn:x", "code": "something"}]
    r = _post(client, odd)
    assert r.status_code == 422
    assert ["AuditEvent.type"] in [i.get("expression") for i in r.json()["issue"]]
    bad = _post(client, {"resourceType": "Patient"})
    assert bad.status_code == 422
    assert client.post("/fhir/AuditEvent", content=b"{", headers=FHIR).status_code == 422
    assert _entries(client) == []


@pytest.mark.parametrize("element, value", [
    ("agent", 5), ("agent", True), ("entity", 1.5), ("purposeOfEvent", "TREAT"),
    ("subtype", {"code": "read"}),
])
def test_a_list_element_that_is_not_a_list_is_refused_by_its_fhirpath(
        client: TestClient, element: str, value: Any) -> None:
    message = m.read()
    message[element] = value
    r = _post(client, message)
    assert r.status_code == 422, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert [f"AuditEvent.{element}"] in [i.get("expression") for i in r.json()["issue"]]
    b = client.post("/fhir", content=orjson.dumps(_bundle("batch", [message])), headers=FHIR)
    assert b.status_code == 200, b.text
    response = b.json()["entry"][0]["response"]
    assert response["status"] == "422 Unprocessable Entity"
    assert [f"Bundle.entry[0].resource.{element}"] in [
        i.get("expression") for i in response["outcome"]["issue"]]
    assert _entries(client) == []


def test_json_the_library_fails_on_is_refused_not_an_internal_error(
        client: TestClient) -> None:
    # fhir.resources parses a string where an element belongs as JSON; a number there
    # reaches a validator that calls .get on it (AttributeError inside the library).
    message = m.read()
    message["_action"] = "5"
    r = _post(client, message)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["AuditEvent"]
    b = client.post("/fhir", content=orjson.dumps(_bundle("batch", [message])), headers=FHIR)
    assert b.json()["entry"][0]["response"]["status"] == "422 Unprocessable Entity"
    assert _entries(client) == []


def _bundle(kind: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": r, "request": {"method": "POST", "url": "AuditEvent"}} for r in resources]}


def test_batch_bundle_answers_each_entry(client: TestClient) -> None:
    good = [make() for make, _ in m.PROFILES.values()]
    broken = m.read()
    broken["id"] = "broken"
    del broken["recorded"]
    r = client.post("/fhir", content=orjson.dumps(_bundle("batch", [*good, broken])),
                    headers=FHIR)
    assert r.status_code == 200, r.text
    Bundle.model_validate(r.json())
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["201 Created"] * len(good) + ["422 Unprocessable Entity"]
    issue = r.json()["entry"][-1]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == [f"Bundle.entry[{len(good)}].resource.recorded"]
    assert len(_entries(client)) == len(good)
    again = client.post("/fhir", content=orjson.dumps(_bundle("batch", good)), headers=FHIR)
    assert {e["response"]["status"] for e in again.json()["entry"]} == {"200 OK"}
    assert len(_entries(client)) == len(good)


def test_transaction_bundle_is_all_or_nothing(client: TestClient) -> None:
    good = [m.create(), m.update()]
    broken = m.delete()
    broken["outcome"] = "99"
    r = client.post("/fhir", content=orjson.dumps(_bundle("transaction", [*good, broken])),
                    headers=FHIR)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[2].resource.outcome"]
    assert _entries(client) == []
    ok = client.post("/fhir", content=orjson.dumps(_bundle("transaction", good)), headers=FHIR)
    assert ok.status_code == 200
    assert [e["response"]["location"] for e in ok.json()["entry"]] == [
        "/fhir/AuditEvent/1", "/fhir/AuditEvent/2"]


def test_round_trip_keeps_every_element_the_contract_holds() -> None:
    samples = [
        contract_example(), make_event(),
        make_event(action="create", data={"name": "Ana Reyes", "dob": "1980-02-03", "n": 3,
                                          "tags": ["a", None, True]},
                   resource={"type": "patient", "phi": []}),
        make_event(action="login_failed", outcome="failure", patient=None, purpose=None,
                   channel=None, resource=None,
                   actor={"id": "svc", "kind": "application", "device_id": "d-1"}),
        make_event(action="print", outcome="denied", actor={"id": "p", "kind": "patient"},
                   source=None),
        make_event(action="application_activity", patient=None, purpose=None, channel=None,
                   resource=None, actor={"id": "ehr-app", "kind": "application"}),
        make_event(action="security_alert", purpose="ETREAT", channel=None, resource=None),
        make_event(action="staff_added", patient=None, purpose=None, channel=None,
                   resource=None, data={"staff_id": "u1", "role": "nurse"}),
        make_event(action="disclose", resource=None, disclosure={
            "recipient": {"name": "Acme Billing", "kind": "business_associate",
                          "partner": "ba-acme"},  # monitoring's no_baa reads it
            "description": "claims", "authorization_id": "auth-1", "encrypted": False}),
    ]
    for event in samples:
        rendered = to_audit_event(event, resource_id="7")
        AuditEvent.model_validate(rendered)
        if event["action"] == "staff_added":
            continue  # no BALP pattern: rendered, never taken back in (not mappable)
        assert to_event(rendered, event_id=event["event_id"]) == _without_nulls(event)


def test_search_is_iti81_with_next_links_and_records_reads(client: TestClient) -> None:
    for i in range(5):
        message = m.read()
        message["id"] = f"r-{i}"
        message["recorded"] = f"2026-11-2{i}T10:00:00Z"
        assert _post(client, message).status_code == 201
    other = m.read()
    other["id"] = "other"
    other["entity"][0]["what"]["reference"] = "Patient/someone-else"
    other["outcome"] = "8"
    assert _post(client, other).status_code == 201
    _wait_views(client)
    params = {"patient": f"Patient/{m.PATIENT}", "date": ["ge2026-11-21T00:00:00Z",
                                                          "lt2026-11-24T00:00:00Z"],
              "_count": "2", "purpose": "HOPERAT", "action": "R", "outcome": "0",
              "agent": "dr-rivera", "entity-type": "1"}
    before = len(_entries(client))
    first = client.get("/fhir/AuditEvent", params=params)
    assert first.status_code == 200, first.text
    page = first.json()
    Bundle.model_validate(page)
    assert page["type"] == "searchset"
    recorded = [e["resource"]["recorded"] for e in page["entry"]]
    assert recorded == ["2026-11-21T10:00:00Z", "2026-11-22T10:00:00Z"]
    nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert nxt
    second = client.get(nxt[0]).json()
    assert [e["resource"]["recorded"] for e in second["entry"]] == ["2026-11-23T10:00:00Z"]
    assert not [link for link in second["link"] if link["relation"] == "next"]
    # each page recorded one read of the patient it showed
    assert len(_entries(client)) == before + 2
    denied = client.get("/fhir/AuditEvent", params={"outcome": "8", "purpose": "HOPERAT"})
    assert [e["resource"]["id"] for e in denied.json()["entry"]] == ["6"]
    bad = client.get("/fhir/AuditEvent", params={"date": "xx", "purpose": "NOPE",
                                                 "Ana Reyes 1980": "1"})
    assert bad.status_code == 400
    # An unknown parameter is refused without its name (the client's text, maybe PHI).
    assert {e for i in bad.json()["issue"] for e in i["expression"]} == {
        "date", "purpose", "search"}
    assert "Ana" not in bad.text


def test_reading_needs_purpose_and_the_auditor_role(client: TestClient) -> None:
    assert _post(client, m.read()).status_code == 201
    r = client.get("/fhir/AuditEvent/1")
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["purpose"]
    assert client.get("/fhir/AuditEvent/99", params={"purpose": "HOPERAT"}).status_code == 404
    ok = client.get("/fhir/AuditEvent/1", headers={"X-Purpose-Of-Use": "HOPERAT"})
    assert ok.status_code == 200


def test_capability_statement(client: TestClient) -> None:
    r = client.get("/fhir/metadata", headers={"Authorization": ""})
    assert r.status_code == 200
    statement = CapabilityStatement.model_validate(r.json())
    resource = (statement.rest or [])[0].resource or []
    names = {p.name for p in resource[0].searchParam or []}
    assert names >= {"patient", "date", "agent", "entity-type", "action", "outcome"}


def test_batch_mixes_new_replayed_and_conflicting_entries(client: TestClient) -> None:
    first, second = m.create(), m.update()
    assert _post(client, first).status_code == 201
    clash = copy.deepcopy(m.delete())
    assert _post(client, clash).status_code == 201
    clash["outcome"] = "4"  # same id, another body
    r = client.post("/fhir", content=orjson.dumps(_bundle("batch", [first, second, clash])),
                    headers=FHIR)
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["200 OK", "201 Created", "409 Conflict"]
    assert len(_entries(client)) == 3
    third = m.read()
    r = client.post("/fhir", content=orjson.dumps(_bundle("batch", [first, third])),
                    headers=FHIR)
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["200 OK", "201 Created"]
    assert r.json()["entry"][1]["response"]["location"] == "/fhir/AuditEvent/4"


def test_bundle_entries_without_id_are_known_by_their_content(client: TestClient) -> None:
    message = m.patient_read()
    del message["id"]
    body = orjson.dumps(_bundle("batch", [message]))
    assert client.post("/fhir", content=body, headers=FHIR).json()["entry"][0][
        "response"]["status"] == "201 Created"
    reordered = orjson.dumps(_bundle("batch", [dict(reversed(list(message.items())))]))
    assert client.post("/fhir", content=reordered, headers=FHIR).json()["entry"][0][
        "response"]["status"] == "200 OK"
    assert len(_entries(client)) == 1


def test_roles_ingest_posts_and_auditors_read(client: TestClient) -> None:
    svc = fastapi_app(client.app).state.services
    auditor = auth_headers(service_key(svc, roles=("auditor",)))
    ingest = auth_headers(service_key(svc, roles=("ingest",)))
    body = orjson.dumps(m.read())
    assert client.post("/fhir/AuditEvent", content=body,
                       headers={**FHIR, **auditor}).status_code == 403
    assert client.post("/fhir/AuditEvent", content=body,
                       headers={**FHIR, **ingest}).status_code == 201
    assert client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT"},
                      headers=ingest).status_code == 403
    assert client.get("/fhir/AuditEvent/1", params={"purpose": "HOPERAT"},
                      headers=auditor).status_code == 200


def test_what_the_library_says_of_a_value_is_never_passed_on(client: TestClient) -> None:
    """fhir.resources' own messages can quote the value (``expects resource type X, but
    got <the value>``): refusals say what is wrong in our words, at the element's
    FHIRPath as FHIR JSON spells it (``resourceType``, not the library's Python name)."""
    message = m.read()
    message["agent"][1]["resourceType"] = "Jane-Doe-MRN-12345"
    message["meta"]["resourceType"] = "Ana-Reyes"
    r = _post(client, message)
    assert r.status_code == 422, r.text
    paths = {e for issue in r.json()["issue"] for e in issue.get("expression", [])}
    assert paths == {"AuditEvent.agent[1].resourceType", "AuditEvent.meta.resourceType"}
    assert "Jane" not in r.text and "Ana" not in r.text
    primitive = m.read()
    primitive["_recorded"] = {"extension": [{"url": 5}]}
    r = _post(client, primitive)
    assert r.status_code == 422
    # pydantic's own steps (a RootModel's `root`, a union's `str`) are no element.
    assert [i["expression"] for i in r.json()["issue"]] == [
        ["AuditEvent._recorded.extension[0].url"]]
    assert _entries(client) == []


def test_json_nested_deeper_than_the_encoder_goes_is_refused_not_an_error(
        client: TestClient) -> None:
    # orjson reads JSON 1,024 deep and writes it only 254 deep: such a resource must be
    # judged by the library, not break the walk that keys shapes (single and in a Bundle).
    deep = orjson.dumps(m.read())[:-1] + b',"x":' + b"[" * 300 + b"]" * 300 + b"}"
    r = client.post("/fhir/AuditEvent", content=deep, headers=FHIR)
    assert r.status_code == 422, r.text
    # The library's answer: the element that is no element of an AuditEvent.
    assert [(i["expression"], i["diagnostics"]) for i in r.json()["issue"]] == [
        (["AuditEvent"], "AuditEvent: unknown element")]
    bundle = b'{"resourceType":"Bundle","type":"batch","entry":[{"resource":' + deep + b"}]}"
    b = client.post("/fhir", content=bundle, headers=FHIR)
    assert b.status_code == 200, b.text
    assert b.json()["entry"][0]["response"]["status"] == "422 Unprocessable Entity"
    assert _entries(client) == []


@pytest.mark.parametrize("resource_id", ["%C2%B2", "%EF%BC%91", "%D9%A1", "01", "1.0"])
def test_a_resource_id_is_ascii_digits_only(client: TestClient, resource_id: str) -> None:
    # str.isdigit takes '²' (which int() then refuses: an internal error) and other
    # scripts' digits (which int() reads: a fullwidth one read entry 1).
    assert _post(client, m.read()).status_code == 201
    r = client.get(f"/fhir/AuditEvent/{resource_id}", params={"purpose": "HOPERAT"})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["id"]


def test_a_contract_refusal_names_the_element_it_was_mapped_from(client: TestClient) -> None:
    message = m.read()
    message["agent"][1]["who"]["identifier"]["value"] = "a" * 129
    r = _post(client, message)
    assert r.status_code == 422, r.text
    assert [i["expression"] for i in r.json()["issue"]] == [
        ["AuditEvent.agent.where(requestor = true).who"]]
    assert "actor.id" in r.json()["issue"][0]["diagnostics"]
    nul = m.read()
    nul["id"] = "another"
    nul["entity"][0]["what"] = {"identifier": {"value": "MRN\u0000-1"}}
    t = client.post("/fhir", content=orjson.dumps(_bundle("transaction", [m.read(), nul])),
                    headers=FHIR)
    assert t.status_code == 422, t.text
    assert [i["expression"] for i in t.json()["issue"]] == [
        ["Bundle.entry[1].resource.entity.what"]]
    b = client.post("/fhir", content=orjson.dumps(_bundle("batch", [message])), headers=FHIR)
    issues = b.json()["entry"][0]["response"]["outcome"]["issue"]
    assert [i["expression"] for i in issues] == [
        ["Bundle.entry[0].resource.agent.where(requestor = true).who"]]
    assert _entries(client) == []


@pytest.mark.parametrize("reference, actor", [
    ("Practitioner/dr-rivera", {"id": "Practitioner%2Fdr-rivera", "kind": "user"}),
    ("https://ehr.example/fhir/Practitioner/dr-rivera/_history/2",
     {"id": "Practitioner%2Fdr-rivera", "kind": "user"}),
    ("RelatedPerson/dr-rivera", {"id": "RelatedPerson%2Fdr-rivera", "kind": "user"}),
    ("Device/infusion-7", {"id": "Device%2Finfusion-7", "kind": "application"}),
])
def test_a_requestor_known_only_by_its_reference_is_that_reference(
        client: TestClient, reference: str, actor: dict[str, str]) -> None:
    """The usual way a FHIR server names its user. An actor id is one URL path segment:
    the reference ``Type/id`` (without a base URL or a version) percent-encoded, the type
    kept (``RelatedPerson/x`` is not ``Practitioner/x``) and telling the kind."""
    message = m.read()
    del message["agent"][1]["type"]
    message["agent"][1]["who"] = {"reference": reference}
    r = _post(client, message)
    assert r.status_code == 201, r.text
    stored = _stored_event(client, 1)["actor"]
    assert {k: stored[k] for k in ("id", "kind")} == actor


def test_the_stu3_entity_identifier_names_the_patient(client: TestClient) -> None:
    message = m.stu3_read()
    message["entity"] = [{"identifier": {"value": m.PATIENT}, "type": {"code": "1"},
                          "role": {"code": "1"}}]
    r = _post(client, message)
    assert r.status_code == 201, r.text
    assert _stored_event(client, 1)["patient"] == {"id": m.PATIENT}


def test_the_bundle_itself_is_validated_by_the_library(client: TestClient) -> None:
    """Not only its AuditEvents: the Bundle's own elements and each entry's (all but the
    resource) are fhir.resources' to judge, named by FHIRPath, never by an unknown
    element's name."""
    bogus = _bundle("batch", [m.read()])
    bogus["Ana-Reyes"] = 1
    r = client.post("/fhir", content=orjson.dumps(bogus), headers=FHIR)
    assert r.status_code == 400, r.text
    assert [(i["expression"], i["diagnostics"]) for i in r.json()["issue"]] == [
        (["Bundle"], "Bundle: unknown element")]
    assert "Ana" not in r.text
    odd = _bundle("batch", [m.read(), m.create(), m.update()])
    odd["entry"][0]["fullUrl"] = 5
    odd["entry"][2]["Ana-Reyes"] = True
    b = client.post("/fhir", content=orjson.dumps(odd), headers=FHIR)
    assert b.status_code == 200, b.text
    answers = [e["response"] for e in b.json()["entry"]]
    assert [a["status"] for a in answers] == [
        "422 Unprocessable Entity", "201 Created", "422 Unprocessable Entity"]
    assert [i["expression"] for i in answers[0]["outcome"]["issue"]] == [
        ["Bundle.entry[0].fullUrl"]]
    assert [i["expression"] for i in answers[2]["outcome"]["issue"]] == [["Bundle.entry[2]"]]
    assert "Ana" not in b.text
    t = client.post("/fhir", content=orjson.dumps({**odd, "type": "transaction"}),
                    headers=FHIR)
    assert t.status_code == 422, t.text
    assert len(_entries(client)) == 1  # the batch's one good entry, nothing more
