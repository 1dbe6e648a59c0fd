"""The request edge: a request id on every log line, an access log by route template,
and a cap on body sizes. Plain ASGI, so it costs microseconds, not a task per request."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import crash_response, domain_error_response

log = structlog.get_logger("api.access")

REQUEST_ID_HEADER = b"x-request-id"
DEFAULT_BODY_LIMIT = 1024 * 1024


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and 0 < len(value) <= 64 and value.isascii():
            text = value.decode()
            if text.replace("-", "").replace("_", "").isalnum():
                return text
    return uuid.uuid4().hex


def _too_large(limit: int) -> list[Message]:
    body = orjson.dumps({"error": {
        "code": "too_large", "message": f"request body larger than {limit} bytes",
        "fields": ["(body)"]}})
    return [
        {"type": "http.response.start", "status": 413,
         "headers": [(b"content-type", b"application/json"),
                     (b"content-length", str(len(body)).encode())]},
        {"type": "http.response.body", "body": body},
    ]


class RequestContext:
    """Binds ``request_id`` for the request's log lines and echoes it as X-Request-ID."""

    def __init__(
        self, app: ASGIApp, body_limit: Callable[[str], int], observe: Callable[..., None]
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        limit = self.body_limit(scope["path"])

        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                for message in _too_large(limit):
                    await send(message)
                self._done(scope, 413, started)
                return

        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, capped_receive, send_with_id)
        except BodyTooLarge:
            for message in _too_large(limit):
                await send(message)
            status = 413
        except Exception as error:
            # Whatever escaped every handler (a store outage in a middleware, say) still
            # gets the error shape, its headers and Retry-After, never the server's bare
            # text/plain 500.
            if started_response:
                raise
            response = domain_error_response(error) or crash_response(error)
            await response(scope, receive, send_with_id)
        finally:
            self._done(scope, status, started)

    def _done(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "(unmatched)"
        elapsed = time.perf_counter() - started
        self.observe(scope["method"], template, status, elapsed)
        log.info("request", method=scope["method"], route=template, status=status,
                 ms=round(elapsed * 1000, 2))
        structlog.contextvars.clear_contextvars()


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def body_limits(limits: dict[str, int], default: int = DEFAULT_BODY_LIMIT) -> Callable[
    [str], int
]:
    def limit_for(path: str, _limits: dict[str, Any] = limits) -> int:
        return _limits.get(path, default)

    return limit_for
