"""One error shape for every failure: ``{"error": {"code", "message", "fields"}}``.

Messages name fields and rules, never submitted values: a value may be PHI.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.data_keys import DataKeyUnusable
from ledger.event import EventRejected
from ledger.ingest import EventConflict, ReservedSource
from ledger.store import StoreUnavailable

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = "1"


class ApiError(Exception):
    """An error the API answers with as it is."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, fields: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "fields": fields or []}}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _query_field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "(request)"


def _problem(error: Any) -> tuple[str, str]:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        # Named by the object it is in, never by its name: the client's text, maybe PHI.
        parent = _query_field(loc[:-1])
        return ("(body)" if parent == "(request)" else parent), "unknown field"
    return _query_field(loc), error["msg"]


def domain_error_response(exc: Exception) -> Response | None:
    """The answer to an error of the service layer, or None for anything else."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)
    if isinstance(exc, ReservedSource):
        return error_response(400, "reserved_source", str(exc), exc.fields)
    if isinstance(exc, EventRejected):
        return error_response(422, "invalid_event", str(exc), exc.fields)
    if isinstance(exc, EventConflict):
        return error_response(
            409, "event_id_conflict",
            "event_id already recorded with a different body; nothing was written",
            [f"event_id:{event_id}" for event_id in exc.event_ids],
        )
    if isinstance(exc, StoreUnavailable):
        log.warning("store.unavailable", error=str(exc))
        return error_response(
            503, "unavailable",
            "the ledger database is unavailable; nothing was acknowledged, retry with the"
            " same event_id", headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if isinstance(exc, DataKeyUnusable):
        return error_response(
            500, "data_key_unusable",
            "a patient's data key does not unwrap under the configured key ring (wrong key"
            " file or a corrupted key row); nothing was written. The service log names the KEK",
        )
    return None


def crash_response(exc: Exception) -> Response:
    # The type only: an exception's message may quote data.
    log.error("request.crashed", error_type=type(exc).__name__)
    return error_response(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    async def _domain(_: Request, exc: Exception) -> Response:
        return domain_error_response(exc) or crash_response(exc)

    for kind in (ApiError, EventRejected, EventConflict, StoreUnavailable):
        app.add_exception_handler(kind, _domain)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> Response:
        problems = [_problem(e) for e in exc.errors()]
        return error_response(
            400, "invalid_request", "; ".join(f"{f}: {m}" for f, m in problems),
            list(dict.fromkeys(f for f, _ in problems)),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return error_response(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> Response:
        return crash_response(exc)
