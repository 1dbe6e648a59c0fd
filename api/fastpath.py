"""The two ingest paths, served without the framework's routing.

``POST /v1/events`` is the hottest path of the service: every application posts every
access through it. Measured here, FastAPI's routing, dependency solving and exception
middleware cost more CPU than the ingest itself (a single-event POST went from ~1,700 to
~3,000 a second on these 2 cores without them). This middleware answers exactly those
two paths by calling the same handlers the FastAPI routes call
(``api.routers.ingest.record_event`` / ``record_batch``) and maps errors with the same
function (``api.errors.domain_error_response``); the routes stay registered, so the
OpenAPI schema documents them and anything this middleware does not take (another
method, say) gets the framework's usual answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth.caller import Caller
from api.errors import crash_response, domain_error_response
from api.middleware import BodyTooLarge
from api.routers.common import request_caller
from api.routers.ingest import record_batch, record_event
from api.services import Services

Handler = Callable[[Services, Caller, bytes], Awaitable[Response]]


class _Template:
    """What the access log reads from ``scope["route"]``: the route template."""

    def __init__(self, path: str) -> None:
        self.path = path


class IngestFastPath:
    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner
        self.routes: dict[str, tuple[Handler, _Template]] = {
            "/v1/events": (record_event, _Template("/v1/events")),
            "/v1/events/batch": (record_batch, _Template("/v1/events/batch")),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        handler, template = route
        scope["route"] = template
        svc: Services = self.owner.state.services
        try:
            # AccessControl, in front of this, authenticated the caller: its ledger is
            # the only one this request may append to, and its entries name it.
            caller = request_caller(scope)
            response = await handler(svc, caller, await _body(receive))
        except BodyTooLarge:
            raise  # RequestContext answers it
        except Exception as exc:  # answered as the framework's handlers would
            response = domain_error_response(exc) or crash_response(exc)
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
