"""People: password + TOTP -> a short-lived bearer token, on SQLite and PostgreSQL.

The service's clock is injected (tests.support.FakeClock), so TOTP steps, token expiry
and lockouts are exact. Every login, failed login, lockout and logout must be a ledger
entry in the person's ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth.credentials import (
    LOCKOUT_FAILURES,
    LoginState,
    accepted_totp_step,
    judge_login,
    totp_code,
    totp_step,
)
from ledger.event import check_event
from ledger.settings import Settings
from ledger.store.sqlite import sqlite_path
from tests.support import FakeClock, auth_headers, fastapi_app, provision_key, provision_user

PASSWORD = "correct horse battery staple"


class Peer:
    """The client address the service sees (as a server would put it in the scope):
    outside the service, so a test can log in from two places."""

    def __init__(self, app: Any) -> None:
        self.app, self.address = app, ("testclient", 50000)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": self.address}
        await self.app(scope, receive, send)


class Service:
    def __init__(self, client: TestClient, clock: FakeClock, reader: dict[str, str],
                 seed: str, peer: Peer) -> None:
        self.client, self.clock, self.reader, self.seed = client, clock, reader, seed
        self.peer = peer

    def code(self, steps: int = 0) -> str:
        return totp_code(self.seed, totp_step(self.clock.now) + steps)

    def login(self, username: str = "alice", password: str = PASSWORD,
              totp: str | None = None) -> Any:
        return self.client.post("/v1/auth/login", json={
            "username": username, "password": password, "totp": totp or self.code()})

    def entries(self) -> list[dict[str, Any]]:
        r = self.client.get("/v1/ledger/entries", headers=self.reader)
        assert r.status_code == 200, r.text
        return r.json()["entries"]

    def actions(self) -> list[str]:
        return [e["event"]["action"] for e in self.entries()]


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    # Mid-step, so "the current step" does not change under a test's feet.
    start = datetime.now(UTC).replace(microsecond=0)
    start = start - timedelta(seconds=start.second % 30) + timedelta(seconds=10)
    clock = FakeClock(start)
    reader = auth_headers(provision_key(settings.database_url, roles=["verifier"]))
    seed = provision_user(settings, "alice", PASSWORD, roles=["auditor"])
    peer = Peer(create_app(settings, clock=clock, configure_logs=False))
    with TestClient(peer) as client:
        yield Service(client, clock, reader, seed, peer)


def test_login_gives_a_short_lived_token_and_is_recorded(service: Service) -> None:
    assert service.actions() == ["identity_created", "totp_enrolled"]
    r = service.login()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["token"].startswith("pht_")
    assert body["expires_in"] == 15 * 60
    assert body["identity"]["name"] == "alice" and body["identity"]["roles"] == ["auditor"]
    token = auth_headers(body["token"])
    me = service.client.get("/v1/auth/whoami", headers=token).json()
    assert me["kind"] == "user" and me["ledger"] == "default" and me["name"] == "alice"

    login = service.entries()[-1]["event"]
    assert login["action"] == "login" and login["outcome"] == "success"
    assert login["actor"]["id"] == me["id"] and login["actor"]["mfa"] is True
    assert login["actor"]["session_id"].startswith("ses-")
    assert check_event(login) == [], "the service's login events follow the public schema"

    # an auditor's token reaches auditor routes, and nothing else
    assert service.client.post("/v1/events", json={}, headers=token).status_code == 403
    service.clock.advance(minutes=14, seconds=59)
    assert service.client.get("/v1/auth/whoami", headers=token).status_code == 200
    service.clock.advance(seconds=1)
    expired = service.client.get("/v1/auth/whoami", headers=token)
    assert expired.status_code == 401, "a token is refused from the moment it expires"
    assert expired.json()["error"]["code"] == "unauthenticated"


def test_a_totp_code_is_accepted_once(service: Service) -> None:
    code = service.code()
    assert service.login(totp=code).status_code == 200
    replay = service.login(totp=code)
    assert replay.status_code == 401 and "token" not in replay.text
    failed = service.entries()[-1]["event"]
    assert failed["action"] == "login_failed" and failed["outcome"] == "failure"
    assert failed["resource"] == {"type": "login_factor", "id": "totp"}
    assert check_event(failed) == []
    # ... nor an older code of the window, once a newer one was used
    assert service.login(totp=service.code(-1)).status_code == 401
    service.clock.advance(seconds=30)
    assert service.login().status_code == 200, "the next step's code works"


def test_an_expired_totp_code_is_refused(service: Service) -> None:
    assert service.login(totp=service.code(-2)).status_code == 401  # 60 s old
    assert service.login(totp=service.code(+2)).status_code == 401  # 60 s ahead
    assert service.login(totp=service.code(-1)).status_code == 200  # drift allowed


def test_wrong_password_and_unknown_name_answer_alike(service: Service) -> None:
    before = len(service.entries())
    wrong = service.login(password="not the password at all")
    unknown = service.login(username="mallory")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    events = [e["event"] for e in service.entries()[before:]]
    # an unknown name belongs to no tenant: logged, not appended to anyone's ledger
    assert [(e["action"], e["resource"]["id"]) for e in events] == [
        ("login_failed", "password")]


def test_repeated_failures_lock_the_account(service: Service) -> None:
    for _ in range(LOCKOUT_FAILURES):
        assert service.login(password="wrong wrong wrong").status_code == 401
    tail = service.actions()[-(LOCKOUT_FAILURES + 1):]
    assert tail == ["login_failed"] * LOCKOUT_FAILURES + ["account_locked"]
    locked = service.entries()[-1]["event"]
    assert locked["data"]["locked_until"] > locked["occurred_at"][:19]
    # locked: even the right password and code are refused, and that is recorded
    assert service.login().status_code == 401
    refused = service.entries()[-1]["event"]
    assert refused["action"] == "login_failed" and refused["outcome"] == "denied"
    assert refused["resource"]["id"] == "locked"
    service.clock.advance(minutes=14)
    assert service.login(totp=service.code()).status_code == 401
    service.clock.advance(minutes=1, seconds=30)
    assert service.login().status_code == 200, "the lock lifts after 15 minutes"


def test_wrong_passwords_lock_out_their_address_not_the_owner(service: Service) -> None:
    """Five wrong passwords from one address must not lock the account's owner out from
    everywhere (issue 17): the lock is per (identity, client address)."""
    service.peer.address = ("203.0.113.66", 41000)
    for _ in range(LOCKOUT_FAILURES):
        assert service.login(password="wrong wrong wrong").status_code == 401
    assert service.actions()[-1] == "account_locked"
    assert service.login().status_code == 401, "the guessing address stays locked out"
    assert service.entries()[-1]["event"]["resource"]["id"] == "locked"
    service.peer.address = ("198.51.100.7", 41000)
    assert service.login().status_code == 200, "the owner, elsewhere, is not"
    alice = fastapi_app(service.peer.app).state.services.access.identities.by_name("alice")
    assert alice.locked_until is not None, "the admin listing still shows the lock"
    service.peer.address = ("203.0.113.66", 41000)
    service.clock.advance(seconds=30)
    assert service.login(totp=service.code()).status_code == 401, "a success elsewhere " \
        "lifts no other address's lock"


def test_no_shared_bucket_lets_one_address_keep_the_owner_out(service: Service) -> None:
    """A limit by name, shared by every address, was a lockout by another name: ten
    attempts a minute from anywhere kept its owner at 429."""
    service.peer.address = ("203.0.113.66", 41000)
    answers = [service.login(password="wrong wrong wrong").status_code for _ in range(11)]
    assert answers[:10] == [401] * 10 and answers[10] == 429
    service.peer.address = ("198.51.100.7", 41000)
    assert service.login().status_code == 200


def test_login_attempts_are_rate_limited(service: Service) -> None:
    # 10 a minute from one address (the clock stands still: nothing refills)
    answers = [service.login(username=f"nobody-{i}").status_code for i in range(11)]
    assert answers[:10] == [401] * 10 and answers[10] == 429
    limited = service.login()
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    service.clock.advance(seconds=60)
    assert service.login().status_code == 200


def test_logout_ends_the_session(service: Service) -> None:
    token = auth_headers(service.login().json()["token"])
    r = service.client.post("/v1/auth/logout", headers=token)
    assert r.status_code == 200 and r.json()["logged_out"].startswith("ses-")
    assert service.client.get("/v1/auth/whoami", headers=token).status_code == 401
    logout = service.entries()[-1]["event"]
    assert logout["action"] == "logout" and check_event(logout) == []


def test_login_body_is_checked_without_echoing_it(service: Service) -> None:
    r = service.client.post("/v1/auth/login", json={"username": "alice", "password": 5,
                                                     "extra": "x"})
    assert r.status_code == 422
    assert set(r.json()["error"]["fields"]) == {"password", "totp", "(body) member 3"}
    assert "alice" not in r.text


def test_secrets_at_rest_are_hashed_or_sealed(service: Service, settings: Settings) -> None:
    token = service.login().json()["token"]
    rows = _identity_rows(settings.database_url)
    alice = next(r for r in rows["identities"] if r[1] == "alice")
    assert alice[2].startswith("$argon2id$") and PASSWORD not in str(rows)
    assert alice[3].startswith("enc:v1:") and service.seed not in str(rows)
    assert token not in str(rows)


def _identity_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    queries = {"identities": "SELECT id, name, password_hash, totp_secret FROM identities",
               "credentials": "SELECT * FROM credentials"}
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(sqlite_path(url)) as conn:
            return {k: conn.execute(q).fetchall() for k, q in queries.items()}
    with psycopg.connect(url) as conn:
        return {k: conn.execute(q).fetchall() for k, q in queries.items()}


# -- the pure rules ------------------------------------------------------------------------

NOW = datetime(2026, 11, 26, 12, 0, 10, tzinfo=UTC)
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_totp_window_and_replay() -> None:
    step = totp_step(NOW)
    code = totp_code(SEED, step)
    assert accepted_totp_step(SEED, code, NOW, None) == step
    assert accepted_totp_step(SEED, code, NOW, step) is None, "replayed"
    assert accepted_totp_step(SEED, code, NOW, step - 1) == step
    assert accepted_totp_step(SEED, code, NOW + timedelta(seconds=30), None) == step
    assert accepted_totp_step(SEED, code, NOW + timedelta(seconds=60), None) is None
    assert accepted_totp_step(SEED, "12345", NOW, None) is None
    assert accepted_totp_step(SEED, "abcdef", NOW, None) is None


def test_judge_login() -> None:
    fresh = LoginState(0, None, None)
    ok = judge_login(fresh, NOW, enrolled=True, password_ok=True, totp_step=7)
    assert ok.outcome == "success" and ok.state == LoginState(0, None, 7)
    state = fresh
    for n in range(1, LOCKOUT_FAILURES):
        verdict = judge_login(state, NOW, enrolled=True, password_ok=False, totp_step=None)
        assert verdict.outcome == "failure" and not verdict.locked_now
        state = verdict.state
        assert state.failed_logins == n
    last = judge_login(state, NOW, enrolled=True, password_ok=True, totp_step=None)
    assert last.locked_now and last.factor == "totp"
    assert last.state.locked_until == NOW + timedelta(minutes=15)
    during = judge_login(last.state, NOW + timedelta(minutes=5), enrolled=True,
                         password_ok=True, totp_step=9)
    assert during.outcome == "locked" and during.state == last.state
    after = judge_login(last.state, NOW + timedelta(minutes=15), enrolled=True,
                        password_ok=True, totp_step=9)
    assert after.outcome == "success"
    unenrolled = judge_login(fresh, NOW, enrolled=False, password_ok=True, totp_step=None)
    assert unenrolled.outcome == "failure" and unenrolled.factor == "not_enrolled"
    assert replace(fresh, failed_logins=1) == LoginState(1, None, None)
