"""TOTP seeds at rest: sealed, never stored or logged as they are.

A TOTP seed is a shared secret: anyone holding it can make codes. It is sealed with
AES-256-GCM (the envelope recipe of :mod:`ledger.crypto.envelope`) under a key derived
from the key ring's index key, and bound to its identity by the associated data, so a
sealed seed copied to another identity's row does not open. The index key, unlike the
KEKs, is never rotated away, so a KEK rotation leaves sealed seeds alone.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable

from ledger.crypto.envelope import DataKey, open_token, seal
from ledger.crypto.keyring import KeyRing

_LABEL = b"phi-ledger/totp-seed/v1"


class SeedSeal:
    """Seals and opens TOTP seeds. The ring is loaded on first use (a service storing
    PHI in plain text for a benchmark never needs it unless someone logs in)."""

    def __init__(self, ring: Callable[[], KeyRing]) -> None:
        self._ring = ring
        self._key: DataKey | None = None
        self._lock = threading.Lock()

    def _data_key(self) -> DataKey:
        with self._lock:
            if self._key is None:
                index_key = self._ring().index_key
                self._key = DataKey.from_bytes(hmac.new(index_key, _LABEL, hashlib.sha256).digest())
            return self._key

    @staticmethod
    def _aad(identity_id: str) -> bytes:
        return _LABEL + b"\x00" + identity_id.encode("utf-8")

    def seal(self, identity_id: str, seed: str) -> str:
        return seal(self._data_key(), seed.encode("ascii"), self._aad(identity_id))

    def open(self, identity_id: str, sealed: str) -> str:
        return open_token(self._data_key(), sealed, self._aad(identity_id)).decode("ascii")
