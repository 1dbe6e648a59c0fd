"""Exact validation at every door (issue 17, findings 1, 2, 3, 5 and 8), on SQLite and
PostgreSQL: what validation accepts, every view applies and every query answers; what it
refuses is a 4xx naming the field, repeating no value, writing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from tests.support import auth_headers, fastapi_app, make_event, service_key

BEYOND_YEARS = ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59")
PURPOSE = {"purpose": "HOPERAT"}


@pytest.fixture
def admin_client(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The service with the usual all-but-admin key, and an admin key's headers."""
    app = create_app(settings, configure_logs=False)
    with TestClient(app) as client:
        services = fastapi_app(app).state.services
        client.headers.update(auth_headers(service_key(services)))
        yield client, auth_headers(service_key(services, roles=["admin"]))


def _seq(client: TestClient) -> int:
    return int(client.get("/v1/ledger").json()["seq"])


def _refused(r: Any, status: int, field: str, *absent: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert field in r.json()["error"]["fields"], r.text
    for text in absent:
        assert text not in r.text


def _caught_up(client: TestClient, seq: int) -> dict[str, Any]:
    r = client.get("/v1/patients/MRN-0012345/accesses",
                   params={**PURPOSE, "min_seq": seq, "wait_ms": 10_000})
    assert r.status_code == 200, r.text
    return r.json()


def test_instants_beyond_the_years_are_refused_at_every_door(
    admin_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, admin = admin_client
    for moment in BEYOND_YEARS:
        _refused(client.post("/v1/events", json=make_event(occurred_at=moment)),
                 422, "occurred_at")
        for path in ("/v1/patients/MRN-0012345/accesses", "/v1/users/agent-0042/accesses"):
            for name in ("from", "to"):
                _refused(client.get(path, params={**PURPOSE, name: moment}), 400, name)
        _refused(client.post("/v1/admin/keys", headers=admin,
                             json={"roles": ["verifier"], "expires_at": moment}),
                 422, "expires_at")
    assert _seq(client) == 0
    # The views still move: a valid event after the refusals is applied and found.
    receipt = client.post("/v1/events", json=make_event()).json()
    assert len(_caught_up(client, receipt["seq"])["items"]) == 1


def test_a_date_alone_bounds_a_query_at_midnight_utc(client: TestClient) -> None:
    # 2026-11-26T23:30-05:00 is 2026-11-27T04:30Z: inside the 27th in UTC.
    receipt = client.post("/v1/events",
                          json=make_event(occurred_at="2026-11-26T23:30:00-05:00")).json()
    _caught_up(client, receipt["seq"])

    def found(**bounds: str) -> int:
        r = client.get("/v1/patients/MRN-0012345/accesses", params={**PURPOSE, **bounds})
        assert r.status_code == 200, r.text
        return len(r.json()["items"])

    assert found(**{"from": "2026-11-27", "to": "2026-11-28"}) == 1
    assert found(**{"from": "2026-11-26", "to": "2026-11-27"}) == 0
    _refused(client.get("/v1/patients/MRN-0012345/accesses",
                        params={**PURPOSE, "from": "2026-02-30"}), 400, "from")


@pytest.mark.parametrize(("change", "field"), [
    ({"actor": {"id": "a\x00b", "kind": "user"}}, "actor.id"),
    ({"source": {"system": "desk\x00"}}, "source.system"),
    ({"resource": {"type": "message", "phi": ["name", "x\x00"]}}, "resource.phi[1]"),
    ({"action": "update", "data": {"name": "Ana\x00Reyes"}}, "data.name"),
    ({"action": "update", "data": {"tags": ["ok", "\x00"]}}, "data.tags[1]"),
])
def test_nul_in_any_string_of_an_event_is_refused(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    _refused(client.post("/v1/events", json=make_event(**change)), 422, field, "Reyes")
    batch = {"events": [make_event(), make_event(**change)]}
    _refused(client.post("/v1/events/batch", json=batch), 422, f"events[1].{field}")
    assert _seq(client) == 0


def test_nul_in_parameters_and_bodies_is_bad_input_not_an_outage(
    admin_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, admin = admin_client
    _refused(client.get("/v1/users/a%00b/accesses", params=PURPOSE), 400, "user_id")
    _refused(client.get("/v1/patients/a%00b", params=PURPOSE), 400, "patient_id")
    _refused(client.get("/v1/patients/MRN-1/accesses", params={**PURPOSE, "actor": "a\x00"}),
             400, "actor")
    _refused(client.delete("/v1/admin/keys/a%00b", headers=admin), 400, "key_id")
    _refused(client.post("/v1/admin/keys", headers=admin,
                         json={"roles": ["verifier"], "identity": "app\x00"}), 422, "identity")
    login = client.post("/v1/auth/login", headers={"authorization": ""},
                        json={"username": "al\x00ice", "password": "p", "totp": "123456"})
    _refused(login, 422, "username", "alice")


def test_trailing_newlines_do_not_pass(client: TestClient) -> None:
    event = make_event()
    _refused(client.post("/v1/events", json={**event, "event_id": event["event_id"] + "\n"}),
             422, "event_id")
    _refused(client.post("/v1/events", json=make_event(action="update",
                                                        data={"name\n": "x"})), 422, "data")
    r = client.get("/v1/ledger", params={"ledger": "default\n"})
    # not the caller's ledger (whatever else is wrong with the name): the tenant answer
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"
    assert _seq(client) == 0


@pytest.mark.parametrize(("path", "name"), [
    ("/v1/ledger/entries?after={n}", "after"),
    ("/v1/patients/MRN-1/accesses?purpose=HOPERAT&min_seq={n}", "min_seq"),
    ("/v1/checkpoints/{n}", "size"),
    ("/v1/proofs/inclusion?seq={n}", "seq"),
    ("/v1/proofs/inclusion?seq=1&tree_size={n}", "tree_size"),
    ("/v1/proofs/consistency?first={n}", "first"),
    ("/v1/proofs/consistency?first=1&second={n}", "second"),
    ("/v1/proofs/bundle?seq={n}", "seq"),
    ("/v1/proofs/bundle?seq=1&size={n}", "size"),
    ("/v1/patients/MRN-1/accesses?purpose=HOPERAT&limit={n}", "limit"),
])
def test_integers_a_database_cannot_hold_are_400(client: TestClient, path: str,
                                                 name: str) -> None:
    client.post("/v1/events", json=make_event())
    for n in (2**63, 2**64 + 1, 10**30):
        _refused(client.get(path.format(n=n)), 400, name)
    if "size" not in path or "bundle" in path:
        _refused(client.get(path.format(n=-1)), 400, name)


def test_forged_cursors_are_refused(client: TestClient) -> None:
    import base64

    import orjson

    client.post("/v1/events", json=make_event())
    seq = client.post("/v1/events", json=make_event()).json()["seq"]
    first = client.get("/v1/patients/MRN-0012345/accesses",
                       params={**PURPOSE, "limit": 1, "min_seq": seq, "wait_ms": 10_000})
    assert first.status_code == 200, first.text
    issued = first.json()["next_cursor"]
    occurred, _, digest = orjson.loads(base64.urlsafe_b64decode(issued + "=" * 4))
    # A cursor is not signed: a client can rebuild one with any seq or time in it.
    for forged_time, forged_seq in ((occurred, 2**63), (occurred, -1),
                                    (occurred[:-2] + "\x00Z", 1)):
        raw = orjson.dumps([forged_time, forged_seq, digest])
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        r = client.get("/v1/patients/MRN-0012345/accesses",
                       params={**PURPOSE, "limit": 1, "cursor": cursor})
        _refused(r, 400, "cursor")


def test_unknown_fields_are_named_by_position_never_by_name(client: TestClient) -> None:
    secret = "SSN 123-45-6789"
    event = make_event(actor={"id": "agent-1", "kind": "user", secret: "x"})
    r = client.post("/v1/events", json=event)
    _refused(r, 422, "actor", secret, "123-45")
    assert "member 3" in r.json()["error"]["message"]
    _refused(client.post("/v1/events", json={**make_event(), secret: 1}), 422, "(event)",
             secret)


def test_no_body_repeats_an_unknown_members_name(client: TestClient) -> None:
    """Investigations and FHIR resources are read by models that forbid extra members;
    their refusals repeated the member's name ("scope.SSN 123-45-6789: Extra inputs")."""
    secret = "SSN 123-45-6789"
    opening: dict[str, Any] = {"title": "t", "discovered_at": "2026-11-26T09:00:00Z",
               "scope": {"from": "2026-11-24T00:00:00Z", "to": "2026-12-01T00:00:00Z",
                         "actors": ["agent-1"]}}
    for body, field in (({**opening, secret: 1}, "(body)"),
                        ({**opening, "scope": {**opening["scope"], secret: 1}}, "scope")):
        r = client.post("/v1/investigations", json=body)
        _refused(r, 400, field, secret, "123-45")
    fhir = client.post("/fhir/AuditEvent", json={"resourceType": "AuditEvent", secret: 1},
                       headers={"content-type": "application/fhir+json"})
    assert fhir.status_code in (400, 422), fhir.text
    assert "123-45" not in fhir.text and "AuditEvent" in fhir.text
    assert _seq(client) == 0


def test_bodies_in_another_media_type_are_415(
    admin_client: tuple[TestClient, dict[str, str]],
) -> None:
    import orjson

    client, admin = admin_client
    body = orjson.dumps(make_event())
    for media in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        for path, headers in (("/v1/events", {}), ("/v1/events/batch", {}),
                              ("/v1/admin/keys", admin), ("/v1/auth/login", {})):
            r = client.post(path, content=body, headers={**headers, "content-type": media})
            _refused(r, 415, "content-type")
    r = client.post("/v1/events", content=body, headers={"content-type": "application/json; "
                                                                        "charset=utf-8"})
    assert r.status_code == 201, r.text
    assert _seq(client) == 1


def test_patient_and_actor_ids_are_path_segments(client: TestClient) -> None:
    for change, field in (({"patient": {"id": "MRN/1"}}, "patient.id"),
                          ({"patient": {"id": ".."}}, "patient.id"),
                          ({"actor": {"id": "desk/a", "kind": "user"}}, "actor.id")):
        _refused(client.post("/v1/events", json=make_event(**change)), 422, field)
    # Anything else in an id is found again through its percent-encoded path.
    odd = "MRN 1?x#y%z"
    receipt = client.post("/v1/events", json=make_event(patient={"id": odd})).json()
    from urllib.parse import quote

    r = client.get(f"/v1/patients/{quote(odd, safe='')}/accesses",
                   params={**PURPOSE, "min_seq": receipt["seq"], "wait_ms": 10_000})
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text


def test_accounting_csv_cells_are_never_formulas(client: TestClient) -> None:
    import csv
    import io

    from api.spreadsheet import inert

    hostile = "=HYPERLINK(\"http://x.example\",\"click\")"
    event = make_event(action="disclose", channel="secure_sms", purpose="LEGAL", disclosure={
        "recipient": {"name": hostile, "address": "+1 555 0100", "kind": "provider"},
        "description": "@SUM(A1:A9)", "encrypted": True})
    receipt = client.post("/v1/events", json=event).json()
    _caught_up(client, receipt["seq"])
    r = client.get("/v1/patients/MRN-0012345/disclosures",
                   params={**PURPOSE, "format": "csv", "from": "2020-01-01"})
    assert r.status_code == 200, r.text
    cells = [cell for row in csv.reader(io.StringIO(r.text)) for cell in row]
    assert "'" + hostile in cells and "'@SUM(A1:A9)" in cells and "'+1 555 0100" in cells
    assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for cell in cells)
    assert inert(-5) == -5 and inert("-5") == "'-5" and inert("ok") == "ok"


def test_the_html_accounting_may_use_its_own_style_and_nothing_else(client: TestClient) -> None:
    """The service's default policy (default-src 'none') blocked the page's own <style>;
    the page allows that one stylesheet by its hash, and no inline style or script."""
    import base64
    import hashlib
    import re

    event = make_event(action="disclose", channel="secure_sms", purpose="LEGAL", disclosure={
        "recipient": {"name": "<b>Court</b>", "address": "1 Main St", "kind": "provider"},
        "description": "records", "encrypted": True})
    _caught_up(client, client.post("/v1/events", json=event).json()["seq"])
    r = client.get("/v1/patients/MRN-0012345/disclosures",
                   params={**PURPOSE, "format": "html", "from": "2020-01-01"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    styles = re.findall(r"<style>(.*?)</style>", r.text, re.S)
    assert len(styles) == 1 and "<script" not in r.text and "<b>Court" not in r.text
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    csp = r.headers["content-security-policy"]
    assert f"style-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and csp.count("content-security-policy") == 0


def _integer_parameters(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                kinds = [schema, *schema.get("anyOf", [])]
                if any(k.get("type") == "integer" for k in kinds):
                    found.append((method, path, parameter))
    return found


def test_every_integer_parameter_of_the_published_api_refuses_2_63(
    admin_client: tuple[TestClient, dict[str, str]],
) -> None:
    """Not a list kept by hand: every integer parameter the OpenAPI document publishes
    (query or path, on every route, those added later included) answers 400 naming it
    for 2^63, which neither database can hold."""
    client, admin = admin_client
    client.post("/v1/events", json=make_event())
    found = _integer_parameters(client.get("/openapi.json").json())
    assert len(found) >= 20
    fill = {"patient_id": "MRN-0012345", "user_id": "agent-0042", "investigation_id": "inv-1",
            "size": "1", "seq": "1", "first": "1", "purpose": "HOPERAT"}
    for method, path, parameter in found:
        name, big = parameter["name"], str(2**63)
        url = path
        for key, value in fill.items():
            url = url.replace("{" + key + "}", big if key == name else value)
        params = {"purpose": "HOPERAT"}
        if parameter["in"] == "query":
            params[name] = big
        headers = admin if path.startswith("/v1/admin") else {}
        _refused(client.request(method.upper(), url, params=params, headers=headers),
                 400, name)
