"""Chains of entries: extending one, and checking one link by link.

Pure functions over plain data. The writer calls :func:`extend` while it holds the
ledger's write lock; every verifier (the CLI, the HTTP endpoint, the tests, anyone with
an export) feeds stored entries to a :class:`ChainCheck` in ``seq`` order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ledger.attestation import well_formed_received, well_formed_submitter
from ledger.canonical import NotCanonicalizable, canonical, parse
from ledger.entry import ENTRY_FIELDS, GENESIS_HASH, LEAF_PREFIX, SERVICE_MEMBERS, Entry


@dataclass(frozen=True, slots=True)
class Head:
    """The newest entry of a chain (``seq`` 0 and the zero hash for an empty one)."""

    seq: int
    hash: str
    recorded_at: str | None

    @classmethod
    def of(cls, entry: Entry) -> Head:
        return cls(entry.seq, entry.hash, entry.recorded_at)


EMPTY_HEAD = Head(0, GENESIS_HASH, None)


def extend(
    head: Head, ledger: str, events: Sequence[dict[str, Any]], recorded_at: str,
    members: Sequence[Mapping[str, Any]] | None = None,
) -> list[Entry]:
    """Chain ``events`` after ``head``, in order, all stamped with ``recorded_at``; each
    entry carries the service-written ``members`` of the same index (none when omitted).

    ``recorded_at`` never goes backwards along a chain: a clock that stepped back is
    held at the head's time, so the chain's times stay ordered like its seqs.
    """
    if head.recorded_at is not None and recorded_at < head.recorded_at:
        recorded_at = head.recorded_at
    entries = []
    prev_hash, seq = head.hash, head.seq
    for i, event in enumerate(events):
        seq += 1
        entry = Entry.seal(ledger, seq, recorded_at, prev_hash, event,
                           None if members is None else members[i])
        entries.append(entry)
        prev_hash = entry.hash
    return entries


class VerdictKind(Enum):
    """What a check of a ledger found, for callers that act on it (the CLI's wording,
    alerting) without reading the human-readable reason."""

    INTACT = "intact"
    BROKEN = "broken"  # an entry is missing, edited, reordered or not linked
    TRUNCATED = "truncated"  # a signed checkpoint covers more entries than the chain holds
    REWRITTEN = "rewritten"  # the entries do not reproduce a signed root
    TREE_MISMATCH = "tree_mismatch"  # the chain is intact, the stored Merkle tree is not


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking a chain: intact through ``verified_through``, or not, and
    ``kind`` says which way not, so no caller parses ``reason`` (written for people)."""

    kind: VerdictKind
    verified_through: int
    first_bad_seq: int | None
    reason: str | None
    head_hash: str = GENESIS_HASH

    @property
    def ok(self) -> bool:
        return self.kind is VerdictKind.INTACT

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verified_through": self.verified_through,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
        }


class ChainBroken(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class ChainCheck:
    """Checks stored entries one by one, in the order of their position in the store.

    ``feed(position, data)`` takes the position the store keeps an entry at (its seq
    column) and the entry's stored bytes; it raises :class:`ChainBroken` at the first
    entry that is not the canonical, correctly hashed successor of the one before.
    """

    def __init__(self, ledger: str, start: Head = EMPTY_HEAD, *, link_first: bool = True) -> None:
        self.ledger = ledger
        self.head = start
        # A check of one stretch of a chain (verifying in parallel) cannot know the hash
        # before its start: it records the first entry's prev_hash for the caller to link.
        self.link_first = link_first
        self.first_prev_hash: str | None = None

    def feed(self, position: int, data: bytes) -> None:
        expected = self.head.seq + 1
        if position != expected:
            what = "missing" if position > expected else "duplicated"
            raise ChainBroken(expected, f"entry {what} (next stored position is {position})")
        try:
            obj = parse(data)
        except ValueError:
            raise ChainBroken(expected, "entry is not valid JSON") from None
        if (not isinstance(obj, dict) or not obj.keys() >= ENTRY_FIELDS
                or not obj.keys() <= ENTRY_FIELDS | SERVICE_MEMBERS):
            raise ChainBroken(expected, "entry does not have exactly the entry fields")
        # Entries appended before submitted_by existed have none; newer ones must have a
        # well-formed one (its content is covered by the hash, checked below).
        if "submitted_by" in obj and not well_formed_submitter(obj["submitted_by"]):
            raise ChainBroken(expected, "entry's submitted_by is not well-formed")
        # Only entries made from a standard-format message carry `received`.
        if "received" in obj and not well_formed_received(obj["received"]):
            raise ChainBroken(expected, "entry's received is not well-formed")
        if obj["seq"] != expected:
            raise ChainBroken(expected, f"entry claims seq {obj['seq']!r}")
        if obj["ledger"] != self.ledger:
            raise ChainBroken(expected, "entry belongs to another ledger")
        if self.first_prev_hash is None:
            self.first_prev_hash = obj["prev_hash"]
            if not self.link_first:
                self.head = Head(self.head.seq, obj["prev_hash"], self.head.recorded_at)
        if obj["prev_hash"] != self.head.hash:
            raise ChainBroken(expected, "prev_hash does not match the hash of the entry before")
        claimed = obj["hash"]
        try:
            if canonical(obj) != bytes(data):
                raise ChainBroken(expected, "entry is not stored in canonical form")
        except (TypeError, NotCanonicalizable):
            raise ChainBroken(expected, "entry holds a value the ledger never hashes") from None
        # The entry is canonical, so its bytes without the top-level `"hash":"..."` member
        # are exactly canonical(entry without hash): cut it out instead of re-encoding.
        # The last `,"hash":"` is that member: only scalars follow it, and a quote inside
        # a string is always escaped.
        if len(obj) == len(ENTRY_FIELDS):
            cut = data.rfind(b',"hash":"')
        else:
            # Service members (objects) follow the hash: its member ends where the
            # canonical tail of the members after it begins.
            tail = canonical({k: v for k, v in obj.items() if k > "hash"})
            cut = len(data) - len(tail) - 74
            if cut < 0 or data[cut:cut + 9] != b',"hash":"':
                cut = -1
        if cut < 0 or not isinstance(claimed, str) or len(claimed) != 64:
            raise ChainBroken(expected, "entry has no well-formed hash")
        body = data[:cut] + data[cut + 74 :]
        if hashlib.sha256(LEAF_PREFIX + body).hexdigest() != claimed:
            raise ChainBroken(expected, "hash does not match the entry's content")
        self.head = Head(expected, claimed, obj["recorded_at"])

    def verdict(self, error: ChainBroken | None = None) -> Verdict:
        if error is None:
            return Verdict(VerdictKind.INTACT, self.head.seq, None, None, self.head.hash)
        return Verdict(VerdictKind.BROKEN, self.head.seq, error.seq, error.reason,
                       self.head.hash)


def check_chain(
    ledger: str, rows: Iterable[tuple[int, bytes]], start: Head = EMPTY_HEAD
) -> Verdict:
    """Check ``(position, stored bytes)`` rows, returning at the first break."""
    check = ChainCheck(ledger, start)
    try:
        for position, data in rows:
            check.feed(position, data)
    except ChainBroken as broken:
        return check.verdict(broken)
    return check.verdict()
