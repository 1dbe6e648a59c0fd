"""From one received syslog message to a ledger entry or a dead letter, durably.

:meth:`AtnaIntake.take` returns once the message is held in the inbox (committed: one
small insert of its bytes), which is what lets the listener read the connection's next
frame. The intake's settler then settles held messages in groups -- as an entry (or a
replay of one: the event id is derived from the sender's identity and the SHA-256 of the
message, so a message sent twice is recorded once) or as a dead letter naming why it
could not be mapped -- and releases them from the inbox. A store failure while holding
propagates: the listener then stops reading that connection, so nothing after an
unheld message is read. A process that dies leaves its unsettled messages held; the
next to start settles them (:meth:`AtnaIntake.recover`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from api.formats.atna import to_event
from api.formats.codes import derived_event_id, sha256_hex
from api.formats.fhir_audit import FormatRejected
from api.formats.syslog import parse_message
from api.syslog.dead_letters import DeadLetters
from api.syslog.holding import Holding
from api.syslog.inbox import Arrival, Held, Inbox
from ledger.admission import Conflicted
from ledger.attestation import Attestation, Received, Submitter
from ledger.clock import Clock
from ledger.entry import format_recorded_at
from ledger.event import EventRejected
from ledger.ingest import EventConflict, Ingest
from ledger.writer import WriterStopped

log = structlog.get_logger(__name__)

ATNA_FORMAT = "atna-syslog"
# At most this many held messages are settled together (one writer group, one release).
SETTLE_AT_MOST = 1000
# How long the settler waits after a store failure before it tries the held messages again.
RETRY_SECONDS = 1.0
# How often a settler looks for messages a process held and did not settle (it died),
# and how long a message must have been held for it to take it (see AtnaIntake.recover).
RECOVER_SECONDS = 5.0
RECOVER_AFTER = 5.0
# The lock (LedgerStore.sole) under which one process at a time settles what others left.
RECOVERY_LOCK = "phi-ledger syslog inbox recovery"
# A starting settler's tries (RETRY_SECONDS apart) at settling what was held before it.
STARTUP_TRIES = 30
CONFLICT = "conflict: this message's event id is recorded with another body"


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a message, as the ledger knows them: an identity with the ingest role
    (from a client certificate, or the UDP sender list) and its ledger."""

    identity: str
    ledger: str


def syslog_attestation(identity: str) -> Attestation:
    """The ``submitted_by`` of a sender's entries: its identity, never the service's (so
    its messages may not claim the service's own ``source.system`` either)."""
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


def _contract(rejected: EventRejected) -> str:
    return "contract: " + "; ".join(f"{f} {m}" for f, m in rejected.problems)


@dataclass
class AtnaIntake:
    """Takes messages for the ledger; shared by every listener of a process."""

    ingest: Ingest
    dead_letters: DeadLetters
    inbox: Inbox
    clock: Clock
    default_purpose: str | None = None
    stats: IntakeStats = field(default_factory=IntakeStats)
    # Held by this process and not yet settled, oldest first; None while no settler runs
    # (then held messages wait for recover()).
    _waiting: deque[Held] | None = field(default=None, init=False, repr=False)
    _wake: asyncio.Event | None = field(default=None, init=False, repr=False)
    # The ids of _waiting and of the batch being settled, which recovery leaves alone;
    # read by recovery's thread, hence the lock.
    _mine: set[int] = field(default_factory=set, init=False, repr=False)
    _mine_lock: threading.Lock = field(default_factory=threading.Lock, init=False,
                                       repr=False)

    def __post_init__(self) -> None:
        self.holding = Holding(self.inbox)
        self._settling: ThreadPoolExecutor | None = None

    async def take(self, sender: Sender, frame: bytes) -> int:
        """Hold ``frame`` for ``sender`` (durable when it returns); its inbox id."""
        at = format_recorded_at(self.clock())
        held = await self.holding.hold(Arrival(sender.ledger, sender.identity, frame, at))
        if self._waiting is not None and self._wake is not None:
            with self._mine_lock:
                self._mine.add(held)
            self._waiting.append(Held(held, sender.ledger, sender.identity, at, frame))
            self._wake.set()
        return held

    def settle(self, held: Sequence[Held]) -> list[str]:
        """Settle ``held`` messages -- each ``accepted``, ``replayed`` or ``dead`` -- then
        release them from the inbox. Blocking (the settler's thread). A store failure
        propagates with the messages still held."""
        outcomes = [""] * len(held)
        reasons: dict[int, str] = {}
        events = []
        for i, message in enumerate(held):
            mapped = self._mapped(message.frame, message.sender)
            if mapped.event is None:
                reasons[i] = mapped.reason or "unmapped"
            else:
                events.append((i, mapped.event))
        submitted = self.ingest.submit_each([
            (held[i].ledger, event, syslog_attestation(held[i].sender),
             received_of(held[i].frame)) for i, event in events])
        waiting = []
        for (i, _), future in zip(events, submitted, strict=True):
            if isinstance(future, EventRejected):
                reasons[i] = _contract(future)
            else:
                waiting.append((i, future))
        for i, future in waiting:
            outcome = future.result()
            if isinstance(outcome, Conflicted):
                reasons[i] = CONFLICT
            else:
                outcomes[i] = "accepted" if outcome.created else "replayed"
        for i, reason in reasons.items():
            message = held[i]
            self.bury(message.ledger, message.sender, message.frame, reason,
                      message.received_at)
            outcomes[i] = "dead"
        ids = [message.id for message in held]
        self.inbox.release(ids)
        with self._mine_lock:
            self._mine.difference_update(ids)
        self.stats.accepted += outcomes.count("accepted")
        self.stats.replayed += outcomes.count("replayed")
        return outcomes

    def _mapped(self, frame: bytes, sender: str) -> Mapped:
        """:func:`map_message`; what it raises (it never should) is the reason instead,
        ``internal: <type> while mapping``: no message may stop the settler or a
        replay of the letters behind it."""
        try:
            return map_message(frame, sender, self.default_purpose)
        except Exception as error:
            log.error("syslog.unmappable", error=type(error).__name__)
            return Mapped(None, f"internal: {type(error).__name__} while mapping")

    def settle_apart(self, held: Sequence[Held]) -> None:
        """:meth:`settle`, and if that fails while the database answers, each message
        alone: one whose own settling still fails (a row the database refuses, a data
        key that no longer opens) becomes a dead letter, ``internal: <type> while
        appending``, so that it does not hold up every message behind it. Raises -- what
        is not yet settled still held -- only while the database does not answer (or
        the writer is stopping)."""
        try:
            self.settle(held)
            return
        except Exception as error:
            if isinstance(error, WriterStopped) or not self._answers():
                raise
        for message in held:
            try:
                self.settle([message])
            except Exception as error:
                if isinstance(error, WriterStopped) or not self._answers():
                    raise
                log.error("syslog.unsettleable", error=type(error).__name__)
                self.bury(message.ledger, message.sender, message.frame,
                          f"internal: {type(error).__name__} while appending",
                          message.received_at)
                self.inbox.release([message.id])
                with self._mine_lock:
                    self._mine.discard(message.id)

    def _answers(self) -> bool:
        try:
            self.inbox.store.ping()
        except Exception:
            return False
        return True

    def recover(self, held_before: str | None = None) -> int | None:
        """Settle every message held for longer than RECOVER_AFTER seconds (or, given,
        held before ``held_before``) that this process's settler does not have in hand
        (a process died holding it); how many, or None when another process is
        recovering (it held the lock). Blocking.

        The age keeps recovery off what a live settler is about to take (a message is
        settled within moments of being held): taking a message there, ahead of its
        connection's earlier ones still waiting, would break that connection's order.
        A live peer's backlog older than that may be settled twice, to the same
        outcome, in the order it was held. A settler that starts takes everything held
        before it started, before anything it holds itself (:meth:`run_settler`): a
        sender that reconnects at once after a crash finds its earlier messages settled
        ahead of its new ones."""
        done = 0
        cutoff = held_before or format_recorded_at(
            self.clock() - timedelta(seconds=RECOVER_AFTER))
        with self.inbox.store.sole(RECOVERY_LOCK) as alone:
            if not alone:
                return None
            after = 0
            while found := self.inbox.held(after, SETTLE_AT_MOST, held_before=cutoff):
                after = found[-1].id
                with self._mine_lock:
                    mine = set(self._mine)
                batch = [h for h in found if h.id not in mine]
                if batch:
                    self.settle_apart(batch)
                    done += len(batch)
        if done:
            log.info("syslog.recovered", messages=done)
        return done

    async def run_settler(self) -> None:
        """First settle what was held before it started (a process died holding it),
        then what this process holds as it comes, and every RECOVER_SECONDS what others
        left (:meth:`recover`). Runs until cancelled."""
        started = format_recorded_at(self.clock())
        self._waiting, self._wake = deque(), asyncio.Event()
        # A thread of its own, by name: the settler is most of an intake's CPU.
        self._settling = ThreadPoolExecutor(1, thread_name_prefix="syslog-settler")
        try:
            await self._settle_loop(self._waiting, self._wake, started)
        finally:
            self._settling.shutdown(wait=False)
            # What it had in hand is still held: recovery's, from now on.
            self._waiting = self._wake = None
            with self._mine_lock:
                self._mine.clear()

    async def _settle_loop(self, waiting: deque[Held], wake: asyncio.Event,
                           started: str) -> None:
        loop = asyncio.get_running_loop()
        # What was held before this settler started, first and whatever its age: until
        # it is settled, nothing held since is (a connection's order holds across a
        # restart). Retried while it fails or another process is recovering, for at most
        # STARTUP_TRIES: past that the intake goes on (held messages stay for the
        # recoveries every RECOVER_SECONDS) rather than stop every sender.
        for _ in range(STARTUP_TRIES):
            if await self._recover(started):
                break
            await asyncio.sleep(RETRY_SECONDS)
        else:
            log.error("syslog.startup_recovery_incomplete", tries=STARTUP_TRIES)
        recovery_due = loop.time() + RECOVER_SECONDS
        while True:
            if loop.time() >= recovery_due:
                await self._recover()
                recovery_due = loop.time() + RECOVER_SECONDS
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                # cancellation that lands as the wait ends, and close() would hang.
                async with asyncio.timeout(max(0.0, recovery_due - loop.time())):
                    await wake.wait()
            except TimeoutError:
                continue
            wake.clear()
            while waiting and loop.time() < recovery_due:
                batch = [waiting.popleft() for _ in range(min(len(waiting), SETTLE_AT_MOST))]
                try:
                    await loop.run_in_executor(self._settling, self.settle_apart, batch)
                except Exception as error:  # the database is down: the settler goes on
                    # Still held: tried again after a pause, in the same order.
                    waiting.extendleft(reversed(batch))
                    log.warning("syslog.settle_failed", held=len(waiting),
                                error=type(error).__name__)
                    await asyncio.sleep(RETRY_SECONDS)
            if waiting:
                wake.set()  # recovery was due first; the rest after it

    async def _recover(self, held_before: str | None = None) -> bool:
        """:meth:`recover` on the settler's thread; False when it failed (logged) or
        another process was recovering."""
        try:
            done = await asyncio.get_running_loop().run_in_executor(
                self._settling, self.recover, held_before)
        except Exception as error:  # tried again at the next turn
            log.warning("syslog.recovery_failed", error=type(error).__name__)
            return False
        return done is not None

    def bury(self, ledger: str, sender: str, frame: bytes, reason: str,
             received_at: str | None = None) -> int:
        letter = self.dead_letters.add(
            ledger, ATNA_FORMAT, sender, frame, sha256_hex(frame), reason,
            received_at or format_recorded_at(self.clock()))
        self.stats.dead += 1
        log.info("syslog.dead_letter", letter=letter, ledger=ledger)
        return letter

    def replay(self, letter_id: int) -> int | None:
        """Map a dead letter again (after a fix); the seq it is now at, or None (its
        reason updated). Synchronous: for the CLI."""
        letter = self.dead_letters.letter(letter_id)
        if letter is None:
            raise KeyError(letter_id)
        if letter.replayed_seq is not None:
            return letter.replayed_seq
        frame = self.dead_letters.message(letter_id)
        mapped = self._mapped(frame, letter.sender)
        reason = mapped.reason
        if mapped.event is not None:
            try:
                accepted = self.ingest.record_sync(letter.ledger, [mapped.event],
                                                   by=syslog_attestation(letter.sender),
                                                   received=[received_of(frame)])
            except EventRejected as rejected:
                reason = _contract(rejected)
            except EventConflict:
                reason = CONFLICT
            else:
                seq = accepted.receipts[0].seq
                self.dead_letters.replayed(letter_id, seq, format_recorded_at(self.clock()))
                return seq
        self.dead_letters.still_dead(letter_id, reason or "unmapped")
        return None
