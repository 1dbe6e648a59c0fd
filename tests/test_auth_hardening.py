"""Hardening: security headers, no CORS unless configured, body limits, per-identity rate
limits, TLS, and no secret in any log. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth.credentials import totp_code, totp_step
from ledger.settings import Settings
from tests.support import ROOT, FakeClock, ServerProcess, auth_headers, make_event, provision_key


def test_every_answer_carries_security_headers(client: TestClient) -> None:
    answers = {
        "ok": client.get("/healthz"),
        "unauthenticated": client.get("/v1/ledger", headers={"Authorization": "Bearer x"}),
        "not found": client.get("/v1/nothing-here"),
        "too large": client.post("/v1/auth/login", content=b"{" + b" " * 8192 + b"}",
                                 headers={"content-type": "application/json"}),
        "data": client.get("/v1/ledger"),
    }
    assert answers["too large"].status_code == 413
    for what, r in answers.items():
        assert r.headers["x-content-type-options"] == "nosniff", what
        assert r.headers["x-frame-options"] == "DENY", what
        assert r.headers["referrer-policy"] == "no-referrer", what
        assert r.headers["cache-control"] == "no-store", what
        assert "default-src 'none'" in r.headers["content-security-policy"], what
        assert "strict-transport-security" not in r.headers, "HSTS only over TLS"
    docs = client.get("/docs")  # its own policy: scripts and styles from the service only
    assert docs.status_code == 200
    assert "script-src 'self'" in docs.headers["content-security-policy"]
    assert "unsafe-inline" not in docs.headers["content-security-policy"]


def test_no_cors_unless_configured(client: TestClient, settings: Settings) -> None:
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    assert "access-control-allow-origin" not in client.options("/v1/ledger",
                                                               headers=origin).headers
    assert "access-control-allow-origin" not in client.get("/v1/ledger",
                                                           headers=origin).headers
    allowed = replace(settings, cors_origins=("https://audit.example",))
    with TestClient(create_app(allowed, configure_logs=False),
                    headers={"Authorization": client.headers["authorization"]}) as cors:
        ok = cors.options("/v1/ledger", headers={**origin, "Origin": "https://audit.example"})
        assert ok.headers["access-control-allow-origin"] == "https://audit.example"
        evil = cors.options("/v1/ledger", headers=origin)
        assert "access-control-allow-origin" not in evil.headers
        # a preflight is not a request: the data still needs a credential
        assert cors.get("/v1/ledger", headers={"Authorization": ""}).status_code == 401


def test_each_identity_has_its_own_rate_limit(settings: Settings) -> None:
    slow = replace(settings, rate_read=1.0, rate_ingest=1.0)
    first = auth_headers(provision_key(settings.database_url))
    second = auth_headers(provision_key(settings.database_url))
    clock = FakeClock()
    with TestClient(create_app(slow, clock=clock, configure_logs=False)) as client:
        assert [client.get("/v1/ledger", headers=first).status_code for _ in range(2)] == [
            200, 200]  # a burst of twice the rate
        limited = client.get("/v1/ledger", headers=first)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert limited.headers["retry-after"] == "1"
        assert client.get("/v1/ledger", headers=second).status_code == 200
        # ingest is metered apart from reads (and on the fast path too)
        assert client.post("/v1/events", json=make_event(), headers=first).status_code == 201
        assert client.post("/v1/events", json=make_event(), headers=first).status_code == 201
        assert client.post("/v1/events", json=make_event(), headers=first).status_code == 429
        clock.advance(seconds=1)
        assert client.get("/v1/ledger", headers=first).status_code == 200


def _self_signed(tmp: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_over_tls_no_secret_reaches_any_log(settings: Settings, tmp_path: Path) -> None:
    """A real server (TLS, debug logging) and the real CLI: every secret made or used --
    API keys, password, TOTP seed, session token, a wrong key -- appears in no log line
    of either."""
    env = {"LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "debug",
           "LEDGER_LOG_FORMAT": "json"}
    cli_env = {**os.environ, **env}

    def admin(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "api.cli", "admin", *args], cwd=ROOT,
                              env=cli_env, capture_output=True, text=True, timeout=120,
                              input=stdin)
        assert done.returncode == 0, done.stderr
        return done

    password = "a long and secret passphrase"
    made_user = admin("create-user", "--name", "carol", "--role", "auditor", "--role",
                      "admin", "--password-stdin", stdin=password + "\n")
    uri = made_user.stdout.splitlines()[-1]
    assert uri.startswith("otpauth://totp/")
    seed = parse_qs(urlsplit(uri).query)["secret"][0]
    made_key = admin("create-key", "--role", "ingest", "--name", "desk")
    key = made_key.stdout.splitlines()[-1]
    cli_logs = made_user.stderr + made_key.stderr
    assert "auth.user_created" in cli_logs and "auth.key_created" in cli_logs

    cert, private = _self_signed(tmp_path)
    log = tmp_path / "server.log"
    wrong = "phk_" + "Z" * 43
    with ServerProcess(env, log_path=log, args=("--ssl-certfile", cert, "--ssl-keyfile", private)
                       ) as server, httpx.Client(base_url=server.url, verify=False,
                                                 timeout=30) as http:
        assert server.url.startswith("https://")
        r = http.post("/v1/events", json=make_event(), headers=auth_headers(key))
        assert r.status_code == 201, r.text
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert http.get("/v1/ledger", headers=auth_headers(wrong)).status_code == 401
        code = totp_code(seed, totp_step(dt.datetime.now(dt.UTC)))
        login = http.post("/v1/auth/login",
                          json={"username": "carol", "password": password, "totp": code})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        made = http.post("/v1/admin/keys", json={"roles": ["verifier"]},
                         headers=auth_headers(token))
        assert made.status_code == 201
        admin_made = made.json()["key"]
        assert http.post("/v1/auth/login", json={"username": "carol", "password": "wrong" * 4,
                                                 "totp": code}).status_code == 401
        assert http.post("/v1/auth/logout", headers=auth_headers(token)).status_code == 200
    server_logs = log.read_text()
    # the logs did record what happened (so the search below searched something)
    assert "auth.login" in server_logs and "/v1/admin/keys" in server_logs
    secrets = {"api key": key, "key made over HTTP": admin_made, "password": password,
               "TOTP seed": seed, "session token": token, "wrong key": wrong,
               "otpauth URI": uri}
    for what, secret in secrets.items():
        for where, text in (("server log", server_logs), ("CLI stderr", cli_logs)):
            assert secret not in text, f"the {what} appears in the {where}"
            # nor its body without the prefix
            assert re.sub(r"^ph[kt]_", "", secret) not in text, f"{what} in the {where}"
