"""The error answers as the OpenAPI document shows them: every status a route can answer
with, in the one error shape ``{"error": {"code", "message", "fields"}}`` (api.errors).

Two sources, so that no route can leave one out:

- :func:`errors` is what each route passes as ``responses=``: the statuses its own code
  raises (404 ``patient_not_found``, 409 ``event_id_conflict``, ...).
- :func:`document_errors` adds, to every operation, the statuses that come from the request
  edge rather than from the route: 401, 403 and 429 (access control) on every
  authenticated operation and 503 (a store outage while authenticating); 400 on every
  operation (a malformed parameter, or any query parameter holding NUL); 413 and 415 on
  every operation whose method carries a body. It also removes FastAPI's
  generated 422 ``HTTPValidationError``, which this service never answers (parameter
  errors are 400 ``invalid_request``).

tests/test_openapi.py holds every operation to this; tests/test_schemathesis.py checks the
answers against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

JSON = "application/json"
FHIR_JSON = "application/fhir+json"
ERROR_REF = "#/components/schemas/Error"
OUTCOME_REF = "#/components/schemas/OperationOutcome"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "description": "Every failure of the API. `code` is stable and machine-readable; "
    "`message` names fields and rules, never a submitted value; `fields` names every "
    "offending field (dotted paths, `events[i].field` in a batch).",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "fields"],
        "additionalProperties": False,
        "properties": {
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "message": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "string"}},
        },
    }},
}

# What FHIR routes answer with for the failures they raise themselves (api.routers.fhir).
OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome",
    "description": "A FHIR R4 OperationOutcome: what the FHIR routes answer with for the "
    "failures they raise themselves. Failures of the request edge (401, 403, 415, 429) are "
    "the service's `Error` in `application/json`.",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {"type": "array", "items": {
            "type": "object", "required": ["severity", "code"],
            "properties": {
                "severity": {"enum": ["fatal", "error", "warning", "information"]},
                "code": {"type": "string"},
                "diagnostics": {"type": "string"},
                "expression": {"type": "array", "items": {"type": "string"}},
            },
        }},
    },
}

# Each status as the service uses it: the codes a client meets (docs/contract.md).
DESCRIPTIONS: dict[int, str] = {
    400: "`invalid_request` naming the bad parameter or member (also a parameter holding "
         "NUL, an integer beyond 2^63-1, a malformed instant); `invalid_json` for a body "
         "that is not JSON. Nothing was changed.",
    401: "`unauthenticated`: no bearer credential, or one unknown, revoked or expired "
         "(with `WWW-Authenticate`).",
    403: "`forbidden`: the caller's roles do not allow this operation, or it names another "
         "ledger.",
    404: "Nothing to show: `not_found` and the route's own codes.",
    405: "`method_not_allowed`.",
    409: "A conflict with what is recorded: nothing was written.",
    413: "`too_large`: the body is beyond this route's limit.",
    415: "`unsupported_media_type`: the body is not in a media type this route reads.",
    422: "A body that is JSON but not acceptable, naming every bad field; nothing was "
         "written.",
    429: "`rate_limited`: retry after the seconds in `Retry-After`.",
    500: "`internal` (the service log names the error type) or a stored state that needs "
         "an operator (`tree_incomplete`, `data_key_unusable`).",
    503: "`unavailable` (the database does not answer; with `Retry-After`) or "
         "`views_behind` (the views are catching up; retry shortly).",
}

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "The bearer challenge.",
                                         "schema": {"type": "string"}}}


# Success answers of routes that answer in more than JSON.
JSON_200: dict[int | str, dict[str, Any]] = {
    200: {"description": "Success.", "content": {JSON: {"schema": {"type": "object"}}}}}
REPORT_200: dict[int | str, dict[str, Any]] = {
    200: {"description": "The report: JSON by default, CSV or HTML by `format`.",
          "content": {JSON: {"schema": {"type": "object"}},
                      "text/csv": {"schema": {"type": "string"}},
                      "text/html": {"schema": {"type": "string"}}}}}


def _response(status: int, description: str | None, content: dict[str, Any]
              ) -> dict[str, Any]:
    return {"description": description or DESCRIPTIONS.get(status, "An error."),
            "content": content}


def errors(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that answers ``statuses`` in the error shape.

    ``described`` gives a status its own description, as ``s404="..."``: what this route
    means by it (its codes)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = _response(status, described.get(f"s{status}"),
                                {JSON: {"schema": {"$ref": ERROR_REF}}})
    return out


def fhir_errors(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """:func:`errors` for FHIR routes: their own failures are OperationOutcomes in
    ``application/fhir+json`` (and ``application/json`` for what the service layer says
    in the error shape, such as a store outage)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = _response(status, described.get(f"s{status}"), {
            FHIR_JSON: {"schema": {"$ref": OUTCOME_REF}},
        })
    return out


def edge_statuses(method: str, operation: dict[str, Any]) -> set[int]:
    """The statuses the request edge can answer ``operation`` with, whatever its route
    does (see the module's description)."""
    # Any query string may hold a parameter no database can store (NUL): 400.
    statuses = {400}
    if operation.get("security"):
        statuses |= {401, 403, 429, 503}
    if method.upper() in BODY_METHODS or "requestBody" in operation:
        statuses |= {413, 415}
    return statuses


def _headers_for(status: int) -> dict[str, Any]:
    if status in (429, 503):
        return RETRY_AFTER
    if status == 401:
        return WWW_AUTHENTICATE
    return {}


def _is_generated_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get(JSON, {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _required_when_marked(parameter: dict[str, Any]) -> None:
    """A parameter the route refuses itself when missing (to name every bad parameter in
    one 400) is optional to the framework; ``x-required`` in its schema says it is
    required, and its schema loses the null branch."""
    schema = parameter.get("schema", {})
    if not schema.pop("x-required", False):
        return
    parameter["required"] = True
    branches = [b for b in schema.pop("anyOf", ()) if b.get("type") != "null"]
    for branch in branches[:1]:
        schema.update({k: v for k, v in branch.items() if k not in schema})


def add_error_documents(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every operation's edge statuses and the ``Error`` component."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    components["OperationOutcome"] = OUTCOME_SCHEMA
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            if "422" in responses and _is_generated_422(responses["422"]):
                del responses["422"]
            for parameter in operation.get("parameters", ()):
                _required_when_marked(parameter)
            for status in sorted(edge_statuses(method, operation)):
                entry = responses.setdefault(str(status), _response(status, None, {}))
                entry.setdefault("content", {}).setdefault(
                    JSON, {"schema": {"$ref": ERROR_REF}})
            for code, entry in responses.items():
                headers = _headers_for(int(code)) if code.isdigit() else {}
                if headers:
                    entry.setdefault("headers", {}).update(headers)
    text = repr(schema.get("paths", {}))
    for generated in ("HTTPValidationError", "ValidationError"):
        if f"/{generated}'" not in text:
            components.pop(generated, None)
    return schema


def document_errors(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """Wrap ``app.openapi`` with :func:`add_error_documents` (once: the document is
    cached by FastAPI)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema and app.openapi_schema.get("x-errors-documented"):
            return app.openapi_schema
        schema = add_error_documents(original())
        schema["x-errors-documented"] = True
        app.openapi_schema = schema
        return schema

    return openapi
