"""The ingest service: from a posted event to a receipt.

validate -> fingerprint -> group-commit writer (which seals PHI and blind-indexes
identifiers for the whole group, then appends) -> receipt. Every application, the HTTP
API and the demo alike, comes in through here, so no event reaches the ledger
unvalidated or unprotected.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from ledger.admission import Accepted, Conflicted, Outcome, Pending
from ledger.canonical import canonical
from ledger.event import validate_batch, validate_event
from ledger.writer import GroupCommitWriter


class Protection(Protocol):
    """Turns posted events into the form the ledger stores, and back."""

    def fingerprint(self, ledger: str, event: dict[str, Any]) -> str:
        """A stable digest of the posted event (idempotency: same id, same body?)."""
        ...

    def protect_many(self, ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events as stored: PHI encrypted, identifiers blind-indexed."""
        ...

    def reveal_many(self, ledger: str, stored: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stored events as posted (PHI of shredded patients reads as erased)."""
        ...


class Plaintext:
    """Stores events as posted: for benchmarks of the cost of encryption, never for PHI."""

    def fingerprint(self, ledger: str, event: dict[str, Any]) -> str:
        return hashlib.sha256(canonical(event)).hexdigest()

    def protect_many(self, ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(events)

    def reveal_many(self, ledger: str, stored: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(stored)


class EventConflict(Exception):
    """An ``event_id`` is already in the ledger with a different body (HTTP 409)."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__("event_id already recorded with a different body")
        self.event_ids = event_ids


class Ingest:
    """Records events; every method returns only once the events are committed."""

    def __init__(self, writer: GroupCommitWriter, protection: Protection) -> None:
        self.writer = writer
        self.protection = protection

    def _pending(self, ledger: str, event: dict[str, Any]) -> Pending:
        # Sealing happens in the writer thread, a whole group at a time (one data-key
        # lookup for all of it); here only the fingerprint, while the body is at hand.
        return Pending(event["event_id"], self.protection.fingerprint(ledger, event), event)

    def submit(
        self, ledger: str, events: Sequence[dict[str, Any]], *, batch: bool = False
    ) -> Future[Outcome]:
        """Validate and queue one event, or an all-or-nothing batch (``batch=True``:
        problems are then named ``events[i].field``). Raises EventRejected."""
        if batch:
            validate_batch(list(events))
        else:
            for event in events:
                validate_event(event)
        return self.writer.submit(ledger, [self._pending(ledger, e) for e in events])

    @staticmethod
    def _accepted(outcome: Outcome) -> Accepted:
        if isinstance(outcome, Conflicted):
            raise EventConflict(outcome.event_ids)
        return outcome

    async def record(
        self, ledger: str, events: Sequence[dict[str, Any]], *, batch: bool = False
    ) -> Accepted:
        future = self.submit(ledger, events, batch=batch)
        return self._accepted(await asyncio.wrap_future(future))

    def record_sync(
        self, ledger: str, events: Sequence[dict[str, Any]], *, batch: bool = False
    ) -> Accepted:
        return self._accepted(self.submit(ledger, events, batch=batch).result())
