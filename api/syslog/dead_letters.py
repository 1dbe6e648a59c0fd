"""Dead letters: messages the intake could not map, kept as received with the reason.

A dead letter is never PHI-free (an AuditMessage names patients), so when the service
encrypts PHI at rest its bytes are sealed (:mod:`api.syslog.kept`; the ledger and the
letter's digest bind it as associated data). ``reason`` names elements and rules, never
values. Crypto-shredding a patient does not reach dead letters: replay or purge them
(docs/standard-formats.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.syslog.kept import Kept, keep, opened
from ledger.crypto.keyring import KeyRing
from ledger.store import LedgerStore

_COLUMNS = "id, ledger, received_at, format, sender, sha256, reason, replayed_seq, replayed_at"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One kept message, without its bytes."""

    id: int
    ledger: str
    received_at: str
    format: str
    sender: str
    sha256: str
    reason: str
    replayed_seq: int | None
    replayed_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _aad(ledger: str, sha256: str) -> bytes:
    return f"phi-ledger dead letter\x00{ledger}\x00{sha256}".encode()


class DeadLetters:
    """The dead-letter table of one store. Every write commits before it returns; reads
    take no write lock (as the inbox's)."""

    def __init__(self, store: LedgerStore, ring: KeyRing | None) -> None:
        self.store = store
        self.ring = ring

    def add(self, ledger: str, fmt: str, sender: str, raw: bytes, sha256: str, reason: str,
            received_at: str) -> int:
        kept = keep(self.ring, raw, _aad(ledger, sha256))
        with self.store.transaction() as tx:
            # The same message received again from its sender while its letter is open
            # is one letter (the unique index on open letters: two settlers may bury it
            # at once); from another sender it is another message, another letter.
            cursor = self.store.execute(
                tx, "INSERT INTO dead_letters (ledger, received_at, format, sender, sha256,"
                " reason, kek_id, wrapped_key, message) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " %s, %s) ON CONFLICT (ledger, sender, sha256) WHERE replayed_seq IS NULL"
                " DO NOTHING RETURNING id",
                (ledger, received_at, fmt, sender, sha256, reason[:2000], kept.kek_id,
                 kept.wrapped_key, kept.message))
            row = cursor.fetchone()
            if row is None:
                row = self.store.execute(
                    tx, "SELECT id FROM dead_letters WHERE ledger = %s AND sender = %s AND"
                    " sha256 = %s AND replayed_seq IS NULL", (ledger, sender, sha256)
                ).fetchone()
            return int(row[0])

    def letters(self, ledger: str | None = None, *, include_replayed: bool = False
                ) -> list[DeadLetter]:
        clauses, params = [], []
        if ledger is not None:
            clauses.append("ledger = %s")
            params.append(ledger)
        if not include_replayed:
            clauses.append("replayed_seq IS NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.store.reading() as curs:
            rows = self.store.execute(
                curs, f"SELECT {_COLUMNS} FROM dead_letters{where} ORDER BY id", params
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def letter(self, letter_id: int) -> DeadLetter | None:
        """One letter by its id (replayed or not), or None."""
        with self.store.reading() as curs:
            row = self.store.execute(
                curs, f"SELECT {_COLUMNS} FROM dead_letters WHERE id = %s", (letter_id,)
            ).fetchone()
        return None if row is None else DeadLetter(*row)

    def message(self, letter_id: int) -> bytes:
        """The letter's bytes as received (opened)."""
        with self.store.reading() as curs:
            row = self.store.execute(
                curs, "SELECT ledger, sha256, kek_id, wrapped_key, message FROM dead_letters"
                " WHERE id = %s", (letter_id,)).fetchone()
        if row is None:
            raise KeyError(letter_id)
        ledger, sha256, kek_id, wrapped, message = row
        return opened(self.ring, Kept(kek_id, wrapped, message), _aad(ledger, sha256))

    def replayed(self, letter_id: int, seq: int, at: str) -> None:
        with self.store.transaction() as tx:
            self.store.execute(tx, "UPDATE dead_letters SET replayed_seq = %s, replayed_at = %s"
                               " WHERE id = %s", (seq, at, letter_id))

    def still_dead(self, letter_id: int, reason: str) -> None:
        with self.store.transaction() as tx:
            self.store.execute(tx, "UPDATE dead_letters SET reason = %s WHERE id = %s",
                               (reason[:2000], letter_id))

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Letters not yet replayed, by (ledger, format): what /metrics shows."""
        with self.store.reading() as curs:
            rows = self.store.execute(
                curs, "SELECT ledger, format, COUNT(*) FROM dead_letters WHERE replayed_seq IS"
                " NULL GROUP BY ledger, format").fetchall()
        return {(r[0], r[1]): int(r[2]) for r in rows}
