"""The PHI key ring and where it lives (the shell: files and the environment).

A :class:`KeyRing` holds the key-encryption keys (KEKs) that wrap per-patient data keys,
which one of them wraps new data keys, and the key for blind indexes. Old KEKs stay in
the ring after a rotation so that data keys wrapped under them still unwrap; a KEK is
retired only once nothing is wrapped under it any more.

The ring holds PHI protection only. The transparency log's checkpoint signing keys are a
store of their own (:mod:`ledger.crypto.log_keys`, which says why).

Providers load and save a ring: :class:`FileKeyProvider` (a 0600 JSON file) and
:class:`EnvKeyProvider` (the same JSON in an environment variable). A cloud KMS would
implement :class:`KeyProvider`. The on-disk form is::

    {"version": 1, "active_kek": "kek-1a2b3c4d",
     "keks": {"kek-1a2b3c4d": "<base64 of 32 bytes>"}, "index_key": "<base64 of 32 bytes>"}

A ring written before the stores were split also carries the log's keys (``log_name``,
``log_keys``, ``active_log_key``). It still loads here (those fields are not the ring's and
are not read); :mod:`ledger.keystores` moves them to the log key store, and
:meth:`FileKeyProvider.save` refuses to overwrite a file that still holds them, so a
rotation can never drop them.

Every failure is a :class:`KeyRingError` whose message names the file (or variable) and
says what is wrong, and never contains key material.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from ledger.crypto.keyfile import (
    FORMAT_VERSION,
    KEY_BYTES,
    KEY_ID,
    KeyRingError,
    check_fields,
    create_private,
    decode_key,
    dump_document,
    encode_key,
    new_key_id,
    parse_document,
    read_private,
    replace_private,
)
from ledger.crypto.log_keys import LOG_FIELDS, holds_log_keys

ENV_SOURCE: Final = "LEDGER_KEYS"
RING_FIELDS: Final = frozenset({"version", "active_kek", "keks", "index_key"})

__all__ = ["ENV_SOURCE", "KEY_BYTES", "RING_FIELDS", "EnvKeyProvider", "FileKeyProvider",
           "KeyProvider", "KeyRing", "KeyRingError", "decode_ring", "encode_ring"]


@dataclass(frozen=True, repr=False)
class KeyRing:
    """KEKs by id, the id of the active one, and the blind-index key.

    Guarantees: every key is 32 bytes, the active KEK is in the ring, and the ring is
    never changed in place (rotation returns a new ring). ``repr`` shows ids only.
    """

    keks: dict[str, bytes]
    active_kek_id: str
    index_key: bytes

    def __post_init__(self) -> None:
        # A private copy, so a caller's later edits to its dict cannot change this ring.
        object.__setattr__(self, "keks", dict(self.keks))
        if not self.keks:
            raise KeyRingError("a key ring needs at least one KEK")
        for kek_id, kek in self.keks.items():
            if not isinstance(kek_id, str) or not KEY_ID.fullmatch(kek_id):
                raise KeyRingError(
                    "KEK ids must be 1-64 characters of letters, digits, '.', '_' or '-'"
                )
            if not isinstance(kek, bytes) or len(kek) != KEY_BYTES:
                raise KeyRingError(f"KEK {kek_id!r} must be exactly {KEY_BYTES} bytes")
        if self.active_kek_id not in self.keks:
            raise KeyRingError(f"the active KEK {self.active_kek_id!r} is not in the ring")
        if not isinstance(self.index_key, bytes) or len(self.index_key) != KEY_BYTES:
            raise KeyRingError(f"the index key must be exactly {KEY_BYTES} bytes")

    @classmethod
    def generate(cls) -> KeyRing:
        """A new ring: one fresh active KEK and a fresh index key."""
        kek_id = new_key_id()
        return cls({kek_id: os.urandom(KEY_BYTES)}, kek_id, os.urandom(KEY_BYTES))

    def active_kek(self) -> tuple[str, bytes]:
        """``(id, key)`` of the KEK that wraps new data keys."""
        return self.active_kek_id, self.keks[self.active_kek_id]

    def kek(self, kek_id: str) -> bytes:
        """The KEK with this id; :class:`KeyRingError` naming the id when it is absent."""
        try:
            return self.keks[kek_id]
        except KeyError:
            raise KeyRingError(
                f"KEK {kek_id!r} is not in the key ring (retired, or keys from another "
                "deployment?)"
            ) from None

    def with_new_kek(self) -> KeyRing:
        """A ring with one more, fresh KEK, made active; every existing KEK is kept."""
        kek_id = new_key_id(set(self.keks))
        return replace(self, keks={**self.keks, kek_id: os.urandom(KEY_BYTES)},
                       active_kek_id=kek_id)

    def without_kek(self, kek_id: str) -> KeyRing:
        """A ring without ``kek_id``. Refuses the active KEK and ids not in the ring.

        Retiring a KEK makes every data key still wrapped under it unreadable: rewrap them
        under the active KEK first.
        """
        if kek_id == self.active_kek_id:
            raise KeyRingError(f"KEK {kek_id!r} is active; rotate to a new KEK before retiring it")
        self.kek(kek_id)
        return replace(self, keks={k: v for k, v in self.keks.items() if k != kek_id})

    def __repr__(self) -> str:
        return f"KeyRing(active_kek_id={self.active_kek_id!r}, kek_ids={sorted(self.keks)!r})"


@runtime_checkable
class KeyProvider(Protocol):
    """Where a key ring comes from and goes to (a file, the environment, a cloud KMS)."""

    def load(self) -> KeyRing:
        """The stored ring; :class:`KeyRingError` if it is absent or unusable."""
        ...

    def save(self, ring: KeyRing) -> None:
        """Replace the stored ring with ``ring``, atomically."""
        ...


def encode_ring(ring: KeyRing) -> bytes:
    """The JSON form of ``ring`` (contains key material: write it only somewhere private)."""
    return dump_document({
        "version": FORMAT_VERSION,
        "active_kek": ring.active_kek_id,
        "keks": {k: encode_key(v) for k, v in sorted(ring.keks.items())},
        "index_key": encode_key(ring.index_key),
    })


def decode_ring(text: bytes | str, source: str) -> KeyRing:
    """Parse the JSON form of a ring; ``source`` names its origin in error messages.

    A ring written before the stores were split may also hold the log's keys: they are
    allowed and not read (see the module doc)."""
    return _ring_of(parse_document(text, source), source)


def _ring_of(document: dict[str, Any], source: str) -> KeyRing:
    check_fields(document, source, RING_FIELDS, RING_FIELDS | LOG_FIELDS)
    keks = document["keks"]
    if not isinstance(keks, dict) or not keks:
        raise KeyRingError(f"{source}: keks must be a non-empty object of id -> base64 key")
    decoded: dict[str, bytes] = {}
    for kek_id, value in keks.items():
        if not KEY_ID.fullmatch(kek_id):
            raise KeyRingError(
                f"{source}: KEK ids must be 1-64 characters of letters, digits, '.', '_' or '-'"
            )
        decoded[kek_id] = decode_key(value, source, f"keks.{kek_id}")
    active = document["active_kek"]
    if not isinstance(active, str) or active not in decoded:
        raise KeyRingError(f"{source}: active_kek must be the id of one of the keks")
    index_key = decode_key(document["index_key"], source, "index_key")
    try:
        return KeyRing(decoded, active, index_key)
    except KeyRingError as error:
        raise KeyRingError(f"{source}: {error}") from None


class FileKeyProvider:
    """A key ring in a JSON file readable by its owner only (mode 0600), with the
    guarantees of :mod:`ledger.crypto.keyfile`: never written in place, created 0600
    whatever the umask, refused when group or others may read it, when it is not valid,
    or when any key has the wrong length.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._source = f"key file {self.path}"

    def __repr__(self) -> str:
        return f"FileKeyProvider({str(self.path)!r})"

    def load(self) -> KeyRing:
        """The ring in the file; :class:`KeyRingError` if absent, exposed or invalid."""
        return decode_ring(read_private(self.path, self._source), self._source)

    def load_or_create(self) -> KeyRing:
        """The ring in the file, creating the file (and its directory) with a new ring first.

        Creation is atomic and exclusive: when several processes start at once, exactly one
        ring is created and every process returns that one (a process losing the race must
        adopt the winner's keys, or data the winner already encrypted would be under a KEK
        that no longer exists).
        """
        if not self.path.exists():
            create_private(self.path, encode_ring(KeyRing.generate()), self._source,
                           "provide the keys in LEDGER_KEYS")
        return self.load()

    def save(self, ring: KeyRing) -> None:
        """Replace the file with ``ring`` atomically (readers see the old or the new ring).

        Two concurrent saves are not merged: the last one wins. Rotate from one place.
        Refuses while the file still holds the log's signing keys, which ``ring`` does not
        carry: writing it would destroy them.
        """
        if self._holds_log_keys():
            raise KeyRingError(
                f"{self._source}: still holds the log's signing keys; start the service or"
                " run `phi-ledger keys log-keys` once to move them to the log key file,"
                " then retry")
        replace_private(self.path, encode_ring(ring), self._source)

    def _holds_log_keys(self) -> bool:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as error:
            raise KeyRingError(f"{self._source}: cannot be read ({error.strerror})") from None
        try:
            return holds_log_keys(parse_document(data, self._source))
        except KeyRingError:
            return False  # not a ring at all: nothing in it to keep


class EnvKeyProvider:
    """A key ring given as JSON in an environment variable (read-only).

    The settings layer passes the variable's value; ``repr`` never shows it.
    """

    def __init__(self, value: str, name: str = ENV_SOURCE) -> None:
        self._value = value
        self._name = name

    def __repr__(self) -> str:
        return f"EnvKeyProvider(name={self._name!r})"

    def load(self) -> KeyRing:
        """The ring in the variable; :class:`KeyRingError` naming the variable if invalid."""
        return decode_ring(self._value, f"environment variable {self._name}")

    def save(self, ring: KeyRing) -> None:
        """Always refuses: the process cannot change its own environment's source."""
        raise KeyRingError(
            f"keys from the environment cannot be rotated in place; update {self._name} "
            "where it is defined (e.g. your secret manager) with the new key ring and restart"
        )
