"""A received message kept as bytes in the store (the inbox, the dead letters): sealed
under the key ring's active KEK when the service encrypts PHI at rest, as-is otherwise.

An AuditMessage names patients, so a kept message is never PHI-free. Each is sealed
with a fresh data key (AES-256-GCM) wrapped under the active KEK; ``aad`` binds the
sealed bytes to the row they belong to, so a sealed message moved to another row does
not open.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.crypto.envelope import DataKey, open_token, seal, unwrap_key, wrap_key
from ledger.crypto.keyring import KeyRing


@dataclass(frozen=True, slots=True)
class Kept:
    """A message as stored: ``kek_id`` and ``wrapped_key`` are None when not sealed."""

    kek_id: str | None
    wrapped_key: bytes | None
    message: bytes


def keep(ring: KeyRing | None, raw: bytes, aad: bytes) -> Kept:
    if ring is None:
        return Kept(None, None, raw)
    kek_id, kek = ring.active_kek()
    dek = DataKey.generate()
    return Kept(kek_id, wrap_key(kek, dek, aad), seal(dek, raw, aad).encode("ascii"))


def opened(ring: KeyRing | None, kept: Kept, aad: bytes) -> bytes:
    """The bytes as received. Raises ValueError for a sealed message without a ring."""
    if kept.kek_id is None:
        return bytes(kept.message)
    if ring is None:
        raise ValueError("this message is sealed; the key ring is needed to open it")
    dek = unwrap_key(ring.kek(kept.kek_id), bytes(kept.wrapped_key or b""), aad)
    return open_token(dek, bytes(kept.message).decode("ascii"), aad)
