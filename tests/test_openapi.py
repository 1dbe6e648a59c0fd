"""The published OpenAPI document tells the truth about errors and events.

- Every operation documents every error status it can answer, each in the one error
  shape (``Error``; FHIR routes also an ``OperationOutcome``): the request edge's statuses
  from the operation's facts, and each route's own from :data:`ROUTE_ERRORS`, which lists
  every route; a route added without its entry here fails.
- The Event schema and the ledger's validation agree: what ingest accepts the schema
  accepts, and what the schema accepts ingest refuses only for the rules JSON Schema
  cannot say (which the schema's descriptions state).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.auth.middleware import flat_routes
from ledger.attestation import reserved_source
from ledger.event import check_event
from ledger.settings import Settings
from tests.support import contract_example, fastapi_app, make_event

# Each route's own error statuses (beyond the request edge's), by (method, template).
ROUTE_ERRORS: dict[tuple[str, str], set[int]] = {
    ("POST", "/v1/events"): {400, 409, 422, 503},
    ("POST", "/v1/events/batch"): {400, 409, 422, 503},
    ("GET", "/v1/ledger"): set(),
    ("GET", "/v1/ledger/entries"): set(),
    ("POST", "/v1/ledger/verify"): {500},
    ("GET", "/v1/checkpoints/latest"): {404, 500, 503},
    ("GET", "/v1/checkpoints/key"): {503},
    ("GET", "/v1/checkpoints/keys"): {503},
    ("GET", "/v1/checkpoints/{size}"): {400, 404, 500, 503},
    ("GET", "/v1/proofs/inclusion"): {400, 404, 500, 503},
    ("GET", "/v1/proofs/consistency"): {400, 404, 500, 503},
    ("GET", "/v1/proofs/bundle"): {400, 404, 500, 503},
    ("GET", "/v1/patients/{patient_id}"): {400, 404, 503},
    ("GET", "/v1/patients/{patient_id}/accesses"): {400, 404, 503},
    ("GET", "/v1/users/{user_id}/accesses"): {400, 404, 503},
    ("GET", "/v1/patients/{patient_id}/disclosures"): {400, 404, 503},
    ("POST", "/v1/auth/login"): {401, 422, 429, 503},
    ("POST", "/v1/auth/logout"): {400},
    ("GET", "/v1/auth/whoami"): set(),
    ("GET", "/v1/admin/identities"): set(),
    ("POST", "/v1/admin/keys"): {403, 404, 422},
    ("DELETE", "/v1/admin/keys/{key_id}"): {404, 409},
    ("PUT", "/v1/admin/identities/{identity_id}/staff-ids"): {404, 409, 422},
    ("GET", "/healthz"): set(),
    ("GET", "/readyz"): {503},
    ("GET", "/metrics"): set(),
    ("GET", "/v1/alerts"): {400},
    ("POST", "/v1/alerts/{alert_id}/acknowledge"): {400, 403, 404, 503},
    ("POST", "/v1/alerts/{alert_id}/dismiss"): {400, 403, 404, 503},
    ("POST", "/v1/investigations"): {400, 503},
    ("GET", "/v1/investigations"): {503},
    ("POST", "/v1/investigations/{investigation_id}/amend"): {400, 404, 409, 503},
    ("POST", "/v1/investigations/{investigation_id}/close"): {400, 404, 409, 503},
    ("GET", "/v1/investigations/{investigation_id}"): {400, 404, 503},
    ("GET", "/v1/investigations/{investigation_id}/evidence"): {404, 503},
    ("GET", "/fhir/AuditEvent"): {400, 503},
    ("POST", "/fhir/AuditEvent"): {400, 409, 422, 503},
    ("POST", "/fhir"): {400, 409, 422, 503},
    ("GET", "/fhir/AuditEvent/{resource_id}"): {400, 404, 503},
    ("GET", "/fhir/metadata"): set(),
}
# Answers of their own shape, not errors of the API (the readiness verdict).
OWN_SHAPE = {("GET", "/readyz", "503")}
ERROR = {"$ref": "#/components/schemas/Error"}
OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    where: Path = tmp_path_factory.mktemp("openapi")
    # The document is built from the routes alone: the service is never started.
    return fastapi_app(create_app(Settings(database_url=f"sqlite:///{where}/l.db",
                                           key_file=where / "keys.json"),
                                  configure_logs=False))


@pytest.fixture(scope="module")
def document(app: Any) -> dict[str, Any]:
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in document["paths"].items()
            for method, op in ops.items()]


def _edge(method: str, operation: dict[str, Any]) -> set[int]:
    expected = {400}  # any query parameter may hold NUL
    if operation.get("security"):
        expected |= {401, 403, 429, 503}
    if method in ("POST", "PUT", "PATCH"):
        expected |= {413, 415}
    return expected


def test_every_route_of_the_schema_is_listed_here(app: Any, document: dict[str, Any]) -> None:
    routes = {(method, route.path) for route in flat_routes(app)
              if isinstance(getattr(route, "original_route", route), APIRoute)
              and route.include_in_schema for method in route.methods}
    published = {(method, path) for method, path, _ in _operations(document)}
    assert routes == published
    missing = published - set(ROUTE_ERRORS)
    assert not missing, (f"routes without their error statuses in ROUTE_ERRORS: {missing};"
                         " declare them with api.error_docs.errors(...) and list them here")
    assert not set(ROUTE_ERRORS) - published, "ROUTE_ERRORS lists routes that are gone"


def test_every_operation_documents_its_error_statuses(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        documented = {int(s) for s in operation["responses"] if int(s) >= 400}
        expected = _edge(method, operation) | ROUTE_ERRORS[(method, path)]
        assert documented == expected, (method, path, documented ^ expected)


def test_every_error_answer_has_the_error_shape(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or (method, path, status) in OWN_SHAPE:
                continue
            content = response["content"]
            if path.startswith("/fhir"):
                # The route's own failures are OperationOutcomes; the edge's are Errors.
                assert set(content) <= {"application/json", "application/fhir+json"}
                assert content.get("application/fhir+json", {}).get("schema", OUTCOME) \
                    == OUTCOME
                assert content.get("application/json", {}).get("schema", ERROR) == ERROR
                continue
            assert content == {"application/json": {"schema": ERROR}}, (method, path, status)
            assert "description" in response


def test_framework_validation_errors_are_not_published(document: dict[str, Any]) -> None:
    # The service answers 400 invalid_request for a bad parameter, never FastAPI's 422.
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["Error"]["properties"]["error"]["required"] == ["code", "message", "fields"]


def test_metrics_is_documented_as_text(document: dict[str, Any]) -> None:
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]


def test_retry_after_and_the_bearer_challenge_are_documented(
        document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/events"]["post"]["responses"]
    assert "Retry-After" in responses["503"]["headers"]
    assert "Retry-After" in responses["429"]["headers"]
    assert "WWW-Authenticate" in responses["401"]["headers"]


# -- the Event schema against the ledger's validation ------------------------------------


@pytest.fixture(scope="module")
def event_validator(document: dict[str, Any]) -> Any:
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": "#/components/schemas/Event", "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def _ingest_accepts(event: Any) -> bool:
    return not check_event(event) and not reserved_source([event], batch=False)


def _refuses(event: dict[str, Any], validator: Any) -> tuple[bool, bool]:
    return (not validator.is_valid(event), not _ingest_accepts(event))


UUID = "0b9a3c55-6d0e-4c1a-9d55-0d8f6e1b2a77"
BOTH_REFUSE = {
    "disclosure without disclose": make_event(disclosure=contract_example()["disclosure"]),
    "disclose without disclosure": make_event(action="disclose"),
    "read without purpose": make_event(purpose=None),
    "read without patient": {k: v for k, v in make_event().items() if k != "patient"},
    "read without channel": make_event(channel=None),
    "data with read": make_event(data={"name": "x"}),
    "event_id with a newline": make_event(event_id=UUID + "\n"),
    "event_id in upper case": make_event(event_id=UUID.upper()),
    "an offset of 24 h": make_event(occurred_at="2026-01-01T00:00:00+24:00"),
    "30 February": make_event(occurred_at="2026-02-30T00:00:00Z"),
    "29 February 2100": make_event(occurred_at="2100-02-29T00:00:00Z"),
    "year 0": make_event(occurred_at="0000-01-01T00:00:00Z"),
    "no offset": make_event(occurred_at="2026-01-01T00:00:00"),
    "patient id with a slash": make_event(patient={"id": "a/b"}),
    "actor id ..": make_event(actor={"id": "..", "kind": "user"}),
    "NUL in actor id": make_event(actor={"id": "a\x00b", "kind": "user"}),
    "the service's own source": make_event(source={"system": "phi-ledger"}),
    "data field name with a newline": make_event(action="create", data={"name\n": "x"}),
    "an unknown member": {**make_event(), "ssn": "1"},
    "an IP that is none": make_event(actor={"id": "a", "kind": "user", "ip": "1.2.3"}),
}
BOTH_ACCEPT = {
    "the contract's example": contract_example(),
    "a plain read": make_event(),
    "a login without patient": {k: v for k, v in make_event(action="login").items()
                                if k not in ("patient", "purpose", "channel")},
    "a create with data": make_event(action="create", data={"name": "x", "n": [1, None]}),
    "29 February 2024": make_event(occurred_at="2024-02-29T23:59:59.123456789+05:30"),
    "an IPv6 actor": make_event(actor={"id": "a", "kind": "user", "ip": "::1"}),
}


@pytest.mark.parametrize("name", sorted(BOTH_REFUSE))
def test_schema_and_ingest_both_refuse(name: str, event_validator: Any) -> None:
    assert _refuses(BOTH_REFUSE[name], event_validator) == (True, True)


@pytest.mark.parametrize("name", sorted(BOTH_ACCEPT))
def test_schema_and_ingest_both_accept(name: str, event_validator: Any) -> None:
    assert _refuses(BOTH_ACCEPT[name], event_validator) == (False, False)


# What the schema cannot say, as ingest words it (ledger.event, ledger.instant).
BEYOND_JSON_SCHEMA = ("must lie within the years 1-9999 in UTC", "no floats",
                      "is larger than", "unpaired surrogate")


@pytest.fixture(scope="module")
def generated_events(document: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_dict(document)
    return schema["/v1/events"]["POST"].as_strategy().map(lambda case: case.body)


def test_generated_events_get_the_same_verdict(generated_events: Any,
                                               event_validator: Any) -> None:
    """Events drawn from the published schema (and with a field broken) are judged alike
    by the schema and by ingest, but for the rules the schema describes in words."""

    @settings(max_examples=300, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(event=generated_events, breakage=st.sampled_from([
        None, ("event_id", str(uuid.UUID(int=7)).upper()), ("action", "disclose"),
        ("action", "read"), ("occurred_at", "2026-13-01T00:00:00Z"), ("purpose", None),
    ]))
    def check(event: Any, breakage: Any) -> None:
        if breakage is not None and isinstance(event, dict):
            event = {**event, breakage[0]: breakage[1]}
        schema_refuses, ingest_refuses = _refuses(event, event_validator)
        if not ingest_refuses:
            assert not schema_refuses, "the schema refuses an event ingest accepts"
        if not schema_refuses and ingest_refuses:
            problems = check_event(event)
            assert problems and all(any(b in m for b in BEYOND_JSON_SCHEMA)
                                    for _, m in problems), problems

    check()
