"""AccessControl and SecurityHeaders on their own, driven as ASGI: every answer the
middleware gives (status, error code, message, fields and headers, word for word) and
what a request that gets through carries.

The application here is small and of its own (its own routes and rules, so each branch is
reached by one request), with the service's real credential store on SQLite behind it; the
application behind the middleware is a recorder, so a test sees whether a request reached
it and with what. The clock is frozen, so a rate limit's bucket never refills during a
test. The real service's policy table is tested by tests/test_auth_policy.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from fastapi import APIRouter, FastAPI
from starlette.types import Message, Receive, Scope, Send
from structlog.testing import capture_logs

from api.app import build_services
from api.auth.access import UNAUTHENTICATED_RATE, Access
from api.auth.caller import AUDITOR, VERIFIER
from api.auth.identities import Actor, IssuedKey
from api.auth.middleware import (
    AccessControl,
    SecurityHeaders,
    bearer,
    client_address,
    requested_ledgers,
)
from api.auth.policy import PUBLIC, Limit, Rule
from api.services import Services
from ledger.settings import Settings
from tests.support import FakeClock

LEDGER = "default"
CLOCK = FakeClock()
READ_RATE = 0.5  # a second; the bucket holds 2 * 0.5 = 1 request
AUDITORS = Rule(frozenset({AUDITOR}), Limit.INGEST)  # ingest's limit: never reached here
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/open"): PUBLIC,
    ("POST", "/open"): PUBLIC,
    ("GET", "/open/{}"): PUBLIC,
    ("GET", "/things"): AUDITORS,
    ("POST", "/things"): AUDITORS,
    ("GET", "/things/{}"): AUDITORS,
    ("POST", "/fhir/things"): AUDITORS,
    ("GET", "/slow"): Rule(frozenset({AUDITOR}), Limit.READ),
    ("GET", "/kinds/{}/{}"): PUBLIC,
    ("GET", "/kinds/things/all"): AUDITORS,
    ("GET", "/mount/{}"): PUBLIC,
    ("GET", "/{}/things"): AUDITORS,
    ("GET", "/mount/mount/things"): AUDITORS,
    ("GET", ""): AUDITORS,  # a route without a path: the Host below
    # GET /unruled: deliberately none
}


async def _never_called() -> None:
    raise AssertionError("the recorder answers, not the routes")


def owner_app(access: Access) -> FastAPI:
    router = APIRouter()
    for methods, path in [
        (["GET", "POST"], "/open"), (["GET"], "/open/{name}"),
        (["GET", "POST"], "/things"), (["GET"], "/things/{thing_id}"),
        (["POST"], "/fhir/things"), (["GET"], "/slow"), (["GET"], "/unruled"),
        # a template before a static path it also matches: the router takes the template
        (["GET"], "/kinds/{kind}/{key}"), (["GET"], "/kinds/things/all"),
        # under a server root path of /mount, /mount/mount/things is /mount/things to
        # the router: the first of these matches it, the second matches both
        (["GET"], "/mount/{a}"), (["GET"], "/{p:path}/things"),
        (["GET"], "/mount/mount/things"),
    ]:
        router.add_api_route(path, _never_called, methods=methods)
    app = FastAPI()
    app.include_router(router)
    app.host("other.example", FastAPI())  # a route without a path, matched last
    app.state.services = SimpleNamespace(access=access)
    return app


@dataclass
class Recorder:
    """The application behind the middleware: reads the whole body, remembers what it was
    given, answers 200 ``reached``."""

    scopes: list[Scope] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    identities: list[Any] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            await send({"type": "echo", "message": await receive()})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        self.identities.append(structlog.contextvars.get_contextvars().get("identity"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"reached"})


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    scope: Scope

    @property
    def error(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)["error"]
        return found

    @property
    def reached(self) -> bool:
        return self.body == b"reached"


def call(app: Any, scope: Scope, body: bytes = b"") -> list[Message]:
    sent: list[Message] = []
    chunks = [body]

    async def receive() -> Message:
        return {"type": "http.request", "body": chunks.pop(0) if chunks else b"",
                "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def http_scope(method: str, path: str, *, token: str | None = None, query: bytes = b"",
               body: bytes = b"", media: str = "application/json",
               client: tuple[str, int] | None = ("10.0.0.1", 40000),
               headers: tuple[tuple[bytes, bytes], ...] = (), **extra: Any) -> Scope:
    sent_headers = list(headers)
    if token is not None:
        sent_headers.append((b"authorization", f"Bearer {token}".encode()))
    if body:
        sent_headers += [(b"content-type", media.encode()),
                         (b"content-length", str(len(body)).encode())]
    scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                    "method": method, "scheme": "http", "path": path, "root_path": "",
                    "query_string": query, "headers": sent_headers, "client": client,
                    "server": ("testserver", 80)}
    scope.update(extra)
    return scope


def answer(app: Any, scope: Scope, body: bytes = b"") -> Answer:
    sent = call(app, scope, body)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, f"one answer per request, not {len(starts)}"
    return Answer(starts[0]["status"],
                  {k.decode(): v.decode() for k, v in starts[0].get("headers", [])},
                  b"".join(m.get("body", b"") for m in sent
                           if m["type"] == "http.response.body"), scope)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp: Path = tmp_path_factory.mktemp("access")
    settings = Settings(database_url=f"sqlite:///{tmp}/ledger.db", key_file=tmp / "keys.json",
                        rate_read=READ_RATE)
    svc = build_services(settings, clock=CLOCK)
    try:
        yield svc
    finally:
        svc.writer.stop()
        svc.store.close()


@pytest.fixture(scope="module")
def keys(services: Services) -> dict[str, IssuedKey]:
    issue = services.access.identities.issue_key
    return {
        "auditor": issue(LEDGER, [AUDITOR], actor=Actor("test"), record=False),
        "other auditor": issue(LEDGER, [AUDITOR], actor=Actor("test"), record=False),
        "verifier": issue(LEDGER, [VERIFIER], actor=Actor("test"), record=False),
    }


@dataclass
class Guarded:
    app: AccessControl
    recorder: Recorder

    def __call__(self, method: str, path: str, body: bytes = b"", **options: Any) -> Answer:
        return answer(self.app, http_scope(method, path, body=body, **options), body)


@pytest.fixture
def guarded(services: Services) -> Guarded:
    """The middleware with fresh rate-limit buckets in front of a recorder."""
    access = Access(services.access.identities, services.settings, CLOCK)
    recorder = Recorder()
    return Guarded(AccessControl(recorder, owner_app(access), rules=RULES), recorder)


def test_a_request_without_a_credential_is_challenged(guarded: Guarded) -> None:
    r = guarded("GET", "/things")
    assert (r.status, r.error) == (401, {"code": "unauthenticated", "fields": [],
                                         "message": "a bearer credential is required"})
    assert r.headers["www-authenticate"] == 'Bearer realm="phi-ledger"'  # RFC 6750 3
    assert not guarded.recorder.scopes
    # the access log names the route even of a refused request
    assert r.scope["route"].path == "/things"


def test_an_unknown_credential_is_an_invalid_token(guarded: Guarded) -> None:
    r = guarded("GET", "/things", token="pk_nobody")
    assert (r.status, r.error) == (401, {
        "code": "unauthenticated", "fields": [],
        "message": "the credential is unknown, revoked or expired"})
    assert r.headers["www-authenticate"] == 'Bearer realm="phi-ledger", error="invalid_token"'
    assert not guarded.recorder.scopes


def test_a_valid_credential_reaches_the_route_with_its_caller(
    guarded: Guarded, keys: dict[str, IssuedKey]
) -> None:
    key = keys["auditor"]
    body = b'{"a": 1}'
    first = guarded("POST", "/things", body, token=key.secret, state={"kept": True})
    assert first.reached and guarded.recorder.bodies == [body]
    caller = first.scope["state"]["caller"]
    assert (caller.id, caller.ledger, caller.roles) == (key.identity.id, LEDGER,
                                                        frozenset({AUDITOR}))
    assert first.scope["state"]["kept"] is True
    # the logs of the request name the identity
    assert guarded.recorder.identities == [key.identity.id]
    # a scope without a state gets one; the route's rule, now remembered, still applies
    second = guarded("POST", "/things", body, token=key.secret)
    assert second.reached and second.scope["state"]["caller"].id == key.identity.id
    assert guarded.recorder.scopes == [first.scope, second.scope]


def test_a_public_route_needs_no_credential(guarded: Guarded) -> None:
    r = guarded("POST", "/open", b"{}")
    assert r.reached and guarded.recorder.bodies == [b"{}"]
    assert "state" not in r.scope, "no caller for a public route"


def test_roles_outside_the_rule_are_forbidden(guarded: Guarded,
                                              keys: dict[str, IssuedKey]) -> None:
    key = keys["verifier"]
    with capture_logs() as logs:
        r = guarded("GET", "/things", token=key.secret)
    assert (r.status, r.error) == (403, {
        "code": "forbidden", "fields": [],
        "message": "your roles do not allow this request; allowed: auditor"})
    assert not guarded.recorder.scopes
    assert {"event": "access.denied", "identity": key.identity.id, "route": "/things",
            "log_level": "info"} in logs


@pytest.mark.parametrize(("query", "allowed"), [
    (b"ledger=" + LEDGER.encode(), True),
    (b"note=ledger", True),  # the word alone names no ledger
    (b"ledger=other", False),
    (b"ledger=" + LEDGER.encode() + b"&ledger=other", False),
    (b"%6Cedger=other", False),  # the framework decodes the name: so must the check
    (b"ledger=", False),  # a blank ledger is not the caller's
])
def test_naming_another_ledger_is_forbidden(guarded: Guarded, keys: dict[str, IssuedKey],
                                            query: bytes, allowed: bool) -> None:
    r = guarded("GET", "/things", token=keys["auditor"].secret, query=query)
    if allowed:
        assert r.reached
    else:
        assert (r.status, r.error) == (403, {"code": "forbidden", "fields": [],
                                             "message": "you may only use your own ledger"})
        assert not guarded.recorder.scopes


def test_a_route_without_a_rule_is_forbidden_to_everyone(
    guarded: Guarded, keys: dict[str, IssuedKey]
) -> None:
    for token in (None, keys["auditor"].secret):
        with capture_logs() as logs:
            r = guarded("GET", "/unruled", token=token)
        assert (r.status, r.error) == (403, {"code": "forbidden", "fields": [],
                                             "message": "no access rule covers this route"})
        assert logs == [{"event": "access.no_rule", "method": "GET", "route": "/unruled",
                         "log_level": "error"}]
    assert not guarded.recorder.scopes


def test_a_route_without_a_path_has_the_rule_of_the_empty_template(guarded: Guarded) -> None:
    host = ((b"host", b"other.example"),)
    r = guarded("GET", "/anything", headers=host)
    assert (r.status, r.error["code"]) == (401, "unauthenticated")
    assert r.scope["route"].path is None
    # a route with a path, before the host in route order, still comes first
    assert guarded("GET", "/open", headers=host).reached


def test_what_no_route_takes_is_left_to_the_framework(guarded: Guarded) -> None:
    """404 and 405 are the router's answers: the request goes on, unjudged."""
    for method, path in (("GET", "/nowhere"), ("POST", "/unruled")):
        r = guarded(method, path, b"{}")
        assert r.reached and "route" not in r.scope, (method, path)
    assert guarded.recorder.bodies == [b"{}", b"{}"]


def test_other_protocols_pass_untouched(guarded: Guarded) -> None:
    scope: Scope = {"type": "lifespan"}
    for app in (guarded.app, SecurityHeaders(guarded.recorder)):
        sent = call(app, scope)
        assert sent == [{"type": "echo", "message": {"type": "http.request", "body": b"",
                                                     "more_body": False}}]
    assert guarded.recorder.scopes == [scope, scope]


@pytest.mark.parametrize("method_path_token", [("POST", "/open", False),
                                               ("POST", "/things", True)])
def test_a_body_in_another_media_type_is_refused(
    guarded: Guarded, keys: dict[str, IssuedKey], method_path_token: tuple[str, str, bool]
) -> None:
    method, path, authenticated = method_path_token
    token = keys["auditor"].secret if authenticated else None
    r = guarded(method, path, b"x=1", media="text/plain", token=token)
    assert (r.status, r.error) == (415, {"code": "unsupported_media_type",
                                         "message": "the body must be application/json",
                                         "fields": ["content-type"]})
    assert not guarded.recorder.scopes


def test_a_route_taking_two_media_types_names_both(guarded: Guarded,
                                                   keys: dict[str, IssuedKey]) -> None:
    r = guarded("POST", "/fhir/things", b"x=1", media="text/plain",
                token=keys["auditor"].secret)
    assert (r.status, r.error["message"]) == (
        415, "the body must be application/fhir+json or application/json")


@pytest.mark.parametrize(("path", "query", "bad"), [
    ("/things/a\x00b", b"", ["thing_id"]),
    ("/things/a", b"q=%00", ["q"]),
    ("/things/a", b"q=a\x00", ["q"]),
    ("/things/a\x00", b"p=1&q=%00", ["thing_id", "q"]),
])
def test_a_parameter_holding_nul_is_refused(guarded: Guarded, keys: dict[str, IssuedKey],
                                            path: str, query: bytes, bad: list[str]) -> None:
    r = guarded("GET", path, query=query, token=keys["auditor"].secret)
    assert (r.status, r.error) == (400, {
        "code": "invalid_request", "fields": bad,
        "message": "; ".join(f"{name} must not contain NUL" for name in bad)})
    assert not guarded.recorder.scopes


def test_a_public_route_refuses_nul_too(guarded: Guarded) -> None:
    r = guarded("GET", "/open/a\x00")
    assert (r.status, r.error["fields"]) == (400, ["name"])


def test_clean_parameters_pass(guarded: Guarded, keys: dict[str, IssuedKey]) -> None:
    """Percent signs and a missing query string are not NUL."""
    assert guarded("GET", "/things/a%", query=b"q=%25", token=keys["auditor"].secret).reached
    scope = http_scope("GET", "/open/a")
    del scope["query_string"]
    assert answer(guarded.app, scope).reached


def test_unauthenticated_requests_are_limited_per_address(guarded: Guarded) -> None:
    burst = int(UNAUTHENTICATED_RATE.burst)
    # one address, whatever its port
    for port in range(burst):
        assert guarded("GET", "/things", client=("10.0.0.9", port)).status == 401
    r = guarded("GET", "/things", token="pk_nobody", client=("10.0.0.9", burst))
    assert (r.status, r.error) == (429, {
        "code": "rate_limited", "fields": [],
        "message": "too many requests; retry after the time in Retry-After"})
    # the frozen clock: one token takes 1/rate seconds, rounded up to a whole second
    assert r.headers["retry-after"] == "1"
    assert guarded("GET", "/things", client=("10.0.0.10", 1)).status == 401
    assert not guarded.recorder.scopes


def test_each_identity_has_its_own_limit_per_kind_of_route(
    guarded: Guarded, keys: dict[str, IssuedKey]
) -> None:
    one, other = keys["auditor"].secret, keys["other auditor"].secret
    assert guarded("GET", "/slow", token=one).reached
    r = guarded("GET", "/slow", token=one)
    assert (r.status, r.error["code"]) == (429, "rate_limited")
    assert r.headers["retry-after"] == str(int(1 / READ_RATE))  # an empty bucket's wait
    assert guarded("GET", "/slow", token=other).reached
    assert guarded("GET", "/things", token=one).reached  # another limit's bucket


def test_a_static_path_gets_the_route_the_router_would_take(guarded: Guarded) -> None:
    r = guarded("GET", "/kinds/things/all")
    assert r.reached and r.scope["route"].path == "/kinds/{kind}/{key}"


def test_under_a_root_path_routes_match_the_rest_of_the_path(guarded: Guarded) -> None:
    r = guarded("GET", "/mount/mount/things", root_path="/mount")
    assert r.reached and r.scope["route"].path == "/mount/{a}"


@pytest.mark.parametrize(("header", "credential"), [
    (b"Bearer  pk_abc", "pk_abc"),  # the credential starts after the first space
    (b"Bearer x", "x"),
    (b"Bearer    ", None),  # spaces are no credential
    (b"Bearer " + b"a" * 512, "a" * 512),
    (b"Bearer " + b"a" * 513, None),
    (b"Bearer p\xc3\xa9", None),
    (b"Basic pk_abc", None),
])
def test_bearer_credentials(header: bytes, credential: str | None) -> None:
    scope = {"headers": [(b"host", b"Bearer other"), (b"authorization", header)]}
    assert bearer(scope) == credential
    assert bearer({}) is None


def test_client_address() -> None:
    assert client_address({"client": ("10.1.2.3", 443)}) == "10.1.2.3"
    assert client_address({"client": None}) == "unknown"
    assert client_address({}) == "unknown"


def test_no_query_names_no_ledger() -> None:
    assert requested_ledgers({}) == []
    assert requested_ledgers({"query_string": b"a=%41"}) == []


def headers_of(scheme: str = "http", headers: list[tuple[bytes, bytes]] | None = None
               ) -> list[tuple[bytes, bytes]]:
    """The headers of an answer through SecurityHeaders, from an application that reads
    the request and answers with ``headers`` (none at all when None)."""
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        start: Message = {"type": "http.response.start", "status": 200}
        if headers is not None:
            start["headers"] = headers
        await send(start)
        await send({"type": "http.response.body", "body": scope["scheme"].encode()})

    sent = call(SecurityHeaders(inner), {"type": "http", "scheme": scheme})
    assert sent[1] == {"type": "http.response.body", "body": scheme.encode()}
    found: list[tuple[bytes, bytes]] = sent[0]["headers"]
    return found


EVERY_ANSWER = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def test_security_headers_are_added_to_every_answer() -> None:
    own = [(b"content-type", b"text/plain")]
    assert headers_of(headers=own) == own + EVERY_ANSWER
    assert headers_of() == EVERY_ANSWER  # an answer without headers of its own
    assert headers_of("https", own) == own + EVERY_ANSWER + [HSTS]  # HSTS: TLS only


def test_an_answer_keeps_its_own_policy() -> None:
    own = [(b"Content-Security-Policy", b"script-src 'self'")]
    assert headers_of(headers=own) == own + EVERY_ANSWER[:-1]
