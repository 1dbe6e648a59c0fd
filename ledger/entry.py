"""The ledger entry: what is stored, exported and hashed (see CONTRACT.md).

``hash = SHA-256(0x00 || canonical(entry without "hash"))``: the 0x00 prefix makes the
entry hash an RFC 9162 leaf hash, so a Merkle tree over the same entries needs no rehash.
An entry is stored as its canonical encoding *including* its hash, which is also exactly
the line ``phi-ledger export`` writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.canonical import canonical, parse

GENESIS_HASH = "0" * 64
LEAF_PREFIX = b"\x00"
ENTRY_FIELDS = frozenset({"ledger", "seq", "recorded_at", "prev_hash", "event", "hash"})
# Members the service writes beside the client's event (see ledger.attestation). Entries
# written before a member existed stay valid without it. Every name must sort after
# "hash": the hash member is then always followed by the same tail of the entry.
SERVICE_MEMBERS = frozenset({"submitted_by", "received"})
assert all(name > "hash" for name in SERVICE_MEMBERS)


def entry_hash(body: dict[str, Any]) -> str:
    """The hash of an entry body (every field but ``hash``)."""
    return hashlib.sha256(LEAF_PREFIX + canonical(body)).hexdigest()


def format_recorded_at(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``, as entries carry it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Entry:
    """One link of a chain. Immutable; ``hash`` is computed by :meth:`seal`."""

    ledger: str
    seq: int
    recorded_at: str
    prev_hash: str
    event: dict[str, Any]
    hash: str
    # The canonical bytes including the hash, when already known (sealed or read back).
    raw: bytes = field(default=b"", compare=False, repr=False)
    # The service-written members (SERVICE_MEMBERS): empty in entries older than them.
    members: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def seal(
        cls, ledger: str, seq: int, recorded_at: str, prev_hash: str, event: dict[str, Any],
        members: Mapping[str, Any] | None = None,
    ) -> Entry:
        members = dict(members or {})
        if not members.keys() <= SERVICE_MEMBERS:
            raise ValueError("an entry member the ledger does not know")
        tail = canonical({"ledger": ledger, "seq": seq, "recorded_at": recorded_at,
                          "prev_hash": prev_hash, **members})
        body = canonical({
            "ledger": ledger,
            "seq": seq,
            "recorded_at": recorded_at,
            "prev_hash": prev_hash,
            "event": event,
            **members,
        })
        digest = hashlib.sha256(LEAF_PREFIX + body).hexdigest()
        # Keys sort as event < hash < every other member: the hash member goes right
        # after the event, before the members that follow it -- exactly `tail` without its
        # opening brace. Splicing saves a second encoding of the whole entry.
        cut = len(body) - len(tail)
        raw = body[:cut] + b',"hash":"' + digest.encode() + b'"' + body[cut:]
        return cls(ledger, seq, recorded_at, prev_hash, event, digest, raw, members)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger,
            "seq": self.seq,
            "recorded_at": self.recorded_at,
            "prev_hash": self.prev_hash,
            "event": self.event,
            "hash": self.hash,
            **self.members,
        }

    def encode(self) -> bytes:
        """The stored and exported form: canonical JSON including ``hash``."""
        return self.raw or canonical(self.as_dict())

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        obj = parse(data)
        return cls(
            obj["ledger"], obj["seq"], obj["recorded_at"], obj["prev_hash"], obj["event"],
            obj["hash"], bytes(data), {k: obj[k] for k in SERVICE_MEMBERS if k in obj},
        )

    @property
    def event_id(self) -> str:
        return str(self.event.get("event_id", ""))

    def receipt(self) -> Receipt:
        return Receipt(self.event_id, self.ledger, self.seq, self.hash, self.prev_hash,
                       self.recorded_at)


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of acknowledgement: the event is durably at ``seq`` of ``ledger``."""

    event_id: str
    ledger: str
    seq: int
    hash: str
    prev_hash: str
    recorded_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "ledger": self.ledger,
            "seq": self.seq,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
            "recorded_at": self.recorded_at,
        }
