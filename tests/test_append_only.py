"""The database itself refuses to change or remove what the ledger wrote.

Every statement here goes through a raw driver connection (sqlite3 / psycopg), not the
application: the append-only guarantee must hold for anyone who reaches the database.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from api.app import build_services
from ledger.admission import Accepted, Pending
from ledger.ingest import Plaintext
from ledger.migrate import migrate
from ledger.settings import Settings
from ledger.store import open_store
from ledger.tlog import TransparencyLog, load_log_identity
from ledger.verifier import verify_ledger
from tests.support import PG_ADMIN_URL, make_event
from tests.test_tamper import LEDGER, fill

TABLES = ("stored_events", "ledger_event_ids", "ledgers", "merkle_nodes", "checkpoints")
# One UPDATE per table that would matter to an attacker.
UPDATES = {
    "stored_events": "UPDATE stored_events SET state = state || state",
    "ledger_event_ids": "UPDATE ledger_event_ids SET seq = seq + 1",
    "ledgers": "UPDATE ledgers SET created_at = '1970-01-01T00:00:00.000000Z'",
    "merkle_nodes": "UPDATE merkle_nodes SET hash = hash || hash",
    "checkpoints": "UPDATE checkpoints SET size = size + 1",
}


def fill_and_sign(settings: Settings) -> None:
    """Twenty entries (so stored tree nodes: 16 and up), and a signed checkpoint."""
    fill(settings, n=20, batch=20)
    store = open_store(settings.database_url)
    try:
        assert TransparencyLog(store, load_log_identity(settings)).sign(LEDGER) is not None
    finally:
        store.close()


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql://")


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three ledger tables, through a fresh connection."""
    if is_postgres(url):
        with psycopg.connect(url) as pg:
            return {t: pg.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                    for t in TABLES}
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}
    finally:
        conn.close()


def assert_refused(url: str, statement: str) -> None:
    """Run ``statement`` over a raw connection and commit: the database must refuse it."""
    if is_postgres(url):
        with psycopg.connect(url, autocommit=True) as pg, pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="append-only"
        ):
            pg.execute(statement)
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def filled(settings: Settings) -> str:
    fill_and_sign(settings)
    rows = snapshot(settings.database_url)
    assert all(rows[t] for t in TABLES), rows  # something to lose in every table
    return settings.database_url


@pytest.mark.parametrize("table", TABLES)
def test_update_is_refused_by_the_database(filled: str, table: str) -> None:
    before = snapshot(filled)
    assert_refused(filled, UPDATES[table])
    assert_refused(filled, f"{UPDATES[table]} WHERE 1 = 1")
    assert snapshot(filled) == before


@pytest.mark.parametrize("table", TABLES)
def test_delete_is_refused_by_the_database(filled: str, table: str) -> None:
    before = snapshot(filled)
    assert_refused(filled, f"DELETE FROM {table}")
    assert snapshot(filled) == before


@pytest.mark.parametrize("table", TABLES)
def test_truncate_is_refused_on_postgresql(postgres_url: str, tmp_path: Path,
                                           table: str) -> None:
    """PostgreSQL only: SQLite has no TRUNCATE (its truncate optimisation of a bare DELETE
    is disabled by the DELETE triggers, which the test above covers)."""
    fill_and_sign(Settings(database_url=postgres_url, key_file=tmp_path / "keys.json"))
    before = snapshot(postgres_url)
    assert_refused(postgres_url, f"TRUNCATE {table}")
    assert_refused(postgres_url, f"TRUNCATE {table} CASCADE")
    assert snapshot(postgres_url) == before


# -- a least-privilege service role (PostgreSQL) -------------------------------------


@pytest.fixture
def service_role(postgres_url: str) -> Iterator[str]:
    """A LOGIN role holding only SELECT and INSERT on the ledger tables, USAGE on the
    events sequence and on schema public; yields its connection URL, then drops it."""
    migrate(postgres_url)
    role = f"phi_service_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT, INSERT ON {', '.join(TABLES)} TO {role}")
        conn.execute(f"GRANT USAGE ON SEQUENCE stored_events_notification_id_seq TO {role}")
    try:
        where = urlsplit(postgres_url)
        yield f"postgresql://{role}@{where.hostname}:{where.port or 5432}{where.path}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            conn.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
            gone = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            assert gone.fetchone() is None


def _pending(n: int) -> list[Pending]:
    plain = Plaintext()
    events = [make_event() for _ in range(n)]
    return [Pending(e["event_id"], plain.fingerprint(LEDGER, e), e) for e in events]


def test_a_select_insert_role_can_append_but_not_change(
    service_role: str, postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL only: roles and grants are a PostgreSQL feature (a SQLite file has no
    users), and they are the second line of defence behind the triggers."""
    assert "phi_service_" in service_role and service_role != postgres_url

    store = open_store(service_role)
    try:
        result = store.append({LEDGER: [_pending(2), _pending(1)]}, datetime.now(UTC))
        accepted = [o for o in result[LEDGER] if isinstance(o, Accepted) and o.created]
        assert len(accepted) == 2
        assert [r.seq for o in accepted for r in o.receipts] == [1, 2, 3]
        assert verify_ledger(store, LEDGER).as_dict() == {
            "ok": True, "verified_through": 3, "first_bad_seq": None, "reason": None}
    finally:
        store.close()

    # The service starts by migrating, and alembic reads its version table even when
    # there is nothing to do: that read is the one more grant the running service needs.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        role = urlsplit(service_role).username
        conn.execute(f"GRANT SELECT ON alembic_version TO {role}")
        # Data keys are not part of the ledger: shredding deletes them (README).
        conn.execute(f"GRANT SELECT, INSERT, DELETE ON patient_keys TO {role}")
        # Each ledger's shred count, which appends read to trust cached keys (0006).
        conn.execute(f"GRANT SELECT ON key_shreds TO {role}")
    svc = build_services(Settings(database_url=service_role, key_file=tmp_path / "keys.json"))
    try:
        two = svc.ingest.record_sync(LEDGER, [make_event(), make_event()], batch=True)
        assert [r.seq for r in two.receipts] == [4, 5]
    finally:
        svc.writer.stop()
        svc.store.close()

    before = snapshot(postgres_url)
    assert len(before["stored_events"]) == 5
    with psycopg.connect(service_role, autocommit=True) as conn:
        for statement in (
            UPDATES["stored_events"],
            "DELETE FROM stored_events",
            "TRUNCATE stored_events",
            UPDATES["ledger_event_ids"],
            "DELETE FROM ledgers",
            # nor can it switch the triggers off, as the owner or a superuser could
            "SET session_replication_role = replica",
            "ALTER TABLE stored_events DISABLE TRIGGER USER",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert snapshot(postgres_url) == before
