"""The verifier's verdicts, each by its kind, seq and reason: signed roots that the entries
do not reproduce, truncation, the stored tree, a stretch as its worker reports it, and
entries appended while a long check runs. The ledgers are written straight through the
store (no ingest service), so most of these run in a fraction of a second. The tests
named ``in_stretches`` check a chain in stretches on :class:`InProcess`, an executor in
the test process (mutmut sees no call made in a worker process); the one that spawns the
worker processes production uses is marked ``slow`` (CI runs it, scripts/mutation
does not)."""

from __future__ import annotations

import json
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest

from ledger import verifier
from ledger.chain import EMPTY_HEAD, ChainCheck, Head, Verdict, VerdictKind, extend
from ledger.entry import GENESIS_HASH
from ledger.migrate import migrate
from ledger.settings import Settings
from ledger.store import open_store
from ledger.store.base import STORED_LEVELS_FROM
from ledger.transparency.tree import Frontier, Node, root_of
from ledger.verifier import (
    STORED,
    Signed,
    SignedRoots,
    Stretch,
    verify,
    verify_ledger,
    verify_ledger_parallel,
)
from tests.test_tamper import edit_field, seal, tampering
from tests.test_transparency_checkpoints import append, raw, sign

LEDGER = "default"
P = ParamSpec("P")
T = TypeVar("T")


class InProcess(Executor):
    """A pool of one worker in the test process, which runs each call when its result is
    asked for, or at shutdown if it is still pending then (a cancelled call never runs):
    so ``calls`` shows which stretches were checked, and a verdict's cancelling of the
    rest counts. Like a worker process it opens ``verifier.worker_store`` on its first
    stretch; it closes it at shutdown, so no other test finds it open."""

    def __init__(self, workers: int) -> None:
        assert verifier.worker_store is None, "a worker store left open"
        self.workers = workers
        self.calls: list[tuple[object, ...]] = []  # the arguments of each call run
        self.pending: deque[Deferred[Any]] = deque()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future = Deferred(self, lambda: fn(*args, **kwargs), args)
        self.pending.append(future)
        return future

    def run_until(self, wanted: Future[Any] | None = None) -> None:
        """Run the pending calls in order, up to ``wanted`` (all of them without)."""
        while self.pending and not (wanted is not None and wanted.done()):
            future = self.pending.popleft()
            if future.set_running_or_notify_cancel():
                self.calls.append(future.args)
                try:
                    future.set_result(future.call())
                except BaseException as error:
                    future.set_exception(error)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            self.run_until()
        finally:
            if verifier.worker_store is not None:
                verifier.worker_store.close()
                verifier.worker_store = None

    def stretches(self) -> list[tuple[int, int]]:
        """The ``(after, upto)`` of each stretch checked, in order."""
        return [(int(str(args[2])), int(str(args[3]))) for args in self.calls]


class Deferred(Future[T]):
    """A call of :class:`InProcess`, run when its result is first asked for."""

    def __init__(self, pool: InProcess, call: Callable[[], T], args: tuple[object, ...]):
        super().__init__()
        self.pool, self.call, self.args = pool, call, args

    def result(self, timeout: float | None = None) -> T:
        self.pool.run_until(self)
        return super().result(timeout)


class Pools(list[InProcess]):
    """A ``Pool`` that keeps each executor it makes, to be asked what it was given."""

    def __call__(self, workers: int) -> InProcess:
        self.append(InProcess(workers))
        return self[-1]


def _ledger(settings: Settings, n: int) -> list[dict[str, object]]:
    migrate(settings.database_url)
    append(settings.database_url, n)
    return _entries(settings.database_url)


def _entries(url: str) -> list[dict[str, object]]:
    """The stored entries, as a reader of the database sees them (seq 1 first)."""
    store = open_store(url)
    try:
        return [json.loads(data) for _, data in store.stream(LEDGER)]
    finally:
        store.close()


def _leaves(entries: list[dict[str, object]]) -> list[bytes]:
    return [bytes.fromhex(str(e["hash"])) for e in entries]


def _head(entry: dict[str, object]) -> Head:
    return Head(int(str(entry["seq"])), str(entry["hash"]), str(entry["recorded_at"]))


def _walk(url: str, signed: Signed | None = None, **options: bool) -> Verdict:
    store = open_store(url, **options)
    try:
        return verify_ledger(store, LEDGER, checkpoints=signed)
    finally:
        store.close()


def _in_stretches(url: str, monkeypatch: pytest.MonkeyPatch, signed: Signed | None = None,
                  progress: verifier.Progress | None = None,
                  pool: verifier.Pool = InProcess) -> Verdict:
    """:func:`verify` in stretches of 8 entries from the first, on ``pool``."""
    monkeypatch.setattr(verifier, "STRETCH", 8)
    monkeypatch.setattr(verifier, "PARALLEL_FROM", 1)
    store = open_store(url)
    try:
        return verify(store, url, LEDGER, progress, checkpoints=signed, pool=pool)
    finally:
        store.close()


def _rewritten(size: int, source: str, after: int, head: str) -> Verdict:
    return Verdict(VerdictKind.REWRITTEN, after, after + 1,
                   f"the entries do not reproduce the {source} of size {size}: entries after"
                   f" seq {after} (the last signed size that matches) were rewritten", head)


def _held(entries: list[dict[str, object]], good: list[int], bad: dict[int, str]) -> Signed:
    """Checkpoints held elsewhere: the true root at each size of ``good``, a random one
    (from the source named) at each size of ``bad``."""
    leaves = _leaves(entries)
    held: dict[int, tuple[bytes, str]] = {s: (root_of(leaves[:s]), "witness") for s in good}
    return held | {s: (secrets.token_bytes(32), source) for s, source in bad.items()}


def test_the_first_signed_root_not_reproduced_is_named(settings: Settings) -> None:
    """Roots at 4 and 9 match, 13 and 17 do not: the verdict names the first that does not
    (13) and counts as verified the largest that does (9)."""
    entries = _ledger(settings, 20)
    held = _held(entries, [4, 9], {13: "witness B", 17: "witness C"})
    assert _walk(settings.database_url, held) == _rewritten(13, "witness B", 9,
                                                          str(entries[19]["hash"]))


def test_a_signed_root_of_the_first_entry_alone_is_checked(settings: Settings) -> None:
    entries = _ledger(settings, 3)
    held = _held(entries, [], {1: "witness K"})
    assert _walk(settings.database_url, held) == _rewritten(1, "witness K", 0,
                                                          str(entries[2]["hash"]))


def test_every_claim_at_one_size_is_checked(settings: Settings) -> None:
    """A stored checkpoint and a held one of the same size: the stored one matches, the
    held one does not, and it is the held one the verdict names."""
    entries = _ledger(settings, 12)
    assert sign(settings).size == 12
    held = _held(entries, [5], {12: "witness D"})
    assert _walk(settings.database_url, held) == _rewritten(12, "witness D", 5,
                                                          str(entries[11]["hash"]))
    # the held one alone matching, no claim beyond: intact
    assert _walk(settings.database_url, _held(entries, [5, 12], {})) == Verdict(
        VerdictKind.INTACT, 12, None, None, str(entries[11]["hash"]))


def test_an_edited_stored_checkpoint_is_named_as_the_signed_checkpoint(
    settings: Settings
) -> None:
    entries = _ledger(settings, 12)
    assert sign(settings).size == 12
    with raw(settings.database_url, ("checkpoints",)) as r:
        r.run("UPDATE checkpoints SET root = ? WHERE ledger_id = ?", b"\x01" * 32, r.lid)
    assert _walk(settings.database_url) == _rewritten(12, STORED, 0, str(entries[11]["hash"]))


def test_a_stored_checkpoint_beyond_the_chain_is_a_truncation(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed size the chain no longer reaches, even with a root at a smaller size that
    does not match: the truncation is the verdict (the larger loss)."""
    entries = _ledger(settings, 20)
    assert sign(settings).size == 20
    with raw(settings.database_url) as r:
        r.truncate_after(15, tree=True)
    held = _held(entries, [], {10: "witness E"})
    expected = Verdict(VerdictKind.TRUNCATED, 15, 16,
                       "truncated: a signed checkpoint covers 20 entries but the chain ends at"
                       " seq 15 (entries removed, or the database rolled back)",
                       str(entries[14]["hash"]))
    assert _walk(settings.database_url, held) == expected
    assert _in_stretches(settings.database_url, monkeypatch, held) == expected


def test_progress_is_reported_every_so_many_entries_and_at_the_end(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verifier, "PROGRESS_EVERY", 4)
    migrate(settings.database_url)
    store = open_store(settings.database_url)
    try:
        done: list[int] = []
        # no entries and no checkpoint: intact through 0, not short of anything signed
        assert verify_ledger(store, LEDGER, done.append) == Verdict(
            VerdictKind.INTACT, 0, None, None, GENESIS_HASH)
        assert done == [0]
        append(settings.database_url, 10)
        verify_ledger(store, LEDGER, done.append)
        assert done == [0, 4, 8, 10]
        done.clear()
        verify(store, settings.database_url, LEDGER, done.append)  # short: one walk
        assert done == [4, 8, 10]
    finally:
        store.close()


def _corrupt(url: str, *nodes: tuple[int, int]) -> None:
    with raw(url, ("merkle_nodes",)) as r:
        for level, index in nodes:
            count = r.run("UPDATE merkle_nodes SET hash = ? WHERE ledger_id = ? AND level = ?"
                          " AND idx = ?", secrets.token_bytes(32), r.lid, level, index).rowcount
            assert count == 1


def _tree_mismatch(head: dict[str, object], where: str) -> Verdict:
    return Verdict(VerdictKind.TREE_MISMATCH, int(str(head["seq"])), None,
                   f"the stored Merkle tree does not match the entries {where}: proofs served"
                   " from it would not verify", str(head["hash"]))


def test_the_lowest_bad_stored_subtree_is_named(settings: Settings) -> None:
    """80 entries: the edge is the subtrees of 64 and 16; (5, 0) and (4, 2) are interior.
    Both corrupted, the verdict names the smaller one, whatever order they were made in
    ((5, 0) was completed first)."""
    assert STORED_LEVELS_FROM <= 4
    entries = _ledger(settings, 80)
    _corrupt(settings.database_url, (5, 0), (4, 2))
    assert _walk(settings.database_url) == _tree_mismatch(
        entries[-1], "in the subtree over seqs 33-48 (level 4, index 2)")


def test_a_missing_stored_subtree_is_found(settings: Settings) -> None:
    entries = _ledger(settings, 40)
    with raw(settings.database_url, ("merkle_nodes",)) as r:
        r.run("DELETE FROM merkle_nodes WHERE ledger_id = ? AND level = 4 AND idx = 0", r.lid)
    assert _walk(settings.database_url) == _tree_mismatch(
        entries[-1], "in the subtree over seqs 1-16 (level 4, index 0)")


def test_a_store_that_keeps_no_tree_is_not_held_to_one(settings: Settings) -> None:
    """Opened without maintaining the tree, the store's nodes are not the verifier's
    concern (whatever they hold); the chain and the checkpoints still are."""
    entries = _ledger(settings, 40)
    _corrupt(settings.database_url, (5, 0))
    assert _walk(settings.database_url) == _tree_mismatch(entries[-1], "at the head")
    assert _walk(settings.database_url, maintain_tree=False) == Verdict(
        VerdictKind.INTACT, 40, None, None, str(entries[-1]["hash"]))


def test_a_walk_releases_its_rows_when_it_stops_at_a_break() -> None:
    """The rows' cursor is closed before the walk returns (the store may be closed next),
    and rows without a ``close`` are walked all the same."""
    t = "2026-11-26T19:03:22.301544Z"
    entries = extend(EMPTY_HEAD, LEDGER, [{"event_id": f"e{i}"} for i in range(4)], t)
    stored = [(e.seq, e.encode()) for e in entries]
    stored[2] = (3, stored[2][1].replace(b"e2", b"e9"))
    closed: list[bool] = []

    def rows() -> Iterator[tuple[int, bytes]]:
        try:
            yield from stored
        finally:
            closed.append(True)

    check = ChainCheck(LEDGER)
    stream = rows()
    broken = verifier.walk(check, verifier.TreeCheck(Frontier()), stream, None)
    assert broken is not None and broken.seq == 3
    assert closed == [True]
    done: list[int] = []
    intact = verifier.walk(ChainCheck(LEDGER), verifier.TreeCheck(Frontier()), stored[:2],
                            done.append)
    assert intact is None and done == [2]


def _stretch(url: str, monkeypatch: pytest.MonkeyPatch, after: int, upto: int,
             extra: Signed | None = None) -> Stretch:
    """A worker's check of one stretch, run here: its store is the worker's own."""
    monkeypatch.setattr(verifier, "worker_store", None)
    try:
        return verifier.check_stretch(url, LEDGER, after, upto, extra)
    finally:
        if verifier.worker_store is not None:
            verifier.worker_store.close()


def test_a_stretch_reports_its_edges_marks_and_subtrees(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seqs 17..32 of 40: its first link (to seq 16) for the caller to check, its own
    subtree's edge, the edge at each signed size inside it (stored or held; those outside
    left out), and the stored-size subtrees it completes, by their place in the whole
    tree."""
    entries = _ledger(settings, 20)
    assert sign(settings).size == 20
    append(settings.database_url, 20)
    entries = _entries(settings.database_url)
    leaves = _leaves(entries)
    held = _held(entries, [16, 26, 32, 33], {30: "witness F"})
    got = _stretch(settings.database_url, monkeypatch, 16, 32, held)
    assert got == Stretch(
        16, 32, str(entries[15]["hash"]), _head(entries[31]), None, None,
        Frontier().append(leaves[16:32])[0].hashes,
        tuple((size, Frontier().append(leaves[16:size])[0].hashes, claims) for size, claims in (
            (20, ((root_of(leaves[:20]), STORED),)),
            (26, (held[26],)),
            (30, (held[30],)),
            (32, (held[32],)),
        )),
        {Node(4, 1): root_of(leaves[16:32])})
    # no checkpoints at all: no marks
    plain = _stretch(settings.database_url, monkeypatch, 32, 40)
    assert (plain.marks, plain.nodes) == ((), {})
    assert plain.edge == Frontier().append(leaves[32:40])[0].hashes


def test_a_stretch_names_its_break_or_its_missing_end(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = _ledger(settings, 30)
    with tampering(settings.database_url) as t:
        edit_field(t)  # seq 10
        t.delete(16)
    walk = _walk(settings.database_url)
    got = _stretch(settings.database_url, monkeypatch, 8, 16)
    assert got == Stretch(8, 16, str(entries[7]["hash"]), _head(entries[8]), 10, walk.reason)
    assert walk.first_bad_seq == 10
    got = _stretch(settings.database_url, monkeypatch, 10, 16)  # seq 10 itself unchecked
    assert got == Stretch(10, 16, str(entries[9]["hash"]), _head(entries[14]), 16,
                          "entry missing (stretch ends at seq 15)")


def test_signed_roots_judged_in_order_stop_at_the_first_mismatch() -> None:
    roots = SignedRoots()
    right, wrong = secrets.token_bytes(32), secrets.token_bytes(32)
    roots.judge(3, right, [(right, "a"), (right, "b")])
    assert (roots.matched, roots.mismatch) == (3, None)
    roots.judge(5, right, [(right, "a"), (wrong, "b"), (wrong, "c")])
    roots.judge(7, right, [(wrong, "d")])
    roots.judge(9, right, [(right, "e")])
    assert (roots.matched, roots.mismatch) == (3, verifier.Mismatch(5, "b"))


def test_in_stretches_signed_roots_across_stretches_and_the_tree(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed sizes inside the second and third stretches (8-16, 16-24) are judged against
    the roots of the whole prefix, and the stored tree, interior nodes above a stretch
    included, is what the stretches rebuild."""
    entries = _ledger(settings, 40)
    head = str(entries[-1]["hash"])
    held = _held(entries, [4, 12, 16], {21: "witness G", 35: "witness H"})
    assert _in_stretches(settings.database_url, monkeypatch, held) == _rewritten(
        21, "witness G", 16, head)
    done: list[int] = []
    roots, tree, nodes = SignedRoots(), list[Frontier](), dict[Node, bytes]()
    # rounded down to stretches of 16: (4, 0) and (4, 1) are each a whole stretch's
    # subtree, (5, 0) joins two
    monkeypatch.setattr(verifier, "STRETCH", 31)
    pools = Pools()
    verdict = verify_ledger_parallel(settings.database_url, LEDGER, 38, workers=3,
                                     progress=done.append, checkpoints=held, roots=roots,
                                     tree=tree, nodes=nodes, pool=pools)
    leaves = _leaves(entries)
    assert verdict == Verdict(VerdictKind.INTACT, 38, None, None, str(entries[37]["hash"]))
    assert [(p.workers, p.stretches()) for p in pools] == [(3, [(0, 16), (16, 32), (32, 38)])]
    assert done == [16, 32, 38]
    assert (roots.matched, roots.mismatch) == (16, verifier.Mismatch(21, "witness G"))
    assert tree == [Frontier().append(leaves[:38])[0]]
    assert nodes == {Node(4, 0): root_of(leaves[:16]), Node(4, 1): root_of(leaves[16:32]),
                     Node(5, 0): root_of(leaves[:32])}


def test_in_stretches_entries_appended_meanwhile_are_checked_in_one_walk(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 entries are checked in stretches while more are appended:
    those are walked after, from the stretches' head and tree edge, with their stored
    subtrees (the one over seqs 33-48 is completed by them) and the checkpoints signed
    meanwhile."""
    entries = _ledger(settings, 40)
    url = settings.database_url
    held = _held(entries, [40], {})

    def corrupt(done: int) -> None:
        if done == 8:
            append(url, 30)  # 70 = 64 + 4 + 2: (4, 2) is interior
            _corrupt(url, (4, 2))

    assert _in_stretches(url, monkeypatch, held, corrupt) == _tree_mismatch(
        _entries(url)[-1], "in the subtree over seqs 33-48 (level 4, index 2)")
    leaves = _leaves(_entries(url))
    with raw(url, ("merkle_nodes",)) as r:
        r.run("UPDATE merkle_nodes SET hash = ? WHERE ledger_id = ? AND level = 4 AND idx = 2",
              root_of(leaves[32:48]), r.lid)

    def grow_and_sign(done: int, edit: bool = False) -> None:
        if done == 8:
            append(url, 10)
            size = sign(settings).size
            if edit:
                with raw(url, ("checkpoints",)) as r:
                    r.run("UPDATE checkpoints SET root = ? WHERE ledger_id = ? AND size = ?",
                          b"\x02" * 32, r.lid, size)

    def grow(done: int) -> None:
        if done == 8:
            append(url, 10)

    # a witness's checkpoint of 75 is beyond the head (70) when the check starts
    ahead = {**held, 75: (secrets.token_bytes(32), "witness J")}
    assert _in_stretches(url, monkeypatch, ahead, grow) == _rewritten(
        75, "witness J", 40, str(_entries(url)[-1]["hash"]))
    assert _in_stretches(url, monkeypatch, held, grow_and_sign) == Verdict(
        VerdictKind.INTACT, 90, None, None, str(_entries(url)[-1]["hash"]))
    # the checkpoint of 90 is now inside the stretches, the one of 100 signed meanwhile
    assert _in_stretches(url, monkeypatch, held, lambda done: grow_and_sign(done, True)) == (
        _rewritten(100, STORED, 90, str(_entries(url)[-1]["hash"])))


def test_in_stretches_a_bad_entry_appended_meanwhile_is_found(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry appended during the check is walked from the stretches'
    head, linked to it: a broken one is found at its seq, as a single walk finds it."""
    _ledger(settings, 16)
    url = settings.database_url

    def tamper(done: int) -> None:
        if done == 8:
            append(url, 6)
            with tampering(url) as t:
                t.put(17, {**t.entry(17), "prev_hash": "0" * 64})

    verdict = _in_stretches(url, monkeypatch, None, tamper)
    assert (verdict.kind, verdict.verified_through, verdict.first_bad_seq) == (
        VerdictKind.BROKEN, 16, 17)
    assert _walk(url) == verdict


def test_in_stretches_a_whole_stretch_missing_is_named_at_its_first_seq(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seqs 9..16 all deleted: the stretch that held them has no first link to compare,
    and reports the gap from the previous stretch's head."""
    entries = _ledger(settings, 24)
    with tampering(settings.database_url) as t:
        for seq in range(9, 17):
            t.delete(seq)
    verdict = _in_stretches(settings.database_url, monkeypatch)
    assert verdict == Verdict(VerdictKind.BROKEN, 8, 9, "entry missing (stretch ends at seq 8)",
                              str(entries[7]["hash"]))


def test_in_stretches_the_first_entry_must_follow_the_genesis_hash(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seq 1 re-sealed with another prev_hash: the first stretch's first link is checked
    against the genesis hash, as a single walk checks it."""
    _ledger(settings, 12)
    with tampering(settings.database_url) as t:
        t.put(1, seal({**t.entry(1), "prev_hash": "1" * 64}))
    verdict = _in_stretches(settings.database_url, monkeypatch)
    assert (verdict.kind, verdict.verified_through, verdict.first_bad_seq, verdict.head_hash) == (
        VerdictKind.BROKEN, 0, 1, GENESIS_HASH)
    assert verdict.reason == "prev_hash does not match the hash of the entry before"
    assert _walk(settings.database_url).first_bad_seq == 1


@pytest.mark.slow
def test_workers_open_their_own_store_whatever_the_caller_holds(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Worker processes, as :func:`verify` starts them by default (``slow``: the mutation
    run leaves it out, mutmut sees nothing a worker process runs). The workers start
    fresh (spawned): a caller's open connections and module state are not theirs. Here
    the calling process holds a worker store on another, empty database; a forked worker
    would inherit it and find no entries. The chain is exactly ``PARALLEL_FROM`` long, so
    it is checked in stretches (of one entry: ``STRETCH`` 1 is a power of two already)."""
    entries = _ledger(settings, 6)
    decoy = f"sqlite:///{tmp_path}/decoy.db"
    migrate(decoy)
    monkeypatch.setattr(verifier, "worker_store", open_store(decoy))
    monkeypatch.setattr(verifier, "PARALLEL_FROM", 6)
    monkeypatch.setattr(verifier, "STRETCH", 1)
    store = open_store(settings.database_url)
    done: list[int] = []
    try:
        verdict = verify(store, settings.database_url, LEDGER, done.append)
    finally:
        store.close()
        assert verifier.worker_store is not None
        verifier.worker_store.close()
    assert verdict == Verdict(VerdictKind.INTACT, 6, None, None, str(entries[5]["hash"]))
    assert done == [1, 2, 3, 4, 5, 6]


def test_in_stretches_without_roots_to_fill_the_chain_alone_is_judged(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that passes checkpoints but no ``roots`` gets the chain's verdict: the
    roots are judged for a caller that asks for them (as :func:`verify` does), not turned
    into a verdict here."""
    entries = _ledger(settings, 20)
    monkeypatch.setattr(verifier, "STRETCH", 8)
    held = _held(entries, [4], {12: "witness L"})
    verdict = verify_ledger_parallel(settings.database_url, LEDGER, 20, workers=2,
                                     checkpoints=held, pool=InProcess)
    assert verdict == Verdict(VerdictKind.INTACT, 20, None, None, str(entries[19]["hash"]))


@pytest.mark.parametrize(("cores", "workers"), [(5, 5), (1, 2), (None, 2)])
def test_the_pool_has_a_worker_a_core_and_at_least_two(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, cores: int | None, workers: int
) -> None:
    """Unless the caller names a number, one worker a core (two if the machine has one
    core or does not say), and the pool is asked for exactly that many."""
    entries = _ledger(settings, 3)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    pools = Pools()
    verdict = verify_ledger_parallel(settings.database_url, LEDGER, 3, pool=pools)
    assert verdict == Verdict(VerdictKind.INTACT, 3, None, None, str(entries[2]["hash"]))
    assert [(p.workers, p.stretches()) for p in pools] == [(workers, [(0, 3)])]


def test_a_chain_parallel_from_long_is_checked_in_stretches(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boundary between :func:`verify`'s two ways: a chain exactly ``PARALLEL_FROM``
    long is checked in stretches (of one entry here: ``STRETCH`` 1 is a power of two
    already), one entry shorter in one walk; the verdict is the same."""
    entries = _ledger(settings, 6)
    url = settings.database_url
    intact = Verdict(VerdictKind.INTACT, 6, None, None, str(entries[5]["hash"]))
    monkeypatch.setattr(verifier, "STRETCH", 1)
    pools = Pools()
    store = open_store(url)
    try:
        for parallel_from, progress in ((6, [1, 2, 3, 4, 5, 6]), (7, [6])):
            monkeypatch.setattr(verifier, "PARALLEL_FROM", parallel_from)
            done: list[int] = []
            assert verify(store, url, LEDGER, done.append, pool=pools) == intact
            assert done == progress
    finally:
        store.close()
    assert [p.stretches() for p in pools] == [[(s, s + 1) for s in range(6)]]
