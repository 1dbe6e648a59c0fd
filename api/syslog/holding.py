"""Holding messages for many connections at once, a group a commit.

A connection's next frame is read only once its last message is held (durable), so each
connection waits for a commit. Handing each message to a thread of its own and committing
it alone costs a thread switch and three waits on the database a message. Here a few
threads each take every message waiting and hold the lot in one statement: while one
group commits the next gathers, and a commit's fsync is shared by what arrived during
the last.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future

from api.syslog.inbox import Arrival, Inbox
from ledger.grouping import waiting_after

# Two: one group commits while the next is sent; more only wait on the same WAL flush.
THREADS = 2


# At most this many messages in one insert (six parameters each: SQLite allows 32,766).
GROUP_AT_MOST = 500

_Wait = tuple[Arrival, Future[int]]


class Holding:
    """Holds arrivals in ``inbox`` for an event loop's connections."""

    def __init__(self, inbox: Inbox, threads: int = THREADS) -> None:
        self.inbox = inbox
        self._count = threads
        # The running threads and the queue they take from; a new pair after close(),
        # so that a thread started after close() cannot take an old thread's stop mark.
        self._running: tuple[queue.SimpleQueue[_Wait | None], list[threading.Thread]] | None \
            = None
        self._lock = threading.Lock()

    async def hold(self, arrival: Arrival) -> int:
        """Hold ``arrival``; its inbox id once it is committed. Raises what holding its
        group raised (StoreUnavailable: the database is down)."""
        with self._lock:
            if self._running is None:
                waits: queue.SimpleQueue[_Wait | None] = queue.SimpleQueue()
                threads = [threading.Thread(target=self._run, args=(waits,), daemon=True,
                                            name=f"syslog-holding-{i}")
                           for i in range(self._count)]
                for thread in threads:
                    thread.start()
                self._running = (waits, threads)
            waits = self._running[0]
        future: Future[int] = Future()
        waits.put((arrival, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the threads once what is waiting is held (a later hold starts others)."""
        with self._lock:
            running, self._running = self._running, None
        if running is None:
            return
        waits, threads = running
        for _ in threads:
            waits.put(None)
        for thread in threads:
            thread.join()

    def _run(self, waits: queue.SimpleQueue[_Wait | None]) -> None:
        while True:
            first = waits.get()
            if first is None:
                return
            taken, _, stop = waiting_after(first, waits, limit=GROUP_AT_MOST)
            # A connection that went away first cancelled its wait: its message is not
            # held (and a running future can no longer be cancelled under us).
            group = [(a, f) for a, f in taken if f.set_running_or_notify_cancel()]
            if not group:
                if stop:
                    return
                continue
            try:
                ids = self.inbox.hold_many([arrival for arrival, _ in group])
            except Exception as error:  # each waiting connection gets it, and stops
                for _, future in group:
                    future.set_exception(error)
            else:
                for (_, future), held in zip(group, ids, strict=True):
                    future.set_result(held)
            if stop:
                return
