"""Where the policy is enforced: one ASGI middleware in front of every route.

:class:`AccessControl` finds the route a request will reach (the application's own route
objects, matched as its router matches them), looks up that route's rule in
:data:`api.auth.policy.RULES`, authenticates the bearer credential, applies the rule and
the tenant rule, meters the identity, and only then lets the request through, with the
caller in ``request.state.caller``. It sits in front of the ingest fast path too, so no
route, fast or framework-routed, escapes it. A route without a rule answers 403.

:class:`SecurityHeaders` adds the response headers every answer carries.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import structlog
from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth.access import Access
from api.auth.limits import retry_after
from api.auth.policy import RULES, Rule, decide, rule_for
from api.errors import error_response
from api.request_shape import unstorable_parameters, unsupported_media

log = structlog.get_logger("api.access_control")

MAX_CREDENTIAL_LENGTH = 512
REALM = 'Bearer realm="phi-ledger"'


def bearer(scope: Scope) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if (scheme.lower() == b"bearer" and 0 < len(token) <= MAX_CREDENTIAL_LENGTH
                    and token.isascii()):
                return token.decode("ascii")
            return None
    return None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def requested_ledgers(scope: Scope) -> list[str]:
    """Every ``ledger`` query parameter, as the framework will read them: its name may be
    percent-encoded (``%6Cedger``) and a blank value is a value."""
    query = scope.get("query_string", b"")
    if not query or (b"ledger" not in query and b"%" not in query):
        return []
    return parse_qs(query.decode("latin-1"), keep_blank_values=True).get("ledger", [])


def flat_routes(app: FastAPI) -> list[Any]:
    """Every route of ``app`` in matching order, with its full path template: the
    application's own route table, which the router matches and the matrix test walks.
    (FastAPI 0.130+ keeps included routers as nested, lazily resolved entries.)"""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI: included routes are copied in flat
        return list(app.router.routes)
    return list(iter_route_contexts(app.router.routes))


def _may_match(route: Any, path: str) -> bool:
    regex = getattr(route, "path_regex", None)
    return regex is None or regex.match(path) is not None


class RouteTable:
    """The application's routes, matched exactly as its router matches them (first full
    match wins; a path match with the wrong method is the router's 405, not ours)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._routes: list[Any] | None = None
        self._exact: dict[str, list[Any]] = {}

    def _load(self) -> list[Any]:
        # Routes are read on first use, after every router has been included.
        if self._routes is None:
            routes = flat_routes(self.app)
            for route in routes:
                path = getattr(route, "path", None) or ""
                if "{" not in path:
                    # Not the static routes alone: every route that can match this path,
                    # in order, as an earlier template (/things/{id} before /things/all)
                    # wins in the router too.
                    self._exact[path] = [r for r in routes if _may_match(r, path)]
            self._routes = routes
        return self._routes

    def find(self, scope: Scope) -> Any | None:
        routes = self._load()
        # The hot paths (ingest) are static: try only the routes that can match exactly
        # this path, in route order (the same answer as the full walk). Routes match the
        # path less the server's root path: with one, the full walk.
        candidates = None if scope.get("root_path") else self._exact.get(scope["path"])
        for group in (candidates or (), routes):
            for route in group:
                match, _ = route.matches(scope)
                if match == Match.FULL:
                    return route
        return None


class AccessControl:
    """Deny by default: authenticates, authorises and meters every request to a route.

    Guarantees: a request reaches a route only if the route has a rule and the rule is
    public, or a valid credential's identity holds one of the rule's roles and names no
    ledger but its own. The caller is then in ``scope["state"]["caller"]``."""

    def __init__(self, app: ASGIApp, owner: FastAPI,
                 rules: dict[tuple[str, str], Rule] = RULES) -> None:
        self.app = app
        self.owner = owner
        self.rules = rules
        self.table = RouteTable(owner)
        # (method, template) -> rule: the table is fixed, and the hot path pays no regex.
        self._rule_cache: dict[tuple[str, str], Rule | None] = {}

    def _access(self) -> Access:
        return self.owner.state.services.access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.table.find(scope)
        if route is None:  # 404 or 405: the framework answers, nothing is reached
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the access log names the template even when refused
        # A route without a path (a Host) has the template "" (RULES has no rule for it).
        template = getattr(route, "path", None) or ""
        cache_key = (scope["method"], template)
        if cache_key in self._rule_cache:
            rule = self._rule_cache[cache_key]
        else:
            rule = self._rule_cache[cache_key] = rule_for(*cache_key, self.rules)
        if rule is None:
            log.error("access.no_rule", method=scope["method"], route=template)
            await self._refuse(scope, receive, send, 403, "forbidden",
                               "no access rule covers this route")
            return
        if rule.public:
            if await self._misshapen(scope, receive, send, route, template):
                return
            await self.app(scope, receive, send)
            return
        access = self._access()
        secret = bearer(scope)
        caller = None if secret is None else await access.authenticate(secret)
        if caller is None:
            wait = access.wait("unauthenticated", client_address(scope))
            if wait:
                await self._too_many(scope, receive, send, wait)
                return
            challenge = REALM if secret is None else REALM + ', error="invalid_token"'
            message = ("a bearer credential is required" if secret is None
                       else "the credential is unknown, revoked or expired")
            await self._refuse(scope, receive, send, 401, "unauthenticated", message,
                               {"WWW-Authenticate": challenge})
            return
        decision = decide(rule, caller, requested_ledgers(scope))
        if not decision.allowed:
            log.info("access.denied", identity=caller.id, route=template)
            await self._refuse(scope, receive, send, 403, "forbidden", decision.reason)
            return
        wait = access.wait(rule.limit.value, caller.id)
        if wait:
            await self._too_many(scope, receive, send, wait)
            return
        scope.setdefault("state", {})["caller"] = caller
        structlog.contextvars.bind_contextvars(identity=caller.id)
        if await self._misshapen(scope, receive, send, route, template):
            return
        await self.app(scope, receive, send)

    async def _misshapen(self, scope: Scope, receive: Receive, send: Send, route: Any,
                         template: str) -> bool:
        """Answer a request no route should read (a body in a media type the route does
        not take; a parameter no database can store) and say so."""
        accepted = unsupported_media(scope, template)
        if accepted is not None:
            await self._refuse(scope, receive, send, 415, "unsupported_media_type",
                               f"the body must be {' or '.join(sorted(accepted))}",
                               fields=["content-type"])
            return True
        path = scope.get("path", "")
        query = scope.get("query_string", b"")
        if "\x00" in path or b"%00" in query or b"\x00" in query:
            _, child = route.matches(scope)
            bad = unstorable_parameters(scope, child.get("path_params", {}))
            if bad:
                await self._refuse(scope, receive, send, 400, "invalid_request",
                                   "; ".join(f"{name} must not contain NUL" for name in bad),
                                   fields=bad)
                return True
        return False

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                      message: str, headers: dict[str, str] | None = None,
                      fields: list[str] | None = None) -> None:
        await error_response(status, code, message, fields, headers)(scope, receive, send)

    async def _too_many(self, scope: Scope, receive: Receive, send: Send, wait: float
                        ) -> None:
        await self._refuse(scope, receive, send, 429, "rate_limited",
                           "too many requests; retry after the time in Retry-After",
                           {"Retry-After": retry_after(wait)})


# Every answer: no sniffing, no framing, no referrer, and never cached (answers hold PHI).
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# The JSON API needs nothing a page would. A response that sets its own policy keeps it
# (the documentation pages: api/routers/reference.py, scripts from 'self' only).
CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` (and a CSP; HSTS over TLS) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*SECURITY_HEADERS, CSP]
        if scope.get("scheme") == "https":
            extra.append(HSTS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
