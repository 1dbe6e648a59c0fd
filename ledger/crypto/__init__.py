"""Cryptography for PHI at rest: envelope encryption, blind indexes and the key ring.

:mod:`ledger.crypto.envelope` and :mod:`ledger.crypto.blind_index` are pure; nonces are
chosen inside them and never by callers. :mod:`ledger.crypto.keyring` is the shell that
reads and writes keys (a 0600 file or an environment variable).
"""

from ledger.crypto.blind_index import blind_index
from ledger.crypto.envelope import (
    DataKey,
    EnvelopeError,
    dek_aad,
    field_aad,
    is_token,
    open_token,
    seal,
    unwrap_key,
    wrap_key,
)
from ledger.crypto.keyring import (
    EnvKeyProvider,
    FileKeyProvider,
    KeyProvider,
    KeyRing,
    KeyRingError,
)

__all__ = [
    "DataKey",
    "EnvKeyProvider",
    "EnvelopeError",
    "FileKeyProvider",
    "KeyProvider",
    "KeyRing",
    "KeyRingError",
    "blind_index",
    "dek_aad",
    "field_aad",
    "is_token",
    "open_token",
    "seal",
    "unwrap_key",
    "wrap_key",
]
