"""Blind indexes: deterministic, keyed stand-ins for identifiers that must stay searchable.

An MRN cannot be stored in the clear, yet views must find "every access to patient X".
A blind index is HMAC-SHA256 under a secret index key, so equal inputs give equal
indexes (lookups and joins work) while nobody without the key can test a guess.

Domain separation: the MAC input names the purpose, the kind of value and the ledger,
each length-prefixed, so the index of an MRN in one ledger says nothing about the same
MRN in another ledger, or about an actor id that happens to spell the same string.
Values are indexed exactly as given; callers normalise them first if they need to.
"""

from __future__ import annotations

import hmac
import struct
from typing import Final

INDEX_KEY_BYTES: Final = 32
_TAG: Final = b"phi-ledger/blind-index/v1\x00"
_U32 = struct.Struct(">I")


def _lp(part: str) -> bytes:
    raw = part.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def blind_index(index_key: bytes, ledger: str, kind: str, value: str) -> str:
    """The 64-hex-character blind index of ``value`` (of the given ``kind``) in ``ledger``.

    Deterministic for the same key and inputs; any change to ``ledger``, ``kind`` or
    ``value`` gives an unrelated index. Raises ``ValueError`` for a key that is not 32
    bytes (the message holds no key material).
    """
    if not isinstance(index_key, bytes) or len(index_key) != INDEX_KEY_BYTES:
        raise ValueError(f"the index key must be exactly {INDEX_KEY_BYTES} bytes")
    message = _TAG + _lp(kind) + _lp(ledger) + _lp(value)
    return hmac.digest(index_key, message, "sha256").hex()
