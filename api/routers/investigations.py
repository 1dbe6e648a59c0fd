"""Breach investigations over HTTP: open, amend, close, list, answer, report, evidence.

Only the investigator role reaches these routes (api.auth.policy). Opening, amending and
closing are ledger events; an answer shows PHI, so it takes ``purpose`` and records a
``query`` per patient it shows, as every other read does.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.audit_reads import PURPOSES, Problems, ReportFormat
from api.audit_reads import check_purpose as _purpose
from api.error_docs import JSON_200, REPORT_200, errors
from api.errors import ApiError
from api.event_schema import INSTANT
from api.investigation_report import REPORT_CSP, as_csv, as_html
from api.investigations import Answer, InvestigationService, generated_at, public
from api.routers.common import chosen_ledger, json_response
from api.routers.common import reader_of as _reader
from api.services import Services, services
from projections.cursor import BadCursor, Offset, decode_offset, encode_offset, offset_through
from projections.instants import parse_bound

router = APIRouter(prefix="/v1", tags=["investigations"])

MAX_LIMIT = 500
MAX_SCOPE_ITEMS = 1000
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, strict=True)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096, strict=True)]


def _instant(value: str | None) -> str | None:
    if value is not None:
        parse_bound(value)  # raises ValueError, named by pydantic with its field
    return value


class ScopeIn(BaseModel):
    """What an investigation covers: entries with ``from <= occurred_at < to`` matching
    any non-empty list."""

    model_config = ConfigDict(extra="forbid")
    actors: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    devices: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    ips: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    patients: list[Name] = Field(default_factory=list, max_length=MAX_SCOPE_ITEMS)
    from_: str = Field(alias="from", json_schema_extra={"pattern": INSTANT})
    to: str | None = Field(None, json_schema_extra={"pattern": INSTANT})

    _bounds = field_validator("from_", "to")(_instant)


class AmendScopeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actors: list[Name] | None = Field(None, max_length=MAX_SCOPE_ITEMS)
    devices: list[Name] | None = Field(None, max_length=MAX_SCOPE_ITEMS)
    ips: list[Name] | None = Field(None, max_length=MAX_SCOPE_ITEMS)
    patients: list[Name] | None = Field(None, max_length=MAX_SCOPE_ITEMS)
    from_: str | None = Field(None, alias="from")
    to: str | None = None

    _bounds = field_validator("from_", "to")(_instant)


class OpenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Text
    discovered_at: str = Field(json_schema_extra={"pattern": INSTANT})
    scope: ScopeIn
    note: Text | None = None

    _discovered = field_validator("discovered_at")(_instant)


class AmendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: AmendScopeIn | None = None
    note: Text | None = None


class RiskIn(BaseModel):
    """The four factors of 45 CFR 164.402(2), in the investigator's words (no PHI)."""

    model_config = ConfigDict(extra="forbid")
    nature_and_extent: Text
    recipient: Text
    acquired_or_viewed: bool | None = None
    mitigation: Text


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Literal["breach", "not_a_breach"]
    risk_assessment: RiskIn
    note: Text | None = None


def scope_dict(scope: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in scope.model_dump(by_alias=True).items() if v is not None}


def check_scope(scope: dict[str, Any], partial: bool) -> None:
    fields = []
    if "from" in scope and scope.get("to") is not None and (
            parse_bound(scope["from"]) >= parse_bound(scope["to"])):
        fields.append("scope.to")
    if not partial and not any(scope.get(k) for k in ("actors", "devices", "ips", "patients")):
        fields.append("scope")
    if fields:
        raise ApiError(400, "invalid_request", "the scope needs at least one actor, device,"
                       " IP or patient, and `to` after `from`", fields)


def _service(svc: Services) -> InvestigationService:
    return InvestigationService(svc)


@router.post("/investigations", status_code=201, summary="Open a breach investigation",
             responses=errors(400, 503))
async def open_investigation(
    body: OpenIn, request: Request, ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    scope = scope_dict(body.scope)
    check_scope(scope, partial=False)
    service = _service(svc)
    investigation_id, receipt = await service.open(
        ledger, _reader(request), body.title, body.discovered_at, scope, body.note)
    return json_response({"investigation_id": investigation_id, "ledger": ledger,
                          "seq": receipt.seq, "receipt": receipt.as_dict()}, 201)


@router.get("/investigations", summary="Every investigation of the ledger",
            responses=errors(503))
async def list_investigations(
    ledger: str = Depends(chosen_ledger), svc: Services = Depends(services),
) -> Response:
    service = _service(svc)
    await service.through(ledger, None)
    items = await asyncio.to_thread(service.list, ledger)
    return json_response({"ledger": ledger, "items": items})


@router.post("/investigations/{investigation_id}/amend",
             summary="Amend an investigation's scope or add a note",
             responses=errors(400, 404, 409, 503))
async def amend_investigation(
    investigation_id: str, body: AmendIn, request: Request,
    ledger: str = Depends(chosen_ledger), svc: Services = Depends(services),
) -> Response:
    scope = scope_dict(body.scope) if body.scope is not None else {}
    check_scope(scope, partial=True)
    if not scope and not body.note:
        raise ApiError(400, "invalid_request", "give a scope change or a note",
                       ["scope", "note"])
    service = _service(svc)
    await service.through(ledger, None)
    receipt = await service.amend(ledger, _reader(request), investigation_id, scope,
                                  body.note)
    return json_response({"investigation_id": investigation_id, "seq": receipt.seq})


@router.post("/investigations/{investigation_id}/close",
             summary="Close an investigation with its outcome and risk assessment",
             responses=errors(400, 404, 409, 503))
async def close_investigation(
    investigation_id: str, body: CloseIn, request: Request,
    ledger: str = Depends(chosen_ledger), svc: Services = Depends(services),
) -> Response:
    service = _service(svc)
    receipt = await service.close(ledger, _reader(request), investigation_id, body.outcome,
                                  body.risk_assessment.model_dump(), body.note)
    return json_response({"investigation_id": investigation_id, "seq": receipt.seq})


def _page(problems: Problems, cursor: str | None, scope: dict[str, Any]) -> int:
    if cursor is None:
        return 0
    try:
        return decode_offset(cursor, scope).shown
    except BadCursor as error:
        problems.add("cursor", str(error))
        return 0


def _through_of_cursor(problems: Problems, cursor: str | None) -> int | None:
    """The seq a cursor's pages are computed through (checked by its digest later)."""
    if cursor is None:
        return None
    try:
        return offset_through(cursor)
    except BadCursor as error:
        problems.add("cursor", str(error))
        return None


@router.get("/investigations/{investigation_id}", response_class=Response,
            summary="An investigation's timeline, affected patients, counts and duties",
            responses={**REPORT_200, **errors(400, 404, 503)})
async def investigation(
    investigation_id: str, request: Request,
    purpose: Annotated[str | None, Query(
        description="Why you are looking (HOPERAT, LEGAL)",
        json_schema_extra={"x-required": True, "enum": sorted(PURPOSES)})] = None,
    as_of: Annotated[str | None, Query(description="RFC 3339: answer as the ledger stood"
                                       " (recorded_at <= as_of)",
                                       json_schema_extra={"pattern": INSTANT})] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(json_schema_extra={"minimum": 1, "maximum": MAX_LIMIT})] = 100,
    format: ReportFormat = "json",
    ledger: str = Depends(chosen_ledger), svc: Services = Depends(services),
) -> Response:
    problems = Problems()
    purpose = _purpose(problems, purpose)
    as_of_utc = problems.bound("as_of", as_of)
    if not 1 <= limit <= MAX_LIMIT:
        problems.add("limit", f"must be between 1 and {MAX_LIMIT}")
    if format not in ("json", "csv", "html"):
        problems.add("format", "must be json, csv or html")
    through = _through_of_cursor(problems, cursor)
    problems.raise_any()
    service = _service(svc)
    answer = await service.answer(ledger, investigation_id, as_of_utc, through)
    reader = _reader(request)
    if format != "json":
        return await report_response(service, answer, reader, purpose, format)
    scope = {"i": investigation_id, "t": answer.through, "l": limit}
    offset = _page(problems, cursor, scope)
    problems.raise_any()
    rows = answer.rows[offset:offset + limit]
    patients = answer.patients[offset:offset + limit]
    timeline, items, shown = await asyncio.to_thread(service.open_page, answer, rows,
                                                     patients)
    await service.record_reads(ledger, reader, shown, purpose)
    more = offset + limit < max(len(answer.rows), len(answer.patients))
    next_cursor = (encode_offset(Offset(answer.through, offset + limit), scope)
                   if more else None)
    return json_response({**answer.head(), "timeline": timeline, "affected": items,
                          "timeline_total": len(answer.rows),
                          "next_cursor": next_cursor})


async def report_response(service: InvestigationService, answer: Answer, reader: Any,
                          purpose: str, format: str) -> Response:
    timeline, items, shown = await asyncio.to_thread(service.open_page, answer, answer.rows,
                                                     answer.patients)
    await service.record_reads(answer.ledger, reader, shown, purpose)
    generated = generated_at(service.svc.clock)
    if format == "csv":
        return Response(as_csv(timeline, items), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 'attachment; filename="investigation.csv"'})
    checkpoint = None
    if service.svc.tlog is not None:
        checkpoint = await asyncio.to_thread(service.svc.tlog.latest, answer.ledger)
    html = as_html(answer.head(), timeline, items, generated,
                   None if checkpoint is None else checkpoint.note)
    return Response(html, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": REPORT_CSP})


@router.get("/investigations/{investigation_id}/evidence", response_class=Response,
            summary="The evidence file: in-scope entries as stored, with inclusion proofs",
            responses={**JSON_200, **errors(404, 503)})
async def evidence(
    investigation_id: str, ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    service = _service(svc)
    await service.through(ledger, None)
    body = await asyncio.to_thread(service.evidence, ledger, investigation_id)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="evidence-{investigation_id}.json"'})


def discovered_date(record: dict[str, Any]) -> date:
    return date.fromisoformat(record["discovered_at"][:10])


__all__ = ["public", "router"]
