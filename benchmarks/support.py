"""What the benchmarks and the tests share: throw-away PostgreSQL databases, API keys
written straight into a store, a valid event, and ``phi-ledger serve`` in a process of its
own. Benchmarks import the package and this, never ``tests/``; ``tests.support`` re-exports
these for the tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

import httpx
import psycopg

if TYPE_CHECKING:
    from api.services import Services

PG_ADMIN_URL = os.environ.get("LEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]


def create_pg_database() -> str:
    """A new, empty database; returns its URL."""
    name = f"phi_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


@contextmanager
def services_on(url: str) -> Iterator[Services]:
    """The service's parts over the database at ``url``, in this process, as
    ``phi-ledger serve`` holds them (a throw-away key ring; no projection inline), the
    collector tuned as serve tunes it (``ledger.runtime.tune_gc``: without it the cyclic
    collector rescans every module's objects a few times a second); stopped on leaving."""
    from api.app import build_services
    from ledger.runtime import tune_gc
    from ledger.settings import Settings

    with TemporaryDirectory() as tmp:
        svc = build_services(Settings(database_url=url, key_file=Path(tmp) / "keys.json",
                                      project_inline=False))
        tune_gc()
        try:
            yield svc
        finally:
            svc.writer.stop()
            svc.store.close()


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# What the `client` fixture and servers started by tests hold: every role but admin, so
# tests written before access control existed keep working unchanged.
TEST_ROLES = ("ingest", "auditor", "investigator", "verifier")


def provision_key(
    database_url: str, *, roles: tuple[str, ...] | list[str] = TEST_ROLES,
    ledger: str = "default", name: str | None = None, expires_at: Any = None,
) -> str:
    """An API key for a new application identity, written straight into the database
    (migrated first) *without* ledger entries, so a test's ledgers start empty and its
    seqs count from 1. The CLI and the admin routes always record keys; see
    tests/test_auth_* for that."""
    from api.auth.identities import Actor, Identities
    from ledger.clock import utc_now
    from ledger.migrate import migrate
    from ledger.store import open_store

    migrate(database_url)
    store = open_store(database_url)
    try:
        identities = Identities(store, utc_now, fingerprint=lambda _l, _e: "")
        return identities.issue_key(ledger, roles, name=name, expires_at=expires_at,
                                    actor=Actor("test-support"), record=False).secret
    finally:
        store.close()


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid ``read`` event with a fresh event_id; override any field.

    A ``create``/``update``/``delete`` without a ``resource`` given is of the patient's
    record itself: of a ``message`` it would be an access, not a change to the record."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-26T14:03:22.120-05:00",
        "action": "read",
        "outcome": "success",
        "actor": {"id": "agent-0042", "kind": "user", "role": "call_agent",
                  "organization": "Northside Answering", "mfa": True, "device_id": "ws-17",
                  "ip": "198.51.100.7", "session_id": "s-9c1"},
        "patient": {"id": "MRN-0012345"},
        "resource": {"type": "message", "id": "msg-88121", "phi": ["name", "phone"]},
        "purpose": "TREAT",
        "channel": "ehr",
        "source": {"system": "answer-desk", "site": "Northside"},
    }
    event.update(overrides)
    patient = event.get("patient")
    if (event.get("action") in {"create", "update", "delete"} and "resource" not in overrides
            and isinstance(patient, dict) and isinstance(patient.get("id"), str)):
        event["resource"] = {"type": "patient", "id": patient["id"]}
    return event


def free_port() -> int:
    """A free port *below* the kernel's ephemeral range: a server restarted on the same
    port could otherwise find it taken by a retrying client's own source port (a TCP
    self-connect)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = max(low, 12000)
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class ServerProcess:
    """``phi-ledger serve`` in its own process, as an operator would run it."""

    def __init__(self, env: dict[str, str], port: int | None = None,
                 log_path: Path | None = None, args: tuple[str, ...] = (),
                 api_key: str | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        # Made on first start (TEST_ROLES, in LEDGER_DEFAULT_LEDGER) unless one is given.
        self.api_key = api_key

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of this server's test key (after start)."""
        assert self.api_key is not None, "start the server first"
        return auth_headers(self.api_key)

    def client(self, **options: Any) -> httpx.Client:
        """An httpx client for this server, sending its test key."""
        return httpx.Client(base_url=self.url, headers=self.headers, **options)

    @property
    def url(self) -> str:
        scheme = "https" if "--ssl-certfile" in self.args else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        if self.api_key is None:
            self.api_key = provision_key(
                self.env.get("LEDGER_DATABASE_URL") or "sqlite:///./var/ledger.db",
                ledger=self.env.get("LEDGER_DEFAULT_LEDGER") or "default")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), *self.args],
            cwd=ROOT, env=self.env, stdout=out, stderr=out,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                # (a test's self-signed certificate when serving TLS)
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush; what a power cut does to the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def provision_user(
    settings: Any, name: str, password: str, *, roles: tuple[str, ...] | list[str] = ("auditor",),
    ledger: str = "default", staff_ids: tuple[str, ...] | list[str] = (),
) -> str:
    """A person with a password and TOTP, made as ``phi-ledger admin create-user`` makes
    them (recorded in their ledger: ``identity_created``, ``totp_enrolled``, and
    ``staff_ids_set`` when ``staff_ids`` binds them to staff ids). Returns the
    TOTP seed, for the test to make codes with (api.auth.credentials.totp_code)."""
    from api.auth.identities import Actor, Identities
    from api.auth.sealing import SeedSeal
    from ledger.clock import utc_now
    from ledger.migrate import migrate
    from ledger.protection import load_key_ring
    from ledger.store import open_store

    migrate(settings.database_url)
    store = open_store(settings.database_url)
    try:
        ring = load_key_ring(settings, store)
        identities = Identities(store, utc_now, fingerprint=lambda _l, e: e["event_id"],
                                seeds=SeedSeal(lambda: ring))
        _, enrolment = identities.create_user(ledger, name, roles, password,
                                              actor=Actor("test-support"),
                                              staff_ids=staff_ids)
        return enrolment.seed
    finally:
        store.close()
