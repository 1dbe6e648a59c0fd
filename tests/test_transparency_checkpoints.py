"""Signing checkpoints: never one inconsistent with what was signed before, harmless when
several signers run, keys that rotate without breaking old checkpoints, on SQLite and
PostgreSQL.

Edits an insider could make go straight to the tables with the append-only triggers out
of the way (PostgreSQL: ``session_replication_role = replica`` as the superuser the tests
connect as; SQLite: the triggers are dropped and recreated from their own SQL in the same
transaction).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.admission import Pending
from ledger.checkpointer import Checkpointer
from ledger.crypto.keyring import KeyRing, encode_ring
from ledger.crypto.log_keys import FileLogKeyProvider
from ledger.migrate import migrate
from ledger.settings import Settings
from ledger.store import ledger_id, open_store
from ledger.tlog import CheckpointRefused, TransparencyLog, load_log_identity
from ledger.transparency.checkpoint import open_checkpoint
from ledger.transparency.note import verifier_from_key
from ledger.transparency.tree import root_of
from tests.support import ROOT, auth_headers, make_event, provision_key

LEDGER = "default"


# -- raw access, as an insider ------------------------------------------------------------


class Raw:
    """One transaction on the database with the append-only triggers out of the way."""

    def __init__(self, url: str, conn: Any) -> None:
        self.postgres = url.startswith("postgresql://")
        self.conn = conn
        lid = ledger_id(LEDGER)
        self.lid: Any = lid if self.postgres else lid.hex

    def run(self, query: str, *params: Any) -> Any:
        if self.postgres:
            query = query.replace("?", "%s")
        return self.conn.execute(query, params)

    def truncate_after(self, seq: int, *, tree: bool = False, checkpoints: bool = False) -> None:
        """Remove the entries after ``seq``; with ``tree`` and ``checkpoints`` also their
        nodes and the checkpoints beyond, as restoring an older backup would."""
        self.run("DELETE FROM stored_events WHERE originator_id = ? AND originator_version > ?",
                 self.lid, seq)
        self.run("DELETE FROM ledger_event_ids WHERE ledger_id = ? AND seq > ?", self.lid, seq)
        if tree:
            # A node is gone when its last leaf (index ((idx + 1) << level) - 1) is.
            for level, idx in self.run("SELECT level, idx FROM merkle_nodes WHERE ledger_id = ?",
                                       self.lid).fetchall():
                if (idx + 1) << level > seq:
                    self.run("DELETE FROM merkle_nodes WHERE ledger_id = ? AND level = ?"
                             " AND idx = ?", self.lid, level, idx)
        if checkpoints:
            self.run("DELETE FROM checkpoints WHERE ledger_id = ? AND size > ?", self.lid, seq)


@contextmanager
def raw(url: str, tables: Sequence[str] = ("stored_events", "ledger_event_ids",
                                            "merkle_nodes", "checkpoints")) -> Iterator[Raw]:
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as pg:  # commits on a clean exit
            pg.execute("SET session_replication_role = replica")
            yield Raw(url, pg)
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        marks = ",".join("?" * len(tables))
        triggers = conn.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                                f" AND tbl_name IN ({marks})", tuple(tables)).fetchall()
        assert triggers
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        yield Raw(url, conn)
        for _, statement in triggers:
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


# -- helpers --------------------------------------------------------------------------------


def append(url: str, n: int) -> None:
    store = open_store(url)
    try:
        events = [make_event() for _ in range(n)]
        store.append({LEDGER: [[Pending(e["event_id"], "fp" + e["event_id"], e)
                                for e in events]]}, datetime.now(UTC))
    finally:
        store.close()


@contextmanager
def log_of(settings: Settings) -> Iterator[TransparencyLog]:
    store = open_store(settings.database_url)
    try:
        yield TransparencyLog(store, load_log_identity(settings))
    finally:
        store.close()


def sign(settings: Settings) -> Any:
    with log_of(settings) as tlog:
        return tlog.sign(LEDGER)


def checkpoint_rows(url: str) -> list[tuple[int, bytes]]:
    store = open_store(url)
    try:
        return TransparencyLog(store).roots_between(LEDGER, 0)
    finally:
        store.close()


@pytest.fixture
def signed(settings: Settings) -> Settings:
    """A ledger of 20 entries with a signed checkpoint of them."""
    migrate(settings.database_url)
    append(settings.database_url, 20)
    assert sign(settings).size == 20
    return settings


# -- signing and refusing -------------------------------------------------------------------


def test_signing_only_when_the_tree_grew(signed: Settings) -> None:
    assert sign(signed) is None
    append(signed.database_url, 5)
    checkpoint = sign(signed)
    assert checkpoint.size == 25
    with log_of(signed) as tlog:
        leaves = [bytes.fromhex(json.loads(d)["hash"]) for _, d in tlog.store.stream(LEDGER)]
        assert checkpoint.root == root_of(leaves)
        assert tlog.identity is not None
        opened = open_checkpoint(checkpoint.note, tlog.identity.verifiers(LEDGER)[0])
    assert (opened.size, opened.root) == (25, checkpoint.root)
    assert [size for size, _ in checkpoint_rows(signed.database_url)] == [20, 25]


def test_a_rewritten_tree_is_refused(signed: Settings) -> None:
    """The root at the signed size, recomputed from the stored tree, no longer matches
    (20 = 16 + 4 leaves: the stored subtree over leaves 0-15 is on its edge)."""
    append(signed.database_url, 4)
    with raw(signed.database_url) as r:
        r.run("UPDATE merkle_nodes SET hash = ? WHERE ledger_id = ? AND level = 4 AND idx = 0",
              b"\x07" * 32, r.lid)
    with pytest.raises(CheckpointRefused, match="no longer matches"):
        sign(signed)
    assert [size for size, _ in checkpoint_rows(signed.database_url)] == [20]


def test_a_truncated_chain_is_refused(signed: Settings) -> None:
    with raw(signed.database_url) as r:
        r.truncate_after(15, tree=True)
    append(signed.database_url, 2)  # even once it grows again, short of the signed size
    with pytest.raises(CheckpointRefused, match="truncated: a signed checkpoint covers 20"):
        sign(signed)
    assert [size for size, _ in checkpoint_rows(signed.database_url)] == [20]


def test_an_edited_checkpoint_row_is_refused(signed: Settings) -> None:
    append(signed.database_url, 3)
    with raw(signed.database_url) as r:
        r.run("UPDATE checkpoints SET root = ? WHERE ledger_id = ?", b"\x01" * 32, r.lid)
    with pytest.raises(CheckpointRefused, match="does not match its note"):
        sign(signed)


def test_checkpoints_of_another_key_ring_are_refused(signed: Settings, tmp_path: Path) -> None:
    """A lost or swapped key file: the newest checkpoint does not open with the ring's log
    keys, so nothing is signed under a key that verifiers do not know."""
    append(signed.database_url, 3)
    other = Settings(database_url=signed.database_url, key_file=tmp_path / "other.json")
    with pytest.raises(CheckpointRefused, match="does not open with this log's keys"):
        sign(other)


def test_the_checkpointer_logs_and_counts_a_refusal_and_keeps_going(
    signed: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    with raw(signed.database_url) as r:
        r.truncate_after(10)
    with log_of(signed) as tlog:
        checkpointer = Checkpointer(tlog, interval=0.01)
        for _ in range(3):
            assert checkpointer.tick() == []
    assert checkpointer.stats.refused >= 1 and checkpointer.stats.signed == 0
    output = capsys.readouterr().out
    assert output.count("checkpoint.refused") == 1  # once per reason, not once per poll
    assert "truncated" in output


def test_concurrent_signers_store_one_checkpoint_per_size(signed: Settings) -> None:
    errors: list[BaseException] = []

    def signer(stop: threading.Event) -> None:
        with log_of(signed) as tlog:
            while not stop.is_set():
                try:
                    tlog.sign(LEDGER)
                except BaseException as error:
                    errors.append(error)
                    return

    stop = threading.Event()
    threads = [threading.Thread(target=signer, args=(stop,)) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            append(signed.database_url, 3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    sign(signed)  # whatever is left is signed now
    rows = checkpoint_rows(signed.database_url)
    sizes = [size for size, _ in rows]
    assert sizes == sorted(set(sizes)) and sizes[-1] == 65
    with log_of(signed) as tlog:
        leaves = [bytes.fromhex(json.loads(d)["hash"]) for _, d in tlog.store.stream(LEDGER)]
    assert all(root == root_of(leaves[:size]) for size, root in rows)


# -- keys -----------------------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_DATABASE_URL": settings.database_url,
            "LEDGER_KEY_FILE": str(settings.key_file)}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_log_key_rotation_keeps_old_checkpoints_verifiable(settings: Settings) -> None:
    key = provision_key(settings.database_url)

    def run_service(n: int) -> tuple[str, list[dict[str, Any]], str]:
        with TestClient(create_app(settings, configure_logs=False),
                        headers=auth_headers(key)) as client:
            assert client.post("/v1/events/batch", json={
                "events": [make_event() for _ in range(n)]}).status_code == 201
        # (the service signs what it committed when it stops)
        with TestClient(create_app(settings, configure_logs=False),
                        headers=auth_headers(key)) as client:
            return (client.get("/v1/checkpoints/key").text.strip(),
                    client.get("/v1/checkpoints/keys").json()["keys"],
                    client.get("/v1/checkpoints/latest").text)

    first_key, _, first_note = run_service(5)
    rotated = cli(settings, "keys", "rotate-log-key")
    assert rotated.returncode == 0, rotated.stderr
    second_key, keys, second_note = run_service(5)
    assert second_key != first_key and second_key in rotated.stdout
    assert [(k["key"], k["active"], k["signing"]) for k in keys] == [
        (second_key, True, True), (first_key, False, True)]
    # Both keys sign during the overlap: clients that know only the old key keep working.
    for vkey in (first_key, second_key):
        assert open_checkpoint(second_note, verifier_from_key(vkey)).size == 10

    old_id = next(k["id"] for k in keys if not k["active"])
    refused = cli(settings, "keys", "retire-log-key", keys[0]["id"])
    assert refused.returncode == 2 and "active" in refused.stderr
    retired = cli(settings, "keys", "retire-log-key", old_id)
    assert retired.returncode == 0, retired.stderr
    third_key, keys, third_note = run_service(5)
    assert third_key == second_key
    assert [(k["key"], k["signing"]) for k in keys] == [(second_key, True), (first_key, False)]
    assert open_checkpoint(third_note, verifier_from_key(second_key)).size == 15
    with pytest.raises(ValueError, match="no verifiable signature"):
        open_checkpoint(third_note, verifier_from_key(first_key))
    # What the old key signed still verifies with it, as published.
    assert open_checkpoint(first_note, verifier_from_key(first_key)).size == 5
    listing = cli(settings, "keys", "log-keys")
    assert listing.returncode == 0 and "retired" in listing.stdout
    stored = json.loads(settings.log_key_path.read_text())
    assert stored["log_keys"][old_id]["seed"] is None
    assert not any(k["seed"] and k["seed"] in listing.stdout + rotated.stdout
                   for k in stored["log_keys"].values())


def test_a_ring_without_a_log_key_gets_exactly_one(settings: Settings) -> None:
    """A key file written before checkpoints existed: several processes starting at once
    make one log key file with one key between them, all sign with it, and the key file
    is left as it was."""
    old = encode_ring(KeyRing.generate())
    settings.key_file.parent.mkdir(parents=True, exist_ok=True)
    settings.key_file.write_bytes(old)
    settings.key_file.chmod(0o600)
    identities: list[Any] = []
    threads = [threading.Thread(target=lambda: identities.append(load_log_identity(settings)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert settings.key_file.read_bytes() == old
    assert len(FileLogKeyProvider(settings.log_key_path).load().keys) == 1
    assert {i.verifier_key(LEDGER) for i in identities} == {
        load_log_identity(settings).verifier_key(LEDGER)}


def test_the_log_name_is_chosen_once(settings: Settings, tmp_path: Path) -> None:
    named = Settings(database_url=settings.database_url, key_file=tmp_path / "named.json",
                     log_name="audit.example.org")
    migrate(named.database_url)
    append(named.database_url, 2)
    assert open_checkpoint(sign(named).note, load_log_identity(named).verifiers(LEDGER)[0]
                           ).origin == "audit.example.org/default"
    renamed = Settings(**{**named.__dict__, "log_name": "elsewhere.example.org"})
    assert load_log_identity(renamed).origin(LEDGER) == "audit.example.org/default"


def test_the_service_alerts_on_a_refusal(signed: Settings) -> None:
    """A running service that finds the chain shorter than a signed checkpoint signs
    nothing and says so on /metrics (for an alert) as well as in its log."""
    with raw(signed.database_url) as r:
        r.truncate_after(10)
    fast = Settings(**{**signed.__dict__, "checkpoint_interval_ms": 100})
    with TestClient(create_app(fast, configure_logs=False)) as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            metrics = client.get("/metrics").text
            if "phi_ledger_checkpoint_refusals 0.0" not in metrics:
                break
            time.sleep(0.05)
    refusals = next(line for line in metrics.splitlines()
                    if line.startswith("phi_ledger_checkpoint_refusals "))
    assert float(refusals.split()[1]) >= 1
    assert 'phi_ledger_checkpoint_size{ledger="default"} 20.0' in metrics
    assert [size for size, _ in checkpoint_rows(signed.database_url)] == [20]


def test_serve_refuses_a_key_ring_from_the_environment_without_a_log_key(
    settings: Settings,
) -> None:
    """LEDGER_KEYS without log keys, and neither LEDGER_LOG_KEYS nor LEDGER_LOG_KEY_FILE:
    no log key is made where nothing lasts; one line says what to do."""
    old = encode_ring(KeyRing.generate()).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_DATABASE_URL": settings.database_url, "LEDGER_KEYS": old}
    result = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", "9"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "LEDGER_KEYS" in result.stderr and "rotate-log-key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
