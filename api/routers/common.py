"""Small pieces every router shares: the JSON body, JSON answers, the ledger chosen."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Depends, Query, Request
from fastapi.responses import Response

from api.errors import ApiError
from api.services import Services, services
from ledger.store.base import LEDGER_NAME


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise ApiError(400, "invalid_json", "the request needs a JSON body", ["(body)"])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON", ["(body)"]) from None


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def chosen_ledger(
    ledger: str | None = Query(
        None, description="The ledger (tenant); the service's default ledger when omitted."
    ),
    svc: Services = Depends(services),
) -> str:
    name = ledger or svc.settings.default_ledger
    if not LEDGER_NAME.match(name):
        raise ApiError(400, "invalid_request", "ledger must be 1-63 of [a-z0-9_-]", ["ledger"])
    return name
