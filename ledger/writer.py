"""Group commit: one transaction for everything that arrived while the last one ran.

A fsync costs about as much as thousands of rows (NOTES.md), so committing each request
on its own caps the ledger at a few thousand events a second. The writer owns one
thread; callers hand it submissions and get futures back. Each turn of its loop takes
every submission waiting (up to ``max_group_events``), appends them all in one store
transaction, and only then resolves their futures: a resolved future is a committed
event, never a hope.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from ledger.admission import Outcome, Pending
from ledger.store import LedgerStore, StoreUnavailable

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
# Turns a ledger's posted events into their stored form (see ledger.ingest.Protection).
Seal = Callable[[str, Sequence[dict[str, Any]]], list[dict[str, Any]]]


def _as_posted(ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(events)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Job:
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


class WriterStopped(StoreUnavailable):
    """The writer is shutting down and takes no more submissions."""


class GroupCommitWriter:
    """Serialises appends of one process into group-committed transactions.

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
        max_group_events: int = 5000,
        retry_delay: float = 0.05,
    ) -> None:
        self.store = store
        self.clock = clock
        self.seal = seal
        self.max_group_events = max_group_events
        self.retry_delay = retry_delay
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._stopping = False

    def start(self) -> GroupCommitWriter:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what was submitted, then stop."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)

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

    # -- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            size = len(job.pending)
            stop_after = False
            while size < self.max_group_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop_after = True
                    break
                jobs.append(more)
                size += len(more.pending)
            self._commit(jobs, size)
            if stop_after:
                self._drain_rest()
                return

    def _drain_rest(self) -> None:
        rest = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                rest.append(job)
        if rest:
            self._commit(rest, sum(len(j.pending) for j in rest))

    def _sealed(self, jobs: list[_Job]) -> dict[str, list[Sequence[Pending]]]:
        """Each ledger's submissions with their events sealed, one seal call per ledger."""
        by_ledger: dict[str, list[_Job]] = {}
        for job in jobs:
            by_ledger.setdefault(job.ledger, []).append(job)
        groups: dict[str, list[Sequence[Pending]]] = {}
        for ledger, ledger_jobs in by_ledger.items():
            posted = [p.event for job in ledger_jobs for p in job.pending]
            stored = iter(self.seal(ledger, posted))
            groups[ledger] = [
                [replace(p, event=next(stored)) for p in job.pending] for job in ledger_jobs
            ]
        return groups

    def _commit(self, jobs: list[_Job], size: int) -> None:
        for attempt in (1, 2):
            try:
                results = self.store.append(self._sealed(jobs), self.clock())
                break
            except StoreUnavailable as error:
                if attempt == 2:
                    self.stats.failures += 1
                    log.warning("ledger.append_failed", error=str(error), events=size)
                    for job in jobs:
                        job.future.set_exception(error)
                    return
                time.sleep(self.retry_delay)
            except Exception as error:  # a bug: fail the callers, keep the writer alive
                self.stats.failures += 1
                log.error("ledger.append_crashed", error_type=type(error).__name__)
                for job in jobs:
                    job.future.set_exception(StoreUnavailable("append failed"))
                return
        self.stats.transactions += 1
        self.stats.events += size
        self.stats.last_group_size = size
        position = {ledger: 0 for ledger in results}
        for job in jobs:
            i = position[job.ledger]
            position[job.ledger] = i + 1
            job.future.set_result(results[job.ledger][i])
