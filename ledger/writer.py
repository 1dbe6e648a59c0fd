"""Group commit: one transaction for everything that arrived while the last one ran.

A fsync costs about as much as thousands of rows (NOTES.md), so committing each request
on its own caps the ledger at a few thousand events a second. Callers hand the writer
submissions and get futures back. Its sealing thread takes every submission waiting (up
to ``max_group_events``) and seals their PHI as one group; its committing thread appends
every sealed group waiting in one store transaction, and only then resolves their
futures: a resolved future is a committed event, never a hope.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ledger.admission import Outcome, Pending
from ledger.clock import Clock, utc_now
from ledger.data_keys import DataKeyUnusable
from ledger.grouping import waiting_after
from ledger.store import LedgerStore, StoreUnavailable

log = structlog.get_logger(__name__)

# Turns a ledger's posted events into their stored form (see ledger.ingest.Protection).
Seal = Callable[[str, Sequence[dict[str, Any]]], list[dict[str, Any]]]
# Inside the append's transaction, under the write lock: tx -> the stored forms to
# replace, by index (see ledger.ingest.Protection.settler).
Settlement = Callable[[Any], dict[int, dict[str, Any]]]
# Before the write lock: (ledger, posted, stored) -> the step that settles them under it
# (see ledger.ingest.Protection.settler).
Settler = Callable[[str, Sequence[dict[str, Any]], Sequence[dict[str, Any]]], Settlement]


def _as_posted(ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(events)


def nothing_to_settle(tx: Any) -> dict[int, dict[str, Any]]:
    return {}


def _nothing_to_settle(
    ledger: str, posted: Sequence[dict[str, Any]], stored: Sequence[dict[str, Any]]
) -> Settlement:
    return nothing_to_settle


@dataclass(slots=True)
class _Job:
    """One submission. Its future is answered only if its caller still waits: a caller
    that gave up (an asyncio wait cancelled: a client gone, a server stopping) cancels
    it, and setting a cancelled future raises, which would end the writer's thread. Its
    events are committed, or not, all the same; a retry is answered as a replay."""

    ledger: str
    pending: Sequence[Pending]
    future: Future[Outcome] = field(default_factory=Future)


@dataclass
class WriterStats:
    """Counters for /metrics."""

    transactions: int = 0
    events: int = 0
    failures: int = 0
    last_group_size: int = 0
    splits: int = 0  # failed groups committed again in halves (a submission at fault)
    seal_seconds: float = 0.0
    commit_seconds: float = 0.0


class WriterStopped(StoreUnavailable):
    """The writer is shutting down and takes no more submissions."""


@dataclass(slots=True)
class _SealedGroup:
    jobs: list[_Job]
    sealed: list[Sequence[Pending]]  # each job's submission in its stored form
    size: int


Groups = dict[str, list[Sequence[Pending]]]


class Settle(Protocol):
    """Under the write lock, inside the append's transaction: the groups to append,
    with whatever stored forms had to be sealed again replaced (new lists; the groups
    given are not changed)."""

    def __call__(self, tx: Any) -> Groups: ...


class GroupCommitWriter:
    """Serialises appends of one process into group-committed transactions.

    Two threads form a pipeline: the *sealer* takes every submission waiting, seals the
    group's PHI (one data-key lookup for the whole group) and hands it on; the
    *committer* appends everything sealed so far in one transaction. So the next group
    is encrypted while the database commits the last one.

    Guarantees: submissions are chained in the order they were submitted; a
    submission's future resolves only after its transaction committed (or fails with
    :class:`StoreUnavailable`, in which case a retry with the same event ids is safe:
    whatever did commit is answered as a replay).
    """

    def __init__(
        self,
        store: LedgerStore,
        clock: Clock = utc_now,
        *,
        seal: Seal = _as_posted,
        settler: Settler = _nothing_to_settle,
        max_group_events: int = 5000,
        retry_delay: float = 0.05,
    ) -> None:
        self.store = store
        self.clock = clock
        self.seal = seal
        self.settler = settler
        self.max_group_events = max_group_events
        self.retry_delay = retry_delay
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._sealed: queue.SimpleQueue[_SealedGroup | None] = queue.SimpleQueue()
        self._sealer = threading.Thread(target=self._seal_loop, name="ledger-sealer",
                                        daemon=True)
        self._committer = threading.Thread(target=self._commit_loop, name="ledger-committer",
                                           daemon=True)
        self._stopping = False

    def start(self) -> GroupCommitWriter:
        self._sealer.start()
        self._committer.start()
        return self

    @property
    def running(self) -> bool:
        return self._sealer.is_alive() and self._committer.is_alive() and not self._stopping

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what was submitted, then stop."""
        if not self._sealer.is_alive():
            return
        self._stopping = True
        self._queue.put(None)
        self._sealer.join(timeout)
        self._committer.join(timeout)

    def submit(self, ledger: str, pending: Sequence[Pending]) -> Future[Outcome]:
        """Queue one all-or-nothing submission; the future holds its outcome."""
        if self._stopping:
            raise WriterStopped("the ledger writer is shutting down")
        job = _Job(ledger, pending)
        self._queue.put(job)
        return job.future

    def append(self, ledger: str, pending: Sequence[Pending]) -> Outcome:
        """Submit and wait (for callers without an event loop: the CLI, tests)."""
        return self.submit(ledger, pending).result()

    # -- the sealer thread -------------------------------------------------------------

    def _seal_loop(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                break
            jobs, size, stopping = waiting_after(job, self._queue, limit=self.max_group_events,
                                                 weight=lambda j: len(j.pending))
            started = time.perf_counter()
            try:
                sealed = self._seal_jobs(jobs)
            except Exception as error:
                self._fail(jobs, size, error)
                continue
            self.stats.seal_seconds += time.perf_counter() - started
            self._sealed.put(_SealedGroup(jobs, sealed, size))
        self._sealed.put(None)

    def _seal_jobs(self, jobs: list[_Job]) -> list[Sequence[Pending]]:
        """Each job's submission with its events sealed, one seal call per ledger."""
        by_ledger: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_ledger.setdefault(job.ledger, []).append(i)
        sealed: list[Sequence[Pending]] = [()] * len(jobs)
        for ledger, indexes in by_ledger.items():
            posted = [p.event for i in indexes for p in jobs[i].pending]
            stored = iter(self.seal(ledger, posted))
            # Pending(...) rather than dataclasses.replace: this runs for every event, and
            # replace() inspects the fields each time (a sixth of the sealer's time).
            for i in indexes:
                sealed[i] = [Pending(p.event_id, p.fingerprint, next(stored), p.members)
                             for p in jobs[i].pending]
        return sealed

    # -- the committer thread ----------------------------------------------------------

    def _commit_loop(self) -> None:
        while True:
            first = self._sealed.get()
            if first is None:
                return
            batch, size, done = waiting_after(first, self._sealed, limit=self.max_group_events,
                                              weight=lambda g: g.size)
            self._commit(batch, size)
            if done:
                return

    def _commit(self, batch: list[_SealedGroup], size: int) -> None:
        jobs = [job for sealed in batch for job in sealed.jobs]
        submissions = [sub for sealed in batch for sub in sealed.sealed]
        self._commit_jobs(jobs, submissions)

    def _commit_jobs(self, jobs: list[_Job], submissions: list[Sequence[Pending]]) -> None:
        """Append ``jobs`` in one transaction; if it fails while the database answers,
        the fault is in what was submitted, not in the database: the group is split and
        each half committed on its own, down to the one submission that fails alone.
        So one caller's event that the database refuses never fails another caller's."""
        size = sum(len(sub) for sub in submissions)
        groups: Groups = {}
        for job, sub in zip(jobs, submissions, strict=True):
            groups.setdefault(job.ledger, []).append(sub)
        unavailable = 0
        started = time.perf_counter()
        while True:
            try:
                results = self.store.append(groups, self.clock(),
                                            before=self._settle(jobs, groups))
                break
            except StoreUnavailable as error:
                unavailable += 1
                if len(jobs) > 1 and self._answers():
                    self._split(jobs, submissions)
                    return
                if unavailable == 2:
                    self._fail(jobs, size, error)
                    return
                time.sleep(self.retry_delay)
            except Exception as error:  # a bug or a refused row: keep the writer alive
                if len(jobs) > 1:
                    self._split(jobs, submissions)
                else:
                    self._fail(jobs, size, error)
                return
        self.stats.commit_seconds += time.perf_counter() - started
        self.stats.transactions += 1
        self.stats.events += size
        self.stats.last_group_size = size
        position = dict.fromkeys(results, 0)
        for job in jobs:
            i = position[job.ledger]
            position[job.ledger] = i + 1
            if job.future.set_running_or_notify_cancel():
                job.future.set_result(results[job.ledger][i])

    def _split(self, jobs: list[_Job], submissions: list[Sequence[Pending]]) -> None:
        # Halves in order, the first committed before the second is tried: submissions
        # stay chained in the order they were submitted.
        self.stats.splits += 1
        half = len(jobs) // 2
        self._commit_jobs(jobs[:half], submissions[:half])
        self._commit_jobs(jobs[half:], submissions[half:])

    def _answers(self) -> bool:
        """Whether the database answers now (a failed group is then the group's fault)."""
        try:
            self.store.ping()
        except StoreUnavailable:
            return False
        return True

    def _settle(self, jobs: list[_Job], groups: Groups) -> Settle:
        """The step that settles data keys inside the append transaction: it returns
        the groups to append, with the stored forms it had to seal again replaced."""
        # Prepared here, before the write lock is taken: everything done under it is
        # done while every other writer waits.
        steps = {
            ledger: self.settler(
                ledger,
                [p.event for job in jobs if job.ledger == ledger for p in job.pending],
                [p.event for sub in subs for p in sub],
            )
            for ledger, subs in groups.items()
        }

        def settle(tx: Any) -> Groups:
            settled: Groups = {}
            for ledger, subs in groups.items():
                changed = steps[ledger](tx)
                if not changed:
                    settled[ledger] = subs
                    continue
                i, fresh = 0, list[Sequence[Pending]]()
                for sub in subs:
                    replaced: list[Pending] = []
                    for pending in sub:
                        if i in changed:
                            pending = Pending(pending.event_id, pending.fingerprint,
                                              changed[i], pending.members)
                        replaced.append(pending)
                        i += 1
                    fresh.append(replaced)
                settled[ledger] = fresh
            return settled

        return settle

    def _fail(self, jobs: list[_Job], size: int, error: Exception) -> None:
        self.stats.failures += 1
        if isinstance(error, StoreUnavailable):
            log.warning("ledger.append_failed", error=str(error), events=size)
        elif isinstance(error, DataKeyUnusable):
            # Its message names a KEK and a blind-index prefix: no PHI, no key material.
            log.error("ledger.data_key_unusable", error=str(error), events=size)
        else:
            # The type only: an exception's message may quote data.
            log.error("ledger.append_crashed", error_type=type(error).__name__, events=size)
            error = StoreUnavailable("append failed")
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
