"""The console over HTTP (no browser): sign-in, cookies, CSRF, purpose, expiry, reads
recorded as the API records them -- on SQLite and PostgreSQL.

The service's clock is injected (FakeClock) so TOTP steps and session expiry are exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth.credentials import totp_code, totp_step
from api.console.session import safe_next
from ledger.settings import Settings
from tests.support import (
    FakeClock,
    auth_headers,
    contract_example,
    fastapi_app,
    make_event,
    provision_key,
    provision_user,
)

PASSWORD = "correct horse battery staple"
PATIENT = "MRN-0012345"
LOOPBACK = ("127.0.0.1", 50000)


class Console:
    """A browser-like client of the console, plus an API key for posting and reading."""

    def __init__(self, app: Any, clock: FakeClock, seeds: dict[str, str], api: dict[str, str],
                 base_url: str = "https://testserver",
                 client: tuple[str, int] = LOOPBACK) -> None:
        self.app, self.clock, self.seeds, self.api = app, clock, seeds, api
        self.client = TestClient(app, base_url=base_url, client=client)

    def code(self, name: str) -> str:
        return totp_code(self.seeds[name], totp_step(self.clock.now))

    def csrf(self, html: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found, html
        return found.group(1)

    def sign_in(self, name: str = "alice", next: str = "/console", code: str | None = None
                ) -> Any:
        form = self.client.get("/console/sign-in", params={"next": next})
        assert form.status_code == 200, form.text
        self.clock.advance(seconds=30)  # a fresh TOTP step for every sign-in
        return self.client.post("/console/sign-in", data={
            "username": name, "password": PASSWORD, "totp": code or self.code(name),
            "csrf": self.csrf(form.text), "next": next}, follow_redirects=False)

    def choose(self, purpose: str = "HOPERAT", next: str = "/console") -> Any:
        page = self.client.get("/console/purpose", params={"next": next})
        return self.client.post("/console/purpose", data={
            "purpose": purpose, "csrf": self.csrf(page.text), "next": next},
            follow_redirects=False)

    def post(self, *events: dict[str, Any]) -> int:
        seq = 0
        for event in events:
            r = self.client.post("/v1/events", json=event, headers=self.api)
            assert r.status_code == 201, r.text
            seq = r.json()["seq"]
        svc = fastapi_app(self.app).state.services
        assert svc.projector.wait_for(svc.store.notification_of("default", seq), 10)
        return seq

    def entries(self) -> list[dict[str, Any]]:
        """The ledger's events, without the rule-set entry monitoring appends on its own
        schedule (when it first raises an alert): counts before and after a request see
        only what the request wrote."""
        r = self.client.get("/v1/ledger/entries", headers=self.api)
        assert r.status_code == 200, r.text
        return [e["event"] for e in r.json()["entries"]
                if e["event"]["action"] != "monitoring_rules"]

    def queries(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["action"] == "query"]


@pytest.fixture
def console(settings: Settings) -> Iterator[Console]:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start - timedelta(seconds=start.second % 30) + timedelta(seconds=5))
    settings = replace(settings, rate_login=1000.0)
    seeds = {"alice": provision_user(settings, "alice", PASSWORD, roles=["auditor"]),
             "vera": provision_user(settings, "vera", PASSWORD, roles=["verifier"])}
    api = auth_headers(provision_key(settings.database_url,
                                     roles=["ingest", "auditor", "verifier"]))
    app = create_app(settings, clock=clock, configure_logs=False)
    c = Console(app, clock, seeds, api)
    with c.client:
        yield c


def _history(c: Console) -> None:
    c.post(make_event(action="create", resource={"type": "patient", "id": PATIENT},
                      data={"name": "Ana M. Reyes", "dob": "1980-02-03"}),
           make_event(), make_event(actor={"id": "agent-0099", "kind": "user"},
                                    purpose="ETREAT"),
           {**contract_example(), "purpose": "LEGAL"})  # accountable: not for TPO


def test_sign_in_sets_a_strict_session_cookie_over_tls(console: Console) -> None:
    form = console.client.get("/console")
    assert form.status_code == 200 and 'name="totp"' in form.text
    r = console.sign_in(next="/console/ledger")
    assert r.status_code == 303 and r.headers["location"] == "/console/ledger"
    session = next(h for h in r.headers.get_list("set-cookie")
                   if h.startswith("__Host-phl_session=pht_"))
    flags = {part.strip().split("=")[0] for part in session.split(";")}
    assert {"HttpOnly", "Secure", "Path", "Max-Age"} <= flags
    assert "SameSite=Strict" in session and "Path=/" in session and "Domain" not in session
    assert "Max-Age=900" in session or "Max-Age=899" in session
    home = console.client.get("/console")
    assert "Signed in as" in home.text and "alice" in home.text
    assert "login" in [e["action"] for e in console.entries()]


def test_plain_http_signs_in_only_a_local_browser(settings: Settings) -> None:
    clock = FakeClock()
    seed = provision_user(settings, "alice", PASSWORD)
    app = create_app(settings, clock=clock, configure_logs=False)
    with TestClient(app, base_url="http://testserver", client=("198.51.100.7", 1)) as remote:
        assert remote.get("/console").status_code == 400
        r = remote.post("/console/sign-in", data={"username": "alice"})
        assert r.status_code == 400 and "HTTPS" in r.text
    local = Console(app, clock, {"alice": seed}, {}, base_url="http://testserver")
    with local.client:
        r = local.sign_in()
        assert r.status_code == 303
        session = next(h for h in r.headers.get_list("set-cookie")
                       if h.startswith("phl_session="))
        assert "HttpOnly" in session and "SameSite=Strict" in session
        assert "Secure" not in session  # a browser would drop it over http://


def test_every_console_answer_has_a_strict_csp(console: Console) -> None:
    _history(console)
    pages = ["/console", "/console/sign-in"]
    console.sign_in()
    console.choose()
    pages += [f"/console/patients/{PATIENT}", "/console/users/agent-0042", "/console/ledger",
              "/console/purpose"]
    for path in pages:
        r = console.client.get(path)
        assert r.status_code == 200, (path, r.text)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "style-src 'self'" in csp, path
        assert "unsafe-inline" not in csp and "script-src" not in csp, path
        assert "<script" not in r.text and " style=" not in r.text, path
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    css = console.client.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    letter = console.client.get(f"/console/patients/{PATIENT}/accounting?format=html")
    assert letter.status_code == 200 and "Dr. A. Rivera" in letter.text
    csp = letter.headers["content-security-policy"]
    assert "'sha256-" in csp and "unsafe-inline" not in csp


def test_state_changes_without_the_csrf_token_are_refused(console: Console) -> None:
    # sign-in without the pre-session cookie's token
    r = console.client.post("/console/sign-in", data={
        "username": "alice", "password": PASSWORD, "totp": console.code("alice"),
        "csrf": "forged", "next": "/console"}, follow_redirects=False)
    assert r.status_code == 400 and "CSRF" in r.text
    assert "login" not in [e["action"] for e in console.entries()]  # never tried
    assert console.sign_in().status_code == 303
    # the purpose, with a wrong token: refused, nothing chosen
    r = console.client.post("/console/purpose", data={
        "purpose": "HOPERAT", "csrf": "A" * 43, "next": "/console"}, follow_redirects=False)
    assert r.status_code == 400
    assert "Purpose: <strong id=\"purpose\">not chosen" in console.client.get("/console").text
    # sign-out without a token: refused, the session goes on
    r = console.client.post("/console/sign-out", data={}, follow_redirects=False)
    assert r.status_code == 400
    assert "Signed in as" in console.client.get("/console").text
    assert "logout" not in [e["action"] for e in console.entries()]
    # verify-now, too
    r = console.client.post("/console/ledger/verify", data={"csrf": ""},
                            follow_redirects=False)
    assert r.status_code == 400


def test_no_page_shows_phi_without_a_purpose(console: Console) -> None:
    _history(console)
    console.sign_in()
    before = len(console.queries())
    for path in (f"/console/patients/{PATIENT}", "/console/users/agent-0042",
                 f"/console/patients/{PATIENT}/accounting?format=html",
                 f"/console/patients/{PATIENT}/accounting?format=csv"):
        r = console.client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/console/purpose?next=%2Fconsole%2F")
        assert "Reyes" not in r.text and "Rivera" not in r.text
    assert len(console.queries()) == before  # nothing was read, nothing recorded
    assert console.choose(next=f"/console/patients/{PATIENT}").headers["location"] == (
        f"/console/patients/{PATIENT}")
    page = console.client.get(f"/console/patients/{PATIENT}")
    assert "Ana M. Reyes" in page.text and "HOPERAT - health care operations" in page.text


def test_console_reads_are_recorded_as_the_api_records_them(console: Console) -> None:
    _history(console)
    console.sign_in()
    console.choose("HOPERAT")
    page = console.client.get(f"/console/patients/{PATIENT}")
    assert page.status_code == 200
    # the four entries, newest first (the page's own reads run side by side, so one may
    # already show as a `query` row)
    assert page.text.count('class="access ') - page.text.count('class="access action-query') == 4
    assert "break-the-glass" in page.text and 'href="/console/users/agent-0099"' in page.text
    recorded = console.queries()
    kinds = sorted(q["resource"]["type"] for q in recorded)
    assert kinds == ["access_report", "access_report", "disclosure_accounting",
                     "patient_record"]
    alice = recorded[0]["actor"]["id"]
    assert alice.startswith("usr-")
    # The same user through the JSON API, with a bearer token from the API's login.
    console.clock.advance(seconds=30)
    token = console.client.post("/v1/auth/login", json={
        "username": "alice", "password": PASSWORD, "totp": console.code("alice")}).json()
    r = console.client.get(f"/v1/patients/{PATIENT}", params={"purpose": "HOPERAT"},
                           headers=auth_headers(token["token"]))
    assert r.status_code == 200
    api_read = console.queries()[-1]
    console_read = next(q for q in recorded if q["resource"]["type"] == "patient_record")

    def shape(event: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in event.items() if k not in ("event_id", "occurred_at")}

    assert shape(api_read) == shape(console_read)
    assert console_read["purpose"] == "HOPERAT" and console_read["actor"]["id"] == alice


def test_an_expired_session_returns_to_sign_in_with_the_page_asked_for(
        console: Console) -> None:
    _history(console)
    console.sign_in()
    console.choose()
    wanted = f"/console/patients/{PATIENT}?action=read"
    assert console.client.get(wanted).status_code == 200
    console.clock.advance(minutes=16)  # sessions last 15 minutes
    r = console.client.get(wanted, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == ("/console/sign-in?next=%2Fconsole%2Fpatients%2F"
                                     "MRN-0012345%3Faction%3Dread&expired=1")
    form = console.client.get(r.headers["location"])
    assert "session has ended" in form.text and 'value="/console/patients/MRN-0012345?' \
        'action=read"' in form.text
    r = console.sign_in(next=f"/console/patients/{PATIENT}?action=read")
    assert r.headers["location"] == wanted
    # A new session asks for the purpose again.
    assert console.client.get(wanted, follow_redirects=False).headers["location"].startswith(
        "/console/purpose")


def test_next_goes_only_to_local_console_paths() -> None:
    for bad in ("https://evil.example/console", "//evil.example/console", "/\\evil.example",
                "/consolex", "/v1/patients/x", "javascript:alert(1)", "/console\r\nX: y",
                "", None):
        assert safe_next(bad) == "/console", bad
    assert safe_next("/console/users/u-1?from=2026-01-01") == "/console/users/u-1?from=2026-01-01"


def test_an_api_key_is_no_console_session(console: Console) -> None:
    key = provision_key(console.app and fastapi_app(console.app).state.services.settings
                        .database_url, roles=["auditor"])
    console.client.cookies.set("__Host-phl_session", key)
    r = console.client.get("/console/ledger", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")


def test_sign_out_ends_the_session(console: Console) -> None:
    console.sign_in()
    cookie = console.client.cookies.get("__Host-phl_session")
    home = console.client.get("/console")
    r = console.client.post("/console/sign-out", data={"csrf": console.csrf(home.text)},
                            follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console?signed_out=1"
    assert "logout" in [e["action"] for e in console.entries()]
    console.client.cookies.set("__Host-phl_session", cookie or "")
    r = console.client.get("/console/ledger", follow_redirects=False)
    assert r.status_code == 303 and "/console/sign-in" in r.headers["location"]


def test_roles_govern_pages_as_in_the_api(console: Console) -> None:
    _history(console)
    console.sign_in("vera")  # a verifier: the chain, never PHI
    console.choose()
    r = console.client.get(f"/console/patients/{PATIENT}")
    assert r.status_code == 403 and "Reyes" not in r.text
    ledger = console.client.get("/console/ledger")
    assert ledger.status_code == 200 and "none recorded by this service" in ledger.text
    r = console.client.post("/console/ledger/verify", data={"csrf": console.csrf(ledger.text)},
                            follow_redirects=False)
    assert r.status_code == 303
    after = console.client.get(r.headers["location"])
    assert "the chain is intact" in after.text
    assert re.search(r"by usr-[0-9a-f]+: intact through seq \d+", after.text)


def test_failed_sign_ins_are_recorded_and_lock_as_in_the_api(console: Console) -> None:
    for _ in range(5):
        r = console.sign_in(code="000000")
        assert r.status_code == 401 and "Sign-in failed" in r.text
    actions = [e["action"] for e in console.entries()]
    assert actions.count("login_failed") == 5 and "account_locked" in actions
    r = console.sign_in()  # the right code, but locked
    assert r.status_code == 401


def test_sign_in_is_rate_limited_with_the_api(settings: Settings) -> None:
    clock = FakeClock()
    seed = provision_user(settings, "alice", PASSWORD)
    app = create_app(replace(settings, rate_login=3.0), clock=clock, configure_logs=False)
    c = Console(app, clock, {"alice": seed}, {})
    with c.client:
        codes = []
        for _ in range(4):  # the clock stands still: no bucket refills
            form = c.client.get("/console/sign-in")
            codes.append(c.client.post("/console/sign-in", data={
                "username": "alice", "password": PASSWORD, "totp": "000000",
                "csrf": c.csrf(form.text), "next": "/console"}).status_code)
        assert codes == [401, 401, 401, 429]
        # the API's login shares the buckets
        r = c.client.post("/v1/auth/login", json={"username": "alice", "password": "x",
                                                  "totp": "000000"})
        assert r.status_code == 429


def test_filters_and_paging(console: Console) -> None:
    console.post(*[make_event(occurred_at=f"2026-11-{10 + i // 40:02d}T10:{i % 40:02d}:00Z")
                   for i in range(60)],
                 make_event(action="disclose", channel="secure_sms",
                            occurred_at="2026-11-20T09:00:00Z",
                            disclosure={"recipient": {"name": "Dr. B", "kind": "provider"},
                                        "description": "x", "encrypted": True}))
    console.sign_in()
    console.choose()
    page = console.client.get(f"/console/patients/{PATIENT}")
    assert page.text.count('class="access ') == 50 and 'id="older"' in page.text
    older = re.search(r'id="older" href="([^"]+)"', page.text)
    assert older
    rest = console.client.get(older.group(1).replace("&amp;", "&"))
    assert rest.status_code == 200 and rest.text.count('class="access ') == 11
    only = console.client.get(f"/console/patients/{PATIENT}?action=disclose")
    assert only.text.count('class="access ') == 1
    day = console.client.get(f"/console/patients/{PATIENT}?from=2026-11-11&to=2026-11-11")
    assert day.text.count('class="access ') == 20
    bad = console.client.get(f"/console/patients/{PATIENT}?from=yesterday")
    assert bad.status_code == 400 and "from" in bad.text
    user = console.client.get("/console/users/agent-0042")
    assert user.status_code == 200 and 'class="volume"' in user.text
    assert 'href="/console/patients/MRN-0012345"' in user.text


def test_the_ledger_page_shows_the_stores_checkpoint_and_projection_lag(
        settings: Settings) -> None:
    # Views and checkpoints move only when this test says, so the page's figures are
    # the store's own and nothing moves them between the page and the check.
    settings = replace(settings, rate_login=1000.0, project_inline=False,
                       checkpoints_inline=False)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start - timedelta(seconds=start.second % 30) + timedelta(seconds=5))
    seeds = {"vera": provision_user(settings, "vera", PASSWORD, roles=["verifier"])}
    api = auth_headers(provision_key(settings.database_url, roles=["ingest"]))
    c = Console(create_app(settings, clock=clock, configure_logs=False), clock, seeds, api)
    with c.client:
        svc = fastapi_app(c.app).state.services
        assert c.sign_in("vera").status_code == 303
        svc.projector.catch_up()
        page = c.client.get("/console/ledger")
        assert _dd(page.text, "checkpoint") == "none yet"
        assert _dd(page.text, "lag") == "; ".join(
            f"{view}: 0 entries" for view in sorted(svc.projector.positions())) + " (0.0 s behind)"
        for n in range(4):
            assert c.client.post("/v1/events", json=make_event(),
                                 headers=api).status_code == 201
            if n == 2:  # a checkpoint short of the head, so size and head differ
                signed = svc.checkpointer.sign("default")
        c.clock.advance(seconds=90)  # the four entries were recorded 90 s ago
        page = c.client.get("/console/ledger")
        assert page.status_code == 200
        head = svc.store.head("default")
        assert _dd(page.text, "head-seq") == f"seq {head.seq}"
        assert signed is not None and signed.size == head.seq - 1
        latest = svc.tlog.latest("default")
        assert latest is not None and latest.note.endswith("\n")
        assert _dd(page.text, "checkpoint") == (
            f"tree size {latest.size}, signed {latest.signed_at}{latest.note}")
        positions, last = svc.projector.positions(), svc.store.last_notification()
        assert set(positions.values()) == {last - 4}
        assert _dd(page.text, "lag") == "; ".join(
            f"{view}: 4 entries" for view in sorted(positions)) + " (90.0 s behind)"
        svc.projector.catch_up()
        assert _dd(c.client.get("/console/ledger").text, "lag").endswith(
            ": 0 entries (0.0 s behind)")


def _dd(html: str, dd_id: str) -> str:
    """The text of the ``<dd id=...>`` (tags dropped, entities decoded, spaces kept)."""
    found = re.search(rf'<dd id="{dd_id}">(.*?)</dd>', html, re.S)
    assert found, dd_id
    return unescape(re.sub(r"<[^>]+>", "", found.group(1)))
