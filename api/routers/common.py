"""Small pieces every router shares: the JSON body, JSON answers, the ledger chosen."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import Depends, Query, Request
from fastapi.responses import Response

from api.errors import ApiError
from api.services import Services, services
from ledger.store.base import LEDGER_NAME


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise ApiError(400, "invalid_json", "the request needs a JSON body", ["(body)"])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON", ["(body)"]) from None


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _ledger_name(name: str) -> str:
    if not LEDGER_NAME.match(name):
        raise ApiError(400, "invalid_request", "ledger must be 1-63 of [a-z0-9_-]", ["ledger"])
    return name


async def chosen_ledger(
    ledger: str | None = Query(
        None, description="The ledger (tenant); the service's default ledger when omitted."
    ),
    svc: Services = Depends(services),
) -> str:
    return _ledger_name(ledger or svc.settings.default_ledger)


def ledger_of(request: Request) -> str:
    """``chosen_ledger`` for the hot ingest routes, without the dependency machinery
    (solving dependencies cost a fifth of a single-event POST)."""
    return ledger_in_query(request.scope.get("query_string", b""),
                           request.app.state.services.settings.default_ledger)


def ledger_in_query(query_string: bytes, default: str) -> str:
    """The ``ledger`` query parameter of a raw query string, or ``default``."""
    if query_string:
        values = parse_qs(query_string.decode("latin-1")).get("ledger")
        if values:
            return _ledger_name(values[-1])
    return _ledger_name(default)


LEDGER_PARAMETER = {
    "name": "ledger", "in": "query", "required": False,
    "description": "The ledger (tenant); the service's default ledger when omitted.",
    "schema": {"type": "string", "pattern": LEDGER_NAME.pattern},
}
