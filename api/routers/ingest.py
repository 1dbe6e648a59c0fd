"""Ingest: applications post access events and get receipts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.caller import Caller
from api.error_docs import errors
from api.errors import ApiError
from api.routers.common import (
    LEDGER_PARAMETER,
    attestation_of,
    json_response,
    parse_json,
    request_caller,
)
from api.services import Services
from ledger.event import MAX_BATCH_EVENTS

router = APIRouter(prefix="/v1", tags=["ingest"])

RECEIPT_DOC = (
    "The receipt `{event_id, ledger, seq, hash, prev_hash, recorded_at}`: the event is "
    "committed at `seq`. 201 when written now, 200 when `event_id` was already recorded "
    "with the same body (a replay: nothing is written). 409 when `event_id` is recorded "
    "with another body, 422 naming every bad field, 503 with Retry-After when the "
    "database is unavailable (retry with the same `event_id`)."
)

# 200 is a replay (nothing written); 400 reserved_source; 409 event_id_conflict; 422
# invalid_event naming every bad field; 503 with Retry-After.
INGEST_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every event was already recorded with the same body (a replay: "
          "nothing was written); the same receipt(s) as when it was.",
          "content": {"application/json": {"schema": {"type": "object"}}}},
    **errors(400, 409, 422, 503,
             s400="`reserved_source`: `source.system` is the service's own; or "
             "`invalid_json`.",
             s409="`event_id_conflict`: an event_id is recorded with another body.",
             s422="`invalid_event`, naming every bad field (`events[i].field` in a batch)."),
}


def _event_body() -> dict[str, Any]:
    return {"parameters": [LEDGER_PARAMETER], "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}}}


def _batch_body() -> dict[str, Any]:
    return {"parameters": [LEDGER_PARAMETER], "requestBody": {"required": True, "content": {
        "application/json": {"schema": {
        "type": "object", "required": ["events"], "additionalProperties": False,
        "properties": {"events": {
            "type": "array", "minItems": 1, "maxItems": MAX_BATCH_EVENTS,
            "items": {"$ref": "#/components/schemas/Event"}}}}}}}}


@router.post(
    "/events", status_code=201, responses=INGEST_ERRORS, summary="Record one access event",
    description=RECEIPT_DOC, openapi_extra=_event_body(),
)
async def post_event(request: Request) -> Response:
    svc = request.app.state.services
    return await record_event(svc, request_caller(request.scope), await request.body())


@router.post(
    "/events/batch", status_code=201, responses=INGEST_ERRORS,
    summary=f"Record up to {MAX_BATCH_EVENTS} events, all or nothing",
    description="`{\"events\": [...]}` -> `{\"receipts\": [...]}` in the posted order. "
    "Nothing is written unless every event is valid and no event_id conflicts. "
    "201 when anything was written, 200 when every event was a replay.",
    openapi_extra=_batch_body(),
)
async def post_batch(request: Request) -> Response:
    svc = request.app.state.services
    return await record_batch(svc, request_caller(request.scope), await request.body())


# The handlers proper, shared by the routes above and by api.fastpath, which serves
# these two paths without the framework's routing (see there).


async def record_event(svc: Services, caller: Caller, raw: bytes) -> Response:
    outcome = await svc.ingest.record(caller.ledger, [parse_json(raw)],
                                      by=attestation_of(caller))
    return json_response(outcome.receipts[0].as_dict(), 201 if outcome.created else 200)


async def record_batch(svc: Services, caller: Caller, raw: bytes) -> Response:
    body = parse_json(raw)
    if not isinstance(body, dict) or set(body) != {"events"}:
        raise ApiError(422, "invalid_event", 'the body must be {"events": [...]}', ["events"])
    outcome = await svc.ingest.record(caller.ledger, body["events"], batch=True,
                                      by=attestation_of(caller))
    receipts = [r.as_dict() for r in outcome.receipts]
    return json_response({"receipts": receipts}, 201 if outcome.created else 200)
