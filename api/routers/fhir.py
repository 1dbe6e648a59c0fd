"""FHIR: AuditEvent in (IHE BALP, by the ingest role), read back and searched (ITI-81, by
auditors), and the CapabilityStatement.

Every answer is FHIR JSON; every refusal a FHIR ``OperationOutcome`` whose issues name the
bad elements by FHIRPath and never repeat a value. What comes in and what goes out is
validated with ``fhir.resources``. Each AuditEvent becomes a contract event through
:mod:`api.formats.fhir_audit` and then goes the way every event goes (``Ingest``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.access_reports import AccessReports, Reader
from api.error_docs import fhir_errors
from api.errors import ApiError, domain_error_response
from api.formats.codes import OUTCOME_CODES, derived_event_id, sha256_hex
from api.formats.fhir_audit import (
    FormatRejected,
    MappingMemo,
    action_code,
    to_audit_event,
    to_event,
)
from api.formats.fhir_validation import (
    AuditEventValidator,
    bundle_problems,
    rendered_is_valid,
)
from api.routers.common import attestation_of, caller_ledger, request_caller
from api.services import Services
from ledger.admission import Accepted, Conflicted
from ledger.attestation import Attestation, Received
from ledger.canonical import canonical
from ledger.entry import Entry
from ledger.event import (
    MAX_BATCH_EVENTS,
    SYSTEM_ACTIONS,
    Action,
    EventRejected,
    PurposeOfUse,
)
from ledger.ingest import EventConflict
from projections.cursor import BadCursor, Position, decode_cursor, encode_cursor
from projections.instants import bound_range
from projections.queries import AccessFilter

router = APIRouter(prefix="/fhir", tags=["fhir"])


def _fhir_success(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": "A FHIR resource.", "content": {
        "application/fhir+json": {"schema": {"type": "object"}}}} for status in statuses}


# What each FHIR route answers, beyond the request edge's statuses (api.error_docs).
FHIR_BODY = {"requestBody": {"required": True, "content": {
    "application/fhir+json": {"schema": {"type": "object"}},
    "application/json": {"schema": {"type": "object"}}}}}

FHIR_JSON = "application/fhir+json"
# `received.format` of entries made from a posted AuditEvent (alone, or in a Bundle).
FHIR_FORMAT = "fhir-r4-json"
AUDIT_EVENT_READ = "audit_event"  # what a `query` event says was looked at
MAX_COUNT = 100
# A seq as a resource id: ASCII digits only (str.isdigit also takes '²' and other scripts'
# digits, which int() then refuses or reads as another number).
_SEQ = re.compile(r"[1-9][0-9]{0,15}", re.ASCII)
_COUNT = re.compile(r"[0-9]{1,3}", re.ASCII)
# ITI-81's parameters, and ours beside them. Each but `date` (a span: ge and lt) is taken
# once: FHIR reads a repeat as AND, which for these could only contradict, or be half read.
_SEARCH_PARAMETERS = frozenset({
    "patient", "patient.identifier", "date", "agent", "entity-type", "action", "outcome",
    "_count", "_cursor", "_at", "purpose", "ledger", "_format"})
PURPOSE_HEADER = "x-purpose-of-use"
# ITI-81 `action` is the AuditEvent.action code; ours are finer: each code finds the
# entries that render with it.
ACTION_CODES = {code: tuple(sorted(a for a in {*get_args(Action), *SYSTEM_ACTIONS}
                                   if action_code(a) == code))
                for code in "CRUDE"}
OUTCOME_OF_CODE = {"0": "success", "4": "failure", "8": "denied", "12": "failure"}


# -- answers ---------------------------------------------------------------------------


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type=FHIR_JSON)


def outcome(issues: Sequence[tuple[str, str, str, str | None]]) -> dict[str, Any]:
    """An OperationOutcome of (severity, code, text, FHIRPath) issues."""
    return {"resourceType": "OperationOutcome", "issue": [
        {"severity": sev, "code": code, "diagnostics": text,
         **({"expression": [path]} if path else {})}
        for sev, code, text, path in issues]}


def refusal(status: int, problems: Sequence[tuple[str, str]], code: str = "invalid"
            ) -> Response:
    return fhir_response(outcome([("error", code, f"{p}: {m}", p) for p, m in problems]),
                         status)


def _as_fhir(exc: Exception) -> Response:
    """A service error (ApiError, 503, ...) as an OperationOutcome with the same status."""
    plain = domain_error_response(exc)
    if plain is None:
        raise exc
    error = orjson.loads(plain.body)["error"]
    fields = error.get("fields") or [None]
    issues = [("error", "processing" if plain.status_code >= 500 else "invalid",
               error["message"], f) for f in fields]
    headers = {k: v for k, v in plain.headers.items() if k.lower() == "retry-after"}
    return fhir_response(outcome(issues), plain.status_code, headers)


# -- ingest ----------------------------------------------------------------------------


def _settings_purpose(svc: Services) -> str | None:
    return getattr(svc.settings, "fhir_default_purpose", None)


def _map(svc: Services, caller_id: str, resource: Any, raw: bytes | None, path: str,
         validator: AuditEventValidator, memo: MappingMemo | None = None) -> dict[str, Any]:
    """One posted AuditEvent -> its contract event; raises FormatRejected."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "AuditEvent":
        raise FormatRejected([(path, "must be an AuditEvent resource")])
    problems = validator.problems(resource, path)
    # In a Bundle (``raw`` None) an entry without an id is known by its canonical JSON.
    key = resource.get("id") if isinstance(resource.get("id"), str) else sha256_hex(
        raw if raw is not None else canonical(resource))
    try:
        event = to_event(resource, event_id=derived_event_id(caller_id, f"fhir:{key}"),
                         default_purpose=_settings_purpose(svc), path=path, memo=memo)
    except FormatRejected as rejected:
        raise FormatRejected(problems + rejected.problems) from None
    if problems:
        raise FormatRejected(problems)
    return event


def _caller_id(request: Request) -> str:
    caller = getattr(request.state, "caller", None)
    return caller.id if caller is not None else "anonymous"


def _parse(raw: bytes) -> Any:
    if not raw:
        raise FormatRejected([("(body)", "the request needs a FHIR JSON body")])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FormatRejected([("(body)", "is not valid JSON")]) from None


def _location(seq: int) -> str:
    return f"/fhir/AuditEvent/{seq}"


# Where in an AuditEvent each contract field comes from (api.formats.fhir_audit.to_event),
# by the field's longest listed prefix: a contract refusal names that element.
_ELEMENT_OF_FIELD = {
    "event_id": "id", "occurred_at": "recorded", "action": "type", "outcome": "outcome",
    "actor": "agent.where(requestor = true)",
    "actor.id": "agent.where(requestor = true).who",
    "actor.role": "agent.where(requestor = true).role",
    "actor.ip": "agent.where(requestor = true).network.address",
    "actor.device_id": "agent.where(requestor = true).network.address",
    "actor.kind": "agent.where(requestor = true).type",
    "actor.session_id": "agent.where(requestor = true).extension",
    "actor.organization": "agent.where(requestor = true).extension",
    "actor.mfa": "agent.where(requestor = true).extension",
    "patient": "entity.what", "resource": "entity", "resource.id": "entity.what",
    "purpose": "purposeOfEvent", "channel": "extension",
    "disclosure": "agent.where(requestor = false)",
    "disclosure.recipient.name": "agent.where(requestor = false).who",
    "source": "source", "source.system": "source.observer", "source.site": "source.site",
    "data": "entity.detail",
}


def _element_path(resource_path: str, field: str) -> str:
    """The FHIRPath, under ``resource_path``, of the element a contract ``field`` (of an
    event, or ``events[i].`` of a batch) was mapped from."""
    field = field.split("].", 1)[1] if field.startswith("events[") and "]." in field else field
    parts = field.split(".")
    for n in range(len(parts), 0, -1):
        element = _ELEMENT_OF_FIELD.get(".".join(parts[:n]))
        if element is not None:
            return f"{resource_path}.{element}"
    return resource_path


def _contract_problem(resource_path: str, field: str, message: str) -> tuple[str, str]:
    return (_element_path(resource_path, field),
            f"maps to a contract event whose {field.split('].', 1)[-1]} {message}")


def _contract_problems(error: EventRejected, path: str) -> list[tuple[str, str]]:
    return [_contract_problem(path, f, m) for f, m in error.problems]


@router.post("/AuditEvent", status_code=201, summary="Record one FHIR AuditEvent (IHE BALP)",
             response_class=Response, openapi_extra=FHIR_BODY,
             responses={**_fhir_success(200, 201), **fhir_errors(400, 409, 422, 503)})
async def post_audit_event(request: Request) -> Response:
    svc: Services = request.app.state.services
    raw = await request.body()
    try:
        ledger = caller_ledger(request.scope)
        event = await asyncio.to_thread(_map, svc, _caller_id(request), _parse(raw), raw,
                                        "AuditEvent", AuditEventValidator())
        accepted = await svc.ingest.record(
            ledger, [event], by=attestation_of(request_caller(request.scope)),
            received=[Received(FHIR_FORMAT, sha256_hex(raw))])
    except FormatRejected as rejected:
        return refusal(422, rejected.problems)
    except TypeError:  # as a Bundle's entry (map_all): never an internal error
        return refusal(422, [("AuditEvent", "holds a value JSON cannot carry exactly")])
    except EventRejected as rejected:
        return refusal(422, _contract_problems(rejected, "AuditEvent"))
    except EventConflict:
        return refusal(409, [("AuditEvent.id", "was already recorded with another body; "
                                               "nothing was written")], "conflict")
    except Exception as exc:
        return _as_fhir(exc)
    receipt = accepted.receipts[0]
    body = outcome([("information", "informational",
                     f"recorded at seq {receipt.seq} of ledger {receipt.ledger}", None)])
    return fhir_response(body, 201 if accepted.created else 200,
                         {"Location": _location(receipt.seq), "ETag": 'W/"1"'})


def _entry_response(status: str, location: str | None = None,
                    issues: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status}
    if location:
        response["location"] = location
    if issues:
        response["outcome"] = issues
    return {"response": response}


@router.post("", status_code=200, summary="A batch or transaction Bundle of AuditEvents",
             response_class=Response, openapi_extra=FHIR_BODY,
             responses={**_fhir_success(200), **fhir_errors(400, 409, 422, 503)})
async def post_bundle(request: Request) -> Response:
    svc: Services = request.app.state.services
    raw = await request.body()
    try:
        ledger = caller_ledger(request.scope)
        bundle = _parse(raw)
    except FormatRejected as rejected:
        return refusal(400, rejected.problems)
    except Exception as exc:
        return _as_fhir(exc)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return refusal(400, [("Bundle", "must be a Bundle resource")])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        return refusal(400, [("Bundle.type", "must be batch or transaction")])
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries or len(entries) > MAX_BATCH_EVENTS:
        return refusal(400, [("Bundle.entry", f"must hold 1 to {MAX_BATCH_EVENTS} entries")])
    caller_id = _caller_id(request)

    def map_all() -> tuple[list[tuple[str, str]], list[dict[str, Any] | list[tuple[str, str]]]]:
        """The Bundle's own problems, and each entry's event or problems."""
        own, by_entry = bundle_problems(bundle)
        if own:
            return own, []
        out: list[dict[str, Any] | list[tuple[str, str]]] = []
        validator = AuditEventValidator()  # the Bundle's equal elements validated once
        memo = MappingMemo()  # and read once
        for i, entry in enumerate(entries):
            path = f"Bundle.entry[{i}].resource"
            if not isinstance(entry, dict):
                out.append([(f"Bundle.entry[{i}]", "must be an object")])
                continue
            if i in by_entry:
                out.append(by_entry[i])
                continue
            method = (entry.get("request") or {}).get("method", "POST") \
                if isinstance(entry.get("request"), dict) else "POST"
            if method != "POST":
                out.append([(f"Bundle.entry[{i}].request.method", "must be POST")])
                continue
            resource = entry.get("resource")
            try:
                out.append(_map(svc, caller_id, resource, None, path, validator, memo))
            except FormatRejected as rejected:
                out.append(rejected.problems)
            except TypeError:
                out.append([(path, "holds a value JSON cannot carry exactly")])
        return [], out

    own, mapped = await asyncio.to_thread(map_all)
    if own:
        return refusal(400, own)
    by = attestation_of(request_caller(request.scope))
    # Each entry's `received` is the digest of the whole Bundle as posted and the
    # resource's index in it: what the sender kept is the Bundle, not its resources
    # re-encoded, so the Bundle's bytes are what an auditor can hash again.
    received = Receipts(sha256_hex(raw))
    if kind == "transaction":
        return await _transaction(svc, ledger, mapped, by, received)
    return await _batch(svc, ledger, mapped, by, received)


@dataclass(frozen=True, slots=True)
class Receipts:
    """The ``received`` member of each resource of one posted Bundle."""

    sha256: str

    def of(self, indexes: Sequence[int]) -> list[Received | None]:
        return [Received(FHIR_FORMAT, self.sha256, i) for i in indexes]


async def _transaction(svc: Services, ledger: str,
                       mapped: list[dict[str, Any] | list[tuple[str, str]]],
                       by: Attestation, received: Receipts) -> Response:
    problems = [p for m in mapped if isinstance(m, list) for p in m]
    if problems:
        return refusal(422, problems)
    events = [m for m in mapped if isinstance(m, dict)]
    try:
        accepted = await svc.ingest.record(ledger, events, batch=True, by=by,
                                           received=received.of(range(len(events))))
    except EventRejected as rejected:
        return refusal(422, [_contract_problem(f"Bundle.entry[{_index(f)}].resource", f, m)
                             for f, m in rejected.problems])
    except EventConflict:
        return refusal(409, [("Bundle.entry", "an AuditEvent id was already recorded with "
                                              "another body; nothing was written")], "conflict")
    except Exception as exc:
        return _as_fhir(exc)
    return fhir_response({"resourceType": "Bundle", "type": "transaction-response", "entry": [
        _entry_response("201 Created" if accepted.created else "200 OK", _location(r.seq))
        for r in accepted.receipts]})


def _index(field: str) -> str:
    return field.split("[", 1)[1].split("]", 1)[0] if field.startswith("events[") else "?"


async def _batch(svc: Services, ledger: str,
                 mapped: list[dict[str, Any] | list[tuple[str, str]]],
                 by: Attestation, received: Receipts) -> Response:
    """Each entry answered on its own. The valid entries go to the writer as one
    submission first (one validation pass, one admission); only when that is refused as
    a whole (a contract problem, an id taken by another body) does each go on its own,
    so that one bad entry never costs the others."""
    answers: list[dict[str, Any] | None] = [None] * len(mapped)
    valid: list[tuple[int, dict[str, Any]]] = []
    for i, m in enumerate(mapped):
        if isinstance(m, list):
            answers[i] = _entry_response("422 Unprocessable Entity", issues=outcome(
                [("error", "invalid", f"{p}: {msg}", p) for p, msg in m]))
        else:
            valid.append((i, m))
    if valid and await _together(svc, ledger, valid, answers, by, received):
        return _batch_response(answers)
    futures = []
    for i, m in valid:
        try:
            futures.append((i, svc.ingest.submit(ledger, [m], by=by,
                                                 received=received.of([i]))))
        except EventRejected as rejected:
            answers[i] = _entry_response("422 Unprocessable Entity", issues=outcome(
                [("error", "invalid", text, path) for path, text in (
                    _contract_problem(f"Bundle.entry[{i}].resource", f, msg)
                    for f, msg in rejected.problems)]))
    for i, future in futures:
        try:
            result = await asyncio.wrap_future(future)
        except Exception as exc:
            problem = _as_fhir(exc)
            answers[i] = _entry_response(f"{problem.status_code}",
                                         issues=orjson.loads(problem.body))
            continue
        if isinstance(result, Conflicted):
            answers[i] = _entry_response("409 Conflict", issues=outcome([(
                "error", "conflict", "this AuditEvent id was already recorded with another "
                "body", f"Bundle.entry[{i}].resource.id")]))
        elif isinstance(result, Accepted):
            receipt = result.receipts[0]
            answers[i] = _entry_response("201 Created" if result.created else "200 OK",
                                         _location(receipt.seq))
    return _batch_response(answers)


async def _together(svc: Services, ledger: str, valid: list[tuple[int, dict[str, Any]]],
                    answers: list[dict[str, Any] | None], by: Attestation,
                    received: Receipts) -> bool:
    """Submit the valid entries as one; False (nothing written) when refused as a whole."""
    try:
        result = await asyncio.wrap_future(
            svc.ingest.submit(ledger, [m for _, m in valid], batch=True, by=by,
                              received=received.of([i for i, _ in valid])))
    except EventRejected:
        return False
    if not isinstance(result, Accepted):
        return False
    # Entries one transaction wrote share its recorded_at; a replay's receipt is older.
    newest = max(r.recorded_at for r in result.receipts)
    for (i, _), receipt in zip(valid, result.receipts, strict=True):
        fresh = result.created and receipt.recorded_at == newest
        answers[i] = _entry_response("201 Created" if fresh else "200 OK",
                                     _location(receipt.seq))
    return True


def _batch_response(answers: list[dict[str, Any] | None]) -> Response:
    return fhir_response({"resourceType": "Bundle", "type": "batch-response",
                          "entry": answers})


# -- reading back ----------------------------------------------------------------------


def _purpose(request: Request, problems: list[tuple[str, str]]) -> str:
    if len(request.query_params.getlist("purpose")) > 1:
        problems.append(("purpose", "may be given once"))
    purpose = request.query_params.get("purpose") or request.headers.get(PURPOSE_HEADER)
    if not purpose:
        problems.append(("purpose", "is required (query parameter purpose or header "
                                    "X-Purpose-Of-Use): say why you are looking"))
        return ""
    if purpose not in get_args(PurposeOfUse):
        problems.append(("purpose", "must be an HL7 PurposeOfUse code (e.g. HOPERAT)"))
    return purpose


def _received(entry: Entry) -> dict[str, Any] | None:
    received = entry.members.get("received")
    return received if isinstance(received, dict) else None


def _load(svc: Services, ledger: str, seqs: Sequence[int]) -> list[dict[str, Any]]:
    """The AuditEvents of the entries at ``seqs`` (PHI opened), in that order."""
    entries = []
    for seq in seqs:
        rows = svc.store.read(ledger, seq - 1, 1)
        if rows:
            entries.append(Entry.decode(rows[0]))
    opened = svc.protection.reveal_many(ledger, [e.event for e in entries])
    out = []
    for entry, event in zip(entries, opened, strict=True):
        resource = to_audit_event(event, resource_id=str(entry.seq),
                                  received=_received(entry))
        resource.setdefault("meta", {})["lastUpdated"] = entry.recorded_at
        rendered_is_valid(resource)
        out.append(resource)
    return out


def _patients_of(resources: Sequence[dict[str, Any]]) -> list[str]:
    ids = []
    for resource in resources:
        for entity in resource.get("entity", []):
            if entity.get("role", {}).get("code") == "1" and "what" in entity:
                ids.append(entity["what"]["identifier"]["value"])
    return ids


async def _record_reads(svc: Services, request: Request, ledger: str,
                        resources: Sequence[dict[str, Any]], purpose: str) -> None:
    reader = Reader.of(getattr(request.state, "caller", None))
    await AccessReports(svc).record_reads(ledger, reader, _patients_of(resources), purpose,
                                          AUDIT_EVENT_READ)


@router.get("/AuditEvent/{resource_id}", summary="One ledger entry as a FHIR AuditEvent",
            response_class=Response,
            responses={**_fhir_success(200), **fhir_errors(400, 404, 503)})
async def read_audit_event(resource_id: str, request: Request) -> Response:
    svc: Services = request.app.state.services
    problems: list[tuple[str, str]] = []
    purpose = _purpose(request, problems)
    if not _SEQ.fullmatch(resource_id) or not int(resource_id) < 2**53:
        problems.append(("id", "must be the seq of a ledger entry"))
    if problems:
        return refusal(400, problems)
    try:
        ledger = caller_ledger(request.scope)
        found = await asyncio.to_thread(_load, svc, ledger, [int(resource_id)])
        if not found:
            return refusal(404, [("id", "no entry at this seq")], "not-found")
        await _record_reads(svc, request, ledger, found, purpose)
    except Exception as exc:
        return _as_fhir(exc)
    return fhir_response(found[0])


# -- ITI-81 search ---------------------------------------------------------------------


def _dates(values: list[str], problems: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """The ``[since, until)`` of every ``date`` value together (FHIR ANDs repeats), each
    read by its precision: ``le2026-11-22`` is up to the end of that day, ``gt`` a
    second is after that second."""
    since = until = None
    for value in values:
        prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
        try:
            low, high = bound_range(text)
        except ValueError:
            problems.append(("date", "must be [eq|ge|gt|le|lt|sa|eb]<RFC 3339 instant or "
                                     "YYYY-MM-DD>"))
            continue
        if prefix not in _DATE_PREFIXES:
            problems.append(("date", "takes the prefixes eq, ge, gt, le, lt, sa and eb"))
            continue
        start, end = _DATE_PREFIXES[prefix](low, high)
        if start is not None:
            since = max(since or start, start)
        if end is not None:
            until = min(until or end, end)
    return since, until


# FHIR's date prefixes over a value's span [low, high), as (since, until): an entry's
# time is a point, so "starts after" is "after" and "ends before" is "before".
_DATE_PREFIXES: dict[str, Callable[[str, str], tuple[str | None, str | None]]] = {
    "eq": lambda low, high: (low, high),
    "ge": lambda low, high: (low, None),
    "gt": lambda low, high: (high, None),
    "sa": lambda low, high: (high, None),
    "lt": lambda low, high: (None, low),
    "eb": lambda low, high: (None, low),
    "le": lambda low, high: (None, high),
}


def _scope(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in sorted(params)
            if k not in ("_cursor", "_count", "_at", "purpose")}


@router.get("/AuditEvent", summary="ITI-81: search the audit log", response_class=Response,
            responses={**_fhir_success(200), **fhir_errors(400, 503)})
async def search_audit_events(request: Request) -> Response:
    svc: Services = request.app.state.services
    q = request.query_params
    problems: list[tuple[str, str]] = []
    purpose = _purpose(request, problems)
    if any(name not in _SEARCH_PARAMETERS for name in q):
        # Not named: a parameter's name is the client's text, and may be PHI.
        problems.append(("search", "names a parameter that is not supported (supported: "
                                   + ", ".join(sorted(_SEARCH_PARAMETERS)) + ")"))
    for name in sorted(_SEARCH_PARAMETERS - {"date", "purpose"}):
        if len(q.getlist(name)) > 1:
            problems.append((name, "may be given once"))
    if "patient" in q and "patient.identifier" in q:
        problems.append(("patient", "give patient or patient.identifier, not both"))
    since, until = _dates(q.getlist("date"), problems)
    actions: tuple[str, ...] = ()
    if q.get("action"):
        codes = q["action"].split(",")
        if any(c not in ACTION_CODES for c in codes):
            problems.append(("action", "must be C, R, U, D or E (comma-separated)"))
        actions = tuple(a for c in codes for a in ACTION_CODES.get(c, ()))
    outcomes: set[str] | None = None
    if q.get("outcome"):
        codes = q["outcome"].split(",")
        if any(c not in OUTCOME_OF_CODE for c in codes):
            problems.append(("outcome", "must be 0, 4, 8 or 12"))
        outcomes = {OUTCOME_OF_CODE[c] for c in codes if c in OUTCOME_OF_CODE}
    entity_type = q.get("entity-type")
    if entity_type is not None and entity_type.rpartition("|")[2] not in ("1", "2"):
        problems.append(("entity-type", "must be 1 (person: the patient) or 2 (system "
                                        "object: the resource)"))
    count_text = q.get("_count", "20")
    count = int(count_text) if _COUNT.fullmatch(count_text) else 0
    if not 1 <= count <= MAX_COUNT:
        problems.append(("_count", f"must be a whole number from 1 to {MAX_COUNT}"))
        count = 20
    patient = q.get("patient") or q.get("patient.identifier")
    if patient is not None:
        patient = patient.rpartition("|")[2].removeprefix("Patient/")
    at_text = q.get("_at")
    if at_text is not None and not (_SEQ.fullmatch(at_text) and int(at_text) < 2**53):
        problems.append(("_at", "must be the seq a search's first page was answered at"))
    scope = _scope(dict(q.multi_items()) | {"date": q.getlist("date")})
    after: Position | None = None
    if q.get("_cursor"):
        try:
            after = decode_cursor(q["_cursor"], scope)
        except BadCursor:
            problems.append(("_cursor", "does not belong to this search"))
    if problems:
        return refusal(400, problems)
    try:
        ledger = caller_ledger(request.scope)
        ref = svc.protection.patient_ref(ledger, patient) if patient else None
        where = AccessFilter(patient_ref=ref, actor_id=q.get("agent"), since_utc=since,
                             until_utc=until, actions=actions)

        def page() -> tuple[list[dict[str, Any]], Position | None, int]:
            """Up to ``count`` matches after ``after`` among the entries up to seq
            ``_at`` (the ledger's head when the first page was asked for: what each page
            records is not found by the next, and paging ends), where the next page
            starts (None when no match follows: one match beyond the page is looked
            for, so the last page has no ``next``), and that seq."""
            at = int(at_text) if at_text is not None else svc.store.head(ledger).seq
            rows: list[dict[str, Any]] = []
            position = after
            while True:
                batch = svc.queries.accesses(ledger, where, after=position, order="asc",
                                             limit=count * 2)
                for row in batch:
                    if row["seq"] > at:
                        continue
                    if outcomes is not None and row["outcome"] not in outcomes:
                        continue
                    if entity_type is not None and (
                            (entity_type.endswith("1") and row["patient_ref"] is None)
                            or (entity_type.endswith("2") and row["resource_type"] is None)):
                        continue
                    if len(rows) == count:
                        last = rows[-1]
                        return rows, Position(last["occurred_utc"], last["seq"]), at
                    rows.append(row)
                if len(batch) < count * 2:
                    return rows, None, at
                position = Position(batch[-1]["occurred_utc"], batch[-1]["seq"])

        rows, more, at = await asyncio.to_thread(page)
        resources = await asyncio.to_thread(_load, svc, ledger, [r["seq"] for r in rows])
        await _record_reads(svc, request, ledger, resources, purpose)
    except Exception as exc:
        return _as_fhir(exc)
    base = str(request.url.replace(query=""))
    links = [{"relation": "self", "url": str(request.url)}]
    if more is not None and rows:
        params = [(k, v) for k, v in q.multi_items() if k not in ("_cursor", "_at")]
        params += [("_at", str(at)), ("_cursor", encode_cursor(more, scope))]
        links.append({"relation": "next", "url": f"{base}?{urlencode(params)}"})
    return fhir_response({
        "resourceType": "Bundle", "type": "searchset", "link": links,
        "entry": [{"fullUrl": f"{str(request.base_url).rstrip('/')}{_location(int(r['id']))}",
                   "resource": r, "search": {"mode": "match"}} for r in resources],
    })


# -- CapabilityStatement ---------------------------------------------------------------


def capability_statement(now: str) -> dict[str, Any]:
    search = [("patient", "reference"), ("date", "date"), ("agent", "token"),
              ("entity-type", "token"), ("action", "token"), ("outcome", "token")]
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": now,
        "kind": "instance", "fhirVersion": "4.0.1", "format": [FHIR_JSON, "json"],
        "implementation": {"description": "phi-ledger: a hash-chained ledger of access to "
                                          "PHI, as an IHE ATNA Audit Record Repository"},
        "instantiates": [
            "https://profiles.ihe.net/ITI/RESTful-ATNA/CapabilityStatement/"
            "IHE.RESTfulATNA.Repository"],
        "rest": [{"mode": "server",
                  "interaction": [{"code": "batch"}, {"code": "transaction"}],
                  "resource": [{
                      "type": "AuditEvent",
                      "supportedProfile": [
                          f"https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
                          f"IHE.BasicAudit.{p}" for p in (
                              "Create", "Read", "Update", "Delete", "Query", "PatientRead",
                              "PatientQuery", "PrivacyDisclosure.Source",
                              "PrivacyDisclosure.Recipient", "AuthZconsent")],
                      "interaction": [{"code": "create"}, {"code": "read"},
                                      {"code": "search-type"}],
                      "searchParam": [{"name": n, "type": t} for n, t in search]
                      + [{"name": "_count", "type": "number"}],
                  }]}],
    }


@router.get("/metadata", summary="The FHIR CapabilityStatement", response_class=Response,
            responses=_fhir_success(200))
async def metadata(request: Request) -> Response:
    svc: Services = request.app.state.services
    return fhir_response(capability_statement(svc.clock().isoformat(timespec="seconds")))


__all__ = ["OUTCOME_CODES", "ApiError", "capability_statement", "router"]
