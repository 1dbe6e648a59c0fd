"""Cryptography for PHI at rest, and the key stores: envelope encryption, blind indexes,
the PHI key ring and the transparency log's signing keys.

:mod:`ledger.crypto.envelope` and :mod:`ledger.crypto.blind_index` are pure; nonces are
chosen inside them and never by callers. :mod:`ledger.crypto.keyring` (KEKs and the index
key) and :mod:`ledger.crypto.log_keys` (the log's Ed25519 checkpoint keys) are the shells
that read and write the two key stores, each in its own 0600 file or environment variable;
:mod:`ledger.crypto.keyfile` is the private-file writing they share.
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
from ledger.crypto.log_keys import (
    EnvLogKeyProvider,
    FileLogKeyProvider,
    LogKey,
    LogKeyProvider,
    LogKeys,
)

__all__ = [
    "DataKey",
    "EnvKeyProvider",
    "EnvLogKeyProvider",
    "EnvelopeError",
    "FileKeyProvider",
    "FileLogKeyProvider",
    "KeyProvider",
    "KeyRing",
    "KeyRingError",
    "LogKey",
    "LogKeyProvider",
    "LogKeys",
    "blind_index",
    "dek_aad",
    "field_aad",
    "is_token",
    "open_token",
    "seal",
    "unwrap_key",
    "wrap_key",
]
