"""Administration of the caller's own ledger: identities and API keys. Never PHI.

People (password + TOTP) are created with ``phi-ledger admin create-user``: a password
is not something to send over an API to be set on someone else's behalf.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.caller import ROLES
from api.auth.duties import OPERATOR_ONLY, PHI_READING_ROLES, operator_only_message
from api.auth.identities import AccessError, Actor, Identity, NotFound, Withheld
from api.error_docs import errors
from api.errors import ApiError
from api.event_schema import INSTANT
from api.routers.auth import caller
from api.routers.common import json_response, parse_json
from api.services import Services
from ledger.event import storable
from ledger.instant import InstantRefused, parse_instant

router = APIRouter(prefix="/v1/admin", tags=["admin"])

KEY_FIELDS = ("roles", "name", "expires_at", "identity")
KEY_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["roles"], "additionalProperties": False,
    "properties": {
        "roles": {"type": "array", "minItems": 1,
                  "items": {"enum": sorted(ROLES)}},
        "name": {"type": ["string", "null"], "pattern": "^[^\\u0000]*$"},
        "identity": {"type": ["string", "null"], "pattern": "^[^\\u0000]*$"},
        "expires_at": {"type": ["string", "null"], "pattern": INSTANT,
                       "description": "RFC 3339 with an offset, within the years 1-9999 "
                       "in UTC."},
    }}}}}}


STAFF_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["staff_ids"], "additionalProperties": False,
    "properties": {"staff_ids": {"type": "array", "maxItems": 20, "items": {
        "type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000]*$"}}},
}}}}}


def _identity_dict(ident: Identity, keys: list[dict[str, Any]], staff: frozenset[str]
                   ) -> dict[str, Any]:
    return {
        "id": ident.id, "kind": ident.kind, "name": ident.name, "ledger": ident.ledger,
        "roles": sorted(ident.roles), "created_at": ident.created_at,
        "totp_enrolled": ident.totp_secret is not None if ident.kind == "user" else None,
        "locked_until": None if ident.locked_until is None
        else ident.locked_until.isoformat().replace("+00:00", "Z"),
        "staff_ids": sorted(staff) if ident.kind == "user" else None,
        "keys": keys,
    }


@router.get("/identities", summary="Identities of your ledger and their API keys",
            responses=errors())
async def identities(request: Request) -> Response:
    svc: Services = request.app.state.services
    who = caller(request)
    store = svc.access.identities

    def read() -> list[dict[str, Any]]:
        found = store.identities(who.ledger)
        keys = store.credentials([i.id for i in found])
        by_owner: dict[str, list[dict[str, Any]]] = {}
        for key in keys:
            by_owner.setdefault(key.identity_id, []).append(key.as_dict())
        return [_identity_dict(i, by_owner.get(i.id, []), store.staff_ids(i.id))
                for i in found]

    return json_response({"ledger": who.ledger, "identities": await asyncio.to_thread(read)})


def _key_request(raw: bytes) -> tuple[list[str], str | None, datetime | None, str | None]:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object", ["(body)"])
    # Unknown members are named by position: their names are the client's text.
    bad = [f"(body) member {i}" for i, k in enumerate(body, 1) if k not in KEY_FIELDS]
    roles = body.get("roles")
    if not (isinstance(roles, list) and roles
            and all(isinstance(r, str) and storable(r) for r in roles)):
        bad.append("roles")
    for name in ("name", "identity", "expires_at"):
        value = body.get(name)
        if value is not None and not (isinstance(value, str) and storable(value)):
            bad.append(name)
    expires = None
    if isinstance(body.get("expires_at"), str) and "expires_at" not in bad:
        try:
            expires = parse_instant(body["expires_at"])
        except InstantRefused:
            bad.append("expires_at")
    if bad:
        raise ApiError(422, "invalid_request",
                       "roles (a non-empty list) is required; name, identity and expires_at"
                       " (RFC 3339 with an offset, within the years 1-9999 in UTC) are"
                       " optional strings, without NUL; nothing else", bad)
    # A roles member that is not a non-empty list of strings was named in bad above.
    return cast(list[str], roles), body.get("name"), expires, body.get("identity")


@router.post(
    "/keys", status_code=201, summary="Create an API key (shown once)",
    description="`{roles, name?, expires_at?, identity?}` -> `{key, key_id, identity, "
    "expires_at}`: a new application identity of your ledger holding `roles` (or, with "
    "`identity`, one more key for an existing application). The key is shown in this "
    "answer only; the service keeps its SHA-256. Recorded as `key_created`. PHI-reading "
    "roles (auditor, investigator) are refused with 403 `operator_only`, for a new identity "
    "or an existing one: grant them with `phi-ledger admin create-key`.",
    responses=errors(403, 404, 422), openapi_extra=KEY_BODY,
)
async def create_key(request: Request) -> Response:
    svc: Services = request.app.state.services
    who = caller(request)
    roles, name, expires, identity = _key_request(await request.body())
    try:
        issued = await asyncio.to_thread(
            svc.access.identities.issue_key, who.ledger, roles, name=name,
            expires_at=expires, actor=Actor.of(who), identity_id=identity,
            withhold=PHI_READING_ROLES)
    except Withheld as error:
        raise ApiError(403, OPERATOR_ONLY, operator_only_message(error.roles),
                       ["identity" if identity is not None else "roles"]) from None
    except NotFound as error:
        raise ApiError(404, "not_found", str(error), ["identity"]) from None
    except AccessError as error:
        raise ApiError(422, "invalid_request", str(error)) from None
    return json_response({
        "key": issued.secret, "key_id": issued.key_id,
        "identity": {"id": issued.identity.id, "name": issued.identity.name,
                     "roles": sorted(issued.identity.roles)},
        "ledger": issued.identity.ledger, "expires_at": issued.expires_at,
    }, 201)


@router.delete("/keys/{key_id}", summary="Revoke an API key or login session",
               responses=errors(404, 409))
async def revoke_key(key_id: str, request: Request) -> Response:
    svc: Services = request.app.state.services
    who = caller(request)
    try:
        receipt = await asyncio.to_thread(
            svc.access.identities.revoke, key_id, actor=Actor.of(who), ledger=who.ledger)
    except NotFound:
        raise ApiError(404, "not_found", "no such key in your ledger", ["key_id"]) from None
    except AccessError as error:
        raise ApiError(409, "conflict", str(error), ["key_id"]) from None
    svc.access.forget()
    return json_response({"revoked": key_id, "seq": receipt.seq})


@router.put(
    "/identities/{identity_id}/staff-ids", summary="Set the staff ids a person acts as",
    description="`{staff_ids: [...]}` -> `{identity, staff_ids, seq}`: the person (a user "
    "of your ledger) acts as exactly these staff ids, the `actor.id` applications post for "
    "them (the `staff_id` of `staff_added`); an empty list unbinds them. Nobody triages an "
    "alert whose actor is one of their staff ids. A staff id bound to another person of "
    "the ledger is refused (409). Recorded as `staff_ids_set`.",
    responses=errors(404, 409, 422), openapi_extra=STAFF_BODY,
)
async def set_staff_ids(identity_id: str, request: Request) -> Response:
    svc: Services = request.app.state.services
    who = caller(request)
    body = parse_json(await request.body())
    staff = body.get("staff_ids") if isinstance(body, dict) else None
    if not (isinstance(body, dict) and set(body) == {"staff_ids"} and isinstance(staff, list)
            and all(isinstance(s, str) and storable(s) for s in staff)):
        raise ApiError(422, "invalid_request", "the body is {\"staff_ids\": [strings]},"
                       " nothing else", ["staff_ids"])
    identities = svc.access.identities
    found = await asyncio.to_thread(identities.get, identity_id)
    if found is None or found.ledger != who.ledger or found.kind != "user":
        raise ApiError(404, "not_found", "no such person in your ledger", ["identity_id"])
    try:
        receipt = await asyncio.to_thread(identities.set_staff_ids, identity_id, staff,
                                          actor=Actor.of(who), ledger=who.ledger)
    except NotFound:
        raise ApiError(404, "not_found", "no such person in your ledger",
                       ["identity_id"]) from None
    except AccessError as error:
        status = 409 if "already bound" in str(error) else 422
        raise ApiError(status, "conflict" if status == 409 else "invalid_request",
                       str(error), ["staff_ids"]) from None
    return json_response({"identity": identity_id, "staff_ids": sorted(set(staff)),
                          "seq": receipt.seq})
