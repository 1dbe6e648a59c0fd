"""API keys: made by the CLI or an admin, shown once, stored as a hash, revocable,
expiring; every creation and revocation is a ledger entry. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from ledger.store.sqlite import sqlite_path
from tests.support import ROOT, FakeClock, auth_headers, make_event, provision_key

KEY = re.compile(r"^phk_[A-Za-z0-9_-]{43}$")


def cli(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "info"}
    return subprocess.run([sys.executable, "-m", "api.cli", "admin", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, input=stdin)


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(sqlite_path(url)) as conn:
            return conn.execute(query).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def entries(client: TestClient, headers: dict[str, str], ledger: str = "default"
            ) -> list[dict[str, Any]]:
    r = client.get("/v1/ledger/entries", headers=headers)
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["entries"]]


@pytest.fixture
def uncached(settings: Settings) -> Settings:
    """Settings whose service re-checks every credential on every request."""
    return replace(settings, auth_cache_seconds=0.0)


def test_there_is_no_default_credential(settings: Settings) -> None:
    with TestClient(create_app(settings, configure_logs=False)) as client:
        assert client.get("/v1/ledger").status_code == 401
        assert client.post("/v1/events", json=make_event()).status_code == 401
        for name, password in (("admin", "admin"), ("admin", "password"), ("root", "")):
            r = client.post("/v1/auth/login",
                            json={"username": name, "password": password or "x", "totp": "0"})
            assert r.status_code == 401, (name, r.text)
            assert r.json()["error"]["code"] == "unauthenticated"
    assert rows(settings.database_url, "SELECT count(*) FROM identities") == [(0,)]


def test_cli_key_is_shown_once_stored_as_a_hash_and_recorded(uncached: Settings) -> None:
    made = cli(uncached, "create-key", "--role", "ingest", "--role", "verifier",
               "--name", "answer-desk")
    assert made.returncode == 0, made.stderr
    key = made.stdout.rstrip("\n").splitlines()[-1]
    assert KEY.match(key), "the key, alone, on the last line of stdout"
    assert key not in made.stderr
    stored = rows(uncached.database_url, "SELECT secret_hash, kind, name FROM credentials")
    assert stored == [(hashlib.sha256(key.encode()).hexdigest(), "api_key", "answer-desk")]
    everything = str(rows(uncached.database_url, "SELECT * FROM identities")) + str(stored)
    assert key not in everything and key[4:] not in everything

    with TestClient(create_app(uncached, configure_logs=False)) as client:
        headers = auth_headers(key)
        r = client.post("/v1/events", json=make_event(), headers=headers)
        assert r.status_code == 201, r.text
        events = entries(client, headers)
        assert [e["action"] for e in events] == ["identity_created", "key_created", "read"]
        created = events[1]
        assert created["actor"] == {"id": "operator", "kind": "system"}
        assert created["resource"]["type"] == "api_key"
        assert created["data"]["roles"] == ["ingest", "verifier"]
        assert key not in str(events)
        # the key's own identity may not read PHI: it holds ingest and verifier only
        assert client.get("/v1/patients/MRN-1", params={"purpose": "HOPERAT"},
                          headers=headers).status_code == 403

        key_id = created["resource"]["id"]
        revoked = cli(uncached, "revoke-key", key_id)
        assert revoked.returncode == 0, revoked.stderr
        refused = client.post("/v1/events", json=make_event(), headers=headers)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    again = cli(uncached, "revoke-key", key_id)
    assert again.returncode == 2 and "revoked" in again.stderr
    verifier = provision_key(uncached.database_url, roles=["verifier"])
    with TestClient(create_app(uncached, configure_logs=False)) as client:
        last = entries(client, auth_headers(verifier))[-1]
    assert last["action"] == "key_revoked" and last["resource"]["id"] == key_id


def test_cli_refuses_bad_requests_in_one_line(settings: Settings) -> None:
    for args in (("create-key", "--role", "superuser"),
                 ("create-key", "--role", "ingest", "--ledger", "Bad Name"),
                 ("revoke-key", "key-0000000000")):
        r = cli(settings, *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_an_expired_key_is_refused(settings: Settings) -> None:
    clock = FakeClock(datetime.now(UTC))
    key = provision_key(settings.database_url, expires_at=clock.now + timedelta(hours=1))
    with TestClient(create_app(settings, clock=clock, configure_logs=False),
                    headers=auth_headers(key)) as client:
        assert client.get("/v1/ledger").status_code == 200
        clock.advance(minutes=59)
        assert client.get("/v1/ledger").status_code == 200
        clock.advance(minutes=1)
        assert client.get("/v1/ledger").status_code == 401, "cached or not, expiry holds"


def test_cli_expiry(uncached: Settings) -> None:
    made = cli(uncached, "create-key", "--role", "verifier", "--expires-in-days", "1")
    assert made.returncode == 0 and "expires" in made.stdout
    key = made.stdout.splitlines()[-1]
    clock = FakeClock(datetime.now(UTC))
    with TestClient(create_app(uncached, clock=clock, configure_logs=False),
                    headers=auth_headers(key)) as client:
        assert client.get("/v1/ledger").status_code == 200
        clock.advance(days=1, seconds=1)
        assert client.get("/v1/ledger").status_code == 401


@pytest.fixture
def admin(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    admin_key = provision_key(settings.database_url, roles=["admin"])
    reader = provision_key(settings.database_url, roles=["verifier"])
    with TestClient(create_app(settings, configure_logs=False)) as client:
        yield client, auth_headers(admin_key), auth_headers(reader)


def test_admin_makes_lists_and_revokes_keys_of_its_own_ledger(
    admin: tuple[TestClient, dict[str, str], dict[str, str]], settings: Settings,
) -> None:
    client, headers, reader = admin
    r = client.post("/v1/admin/keys", json={"roles": ["ingest"], "name": "desk-2"},
                    headers=headers)
    assert r.status_code == 201, r.text
    made = r.json()
    key = made["key"]
    assert KEY.match(key) and made["ledger"] == "default"
    assert client.post("/v1/events", json=make_event(), headers=auth_headers(key)
                       ).status_code == 201

    listing = client.get("/v1/admin/identities", headers=headers)
    assert listing.status_code == 200
    assert key not in listing.text
    assert hashlib.sha256(key.encode()).hexdigest() not in listing.text
    desk = next(i for i in listing.json()["identities"] if i["name"] == "desk-2")
    assert desk["roles"] == ["ingest"] and desk["keys"][0]["id"] == made["key_id"]

    # the admin itself sees no PHI and cannot post events
    assert client.get("/v1/patients/MRN-1", params={"purpose": "HOPERAT"},
                      headers=headers).status_code == 403
    assert client.post("/v1/events", json=make_event(), headers=headers).status_code == 403

    gone = client.delete(f"/v1/admin/keys/{made['key_id']}", headers=headers)
    assert gone.status_code == 200
    # revoked through this process: refused at once, cache or not
    assert client.post("/v1/events", json=make_event(), headers=auth_headers(key)
                       ).status_code == 401
    assert client.delete(f"/v1/admin/keys/{made['key_id']}", headers=headers
                         ).status_code == 409
    actions = [(e["action"], e["actor"]["id"]) for e in entries(client, reader)]
    admin_id = client.get("/v1/auth/whoami", headers=headers).json()["id"]
    assert ("key_created", admin_id) in actions and ("key_revoked", admin_id) in actions

    # another tenant's admin sees none of it and can revoke nothing here
    other = auth_headers(provision_key(settings.database_url, roles=["admin"],
                                       ledger="other-org"))
    theirs = client.get("/v1/admin/identities", headers=other).json()
    assert theirs["ledger"] == "other-org"
    assert all(i["ledger"] == "other-org" for i in theirs["identities"])
    mine = client.post("/v1/admin/keys", json={"roles": ["verifier"]}, headers=headers).json()
    assert client.delete(f"/v1/admin/keys/{mine['key_id']}", headers=other).status_code == 404
    assert client.get("/v1/ledger", headers=auth_headers(mine["key"])).status_code == 200


def test_admin_key_requests_are_checked(
    admin: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, headers, _ = admin
    for body, field in (({"roles": []}, "roles"),
                        ({"roles": ["ingest"], "x": 1}, "(body) member 2"),
                        ({"roles": ["ingest"], "expires_at": "tomorrow"}, "expires_at"),
                        ({"roles": ["ingest"], "expires_at": "2020-01-01T00:00:00"},
                         "expires_at")):
        r = client.post("/v1/admin/keys", json=body, headers=headers)
        assert r.status_code == 422 and field in r.json()["error"]["fields"], (body, r.text)
    for refused in ({"roles": ["root"]}, {"roles": ["ingest"],
                                          "expires_at": "2020-01-01T00:00:00Z"}):
        assert client.post("/v1/admin/keys", json=refused, headers=headers).status_code == 422
    missing = client.post("/v1/admin/keys", json={"roles": ["ingest"], "identity": "app-x"},
                          headers=headers)
    assert missing.status_code == 404


def test_cli_manages_people(settings: Settings) -> None:
    from urllib.parse import parse_qs, urlsplit

    from api.auth.credentials import totp_code, totp_step

    def seed_of(done: subprocess.CompletedProcess) -> str:
        assert done.returncode == 0, done.stderr
        uri = done.stdout.splitlines()[-1]
        assert uri.startswith("otpauth://totp/")
        return parse_qs(urlsplit(uri).query)["secret"][0]

    first_password, second_password = "first passphrase here", "second passphrase here"
    seed = seed_of(cli(settings, "create-user", "--name", "dana", "--role", "auditor",
                       "--password-stdin", stdin=first_password + "\n"))
    taken = cli(settings, "create-user", "--name", "dana", "--role", "auditor",
                "--password-stdin", stdin=first_password + "\n")
    assert taken.returncode == 2 and "taken" in taken.stderr
    weak = cli(settings, "create-user", "--name", "eve", "--role", "auditor",
               "--password-stdin", stdin="short\n")
    assert weak.returncode == 2 and "at least 12" in weak.stderr and "short" not in (
        weak.stderr.replace("at least", ""))

    clock = FakeClock(datetime.now(UTC))
    verifier = auth_headers(provision_key(settings.database_url, roles=["verifier"]))
    with TestClient(create_app(settings, clock=clock, configure_logs=False)) as client:

        def login(password: str, secret: str) -> int:
            code = totp_code(secret, totp_step(clock.now))
            return client.post("/v1/auth/login", json={
                "username": "dana", "password": password, "totp": code}).status_code

        assert login(first_password, seed) == 200
        new_seed = seed_of(cli(settings, "enroll-totp", "dana"))
        clock.advance(seconds=60)
        assert login(first_password, seed) == 401, "the old seed stopped working"
        assert login(first_password, new_seed) == 200

        clock.advance(seconds=60)
        for _ in range(5):
            assert login("wrong password!!", new_seed) == 401
        clock.advance(seconds=30)
        assert login(first_password, new_seed) == 401, "locked"
        assert cli(settings, "unlock", "dana").returncode == 0
        clock.advance(seconds=30)
        assert login(first_password, new_seed) == 200

        assert cli(settings, "set-password", "dana", "--password-stdin",
                   stdin=second_password + "\n").returncode == 0
        clock.advance(seconds=60)
        assert login(first_password, new_seed) == 401
        clock.advance(seconds=30)
        assert login(second_password, new_seed) == 200
        actions = [e["action"] for e in entries(client, verifier)]
    for action in ("identity_created", "totp_enrolled", "account_locked", "account_unlocked",
                   "password_set", "login", "login_failed"):
        assert action in actions, action
    listing = cli(settings, "list")
    assert listing.returncode == 0 and "dana" in listing.stdout
    for secret in (seed, new_seed, first_password, second_password):
        assert secret not in listing.stdout + listing.stderr
