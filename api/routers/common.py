"""Small pieces every router shares: the JSON body, JSON answers, the ledger chosen."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Query, Request
from fastapi.responses import Response

from api.access_reports import Reader
from api.auth.caller import Caller
from api.errors import ApiError
from ledger.attestation import Attestation, Submitter
from ledger.store.base import LEDGER_NAME

# The largest integer either database stores (a signed 64-bit BIGINT): every integer
# query parameter is bounded by it, so a larger one is the caller's 400, not a database
# error.
DB_INT_MAX = 2**63 - 1


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise ApiError(400, "invalid_json", "the request needs a JSON body", ["(body)"])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON", ["(body)"]) from None


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


LEDGER_DOC = (
    "The ledger (tenant). Optional: a request is always confined to the caller's own "
    "ledger, and naming any other answers 403 forbidden."
)


def request_caller(scope: Any) -> Caller:
    """The request's authenticated caller (401 when there is none)."""
    state = scope.get("state")
    caller = state.get("caller") if isinstance(state, dict) else None
    if caller is None:
        raise ApiError(401, "unauthenticated", "a bearer credential is required",
                       headers={"WWW-Authenticate": 'Bearer realm="phi-ledger"'})
    return caller


def caller_ledger(scope: Any) -> str:
    """The ledger of the request's authenticated caller: the only ledger it may use.

    Access control (api.auth.middleware) has already refused a request whose ``ledger``
    parameter names another one; without a caller nothing is reached at all."""
    return request_caller(scope).ledger


def attestation_of(caller: Caller) -> Attestation:
    """What the service writes beside the events ``caller`` submits: who submitted them,
    with which credential (see ledger.attestation)."""
    return Attestation(Submitter(caller.id, caller.credential))


async def chosen_ledger(
    request: Request,
    ledger: str | None = Query(None, description=LEDGER_DOC),
) -> str:
    own = caller_ledger(request.scope)
    if ledger is not None and ledger != own:
        raise ApiError(403, "forbidden", "you may only use your own ledger", ["ledger"])
    return own


def ledger_of(request: Request) -> str:
    """``chosen_ledger`` for the hot ingest routes, without the dependency machinery
    (solving dependencies cost a fifth of a single-event POST)."""
    return caller_ledger(request.scope)


LEDGER_PARAMETER = {
    "name": "ledger", "in": "query", "required": False,
    "description": LEDGER_DOC,
    "schema": {"type": "string", "pattern": LEDGER_NAME.pattern},
}


def reader_of(request: Request) -> Reader:
    """Who is reading, as the ledger records it with each read of PHI."""
    return Reader.of(getattr(request.state, "caller", None))
