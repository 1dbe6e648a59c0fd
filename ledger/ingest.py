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
from ledger.attestation import BY_SERVICE, Attestation, Received, reserved_source
from ledger.canonical import canonical
from ledger.event import EventRejected, validate_alike, validate_batch, validate_event
from ledger.event_ids import new_event_id
from ledger.writer import GroupCommitWriter, Settlement, nothing_to_settle


class Protection(Protocol):
    """Turns posted events into the form the ledger stores, and back."""

    def fingerprint(self, ledger: str, event: dict[str, Any], encoded: bytes | None = None) -> str:
        """A stable digest of the posted event (idempotency: same id, same body?).
        ``encoded`` is the event's canonical encoding, when the caller has it."""
        ...

    def protect_many(self, ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events as stored: PHI encrypted, identifiers blind-indexed."""
        ...

    def settler(
        self, ledger: str, posted: Sequence[dict[str, Any]], stored: Sequence[dict[str, Any]]
    ) -> Settlement:
        """Before the write lock is taken, what settling these events will check; the
        step returned runs inside the append's transaction, under the lock, and gives
        the stored forms to replace (by index) where the key they were sealed with is
        no longer current."""
        ...

    def reveal_many(self, ledger: str, stored: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stored events as posted (PHI of shredded patients reads as erased)."""
        ...

    def patient_ref(self, ledger: str, patient_id: str) -> str:
        """How views find a patient: the blind index of ``patient_id`` in ``ledger``."""
        ...


class Plaintext:
    """Stores events as posted: for benchmarks of the cost of encryption, never for PHI."""

    def fingerprint(self, ledger: str, event: dict[str, Any], encoded: bytes | None = None) -> str:
        return hashlib.sha256(encoded or canonical(event)).hexdigest()

    def protect_many(self, ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(events)

    def settler(
        self, ledger: str, posted: Sequence[dict[str, Any]], stored: Sequence[dict[str, Any]]
    ) -> Settlement:
        return nothing_to_settle

    def reveal_many(self, ledger: str, stored: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(stored)

    def patient_ref(self, ledger: str, patient_id: str) -> str:
        return patient_id  # stored in the clear, so views key patients by the id itself


def _encoded(event: Any) -> bytes | None:
    if not isinstance(event, dict):
        return None
    try:
        return canonical(event)
    except TypeError:
        return None


class EventConflict(Exception):
    """An ``event_id`` is already in the ledger with a different body (HTTP 409)."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__("event_id already recorded with a different body")
        self.event_ids = event_ids


class ReservedSource(EventRejected):
    """A client's event claims the service's own ``source.system`` (HTTP 400): only the
    service writes records as ``phi-ledger``."""


class Ingest:
    """Records events; every method returns only once the events are committed.

    Every entry carries the :class:`~ledger.attestation.Attestation` of its submission
    (``by``): the authenticated caller for HTTP requests; the service itself for the
    records it composes and for callers inside its process (CLI, demo workload)."""

    def __init__(self, writer: GroupCommitWriter, protection: Protection) -> None:
        self.writer = writer
        self.protection = protection

    def submit(
        self, ledger: str, events: Sequence[dict[str, Any]], *, batch: bool = False,
        by: Attestation = BY_SERVICE, received: Sequence[Received | None] | None = None,
    ) -> Future[Outcome]:
        """Validate and queue one event, or an all-or-nothing batch (``batch=True``:
        problems are then named ``events[i].field``). Raises EventRejected.
        ``received``: per event, what the service received when it made the event from
        a standard-format message (written into its entry, beside ``submitted_by``)."""
        encoded = self._checked(events, batch, by)
        return self.writer.submit(ledger, self._pending(ledger, events, encoded, by, received))

    def submit_each(
        self, items: Sequence[tuple[str, dict[str, Any], Attestation, Received | None]]
    ) -> list[Future[Outcome] | EventRejected]:
        """One submission per ``(ledger, event, by, received)``, each answered alone (a
        refused or conflicting event does not refuse the others): the future of its
        outcome, or why it was refused. Every event is checked and fingerprinted before
        any is queued, so that the writer finds them queued together: queued as they
        were checked, the writer's thread would wake in between and take a few at a time
        (a transaction each)."""
        checked: list[tuple[str, list[Pending]] | EventRejected] = []
        for ledger, event, by, received in items:
            try:
                encoded = self._checked([event], False, by)
            except EventRejected as rejected:
                checked.append(rejected)
                continue
            checked.append((ledger, self._pending(ledger, [event], encoded, by, [received])))
        return [c if isinstance(c, EventRejected) else self.writer.submit(*c)
                for c in checked]

    @staticmethod
    def _checked(events: Sequence[dict[str, Any]], batch: bool, by: Attestation
                 ) -> list[bytes | None]:
        """Each event's canonical encoding, once the events pass the contract's checks
        (and, from a client, claim none of the service's own records). Raises
        EventRejected."""
        if batch and not isinstance(events, list):
            validate_batch(events)  # raises: the batch is not a list
        if not by.by_service:
            reserved = reserved_source(events, batch=batch)
            if reserved:
                raise ReservedSource([(f, "reserved for the service's own records")
                                      for f in reserved])
        # One canonical encoding per event serves the size check and the fingerprint.
        encoded = [_encoded(e) for e in events]
        sizes = [None if raw is None else len(raw) for raw in encoded]
        if batch:
            validate_batch(list(events), sizes)
        else:
            for event, size in zip(events, sizes, strict=True):
                validate_event(event, size)
        return encoded

    def submit_alike(
        self, ledger: str, template: dict[str, Any], patient_ids: Sequence[str]
    ) -> Future[Outcome]:
        """Queue, all or nothing, one event per patient of ``patient_ids``: ``template``
        with a fresh ``event_id`` and that patient (what the service writes when it shows
        PHI). Validated as :func:`ledger.event.validate_alike` does. Raises EventRejected."""
        events = [{**template, "event_id": new_event_id(), "patient": {"id": patient_id}}
                  for patient_id in patient_ids]
        encoded = [canonical(e) for e in events]
        validate_alike(events, [len(raw) for raw in encoded])
        return self.writer.submit(ledger, self._pending(ledger, events, encoded, BY_SERVICE))

    def _pending(
        self, ledger: str, events: Sequence[dict[str, Any]], encoded: Sequence[bytes | None],
        by: Attestation, received: Sequence[Received | None] | None = None,
    ) -> list[Pending]:
        # Sealing happens in the writer thread, a whole group at a time (one data-key
        # lookup for all of it); here only the fingerprint, while the encoding is at hand.
        fingerprint = self.protection.fingerprint
        members = by.members()
        each = [members] * len(events) if received is None else [
            members if r is None else by.members(r) for r in received]
        return [
            Pending(e["event_id"], fingerprint(ledger, e, raw), e, m)
            for e, raw, m in zip(events, encoded, each, strict=True)
        ]

    @staticmethod
    def _accepted(outcome: Outcome) -> Accepted:
        if isinstance(outcome, Conflicted):
            raise EventConflict(outcome.event_ids)
        return outcome

    async def record(
        self, ledger: str, events: Sequence[dict[str, Any]], *, batch: bool = False,
        by: Attestation = BY_SERVICE, received: Sequence[Received | None] | None = None,
    ) -> Accepted:
        future = self.submit(ledger, events, batch=batch, by=by, received=received)
        return self._accepted(await asyncio.wrap_future(future))

    async def record_alike(
        self, ledger: str, template: dict[str, Any], patient_ids: Sequence[str]
    ) -> Accepted:
        future = self.submit_alike(ledger, template, patient_ids)
        return self._accepted(await asyncio.wrap_future(future))

    def record_sync(
        self, ledger: str, events: Sequence[dict[str, Any]], *, batch: bool = False,
        by: Attestation = BY_SERVICE, received: Sequence[Received | None] | None = None,
    ) -> Accepted:
        return self._accepted(self.submit(ledger, events, batch=batch, by=by,
                                          received=received).result())
