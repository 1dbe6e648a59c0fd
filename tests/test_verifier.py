"""The verifier's shell: long chains are checked in parallel stretches with the same
verdict as one walk, and chains are found from the entries, not from an editable list.

The stretches are checked on :class:`tests.test_verifier_verdicts.InProcess`, in the test
process (where mutmut sees them), and, in the tests marked ``slow``, also on the worker
processes production uses."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from ledger import verifier
from ledger.chain import EMPTY_HEAD, Head, Verdict, VerdictKind, extend
from ledger.entry import Entry
from ledger.migrate import migrate
from ledger.settings import Settings
from ledger.store import ledger_id, open_store
from ledger.store.base import ENTRY_TOPIC, STORED_LEVELS_FROM
from ledger.transparency.tree import Frontier, root_of
from ledger.verifier import (
    Pool,
    Signed,
    verify,
    verify_ledger,
    verify_ledger_parallel,
    worker_processes,
)
from tests.test_tamper import (
    BAD,
    LEDGER,
    Tamperer,
    break_link,
    delete_entry,
    edit_field,
    fill,
    run_cli,
    seal,
    swap_entries,
    tampering,
)
from tests.test_transparency_checkpoints import raw
from tests.test_verifier_verdicts import InProcess, Pools

LINK_MISMATCH = "prev_hash does not match the hash of the entry before"
# in the test process, and (slow) on the worker processes :func:`verify` starts by default
POOLS = [pytest.param(InProcess, id="in_process"),
         pytest.param(worker_processes, id="processes", marks=pytest.mark.slow)]


def _both(settings: Settings, monkeypatch: pytest.MonkeyPatch,
          pool: Pool) -> tuple[Verdict, Verdict]:
    monkeypatch.setattr(verifier, "STRETCH", 7)
    monkeypatch.setattr(verifier, "PARALLEL_FROM", 1)
    store = open_store(settings.database_url)
    try:
        walk = verify_ledger(store, LEDGER)
        parallel = verify(store, settings.database_url, LEDGER, pool=pool)
    finally:
        store.close()
    return walk, parallel


@pytest.mark.parametrize("pool", POOLS)
def test_parallel_verdict_equals_a_single_walk_when_intact(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, pool: Pool
) -> None:
    receipts = fill(settings)
    walk, parallel = _both(settings, monkeypatch, pool)
    assert walk == parallel == Verdict(VerdictKind.INTACT, 30, None, None, receipts[-1].hash)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("damage", [edit_field, delete_entry, swap_entries, break_link])
def test_parallel_verdict_equals_a_single_walk_when_broken(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Tamperer], None],
    pool: Pool,
) -> None:
    fill(settings)
    with tampering(settings.database_url) as t:
        damage(t)
    walk, parallel = _both(settings, monkeypatch, pool)
    assert parallel == walk
    assert (parallel.kind, parallel.first_bad_seq) == (VerdictKind.BROKEN, BAD)


@pytest.mark.parametrize(("deleted", "reason", "progress"), [
    # the last entry of the first stretch: its worker reads seqs 1..8 only, so the gap is
    # the stretch's end (a single walk would name the next stored position, 9)
    (8, "entry missing (stretch ends at seq 7)", []),
    # the first entry of the second stretch: the first stretch (1..8) is done and reported
    # before the second one's worker finds the gap
    (9, "entry missing (next stored position is 10)", [8]),
])
def test_a_stretch_boundary_break_is_found(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, deleted: int, reason: str,
    progress: list[int],
) -> None:
    """A missing entry on either side of a stretch boundary (stretches of 8: seq 8 ends
    the first, seq 9 starts the second), found by the worker of its own stretch, with the
    hash of the last good entry as the verdict's head. The stretches after it are
    cancelled: not one is checked."""
    monkeypatch.setattr(verifier, "STRETCH", 8)
    fill(settings)
    with tampering(settings.database_url) as t:
        last_good = t.entry(deleted - 1)["hash"]
        t.delete(deleted)
    done: list[int] = []
    pools = Pools()
    verdict = verify_ledger_parallel(settings.database_url, LEDGER, 30, workers=2,
                                     progress=done.append, pool=pools)
    assert verdict == Verdict(VerdictKind.BROKEN, deleted - 1, deleted, reason, last_good)
    assert done == progress
    assert [p.stretches() for p in pools] == [[(0, 8), (8, 16)][:1 + len(progress)]]


def _check(settings: Settings, signed: Signed | None = None,
           pool: Pool = InProcess) -> tuple[Verdict, Verdict]:
    """The single walk's verdict and :func:`verify`'s (in stretches when patched so)."""
    store = open_store(settings.database_url)
    try:
        return (verify_ledger(store, LEDGER, checkpoints=signed),
                verify(store, settings.database_url, LEDGER, checkpoints=signed, pool=pool))
    finally:
        store.close()


def test_a_suffix_rechained_from_a_stretch_boundary_is_found(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries 9..30 rewritten and re-chained among themselves from a forged prev_hash at
    seq 9, the first of a stretch: every stretch is intact on its own, only linking the
    stretches finds the break (the stored tree would flag it too, but as no seq). The
    stretches after it are cancelled: not one is checked."""
    monkeypatch.setattr(verifier, "STRETCH", 8)
    monkeypatch.setattr(verifier, "PARALLEL_FROM", 1)
    fill(settings)
    with tampering(settings.database_url) as t:
        last_good = t.entry(8)["hash"]
        prev = secrets.token_hex(32)
        for seq in range(9, 31):
            entry = seal({**t.entry(seq), "prev_hash": prev})
            t.put(seq, entry)
            prev = entry["hash"]
    pools = Pools()
    for verdict in _check(settings, pool=pools):
        assert verdict == Verdict(VerdictKind.BROKEN, 8, 9, LINK_MISMATCH, last_good)
    assert [p.stretches() for p in pools] == [[(0, 8), (8, 16)]]


def test_losing_exactly_the_last_signed_entry_is_a_truncation(settings: Settings) -> None:
    """A checkpoint held elsewhere covers 30 entries; the newest one is deleted: the
    chain left is intact, and one entry short of what was signed."""
    fill(settings)
    with tampering(settings.database_url) as t:
        root = root_of([bytes.fromhex(t.entry(seq)["hash"]) for seq in range(1, 31)])
        t.delete(30)
    for verdict in _check(settings, {30: (root, "held checkpoint")}):
        assert (verdict.kind, verdict.first_bad_seq, verdict.verified_through) == (
            VerdictKind.TRUNCATED, 30, 29)
        assert verdict.reason == (
            "truncated: a signed checkpoint covers 30 entries but the chain ends at seq 29"
            " (entries removed, or the database rolled back)")


def _corrupt_node(url: str, level: int, index: int) -> None:
    with raw(url, ("merkle_nodes",)) as r:
        lid = ledger_id(LEDGER) if r.postgres else ledger_id(LEDGER).hex
        count = r.run("UPDATE merkle_nodes SET hash = ? WHERE ledger_id = ? AND level = ?"
                      " AND idx = ?", secrets.token_bytes(32), lid, level, index).rowcount
        assert count == 1


@pytest.mark.parametrize(("node", "where"), [
    ((5, 0), "at the head"),  # 40 entries: the edge is the subtrees of 32 and 8
    ((4, 1), "in the subtree over seqs 17-32 (level 4, index 1)"),  # interior: no edge
])
def test_a_stored_tree_that_no_longer_matches_is_found(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, node: tuple[int, int], where: str
) -> None:
    assert STORED_LEVELS_FROM <= 4  # the nodes below are stored, not hashed from entries
    fill(settings, n=40)
    intact = _check(settings)
    assert all(v.ok and v.verified_through == 40 for v in intact), intact
    _corrupt_node(settings.database_url, *node)
    monkeypatch.setattr(verifier, "STRETCH", 8)
    monkeypatch.setattr(verifier, "PARALLEL_FROM", 1)
    for verdict in _check(settings):
        assert (verdict.kind, verdict.first_bad_seq, verdict.verified_through) == (
            VerdictKind.TREE_MISMATCH, None, 40)
        assert verdict.reason == (f"the stored Merkle tree does not match the entries {where}:"
                                  " proofs served from it would not verify")


@pytest.mark.slow
def test_a_suffix_rechained_from_the_real_stretch_boundary_is_found(tmp_path: object) -> None:
    """The same at the real stretch size (2^18): the chain is written in bulk, straight into
    a SQLite store (stretch linking does not depend on the backend; the small-stretch test
    above runs on both), with a tree that matches every stored entry, so nothing but the
    link between the two stretches can tell."""
    url = f"sqlite:///{tmp_path}/long.db"
    migrate(url)
    step = verifier.STRETCH
    assert step == 1 << 18 and step >= verifier.PARALLEL_FROM
    t = "2026-11-26T19:03:22.301544Z"
    first = extend(EMPTY_HEAD, LEDGER, [{"event_id": f"e{i}"} for i in range(step)], t)
    forged = Head(step, secrets.token_hex(32), t)
    rest = extend(forged, LEDGER, [{"event_id": f"f{i}"} for i in range(5)], t)
    entries = first + rest
    _bulk_write(url, entries)
    store = open_store(url)
    try:
        verdict = verify(store, url, LEDGER)
    finally:
        store.close()
    assert (verdict.kind, verdict.first_bad_seq, verdict.verified_through) == (
        VerdictKind.BROKEN, step + 1, step)
    assert verdict.reason == LINK_MISMATCH


def _bulk_write(url: str, entries: list[Entry]) -> None:
    lid = ledger_id(LEDGER).hex
    _, nodes = Frontier().grow([bytes.fromhex(e.hash) for e in entries], STORED_LEVELS_FROM)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.executemany(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
            " VALUES (?, ?, ?, ?)", ((lid, e.seq, ENTRY_TOPIC, e.encode()) for e in entries))
        conn.executemany("INSERT INTO merkle_nodes (ledger_id, level, idx, hash)"
                         " VALUES (?, ?, ?, ?)", ((lid, *n) for n in nodes))


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


def test_verify_and_export_do_not_create_or_migrate(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/absent.db")
    for command in ("verify", "export"):
        result = run_cli(settings, command)
        assert result.returncode == 2 and "no ledger database" in result.stderr
    assert not (tmp_path / "absent.db").exists()
