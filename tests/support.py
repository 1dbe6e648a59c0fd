"""Test support: events, databases and real server processes (no mocks of the database).

The helpers the benchmarks share live in ``benchmarks.support`` (benchmarks never import
``tests/``) and are re-exported here, so tests import everything from this module."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg

from benchmarks.support import (
    PG_ADMIN_URL,
    ROOT,
    TEST_ROLES,
    ServerProcess,
    auth_headers,
    create_pg_database,
    drop_pg_database,
    free_port,
    make_event,
    provision_key,
    provision_user,
)

__all__ = [
    "IN_CI", "PG_ADMIN_URL", "ROOT", "SEED_VARIABLE", "TEST_ROLES", "FakeClock",
    "ServerProcess", "accepted", "auth_headers", "chosen_seed", "contract_example",
    "create_pg_database", "drop_pg_database", "envelope_of", "fastapi_app", "free_port",
    "key_headers", "make_event", "pg_available", "provision_key", "provision_user",
    "require_postgres", "service_key",
]

if TYPE_CHECKING:
    from ledger.admission import Accepted, Outcome
    from ledger.protection import EnvelopeProtection

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def require_postgres() -> None:
    """Skip a PostgreSQL test when the server is down -- except with CI=true, where it
    fails: CI may never skip a PostgreSQL test."""
    import pytest

    if pg_available():
        return
    if IN_CI:
        pytest.fail("PostgreSQL is not reachable and CI=true: PostgreSQL tests may not skip")
    pytest.skip("PostgreSQL is not reachable (start it, or run with CI=true to fail)")


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database's URL for the block, dropped after it."""
    require_postgres()
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def service_key(services: Any, roles: tuple[str, ...] | list[str] = TEST_ROLES,
             ledger: str = "default") -> str:
    """``provision_key`` through a running app's own services (no second connection)."""
    from api.auth.identities import Actor

    return services.access.identities.issue_key(
        ledger, roles, actor=Actor("test-support"), record=False).secret


def envelope_of(services: Any) -> EnvelopeProtection:
    """A running service's protection, which encrypts (every test service's but a
    plaintext one): what shredding and the data keys' checks need."""
    from ledger.protection import EnvelopeProtection

    assert isinstance(services.protection, EnvelopeProtection), "a plaintext service"
    return services.protection


def accepted(outcome: Outcome) -> Accepted:
    """The outcome of a submission that must have been accepted (no conflict)."""
    from ledger.admission import Accepted

    assert isinstance(outcome, Accepted), outcome
    return outcome


def key_headers(database_url: str, **options: Any) -> dict[str, str]:
    """The Authorization header of a new key (``provision_key``)."""
    return auth_headers(provision_key(database_url, **options))


def contract_example() -> dict[str, Any]:
    """The disclosure event of CONTRACT.md, with a fresh event_id."""
    return make_event(
        action="disclose",
        channel="secure_sms",
        resource={"type": "message", "id": "msg-88121", "phi": ["name", "phone", "condition"]},
        disclosure={
            "recipient": {"name": "Dr. A. Rivera", "address": "on-call pager 4471",
                          "kind": "provider"},
            "description": "after-hours message: callback number and symptoms",
            "encrypted": True,
        },
        data=None,
    )


class FakeClock:
    """A clock a test moves by hand (create_app(..., clock=FakeClock(...)))."""

    def __init__(self, start: Any = None) -> None:
        from datetime import UTC, datetime

        self.now = start or datetime.now(UTC)

    def __call__(self) -> Any:
        return self.now

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.now = self.now + timedelta(**delta)


def fastapi_app(asgi: Any) -> Any:
    """The FastAPI application inside create_app's middleware stack."""
    from fastapi import FastAPI

    seen = asgi
    for _ in range(20):
        if isinstance(seen, FastAPI):
            return seen
        seen = getattr(seen, "owner", None) or seen.app
    raise AssertionError("no FastAPI app inside")


SEED_VARIABLE = "PHI_LEDGER_TEST_SEED"


def chosen_seed() -> int:
    """The seed of a randomised test: ``PHI_LEDGER_TEST_SEED`` when set (to replay a
    failure), else a fresh one; printed either way, so a failing run names it."""
    text = os.environ.get(SEED_VARIABLE)
    seed = int(text) if text else random.randrange(2**32)
    print(f"{SEED_VARIABLE}={seed}")
    return seed
