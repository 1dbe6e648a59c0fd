"""From one received syslog message to a ledger entry or a dead letter, durably.

:meth:`AtnaIntake.take` returns only once the message is committed: as an entry (or a
replay of one: the event id is derived from the sender's identity and the SHA-256 of
the message, so a message sent twice is recorded once) or as a dead letter naming why it
could not be mapped. A store failure propagates: the listener then stops reading that
connection, so nothing after an unrecorded message is read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from api.formats.atna import to_event
from api.formats.codes import derived_event_id, sha256_hex
from api.formats.fhir_audit import FormatRejected
from api.formats.syslog import parse_message
from api.syslog.dead_letters import DeadLetters
from ledger.attestation import Attestation, Received, Submitter
from ledger.clock import Clock
from ledger.entry import format_recorded_at
from ledger.event import EventRejected
from ledger.ingest import EventConflict, Ingest

log = structlog.get_logger(__name__)

ATNA_FORMAT = "atna-syslog"


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a message, as the ledger knows them: an identity with the ingest role
    (from a client certificate, or the UDP sender list) and its ledger."""

    identity: str
    ledger: str

    @property
    def attestation(self) -> Attestation:
        """Its entries' ``submitted_by``: the sender's identity, never the service's (so
        its messages may not claim the service's own ``source.system`` either)."""
        return syslog_attestation(self.identity)


def syslog_attestation(identity: str) -> Attestation:
    return Attestation(Submitter(identity, SYSLOG_CREDENTIAL))


# submitted_by.credential of entries taken over syslog: the sender proved its identity
# with a client certificate (TLS) or is on the UDP sender list; it presented no key.
SYSLOG_CREDENTIAL = "syslog"


def received_of(message: bytes) -> Received:
    """The ``received`` member of an entry made from one syslog message: the digest of
    the RFC 5424 message exactly as it came (for TLS the frame without its octet count,
    for UDP the datagram), the same digest its dead letter would carry."""
    return Received(ATNA_FORMAT, sha256_hex(message))


@dataclass
class IntakeStats:
    accepted: int = 0
    replayed: int = 0
    dead: int = 0
    refused_senders: int = 0


@dataclass(frozen=True, slots=True)
class Mapped:
    event: dict[str, Any] | None
    reason: str | None


def map_message(frame: bytes, sender_identity: str, default_purpose: str | None) -> Mapped:
    """Pure: the event a received RFC 5424 message records, or why there is none."""
    try:
        message = parse_message(frame)
    except ValueError as error:
        return Mapped(None, f"syslog: {error}")
    event_id = derived_event_id(sender_identity, f"atna:{sha256_hex(message.msg)}")
    try:
        return Mapped(to_event(message.msg, event_id=event_id,
                               default_purpose=default_purpose), None)
    except FormatRejected as rejected:
        return Mapped(None, "; ".join(f"{p}: {m}" for p, m in rejected.problems))


@dataclass
class AtnaIntake:
    """Takes messages for the ledger; shared by every listener of a process."""

    ingest: Ingest
    dead_letters: DeadLetters
    clock: Clock
    default_purpose: str | None = None
    stats: IntakeStats = field(default_factory=IntakeStats)

    async def take(self, sender: Sender, frame: bytes) -> str:
        """``accepted``, ``replayed`` or ``dead``; durable when it returns."""
        mapped = map_message(frame, sender.identity, self.default_purpose)
        reason = mapped.reason
        if mapped.event is not None:
            try:
                accepted = await self.ingest.record(sender.ledger, [mapped.event],
                                                    by=sender.attestation,
                                                    received=[received_of(frame)])
            except EventRejected as rejected:
                reason = "contract: " + "; ".join(f"{f} {m}" for f, m in rejected.problems)
            except EventConflict:
                reason = "conflict: this message's event id is recorded with another body"
            else:
                if accepted.created:
                    self.stats.accepted += 1
                    return "accepted"
                self.stats.replayed += 1
                return "replayed"
        await asyncio.to_thread(self.bury, sender, frame, reason or "unmapped")
        return "dead"

    def bury(self, sender: Sender, frame: bytes, reason: str) -> int:
        letter = self.dead_letters.add(
            sender.ledger, ATNA_FORMAT, sender.identity, frame, sha256_hex(frame), reason,
            format_recorded_at(self.clock()))
        self.stats.dead += 1
        log.info("syslog.dead_letter", letter=letter, ledger=sender.ledger)
        return letter

    def replay(self, letter_id: int) -> int | None:
        """Map a dead letter again (after a fix); the seq it is now at, or None (its
        reason updated). Synchronous: for the CLI."""
        letter = next((d for d in self.dead_letters.letters(include_replayed=True)
                       if d.id == letter_id), None)
        if letter is None:
            raise KeyError(letter_id)
        if letter.replayed_seq is not None:
            return letter.replayed_seq
        frame = self.dead_letters.message(letter_id)
        mapped = map_message(frame, letter.sender, self.default_purpose)
        reason = mapped.reason
        if mapped.event is not None:
            try:
                accepted = self.ingest.record_sync(letter.ledger, [mapped.event],
                                                   by=syslog_attestation(letter.sender),
                                                   received=[received_of(frame)])
            except EventRejected as rejected:
                reason = "contract: " + "; ".join(f"{f} {m}" for f, m in rejected.problems)
            except EventConflict:
                reason = "conflict: this message's event id is recorded with another body"
            else:
                seq = accepted.receipts[0].seq
                self.dead_letters.replayed(letter_id, seq, format_recorded_at(self.clock()))
                return seq
        self.dead_letters.still_dead(letter_id, reason or "unmapped")
        return None
