"""Tampering with the stored ledger, as an insider with full database rights would, is
caught by every verifier (the library function, ``phi-ledger verify`` and
``POST /v1/ledger/verify``) at exactly the first bad seq, on SQLite and PostgreSQL.

The ledger is filled through the real ingest path; the tampering then goes straight to
``stored_events`` with the append-only triggers bypassed (PostgreSQL:
``session_replication_role = replica``; SQLite: the triggers are dropped and recreated
from the migration's own SQL in the same transaction).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import build_services, create_app
from ledger.chain import Verdict
from ledger.entry import Receipt
from ledger.migrate import migrate
from ledger.settings import Settings
from ledger.store import ledger_id, open_store
from ledger.store.base import ENTRY_TOPIC
from ledger.verifier import verify_ledger
from tests.support import ROOT, key_headers, make_event

LEDGER = "default"
N_EVENTS = 30
BAD = 10  # the seq every tamper kind goes after

# -- filling the ledger through the real ingest path ---------------------------------


def sample_events(n: int, start: int = 0) -> list[dict[str, Any]]:
    base = make_event()["actor"]
    return [make_event(actor={**base, "id": f"agent-{start + i:04d}"}) for i in range(n)]


def fill(settings: Settings, n: int = N_EVENTS, batch: int = 10) -> list[Receipt]:
    """Record ``n`` events through the ingest service (batches of ``batch``), then stop
    the writer and close the store, as a stopped service leaves the database."""
    svc = build_services(settings)
    receipts: list[Receipt] = []
    try:
        for start in range(0, n, batch):
            events = sample_events(min(batch, n - start), start)
            receipts += svc.ingest.record_sync(LEDGER, events, batch=True).receipts
    finally:
        svc.writer.stop()
        svc.store.close()
    assert [r.seq for r in receipts] == list(range(1, n + 1))
    return receipts


# -- the three verifiers -------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of an operator's shell, configured for ``settings`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return env | {"LEDGER_DATABASE_URL": settings.database_url,
                  "LEDGER_KEY_FILE": str(settings.key_file)}


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``phi-ledger ARGS`` in its own process (``python -m api.cli``, from the repo root)."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT, env=cli_env(settings), capture_output=True, text=True, timeout=120,
    )


def verify_direct(url: str) -> Verdict:
    store = open_store(url)
    try:
        return verify_ledger(store, LEDGER)
    finally:
        store.close()


def verify_http(settings: Settings) -> dict[str, Any]:
    with TestClient(create_app(settings, configure_logs=False),
                    headers=key_headers(settings.database_url)) as client:
        response = client.post("/v1/ledger/verify")
    assert response.status_code == 200, response.text
    return response.json()


def assert_broken_everywhere(settings: Settings, first_bad: int, reason_part: str) -> None:
    verdict = verify_direct(settings.database_url)
    assert verdict.ok is False
    assert verdict.first_bad_seq == first_bad, verdict
    assert verdict.verified_through == first_bad - 1
    assert verdict.reason is not None and reason_part in verdict.reason, verdict.reason

    cli = run_cli(settings, "verify")
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"BROKEN at seq {first_bad}:" in cli.stdout, cli.stdout
    assert reason_part in cli.stdout

    assert verify_http(settings) == {
        "ok": False, "verified_through": first_bad - 1, "first_bad_seq": first_bad,
        "reason": verdict.reason,
    }


# -- an insider with full database rights --------------------------------------------


def canonical(obj: Any) -> bytes:
    """RFC 8785 for this data (no floats, ASCII keys), independent of the product."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with its hash recomputed, as a forger who knows the scheme would."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return {**body, "hash": hashlib.sha256(b"\x00" + canonical(body)).hexdigest()}


def _core_migration() -> ModuleType:
    path = ROOT / "alembic" / "versions" / "0001_ledger_core.py"
    spec = importlib.util.spec_from_file_location("phi_ledger_migration_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sqlite_stored_events_triggers() -> dict[str, str]:
    """The migration's own SQL for the triggers that guard ``stored_events`` on SQLite."""
    found = {}
    for statement in _core_migration().SQLITE:
        match = re.search(r"CREATE TRIGGER (\w+) .* ON stored_events\b", statement)
        if match:
            found[match.group(1)] = statement
    assert len(found) == 2, found
    return found


class Tamperer:
    """Raw access to one ledger's rows of ``stored_events``, triggers bypassed."""

    def __init__(self, url: str, conn: Any, ledger: str = LEDGER) -> None:
        self.postgres = url.startswith("postgresql://")
        self.conn = conn
        lid = ledger_id(ledger)
        self.lid: Any = lid if self.postgres else lid.hex

    def _exec(self, query: str, *params: Any) -> Any:
        if self.postgres:
            query = query.replace("?", "%s")
        return self.conn.execute(query, params)

    def seqs(self) -> list[int]:
        rows = self._exec(
            "SELECT originator_version FROM stored_events WHERE originator_id = ?"
            " ORDER BY originator_version", self.lid).fetchall()
        return [int(r[0]) for r in rows]

    def entry(self, seq: int) -> dict[str, Any]:
        rows = self._exec(
            "SELECT state FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            self.lid, seq).fetchall()
        assert len(rows) == 1, f"no stored entry at {seq}"
        return json.loads(bytes(rows[0][0]))

    def put(self, seq: int, entry: dict[str, Any]) -> None:
        """Overwrite the stored bytes at ``seq`` (canonically encoded ``entry``)."""
        count = self._exec(
            "UPDATE stored_events SET state = ? WHERE originator_id = ?"
            " AND originator_version = ?", canonical(entry), self.lid, seq).rowcount
        assert count == 1

    def delete(self, seq: int) -> None:
        count = self._exec(
            "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            self.lid, seq).rowcount
        assert count == 1

    def move(self, seq: int, to: int) -> None:
        count = self._exec(
            "UPDATE stored_events SET originator_version = ? WHERE originator_id = ?"
            " AND originator_version = ?", to, self.lid, seq).rowcount
        assert count == 1

    def insert(self, seq: int, entry: dict[str, Any]) -> None:
        self._exec(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
            " VALUES (?, ?, ?, ?)", self.lid, seq, ENTRY_TOPIC, canonical(entry))


@contextmanager
def tampering(url: str) -> Iterator[Tamperer]:
    """One transaction with the append-only triggers out of the way, committed at the end
    (on SQLite the triggers are back, from the migration's SQL, before the commit)."""
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as pg:  # commits on a clean exit
            pg.execute("SET session_replication_role = replica")
            yield Tamperer(url, pg)
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        triggers = sqlite_stored_events_triggers()
        conn.execute("BEGIN IMMEDIATE")
        for name in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        yield Tamperer(url, conn)
        for statement in triggers.values():
            conn.execute(statement)
        conn.execute("COMMIT")
        restored = {r[0] for r in conn.execute("SELECT name FROM sqlite_master"
                                               " WHERE type = 'trigger'")}
        assert set(triggers) <= restored
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


# -- one helper per kind of tampering -------------------------------------------------


def edit_field(t: Tamperer) -> None:
    """Change the actor of seq 10 inside the stored bytes; leave its hash."""
    entry = t.entry(BAD)
    assert entry["event"]["actor"]["id"] != "agent-6666"
    entry["event"]["actor"]["id"] = "agent-6666"
    t.put(BAD, entry)


def edit_field_and_rehash(t: Tamperer) -> None:
    """Change the actor of seq 10 and recompute its hash: seq 11 no longer links."""
    entry = t.entry(BAD)
    entry["event"]["actor"]["id"] = "agent-6666"
    t.put(BAD, seal(entry))


def delete_entry(t: Tamperer) -> None:
    t.delete(BAD)


def _shift_up_from(t: Tamperer, seq: int, *, renumber: bool) -> None:
    """Move every entry from ``seq`` on one place up (from the top, so the primary key
    never collides); with ``renumber`` also rewrite the seq each entry claims."""
    for s in reversed([s for s in t.seqs() if s >= seq]):
        t.move(s, s + 1)
        if renumber:
            t.put(s + 1, {**t.entry(s + 1), "seq": s + 1})


def _forged_entry(t: Tamperer) -> dict[str, Any]:
    """A new entry for seq 10, correctly linked to seq 9, hash left from the old 10."""
    old = t.entry(BAD)
    event = {**old["event"], "event_id": str(uuid.uuid4()),
             "actor": {**old["event"]["actor"], "id": "agent-intruder"}}
    return {**old, "prev_hash": t.entry(BAD - 1)["hash"], "event": event}


def insert_entry(t: Tamperer) -> None:
    forged = _forged_entry(t)
    _shift_up_from(t, BAD, renumber=True)
    t.insert(BAD, forged)


def insert_entry_and_rehash(t: Tamperer) -> None:
    forged = seal(_forged_entry(t))
    _shift_up_from(t, BAD, renumber=True)
    t.insert(BAD, forged)


def insert_entry_without_renumbering(t: Tamperer) -> None:
    """Rehashed forgery, but the shifted entries still claim their old seqs."""
    forged = seal(_forged_entry(t))
    _shift_up_from(t, BAD, renumber=False)
    t.insert(BAD, forged)


def swap_entries(t: Tamperer) -> None:
    a, b = t.entry(BAD), t.entry(BAD + 1)
    t.put(BAD, b)
    t.put(BAD + 1, a)


def break_link(t: Tamperer) -> None:
    """Point seq 10 at another predecessor and recompute its own hash correctly."""
    entry = t.entry(BAD)
    entry["prev_hash"] = secrets.token_hex(32)
    t.put(BAD, seal(entry))


def replace_hash_with_another_entrys(t: Tamperer) -> None:
    t.put(BAD, {**t.entry(BAD), "hash": t.entry(20)["hash"]})


def replace_hash_with_random_hex(t: Tamperer) -> None:
    t.put(BAD, {**t.entry(BAD), "hash": secrets.token_hex(32)})


@dataclass(frozen=True)
class Case:
    tamper: Callable[[Tamperer], None]
    first_bad: int
    reason: str


HASH_MISMATCH = "hash does not match the entry's content"
LINK_MISMATCH = "prev_hash does not match"

CASES = {
    "edited-field": Case(edit_field, BAD, HASH_MISMATCH),
    "edited-field-rehashed": Case(edit_field_and_rehash, BAD + 1, LINK_MISMATCH),
    "deleted": Case(delete_entry, BAD, "missing"),
    "inserted": Case(insert_entry, BAD, HASH_MISMATCH),
    "inserted-rehashed": Case(insert_entry_and_rehash, BAD + 1, LINK_MISMATCH),
    "inserted-not-renumbered": Case(insert_entry_without_renumbering, BAD + 1,
                                    f"claims seq {BAD}"),
    "swapped": Case(swap_entries, BAD, f"claims seq {BAD + 1}"),
    "broken-link": Case(break_link, BAD, LINK_MISMATCH),
    "hash-of-another-entry": Case(replace_hash_with_another_entrys, BAD, HASH_MISMATCH),
    "random-hash": Case(replace_hash_with_random_hex, BAD, HASH_MISMATCH),
}


# -- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CASES))
def test_tampering_is_caught_at_the_first_bad_seq(kind: str, settings: Settings) -> None:
    fill(settings)
    case = CASES[kind]
    with tampering(settings.database_url) as t:
        case.tamper(t)
    assert_broken_everywhere(settings, case.first_bad, case.reason)


def test_tampering_keeps_the_append_only_triggers(settings: Settings) -> None:
    """The tamper helper itself leaves the database as guarded as it found it."""
    fill(settings, n=3, batch=3)
    with tampering(settings.database_url) as t:
        t.put(1, {**t.entry(1), "hash": "f" * 64})
    url = settings.database_url
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as pg, pytest.raises(psycopg.Error, match="append-only"):
            pg.execute("DELETE FROM stored_events")
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute("DELETE FROM stored_events")
        finally:
            conn.close()
    assert verify_direct(url).first_bad_seq == 1


def test_an_intact_ledger_verifies_through_its_last_entry(
    client: TestClient, settings: Settings
) -> None:
    for start in range(0, N_EVENTS, 10):
        r = client.post("/v1/events/batch", json={"events": sample_events(10, start)})
        assert r.status_code == 201, r.text
    expected = {"ok": True, "verified_through": N_EVENTS, "first_bad_seq": None,
                "reason": None}

    assert verify_direct(settings.database_url).as_dict() == expected
    assert client.post("/v1/ledger/verify").json() == expected
    cli = run_cli(settings, "verify")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"{LEDGER}: intact through seq {N_EVENTS} " in cli.stdout


def test_an_empty_ledger_verifies_ok_through_zero(settings: Settings) -> None:
    migrate(settings.database_url)
    expected = {"ok": True, "verified_through": 0, "first_bad_seq": None, "reason": None}

    assert verify_direct(settings.database_url).as_dict() == expected
    assert verify_http(settings) == expected
    cli = run_cli(settings, "verify")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"{LEDGER}: intact through seq 0 " in cli.stdout
