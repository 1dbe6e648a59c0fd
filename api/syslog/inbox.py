"""The syslog inbox: where an ATNA message is made durable before its connection's next
frame is read, and kept until it is settled (a ledger entry, or a dead letter).

Keeping a message is one small insert, and the inserts of several connections commit
side by side, so a sender waits for one commit of its own bytes rather than for the
ledger's append; the intake settles held messages in groups behind it
(:class:`api.syslog.intake.AtnaIntake`). Settling is idempotent -- a message's event id is
derived from its sender and bytes, an open dead letter is found by its digest -- so a
message settled but not yet released when the process died is settled again, to the same
outcome, and released then.

Held messages are sealed under the key ring when PHI is encrypted at rest
(:mod:`api.syslog.kept`), bound to their ledger and sender.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from api.syslog.kept import Kept, keep, opened
from ledger.crypto.keyring import KeyRing
from ledger.store import LedgerStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Arrival:
    """A message to hold: as received, from whom, for which ledger, when."""

    ledger: str
    sender: str
    frame: bytes
    received_at: str


@dataclass(frozen=True, slots=True)
class Held:
    """A message in the inbox, opened."""

    id: int
    ledger: str
    sender: str
    received_at: str
    frame: bytes


def _aad(ledger: str, sender: str) -> bytes:
    return f"phi-ledger syslog inbox\x00{ledger}\x00{sender}".encode()


class Inbox:
    """The inbox table of one store. Every write commits before it returns; reads take
    no write lock (on SQLite a /metrics scrape neither waits for the ledger's writer nor
    holds it up)."""

    def __init__(self, store: LedgerStore, ring: KeyRing | None) -> None:
        self.store = store
        self.ring = ring

    def hold_many(self, arrivals: Sequence[Arrival]) -> list[int]:
        """Keep every arrival in one statement (durable on return); their ids, in order."""
        params: list[object] = []
        for a in arrivals:
            kept = keep(self.ring, a.frame, _aad(a.ledger, a.sender))
            params += [a.ledger, a.sender, a.received_at, kept.kek_id, kept.wrapped_key,
                       kept.message]
        rows = self.store.commit_statement(
            "INSERT INTO syslog_inbox (ledger, sender, received_at, kek_id, wrapped_key,"
            " message) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(arrivals))
            + " RETURNING id", params)
        # Ids are drawn in the order the rows are inserted, the order of VALUES; RETURNING
        # promises no order of its own.
        return sorted(int(row[0]) for row in rows)

    def held(self, after: int = 0, limit: int = 1000, *, held_before: str | None = None
             ) -> list[Held]:
        """Up to ``limit`` held messages after id ``after``, oldest first; only those held
        before ``held_before`` (a ``received_at``), if given. A message that does not
        open (its KEK gone from the ring, its row tampered with) is left out, and logged
        by id: the others are not held up behind it, and it stays in the inbox (and in
        ``depth``) for an operator."""
        clause = ""
        params: list[object] = [after]
        if held_before is not None:
            clause = " AND received_at < %s"
            params.append(held_before)
        with self.store.reading() as curs:
            rows = self.store.execute(
                curs, "SELECT id, ledger, sender, received_at, kek_id, wrapped_key, message"
                f" FROM syslog_inbox WHERE id > %s{clause} ORDER BY id LIMIT %s",
                [*params, limit]).fetchall()
        out = []
        for i, ledger, sender, at, kek_id, wrapped, message in rows:
            try:
                frame = opened(self.ring, Kept(kek_id, wrapped, message), _aad(ledger, sender))
            except Exception as error:
                log.error("syslog.inbox_unopenable", id=int(i), error=type(error).__name__)
                continue
            out.append(Held(int(i), ledger, sender, at, frame))
        return out

    def release(self, ids: Sequence[int]) -> None:
        """Forget settled messages."""
        if not ids:
            return
        with self.store.transaction() as tx:
            marks = ", ".join(["%s"] * len(ids))
            self.store.execute(tx, f"DELETE FROM syslog_inbox WHERE id IN ({marks})",
                               list(ids))

    def depth(self) -> int:
        """Messages held, not yet settled: what /metrics shows."""
        with self.store.reading() as curs:
            return int(self.store.execute(curs, "SELECT COUNT(*) FROM syslog_inbox")
                       .fetchone()[0])
