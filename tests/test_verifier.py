"""The verifier's shell: long chains are checked in parallel stretches with the same
verdict as one walk, and chains are found from the entries, not from an editable list."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from ledger import verifier
from ledger.settings import Settings
from ledger.store import open_store
from ledger.verifier import verify, verify_ledger, verify_ledger_parallel
from tests.test_tamper import (
    LEDGER,
    break_link,
    delete_entry,
    edit_field,
    fill,
    run_cli,
    swap_entries,
    tampering,
)


def _both(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    monkeypatch.setattr(verifier, "STRETCH", 7)
    monkeypatch.setattr(verifier, "PARALLEL_FROM", 1)
    store = open_store(settings.database_url)
    try:
        walk = verify_ledger(store, LEDGER)
        parallel = verify(store, settings.database_url, LEDGER)
    finally:
        store.close()
    return walk, parallel


def test_parallel_verdict_equals_a_single_walk_when_intact(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(settings)
    walk, parallel = _both(settings, monkeypatch)
    assert walk == parallel
    assert parallel.ok and parallel.verified_through == 30  # type: ignore[attr-defined]


@pytest.mark.parametrize("damage", [edit_field, delete_entry, swap_entries, break_link])
def test_parallel_verdict_equals_a_single_walk_when_broken(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, damage: object
) -> None:
    fill(settings)
    with tampering(settings.database_url) as t:
        damage(t)  # type: ignore[operator]
    walk, parallel = _both(settings, monkeypatch)
    assert not parallel.ok  # type: ignore[attr-defined]
    assert (walk.first_bad_seq, walk.verified_through, walk.reason) == (  # type: ignore[attr-defined]
        parallel.first_bad_seq, parallel.verified_through, parallel.reason)  # type: ignore[attr-defined]


def test_a_stretch_boundary_break_is_found(settings: Settings) -> None:
    """A broken link exactly at a stretch boundary (seq 8 starts the second stretch of 7)."""
    fill(settings)
    with tampering(settings.database_url) as t:
        t.delete(8)
    verdict = verify_ledger_parallel(settings.database_url, LEDGER, 30, workers=2)
    assert not verdict.ok and verdict.first_bad_seq == 8 and verdict.verified_through == 7


def test_chains_are_found_from_the_entries(settings: Settings) -> None:
    fill(settings, n=3)
    store = open_store(settings.database_url)
    try:
        names, problems = store.chains()
        assert names == [LEDGER] and problems == []
    finally:
        store.close()
    # An insider removes the ledger from the list: verify still finds and checks its chain.
    _delete_ledger_row(settings.database_url)
    result = run_cli(settings, "verify")
    assert result.returncode == 0 and "default: intact through seq 3" in result.stdout


def _delete_ledger_row(url: str) -> None:
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("DELETE FROM ledgers WHERE name = %s", (LEDGER,))
        return
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TRIGGER ledgers_no_delete")
        conn.execute("DELETE FROM ledgers WHERE name = ?", (LEDGER,))


def test_a_listed_ledger_without_entries_is_reported(settings: Settings) -> None:
    fill(settings, n=3)
    with tampering(settings.database_url) as t:
        for seq in (1, 2, 3):
            t.delete(seq)
    result = run_cli(settings, "verify")
    assert result.returncode == 1
    assert "ledger 'default' is listed but its chain holds no entries" in result.stdout


def test_verify_and_export_do_not_create_or_migrate(tmp_path: object) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/absent.db")
    for command in ("verify", "export"):
        result = run_cli(settings, command)
        assert result.returncode == 2 and "no ledger database" in result.stderr
    assert not (tmp_path / "absent.db").exists()  # type: ignore[operator]
