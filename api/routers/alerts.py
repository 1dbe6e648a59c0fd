"""Continual monitoring: the alert queue, and its triage by investigators.

``GET /v1/alerts`` shows PHI (the patients alerts name), so it takes ``purpose`` and
records a ``query`` per patient shown, as the other audit routes do. Triage is decided in
:mod:`api.alert_desk`; this router only parses and answers.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.access_reports import Reader
from api.alert_desk import TriageRefused, list_page, record_shown, triage
from api.audit_reads import MAX_LIMIT, PURPOSES, From, Problems, Purpose, To
from api.error_docs import errors
from api.errors import ApiError
from api.event_schema import comma_list
from api.routers.common import chosen_ledger, json_response, parse_json
from api.services import Services, services
from projections.alert_queries import AlertFilter
from projections.cursor import BadCursor, decode_cursor, encode_cursor
from projections.monitoring.rules import RULES

router = APIRouter(prefix="/v1", tags=["alerts"])
STATUSES = ("open", "explained", "acknowledged", "dismissed")
MAX_REASON = 1000


def _choices(problems: Problems, field: str, text: str | None,
             allowed: tuple[str, ...] | frozenset[str]) -> tuple[str, ...]:
    if not text:
        return ()
    chosen = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not chosen or any(c not in allowed for c in chosen):
        problems.add(field, f"must be a comma-separated list of: {', '.join(sorted(allowed))}")
    return chosen


@router.get("/alerts", summary="What continual monitoring flagged", responses=errors(400))
async def list_alerts(
    request: Request,
    purpose: Purpose = None,
    rule: Annotated[str | None, Query(description="Rule code(s), comma-separated",
                                      json_schema_extra={"pattern": comma_list(RULES)})
                    ] = None,
    status: Annotated[str | None, Query(description="open, explained, acknowledged, "
                                                    "dismissed (comma-separated)",
                                        json_schema_extra={"pattern": comma_list(STATUSES)})
                      ] = None,
    actor: Annotated[str | None, Query(description="The actor id the alert is about")] = None,
    patient: Annotated[str | None, Query(description="The patient id (MRN)")] = None,
    since: From = None, until: To = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ledger: str = Depends(chosen_ledger), svc: Services = Depends(services),
) -> Response:
    problems = Problems()
    if purpose is None:
        problems.add("purpose", "is required: say why you are looking (e.g. HOPERAT)")
    elif purpose not in PURPOSES:
        problems.add("purpose", "must be an HL7 PurposeOfUse code (e.g. TREAT, HOPERAT)")
    rules = _choices(problems, "rule", rule, tuple(RULES))
    statuses = _choices(problems, "status", status, STATUSES)
    start, end = problems.bound("from", since), problems.bound("to", until)
    if start is not None and end is not None and start >= end:
        problems.add("from", "must be before to")
    scope = {"rule": rules, "status": statuses, "actor": actor, "patient": patient,
             "from": start, "to": end}
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor, scope)
        except BadCursor as error:
            problems.add("cursor", str(error))
    problems.raise_any()
    ref = svc.protection.patient_ref(ledger, patient) if patient else None
    where = AlertFilter(rules, statuses, actor, ref, start, end)
    items, shown, last = await asyncio.to_thread(list_page, svc, ledger, where, after, limit)
    reader = Reader.of(getattr(request.state, "caller", None))
    await record_shown(svc, ledger, reader, shown, purpose or "")
    return json_response({"items": items,
                          "next_cursor": None if last is None else encode_cursor(last, scope)})


# 403 for triage of one's own alert, 404 for an alert not in the ledger.
TRIAGE_ERRORS = errors(400, 403, 404, 503)
REASON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["reason"],
    "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON,
                              "pattern": "\\S"}}}}}}}


async def _triage(request: Request, alert_id: str, decision: str, ledger: str,
                  svc: Services) -> Response:
    body = parse_json(await request.body())
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise ApiError(400, "invalid_request",
                       f"reason is required: 1-{MAX_REASON} characters (no PHI)", ["reason"])
    caller: Any = getattr(request.state, "caller", None)
    try:
        done = await asyncio.to_thread(triage, svc, ledger, caller, alert_id, decision,
                                       reason.strip())
    except TriageRefused as refused:
        raise ApiError(refused.status, refused.code, str(refused)) from None
    return json_response({"alert_id": done.alert_id, "status": done.status, "seq": done.seq})


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge an alert (in the ledger)",
             responses=TRIAGE_ERRORS, openapi_extra=REASON_BODY)
async def acknowledge(alert_id: str, request: Request, ledger: str = Depends(chosen_ledger),
                      svc: Services = Depends(services)) -> Response:
    return await _triage(request, alert_id, "acknowledge", ledger, svc)


@router.post("/alerts/{alert_id}/dismiss", summary="Dismiss an alert (in the ledger)",
             responses=TRIAGE_ERRORS, openapi_extra=REASON_BODY)
async def dismiss(alert_id: str, request: Request, ledger: str = Depends(chosen_ledger),
                  svc: Services = Depends(services)) -> Response:
    return await _triage(request, alert_id, "dismiss", ledger, svc)
