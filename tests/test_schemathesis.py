"""The published OpenAPI document against the service itself: schemathesis generates
requests for every operation from /openapi.json (schema-valid and schema-invalid ones),
sends each with the key of a role drawn from all five, and runs every check it has on
every answer: no 5xx, every status documented, every body and content type as
documented, valid data accepted, invalid data refused, authentication enforced. On
SQLite and PostgreSQL.

Bounded: a fixed number of examples per operation and generation mode, derandomized
(the same requests on every run), so a failure reproduces and the run stays within about
a minute a backend. The checks that cannot apply here are listed in INAPPLICABLE, each
with why.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from api.app import create_app
from api.auth.caller import ROLES
from api.auth.limits import Rate
from ledger.settings import Settings
from tests.support import auth_headers, fastapi_app, service_key

EXAMPLES = 25  # per operation and generation mode
# Checks that cannot apply to this service, by name, with why:
INAPPLICABLE = {
    # Needs links between operations (a stateful run); this run sends single requests,
    # and the service's resources (entries) are never deleted.
    "use_after_free": "no delete-then-read links: entries are append-only",
    "ensure_resource_availability": "no create-then-read links in the schema",
}

# Rules no schema can state. A schema-valid request answered 400 or 422 naming only these
# fields is the service applying a rule of the ledger's state or between fields, so
# `positive_data_acceptance` does not judge it; any other refusal of valid data fails.
BEYOND_THE_SCHEMA: dict[str, tuple[frozenset[str], str]] = {
    "GET /v1/proofs/inclusion": (frozenset({"seq", "tree_size"}),
                                 "seq <= tree_size <= the ledger's head"),
    "GET /v1/proofs/consistency": (frozenset({"first", "second"}),
                                   "first <= second <= the ledger's head"),
    "GET /v1/proofs/bundle": (frozenset({"seq", "size"}), "seq <= size <= the head"),
    "GET /v1/checkpoints/{size}": (frozenset({"size"}), "size <= the head"),
    "POST /v1/auth/logout": (frozenset(), "only a login session logs out, not an API key"),
    "POST /v1/admin/keys": (frozenset(), "the identity named must be an application"),
    "POST /v1/investigations": (frozenset({"scope", "from", "to", "scope.from", "scope.to"}),
                                "a scope names something; from < to"),
    "POST /v1/investigations/{investigation_id}/amend": (
        frozenset({"scope", "note", "scope.from", "scope.to"}),
        "a scope change or a note; from < to"),
}
for _reads in ("/v1/patients/{patient_id}", "/v1/patients/{patient_id}/accesses",
               "/v1/users/{user_id}/accesses", "/v1/patients/{patient_id}/disclosures",
               "/v1/alerts", "/v1/investigations/{investigation_id}"):
    BEYOND_THE_SCHEMA[f"GET {_reads}"] = (
        frozenset({"min_seq", "cursor", "from", "to"}),
        "min_seq within the head; a cursor of this query; from < to")
# JSON Schema's `integer` admits `2.0` (the same number in its data model), and
# schemathesis sends integers so spelled; the ledger hashes numbers as written and refuses
# any that is not an integer literal (the Event schema's `data` says so). A refusal of a
# body holding such a float, naming only `data` fields, is that rule.
INGEST = frozenset({"POST /v1/events", "POST /v1/events/batch"})
# FHIR resources are validated against the IHE BALP profile, which JSON Schema cannot
# carry: the FHIR operations' bodies and search parameters are documented as objects
# and free text, so valid-looking data is expected to be refused there.
NOT_JUDGED_FOR_ACCEPTANCE = frozenset({
    "POST /fhir/AuditEvent", "POST /fhir", "GET /fhir/AuditEvent",
    "GET /fhir/AuditEvent/{resource_id}",
})


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    # Generous rate limits: 429 is documented and tested in tests/test_auth_*; here it
    # would only stop requests from reaching the routes.
    fast = dataclasses.replace(settings, rate_ingest=1e9, rate_read=1e9, rate_admin=1e9,
                               rate_login=1e9)
    yield create_app(fast, configure_logs=False)


def test_every_operation_answers_as_the_schema_says(app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app
    # Credentials are ours (a key of each role), not drawn: a drawn header would be
    # "missing" in a negative case while ours is sent, and the case judged as if it were.
    schema.config.generation.update(with_security_parameters=False)
    try:
        services = fastapi_app(app).state.services
        # The per-address limit on requests with a bad credential (api.auth.access) would
        # answer schemathesis' probes without credentials 429, not the 401 it checks for.
        services.access.rates["unauthenticated"] = Rate(1e9, 1e9)
        keys = {role: service_key(services, roles=(role,)) for role in sorted(ROLES)}
        load_all_checks()
        checks = [c for c in CHECKS.get_all()
                  if getattr(c, "__name__", "") not in INAPPLICABLE]
        failures: list[str] = []
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 30, "the schema lost its operations"
        answered: Counter[str] = Counter()
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failures += _exercise(operation, mode, keys, checks, answered)
        # Every operation was reached (one without parameters has a single distinct
        # request), and valid data got through.
        assert all(answered[o.label] for o in operations), answered
        assert answered["POST /v1/events 2xx"] and answered["GET /v1/ledger/entries 2xx"]
        assert not failures, "\n\n".join(failures[:300]) + f"\n\n({len(failures)} failures)"
    finally:
        shutdown_lifespans()


def _refusal_beyond_the_schema(label: str, mode: GenerationMode, response: Any,
                               body: Any) -> bool:
    if mode is not GenerationMode.POSITIVE or response.status_code not in (400, 422):
        return False
    if label in NOT_JUDGED_FOR_ACCEPTANCE:
        return True
    try:
        named = set(response.json()["error"]["fields"])
    except (ValueError, KeyError, TypeError):
        return False
    if label in INGEST and _whole_float(body) and all(".data" in f or f.startswith("data")
                                                       for f in named):
        return True
    if label not in BEYOND_THE_SCHEMA:
        return False
    return named <= BEYOND_THE_SCHEMA[label][0]


def _whole_float(value: Any) -> bool:
    """Whether ``value`` holds a float (schemathesis spells integers as ``2.0`` too)."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(map(_whole_float, value.values()))
    if isinstance(value, list):
        return any(map(_whole_float, value))
    return False


def _exercise(operation: Any, mode: GenerationMode, keys: dict[str, str],
              checks: list[Any], answered: Counter[str]) -> list[str]:
    failures: list[str] = []

    @hypothesis_settings(max_examples=EXAMPLES, derandomize=True, database=None,
                         deadline=None, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode),
           role=st.sampled_from(sorted(keys)))
    def run(case: Any, role: str) -> None:
        headers = auth_headers(keys[role])
        response = case.call(headers=headers)
        answered[operation.label] += 1
        if response.status_code < 300:
            answered[f"{operation.label} 2xx"] += 1
        chosen = checks
        if _refusal_beyond_the_schema(operation.label, mode, response, case.body):
            chosen = [c for c in checks if c.__name__ != "positive_data_acceptance"]
        try:
            case.validate_response(response, checks=chosen, headers=headers)
        except FailureGroup as group:
            failures.append(f"{operation.label} [{mode.value}, {role}]: {group}")

    try:
        run()
    except Unsatisfiable:
        # Nothing of this operation can be made invalid (no parameters, no body).
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures
