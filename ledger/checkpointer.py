"""Signing checkpoints as ledgers grow: a loop for ``serve``, one pass for the CLI.

Timing. The loop looks at every ledger's head four times per ``interval``. When it first
sees a ledger grown past its newest checkpoint it notes the moment, and it signs half an
interval later (or at once when the tree grew by ``every`` entries). An append is seen at
most a quarter interval after it commits, so a signed checkpoint covers it at most three
quarters of an interval (plus the signing, a few milliseconds) after its receipt: with the
default interval of one second, well inside a second. Under steady load that is a
checkpoint about every half second per ledger; an idle ledger gets none.

Several checkpointers (processes, a ``phi-ledger checkpoint`` beside the service) are
harmless: a checkpoint's size is its primary key, Ed25519 signatures are deterministic,
and a second signer of the same size stores nothing. ``serve --workers N`` still runs the
loop in one worker only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from ledger.store import StoreUnavailable
from ledger.store.base import TreeIncomplete
from ledger.tlog import CheckpointRefused, StoredCheckpoint, TransparencyLog

log = structlog.get_logger(__name__)


@dataclass
class CheckpointStats:
    """For /metrics: what was signed, and what was refused."""

    signed: int = 0
    refused: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    signed_at: dict[str, float] = field(default_factory=dict)  # time.time() of the newest


class Checkpointer:
    """Keeps every ledger covered by a signed checkpoint at most ~``interval`` seconds
    after each append (see the module doc).

    Guarantees: it never stores a checkpoint :meth:`TransparencyLog.sign` refuses (a
    truncated chain, a rewritten tree, a checkpoint table it cannot open with its keys);
    each refusal is logged as an error (``checkpoint.refused``, once per ledger and
    reason) and counted in :attr:`stats`, and the ledger is retried every poll.
    """

    def __init__(
        self,
        tlog: TransparencyLog,
        *,
        interval: float = 1.0,
        every: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tlog = tlog
        self.interval = interval
        self.every = every
        self.clock = clock
        self.stats = CheckpointStats()
        self._pending_since: dict[str, float] = {}
        self._refusals: dict[str, str] = {}
        self._lock = threading.Lock()  # one signing pass at a time (loop, shutdown)

    @property
    def poll(self) -> float:
        return self.interval / 4

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set (the ``serve`` thread)."""
        while not stop.is_set():
            try:
                self.tick()
            except StoreUnavailable as error:
                log.warning("checkpoint.store_unavailable", error=str(error))
            except Exception as error:  # a bug: keep the thread, say which
                log.error("checkpoint.crashed", error_type=type(error).__name__)
            stop.wait(self.poll)

    def tick(self) -> list[StoredCheckpoint]:
        """One look at every ledger: sign those whose turn has come."""
        signed = []
        now = self.clock()
        for ledger in self.tlog.store.ledgers():
            head = self.tlog.store.head(ledger).seq
            covered = self.stats.sizes.get(ledger)
            if covered is None:
                newest = self.tlog.latest(ledger)
                covered = self.stats.sizes[ledger] = newest.size if newest else 0
            if head == covered:  # nothing new
                self._pending_since.pop(ledger, None)
                continue
            since = self._pending_since.setdefault(ledger, now)
            # A head below the signed size is a truncation: sign() refuses it at once.
            if head < covered or now - since >= self.interval / 2 or head - covered >= self.every:
                checkpoint = self.sign(ledger)
                if checkpoint is not None:
                    signed.append(checkpoint)
        return signed

    def sign(self, ledger: str) -> StoredCheckpoint | None:
        """Sign ``ledger`` now if it grew; a refusal is logged and counted, not raised."""
        with self._lock:
            try:
                checkpoint = self.tlog.sign(ledger)
            except (CheckpointRefused, TreeIncomplete) as error:
                self.stats.refused += 1
                reason = str(error)
                if self._refusals.get(ledger) != reason:
                    self._refusals[ledger] = reason
                    log.error("checkpoint.refused", ledger=ledger, reason=reason)
                return None
            self._refusals.pop(ledger, None)
            self._pending_since.pop(ledger, None)
            newest = checkpoint or self.tlog.latest(ledger)
            if newest is not None:
                self.stats.sizes[ledger] = newest.size
            if checkpoint is not None:
                self.stats.signed += 1
                self.stats.signed_at[ledger] = time.time()
                log.debug("checkpoint.signed", ledger=ledger, size=checkpoint.size)
            return checkpoint

    def sign_all(self) -> list[StoredCheckpoint]:
        """Sign every ledger that grew, now (shutdown, ``phi-ledger checkpoint``)."""
        signed = []
        for ledger in self.tlog.store.ledgers():
            checkpoint = self.sign(ledger)
            if checkpoint is not None:
                signed.append(checkpoint)
        return signed
