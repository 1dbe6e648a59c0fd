"""Sessions for people: password + TOTP -> a short-lived bearer token; logout; whoami.

Applications do not log in: they present their API key on every request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.caller import Caller
from api.auth.identities import AccessError
from api.auth.limits import retry_after
from api.auth.middleware import REALM, client_address
from api.error_docs import errors
from api.errors import ApiError
from api.routers.common import json_response, parse_json
from api.services import Services
from ledger.event import storable

router = APIRouter(prefix="/v1/auth", tags=["access"])

LOGIN_FIELDS = ("username", "password", "totp")
FAILED = "invalid credentials (or the account is locked after repeated failures)"


def _login_body(raw: bytes) -> tuple[str, str, str]:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object", ["(body)"])
    bad = [f for f in LOGIN_FIELDS
           if not isinstance(body.get(f), str) or not 0 < len(body[f]) <= 1024
           or not storable(body[f])]
    # Unknown members are named by position: their names are the client's text.
    bad += [f"(body) member {i}" for i, k in enumerate(body, 1) if k not in LOGIN_FIELDS]
    if bad:
        raise ApiError(422, "invalid_request",
                       "username, password and totp are required strings; nothing else",
                       bad)
    return body["username"], body["password"], body["totp"]


def caller(request: Request) -> Caller:
    """The authenticated caller (AccessControl guarantees one on non-public routes)."""
    found = getattr(request.state, "caller", None)
    if found is None:
        raise ApiError(401, "unauthenticated", "a bearer credential is required",
                       headers={"WWW-Authenticate": REALM})
    return found


def caller_dict(who: Caller) -> dict[str, Any]:
    return {"id": who.id, "kind": who.kind, "name": who.name, "ledger": who.ledger,
            "roles": sorted(who.roles)}


@router.post(
    "/login", summary="Log in with password and TOTP code; get a bearer token",
    description="`{username, password, totp}` -> `{token, token_type, expires_at, "
    "expires_in, identity}`. Every attempt on a known account is a ledger entry "
    "(`login` or `login_failed`); repeated failures lock the account for a while "
    "(`account_locked`). A TOTP code is accepted once. 401 for any failure, whatever its "
    "cause; 429 with Retry-After when attempts come too fast.",
    responses=errors(401, 422, 429, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": list(LOGIN_FIELDS),
                   "additionalProperties": False,
                   "properties": {f: {"type": "string", "minLength": 1, "maxLength": 1024,
                                      "pattern": "^[^\\u0000]*$"}
                                  for f in LOGIN_FIELDS}}}}}},
)
async def login(request: Request) -> Response:
    svc: Services = request.app.state.services
    access = svc.access
    # A strict limit by address, before anything is checked. Not by name: a bucket all
    # addresses share would let anyone keep a person's name empty, locking its owner out
    # as surely as a lockout would. Guesses spread over many addresses meet each one's
    # lock (api.auth.sessions) and the second factor.
    wait = access.wait("login", f"ip:{client_address(request.scope)}")
    if wait:
        raise ApiError(429, "rate_limited", "too many login attempts",
                       headers={"Retry-After": retry_after(wait)})
    username, password, code = _login_body(await request.body())
    result = await asyncio.to_thread(
        svc.access.sessions.login, username, password, code, client_address(request.scope))
    if result.token is None or result.caller is None or result.expires_at is None:
        raise ApiError(401, "unauthenticated", FAILED, headers={"WWW-Authenticate": REALM})
    now = svc.clock()
    return json_response({
        "token": result.token, "token_type": "Bearer",
        "expires_at": result.expires_at.isoformat().replace("+00:00", "Z"),
        "expires_in": int((result.expires_at - now).total_seconds()),
        "identity": caller_dict(result.caller),
    })


@router.post("/logout", summary="End this login session (its token stops working)",
             responses=errors(400))
async def logout(request: Request) -> Response:
    svc: Services = request.app.state.services
    who = caller(request)
    try:
        receipt = await asyncio.to_thread(svc.access.sessions.logout, who)
    except AccessError as error:
        raise ApiError(400, "invalid_request", str(error)) from None
    svc.access.forget()
    return json_response({"logged_out": who.credential, "seq": receipt.seq})


@router.get("/whoami", summary="The authenticated caller: identity, ledger and roles",
            responses=errors())
async def whoami(request: Request) -> Response:
    return json_response(caller_dict(caller(request)))
