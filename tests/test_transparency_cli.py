"""Verifiability from the command line, as an auditor and a witness would use it, on SQLite
and PostgreSQL:

- ``phi-ledger verify-proof`` checks a bundle, a proof or a checkpoint with only the log's
  public key: no database (the tests point it at none and check none appears);
- ``phi-ledger witness`` accepts a log that grows, and refuses a rolled-back database (an
  older copy restored: SQLite's file through the backup API, PostgreSQL's database
  through ``CREATE DATABASE ... TEMPLATE``) and a fork;
- ``phi-ledger verify`` catches a truncated tail from the stored checkpoints, and a
  database rolled back with its checkpoints from a witness's checkpoint file (rows deleted
  as an insider would, with the append-only triggers out of the way: see
  tests/test_transparency_checkpoints.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from ledger.transparency.checkpoint import Checkpoint, open_checkpoint
from ledger.transparency.note import Note, verifier_from_key
from tests.support import (
    PG_ADMIN_URL,
    ROOT,
    ServerProcess,
    auth_headers,
    make_event,
    provision_key,
)
from tests.test_transparency_checkpoints import LEDGER, raw

FAST = {"LEDGER_CHECKPOINT_INTERVAL_MS": "200", "LEDGER_LOG_LEVEL": "warning"}


def phi_ledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``phi-ledger ARGS`` in its own process, with no LEDGER_* setting but ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT,
                          env=base | (env or {}), capture_output=True, text=True, timeout=180)


def db_env(settings: Settings) -> dict[str, str]:
    return {"LEDGER_DATABASE_URL": settings.database_url,
            "LEDGER_KEY_FILE": str(settings.key_file)}


def size_of(note: str) -> int:
    return Checkpoint.parse(Note.parse(note).text).size


def wait_for(get: Any, size: int, timeout: float = 10.0) -> str:
    """The newest checkpoint once it covers ``size`` entries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = get("/v1/checkpoints/latest")
        if response.status_code == 200 and size_of(response.text) >= size:
            return response.text
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of {size} entries within {timeout}s")


def post(client: Any, n: int) -> list[dict[str, Any]]:
    response = client.post("/v1/events/batch", json={"events": [make_event() for _ in range(n)]})
    assert response.status_code == 201, response.text
    return response.json()["receipts"]


# -- verify-proof: offline ------------------------------------------------------------------


@pytest.fixture
def served(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    """Files an auditor was handed: the log key, entries, bundles, proofs, checkpoints."""
    fast = Settings(**{**settings.__dict__, "checkpoint_interval_ms": 200})
    key = provision_key(settings.database_url)
    with TestClient(create_app(fast, configure_logs=False), headers=auth_headers(key)) as c:
        post(c, 12)
        first = wait_for(c.get, 12)
        post(c, 7)
        second = wait_for(c.get, 19)
        entries = c.get("/v1/ledger/entries").json()["entries"]
        files = {
            "key": c.get("/v1/checkpoints/key").text.strip(),
            "bundle5": c.get("/v1/proofs/bundle", params={"seq": 5}).text,
            "inclusion": c.get("/v1/proofs/inclusion", params={"seq": 3, "tree_size": 12}).text,
            "consistency": c.get("/v1/proofs/consistency",
                                 params={"first": 12, "second": 19}).text,
            "cp12": first, "cp19": second,
        }
    out = {"dir": tmp_path / "handed", "key": files["key"], "entries": entries}
    out["dir"].mkdir()
    for name, text in files.items():
        (out["dir"] / name).write_text(text)
    for entry in entries:
        (out["dir"] / f"entry{entry['seq']}.json").write_text(json.dumps(entry))
    return out


def offline(served: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    nowhere = served["dir"] / "no-database"
    result = phi_ledger("verify-proof", *args, env={
        "LEDGER_DATABASE_URL": f"sqlite:///{nowhere}/ledger.db",
        "LEDGER_KEY_FILE": str(nowhere / "keys.json")})
    assert not nowhere.exists(), "verify-proof touched a database or key file"
    return result


def test_verify_proof_checks_a_bundle_with_only_the_public_key(served: dict[str, Any]) -> None:
    d, key = served["dir"], served["key"]
    ok = offline(served, str(d / "bundle5"), "--key", key, "--entry", str(d / "entry5.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK: entry seq 5 ") and "tree size 19" in ok.stdout
    by_hash = offline(served, str(d / "bundle5"), "--key", key,
                      "--leaf-hash", served["entries"][4]["hash"])
    assert by_hash.returncode == 0, by_hash.stdout

    # Each of these must fail: another entry, an edited entry, an edited proof, another key.
    other = offline(served, str(d / "bundle5"), "--key", key, "--entry", str(d / "entry6.json"))
    assert other.returncode == 1 and other.stdout.startswith("FAILED:"), other.stdout
    edited = dict(served["entries"][4], recorded_at="2020-01-01T00:00:00.000000Z")
    (d / "edited.json").write_text(json.dumps(edited))
    assert offline(served, str(d / "bundle5"), "--key", key,
                   "--entry", str(d / "edited.json")).returncode == 1
    lines = (d / "bundle5").read_text().split("\n")
    lines[2] = lines[3]  # one proof hash replaced by another
    (d / "forged").write_text("\n".join(lines))
    forged = offline(served, str(d / "forged"), "--key", key, "--entry", str(d / "entry5.json"))
    assert forged.returncode == 1 and "FAILED" in forged.stdout
    from ledger.transparency.note import Ed25519Signer

    stranger = Ed25519Signer.generate(verifier_from_key(key).name).verifier().key_string
    wrong = offline(served, str(d / "bundle5"), "--key", stranger, "--entry",
                    str(d / "entry5.json"))
    assert wrong.returncode == 1 and "FAILED" in wrong.stdout


def test_verify_proof_checks_json_proofs_against_signed_checkpoints(
    served: dict[str, Any],
) -> None:
    d, key = served["dir"], served["key"]
    inclusion = offline(served, str(d / "inclusion"), "--key", key,
                        "--entry", str(d / "entry3.json"), "--checkpoint", str(d / "cp12"))
    assert inclusion.returncode == 0, inclusion.stdout + inclusion.stderr
    assert "tree size 12" in inclusion.stdout
    # Against the checkpoint of another size there is nothing to check it with.
    unanchored = offline(served, str(d / "inclusion"), "--key", key,
                         "--entry", str(d / "entry3.json"), "--checkpoint", str(d / "cp19"))
    assert unanchored.returncode == 1 and "needs the signed checkpoint" in unanchored.stdout
    consistency = offline(served, str(d / "consistency"), "--key", key,
                          "--checkpoint", str(d / "cp12"), "--checkpoint", str(d / "cp19"))
    assert consistency.returncode == 0, consistency.stdout
    assert "extends its tree of 12 entries" in consistency.stdout
    checkpoint = offline(served, str(d / "cp19"), "--key", key)
    assert checkpoint.returncode == 0 and "19 entries" in checkpoint.stdout
    from ledger.transparency.note import Cosigner

    witness = Cosigner.generate("witness.test").verifier().key_string
    uncosigned = offline(served, str(d / "cp19"), "--key", key,
                         "--witness-key", witness, "--quorum", "1")
    assert uncosigned.returncode == 1 and "cosignatures" in uncosigned.stdout


# -- the witness, and verify, against a rolled-back database --------------------------------


class Backup:
    """A copy of the whole database, restored later over the live one."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.postgres = url.startswith("postgresql://")
        self.name = url.rsplit("/", 1)[1]
        self.copy = f"{self.name}_backup"

    def save(self) -> None:
        if self.postgres:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.copy}" TEMPLATE "{self.name}"')
            return
        self._sqlite(self.url.removeprefix("sqlite:///"), str(self.tmp / "backup.db"))

    def restore(self) -> None:
        if self.postgres:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{self.name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.copy}"')
            return
        self._sqlite(str(self.tmp / "backup.db"), self.url.removeprefix("sqlite:///"))

    def drop(self) -> None:
        if self.postgres:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.copy}" WITH (FORCE)')

    @staticmethod
    def _sqlite(source: str, target: str) -> None:
        src, dst = sqlite3.connect(source), sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()


def test_the_witness_accepts_growth_and_refuses_a_rollback_and_a_fork(
    settings: Settings, tmp_path: Path,
) -> None:
    server = ServerProcess(db_env(settings) | FAST, log_path=tmp_path / "server.log")
    backup = Backup(settings.database_url, tmp_path)
    state, wkey = tmp_path / "witness" / "state", tmp_path / "witness" / "key"

    def witness() -> subprocess.CompletedProcess[str]:
        return phi_ledger("witness", "--log", server.url, "--key", log_key, "--state",
                          str(state), "--witness-key", str(wkey), "--name", "witness.test",
                          env={"LEDGER_API_KEY": server.api_key or ""})

    try:
        with server, server.client() as client:
            post(client, 20)
            wait_for(client.get, 20)
            log_key = client.get("/v1/checkpoints/key").text.strip()
            first = witness()
            assert first.returncode == 0, first.stderr
            assert size_of(state.read_text()) == 20 and first.stdout == state.read_text()
            assert "witness.test+" in first.stderr  # the new witness key, to publish
        backup.save()  # the database as it was at 20 entries
        with server, server.client() as client:
            post(client, 10)
            wait_for(client.get, 30)
            grown = witness()
        assert grown.returncode == 0, grown.stderr
        held = state.read_text()
        assert size_of(held) == 30 and "witness key created" not in grown.stderr  # made once
        cosigner = verifier_from_key(first.stderr.strip().splitlines()[-1])
        assert open_checkpoint(held, verifier_from_key(log_key), witnesses=[cosigner],
                               quorum=1).size == 30

        backup.restore()  # rolled back: entries, tree and checkpoints as they were at 20
        with server, server.client() as client:
            assert size_of(client.get("/v1/checkpoints/latest").text) == 20
            rollback = witness()
            assert rollback.returncode == 1 and "REFUSED: rollback" in rollback.stderr
            assert state.read_text() == held
            # The rolled-back database is consistent with itself...
            alone = phi_ledger("verify", env=db_env(settings))
            assert alone.returncode == 0, alone.stdout + alone.stderr
            # ...but not with the checkpoint the witness holds.
            caught = phi_ledger("verify", "--checkpoint", str(state), "--key", log_key,
                                env=db_env(settings))
            assert caught.returncode == 1
            assert f"{LEDGER}: TRUNCATED: a signed checkpoint covers 30 entries but the chain" \
                   " ends at seq 20" in caught.stdout, caught.stdout

            post(client, 15)  # new entries where 21-30 were: a fork
            wait_for(client.get, 35)
            fork = witness()
            assert fork.returncode == 1 and "REFUSED: fork" in fork.stderr, fork.stderr
            assert state.read_text() == held
            forked = phi_ledger("verify", "--checkpoint", str(state), env=db_env(settings))
            assert forked.returncode == 1
            assert "do not reproduce the checkpoint in" in forked.stdout, forked.stdout
            assert "BROKEN at seq 21:" in forked.stdout
    finally:
        server.stop()
        backup.drop()


def test_verify_catches_a_truncated_tail(settings: Settings, tmp_path: Path) -> None:
    """From the stored checkpoints alone; and, when the checkpoints were deleted too, from
    a checkpoint held elsewhere."""
    fast = Settings(**{**settings.__dict__, "checkpoint_interval_ms": 200})
    key = provision_key(settings.database_url)
    with TestClient(create_app(fast, configure_logs=False), headers=auth_headers(key)) as c:
        post(c, 30)
        held = wait_for(c.get, 30)
        log_key = c.get("/v1/checkpoints/key").text.strip()
    (tmp_path / "held").write_text(held)
    intact = phi_ledger("verify", env=db_env(settings))
    assert intact.returncode == 0 and f"{LEDGER}: intact through seq 30 " in intact.stdout

    with raw(settings.database_url) as r:
        r.truncate_after(24)  # the tail's entries only
    cut = phi_ledger("verify", env=db_env(settings))
    assert cut.returncode == 1, cut.stdout
    assert f"{LEDGER}: TRUNCATED: a signed checkpoint covers 30 entries but the chain ends" \
           " at seq 24" in cut.stdout
    with TestClient(create_app(fast, configure_logs=False), headers=auth_headers(key)) as c:
        verdict = c.post("/v1/ledger/verify").json()
    assert verdict["ok"] is False and verdict["first_bad_seq"] == 25
    assert verdict["verified_through"] == 24 and verdict["reason"].startswith("truncated")

    with raw(settings.database_url) as r:
        r.truncate_after(24, tree=True, checkpoints=True)  # and everything that showed it
    hidden = phi_ledger("verify", env=db_env(settings))
    assert hidden.returncode == 0, hidden.stdout  # nothing in the database says otherwise
    caught = phi_ledger("verify", "--checkpoint", str(tmp_path / "held"), "--key", log_key,
                        env=db_env(settings))
    assert caught.returncode == 1 and "TRUNCATED" in caught.stdout, caught.stdout


def test_verify_catches_entries_rewritten_under_a_signed_checkpoint(
    settings: Settings,
) -> None:
    """Entries 11-20 replaced by a consistent, correctly hashed chain: every link holds,
    only the signed root shows it."""
    from tests.test_tamper import seal

    fast = Settings(**{**settings.__dict__, "checkpoint_interval_ms": 200})
    key = provision_key(settings.database_url)
    with TestClient(create_app(fast, configure_logs=False), headers=auth_headers(key)) as c:
        post(c, 20)
        wait_for(c.get, 20)
    with raw(settings.database_url) as r:
        rows = r.run("SELECT originator_version, state FROM stored_events WHERE originator_id"
                     " = ? ORDER BY originator_version", r.lid).fetchall()
        prev = json.loads(bytes(rows[9][1]))["hash"]
        for seq, state in rows[10:]:
            entry = json.loads(bytes(state))
            entry["event"]["actor"]["id"] = "agent-rewritten"
            entry = seal({**entry, "prev_hash": prev})
            prev = entry["hash"]
            body = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
            r.run("UPDATE stored_events SET state = ? WHERE originator_id = ?"
                  " AND originator_version = ?", body, r.lid, seq)
    result = phi_ledger("verify", env=db_env(settings))
    assert result.returncode == 1, result.stdout
    assert f"{LEDGER}: BROKEN at seq 1: the entries do not reproduce the signed checkpoint of" \
           " size 20" in result.stdout, result.stdout


def test_the_checkpoint_command_signs_and_refuses(settings: Settings) -> None:
    key = provision_key(settings.database_url)
    slow = Settings(**{**settings.__dict__, "checkpoints_inline": False})
    with TestClient(create_app(slow, configure_logs=False), headers=auth_headers(key)) as c:
        post(c, 8)
        assert c.get("/v1/checkpoints/latest").status_code == 404  # nobody signs
    signed = phi_ledger("checkpoint", env=db_env(settings))
    assert signed.returncode == 0, signed.stderr
    assert f"{LEDGER}: signed the checkpoint of 8 entries" in signed.stdout
    again = phi_ledger("checkpoint", env=db_env(settings))
    assert f"{LEDGER}: nothing new since the checkpoint of 8 entries" in again.stdout
    with raw(settings.database_url) as r:
        r.truncate_after(5)
    refused = phi_ledger("checkpoint", env=db_env(settings))
    assert refused.returncode == 1 and "REFUSED: truncated" in refused.stdout


def test_serve_with_two_workers_signs_checkpoints(settings: Settings, tmp_path: Path) -> None:
    with ServerProcess(db_env(settings) | FAST, args=("--workers", "2"),
                       log_path=tmp_path / "server.log") as server, server.client() as client:
        for _ in range(4):
            post(client, 5)
        note = wait_for(client.get, 20)
        key = client.get("/v1/checkpoints/key").text.strip()
    assert open_checkpoint(note, verifier_from_key(key)).size == 20
    log = (tmp_path / "server.log").read_text()
    assert "checkpoint.refused" not in log and "Traceback" not in log


def test_the_witness_reports_an_unreachable_log(tmp_path: Path) -> None:
    from ledger.transparency.note import Ed25519Signer

    key = Ed25519Signer.generate("log.test/default").verifier().key_string
    result = phi_ledger("witness", "--log", "http://127.0.0.1:9", "--key", key, "--state",
                        str(tmp_path / "s"), "--witness-key", str(tmp_path / "w"))
    assert result.returncode == 2 and "cannot reach the log" in result.stderr
    assert not (tmp_path / "s").exists()
    assert oct((tmp_path / "w").stat().st_mode & 0o777) == "0o600"
