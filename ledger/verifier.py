"""Walking a store's chains and checking every link (the shell around ledger.chain).

Checking an entry costs a JSON parse, a canonical re-encoding and a SHA-256: a few
microseconds, which is more than reading it. Long chains are therefore checked in
stretches by several processes, each reading its own seq range from the database; the
stretches are then linked (each one's first ``prev_hash`` against the previous one's
last hash), so the verdict is the same as a single walk, first bad seq included.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from ledger.chain import ChainBroken, ChainCheck, Head, Verdict
from ledger.entry import GENESIS_HASH
from ledger.store import LedgerStore, open_store

Progress = Callable[[int], None]
PROGRESS_EVERY = 10_000
PARALLEL_FROM = 200_000
STRETCH = 250_000


def verify_ledger(store: LedgerStore, ledger: str, progress: Progress | None = None) -> Verdict:
    """Stream ``ledger`` in seq order and check it whole; stop at the first bad entry.

    ``progress`` is called with the number of entries checked so far, every
    ``PROGRESS_EVERY`` entries.
    """
    check = ChainCheck(ledger)
    count = 0
    try:
        for position, data in store.stream(ledger):
            check.feed(position, data)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
    except ChainBroken as broken:
        return check.verdict(broken)
    if progress is not None:
        progress(count)
    return check.verdict()


@dataclass(frozen=True)
class Stretch:
    """The outcome of checking the entries with ``after < seq <= upto``."""

    after: int
    upto: int
    first_prev_hash: str | None
    last: Head
    broken_at: int | None
    reason: str | None


_worker_store: LedgerStore | None = None


def _check_stretch(database_url: str, ledger: str, after: int, upto: int) -> Stretch:
    global _worker_store
    if _worker_store is None:
        _worker_store = open_store(database_url)
    check = ChainCheck(ledger, Head(after, GENESIS_HASH, None), link_first=False)
    try:
        for position, data in _worker_store.stream(ledger, after=after, upto=upto):
            check.feed(position, data)
    except ChainBroken as broken:
        return Stretch(after, upto, check.first_prev_hash, check.head, broken.seq, broken.reason)
    if check.head.seq != upto:
        missing = check.head.seq + 1
        return Stretch(after, upto, check.first_prev_hash, check.head, missing,
                       f"entry missing (stretch ends at seq {check.head.seq})")
    return Stretch(after, upto, check.first_prev_hash, check.head, None, None)


def verify_ledger_parallel(
    database_url: str,
    ledger: str,
    upto: int,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Verdict:
    """Check seqs 1..``upto`` of ``ledger`` in stretches on ``workers`` processes."""
    workers = workers or max(2, os.cpu_count() or 2)
    bounds = [(a, min(a + STRETCH, upto)) for a in range(0, upto, STRETCH)]
    last = Head(0, GENESIS_HASH, None)
    done = 0
    # spawn, not fork: the caller may be a threaded server holding database connections.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_check_stretch, database_url, ledger, a, b) for a, b in bounds]
        for future in futures:
            stretch = future.result()
            first_seq = stretch.after + 1
            if stretch.first_prev_hash is not None and stretch.first_prev_hash != last.hash:
                for f in futures:
                    f.cancel()
                return Verdict(False, last.seq, first_seq,
                               "prev_hash does not match the hash of the entry before", last.hash)
            if stretch.broken_at is not None:
                for f in futures:
                    f.cancel()
                verified = stretch.broken_at - 1
                head = stretch.last if stretch.last.seq == verified else last
                return Verdict(False, verified, stretch.broken_at, stretch.reason, head.hash)
            last = stretch.last
            done = stretch.upto
            if progress is not None:
                progress(done)
    return Verdict(True, last.seq, None, None, last.hash)


def verify(
    store: LedgerStore, database_url: str, ledger: str, progress: Progress | None = None
) -> Verdict:
    """Check ``ledger`` whole: in parallel stretches when it is long, in one walk if not.

    Entries appended while the check runs are left for the next one: a long chain is
    checked up to the head it had when the check began, then the rest in one walk.
    """
    head = store.head(ledger)
    if head.seq < PARALLEL_FROM:
        return verify_ledger(store, ledger, progress)
    verdict = verify_ledger_parallel(database_url, ledger, head.seq, progress=progress)
    if not verdict.ok:
        return verdict
    check = ChainCheck(ledger, Head(verdict.verified_through, verdict.head_hash, None))
    try:
        for position, data in store.stream(ledger, after=verdict.verified_through):
            check.feed(position, data)
    except ChainBroken as broken:
        return check.verdict(broken)
    return check.verdict()
