"""The transparency log's checkpoint signing keys and where they live (the shell: files and
the environment).

They are kept apart from the PHI key ring (:mod:`ledger.crypto.keyring`) because they
differ in every way that matters to an operator: a log key signs public statements and its
public half is handed out to verifiers and witnesses, a KEK must never leave the host; a
stolen log key lets someone forge checkpoints but opens no PHI, a stolen KEK opens PHI but
signs nothing; and they rotate on their own schedules. One store each means one can be
backed up, handed to a signing host, or lost, without the other.

:class:`LogKeys` holds the log's name, its Ed25519 keys and which one is active: the active
key signs new checkpoints, other keys with a seed co-sign them until retired, and a retired
key keeps only its public half so that old checkpoints still verify. ``log_name`` names the
log (each ledger's checkpoints have origin ``<log_name>/<ledger>``) and never changes once
chosen. Providers load and save them: :class:`FileLogKeyProvider` (a 0600 JSON file) and
:class:`EnvLogKeyProvider` (the same JSON in an environment variable). The form is::

    {"version": 1, "log_name": "phi-ledger.example.org", "active_log_key": "log-5e6f7a8b",
     "log_keys": {"log-5e6f7a8b": {"public": "<base64 of 32 bytes>",
                                   "seed": "<base64 of 32 bytes> or null",
                                   "created_at": "2026-11-26T19:03:22Z"}}}

These are the very fields a key ring held before the stores were split, so the log keys of
such a combined ring decode with ``ignore`` naming the ring's own fields.
"""

from __future__ import annotations

import os
import re
import socket
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

LOG_ENV_SOURCE: Final = "LEDGER_LOG_KEYS"
LOG_FIELDS: Final = frozenset({"log_name", "log_keys", "active_log_key"})
# A log name is part of every checkpoint's origin and key name: a host-like name.
_LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}")


def default_log_name() -> str:
    """``phi-ledger.<host name>``: the log's name when ``LEDGER_LOG_NAME`` gives none.

    It is written into the log key store when its first key is made and never read from
    the host again, so a renamed host keeps its log's name (a log's origin must never
    change).
    """
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()).strip(".-").lower()
    return f"phi-ledger.{host or 'localhost'}"


def check_log_name(name: str) -> str:
    if not isinstance(name, str) or not _LOG_NAME.fullmatch(name) or name.endswith("/"):
        raise KeyRingError(
            "a log name is 1-200 characters of letters, digits, '.', '_', ':', '/' or '-'"
            " (a host name, optionally with a path), starting with a letter or digit"
        )
    return name


def _ed25519_public(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def _utc_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, repr=False)
class LogKey:
    """One of the log's Ed25519 checkpoint keys: ``seed`` while it signs, None once retired
    (the public key stays, so checkpoints it signed still verify). ``repr`` shows no key."""

    key_id: str
    public: bytes
    seed: bytes | None
    created_at: str

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not KEY_ID.fullmatch(self.key_id):
            raise KeyRingError(
                "log key ids must be 1-64 characters of letters, digits, '.', '_' or '-'")
        if not isinstance(self.public, bytes) or len(self.public) != KEY_BYTES:
            raise KeyRingError(f"log key {self.key_id!r}: the public key must be 32 bytes")
        if self.seed is not None:
            if not isinstance(self.seed, bytes) or len(self.seed) != KEY_BYTES:
                raise KeyRingError(f"log key {self.key_id!r}: the seed must be 32 bytes")
            if _ed25519_public(self.seed) != self.public:
                raise KeyRingError(
                    f"log key {self.key_id!r}: the public key does not belong to the seed")

    @classmethod
    def generate(cls, taken: set[str] | frozenset[str] = frozenset()) -> LogKey:
        seed = os.urandom(KEY_BYTES)
        return cls(new_key_id(taken, "log-"), _ed25519_public(seed), seed, _utc_now())

    @property
    def signing(self) -> bool:
        return self.seed is not None

    def __repr__(self) -> str:
        return f"LogKey({self.key_id!r}, signing={self.signing})"


@dataclass(frozen=True, repr=False)
class LogKeys:
    """The log's name, its checkpoint keys and the id of the active one.

    Guarantees: the name is a valid log name, there is at least one key, ids are unique,
    the active key is in the store and can sign, and the store is never changed in place
    (rotation returns a new one). ``repr`` shows ids only.
    """

    name: str
    keys: tuple[LogKey, ...]
    active: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        check_log_name(self.name)
        if not self.keys:
            raise KeyRingError("the log key store needs at least one key")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise KeyRingError("two log keys share an id")
        active = {k.key_id: k for k in self.keys}.get(self.active)
        if active is None or not active.signing:
            raise KeyRingError(
                f"the active log key {self.active!r} is not a signing key in the store")

    @classmethod
    def generate(cls, log_name: str | None = None) -> LogKeys:
        """A new store: one fresh key, named ``log_name`` (default :func:`default_log_name`)."""
        key = LogKey.generate()
        return cls(check_log_name(log_name or default_log_name()), (key,), key.key_id)

    def active_key(self) -> LogKey:
        """The log key that signs new checkpoints first."""
        return next(k for k in self.keys if k.key_id == self.active)

    def with_new_key(self) -> LogKeys:
        """A store with one more, fresh key, made active; every other key is kept (and keeps
        co-signing until retired). The log's name never changes."""
        key = LogKey.generate({k.key_id for k in self.keys})
        return replace(self, keys=(*self.keys, key), active=key.key_id)

    def with_key_retired(self, key_id: str) -> LogKeys:
        """A store where key ``key_id`` no longer signs: its seed is dropped, its public key
        kept. Refuses the active key and ids not in the store."""
        if key_id == self.active:
            raise KeyRingError(
                f"log key {key_id!r} is active; rotate to a new log key before retiring it")
        if key_id not in {k.key_id for k in self.keys}:
            raise KeyRingError(f"log key {key_id!r} is not in the log key store")
        return replace(self, keys=tuple(replace(k, seed=None) if k.key_id == key_id else k
                                        for k in self.keys))

    def covers(self, other: LogKeys) -> bool:
        """Whether this store is ``other`` or a later state of it: the same log, and every
        key of ``other`` still here with the same public key (it may have been retired
        here since, or keys added). Nothing ``other`` could verify is lost by dropping it."""
        mine = {k.key_id: k.public for k in self.keys}
        return self.name == other.name and all(mine.get(k.key_id) == k.public
                                               for k in other.keys)

    def __repr__(self) -> str:
        return (f"LogKeys(name={self.name!r}, key_ids={[k.key_id for k in self.keys]!r},"
                f" active={self.active!r})")


def encode_log_keys(keys: LogKeys) -> bytes:
    """The JSON form of ``keys`` (holds signing seeds: write it only somewhere private)."""
    return dump_document({
        "version": FORMAT_VERSION,
        "log_name": keys.name,
        "active_log_key": keys.active,
        "log_keys": {
            k.key_id: {"public": encode_key(k.public),
                       "seed": None if k.seed is None else encode_key(k.seed),
                       "created_at": k.created_at}
            for k in keys.keys
        },
    })


def decode_log_keys(text: bytes | str, source: str, ignore: frozenset[str] = frozenset()
                    ) -> LogKeys:
    """Parse the JSON form of a log key store; ``source`` names its origin in error
    messages. Fields in ``ignore`` may be present and are not looked at (a combined ring's
    KEKs, read only for the log keys beside them)."""
    return log_keys_of(parse_document(text, source), source, ignore)


def holds_log_keys(document: dict[str, Any]) -> bool:
    """Whether a parsed key document carries any log key field."""
    return bool(LOG_FIELDS & document.keys())


def log_keys_of(document: dict[str, Any], source: str, ignore: frozenset[str] = frozenset()
                ) -> LogKeys:
    """The log key store in a parsed document (see :func:`decode_log_keys`)."""
    if holds_log_keys(document) and not document.keys() >= LOG_FIELDS:
        raise KeyRingError(f"{source}: log_name, log_keys and active_log_key come together")
    required = LOG_FIELDS | {"version"}
    check_fields(document, source, required, required | ignore)
    entries = document["log_keys"]
    if not isinstance(entries, dict) or not entries:
        raise KeyRingError(f"{source}: log_keys must be a non-empty object of id -> key")
    keys = []
    for key_id, value in entries.items():
        if not isinstance(value, dict) or set(value) != {"public", "seed", "created_at"}:
            raise KeyRingError(f"{source}: log_keys.{key_id} must hold public, seed and"
                               " created_at")
        seed = None if value["seed"] is None else decode_key(value["seed"], source,
                                                             f"log_keys.{key_id}.seed")
        public = decode_key(value["public"], source, f"log_keys.{key_id}.public")
        if not isinstance(value["created_at"], str):
            raise KeyRingError(f"{source}: log_keys.{key_id}.created_at must be a string")
        try:
            keys.append(LogKey(key_id, public, seed, value["created_at"]))
        except KeyRingError as error:
            raise KeyRingError(f"{source}: {error}") from None
    name, active = document["log_name"], document["active_log_key"]
    if not isinstance(name, str) or not isinstance(active, str):
        raise KeyRingError(f"{source}: log_name and active_log_key must be strings")
    try:
        return LogKeys(name, tuple(keys), active)
    except KeyRingError as error:
        raise KeyRingError(f"{source}: {error}") from None


@runtime_checkable
class LogKeyProvider(Protocol):
    """Where the log's signing keys come from and go to (a file, the environment, a KMS)."""

    def load(self) -> LogKeys:
        """The stored keys; :class:`KeyRingError` if they are absent or unusable."""
        ...

    def load_or_create(self, log_name: str | None = None) -> LogKeys:
        """The stored keys, made first when the provider can and there are none."""
        ...

    def save(self, keys: LogKeys) -> None:
        """Replace the stored keys with ``keys``, atomically."""
        ...


class FileLogKeyProvider:
    """The log's signing keys in a JSON file readable by its owner only (mode 0600), with
    the guarantees of :mod:`ledger.crypto.keyfile`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._source = f"log key file {self.path}"

    def __repr__(self) -> str:
        return f"FileLogKeyProvider({str(self.path)!r})"

    def load(self) -> LogKeys:
        """The keys in the file; :class:`KeyRingError` if absent, exposed or invalid."""
        return decode_log_keys(read_private(self.path, self._source), self._source)

    def load_or_create(self, log_name: str | None = None) -> LogKeys:
        """The keys in the file, creating the file (and its directory) with one fresh key
        first. When several processes start at once, exactly one key is made and every
        process returns that one. ``log_name`` names the log in a new file."""
        if not self.path.exists():
            self.create(LogKeys.generate(log_name))
        return self.load()

    def create(self, keys: LogKeys) -> None:
        """Write ``keys`` as a new file; a file already there is kept as it is."""
        create_private(self.path, encode_log_keys(keys), self._source,
                       "provide the keys in LEDGER_LOG_KEYS")

    def save(self, keys: LogKeys) -> None:
        """Replace the file with ``keys`` atomically (readers see the old or the new keys).
        Two concurrent saves are not merged: the last one wins. Rotate from one place."""
        replace_private(self.path, encode_log_keys(keys), self._source)


class EnvLogKeyProvider:
    """The log's signing keys given as JSON in an environment variable (read-only).

    ``ignore`` names the other fields the variable may hold: a key ring written before the
    stores were split carries its log keys beside its KEKs. ``repr`` never shows the value.
    """

    def __init__(self, value: str, name: str = LOG_ENV_SOURCE,
                 ignore: frozenset[str] = frozenset()) -> None:
        self._value = value
        self._name = name
        self._ignore = ignore

    def __repr__(self) -> str:
        return f"EnvLogKeyProvider(name={self._name!r})"

    def load(self) -> LogKeys:
        """The keys in the variable; :class:`KeyRingError` naming the variable if invalid."""
        return decode_log_keys(self._value, f"environment variable {self._name}",
                               self._ignore)

    def load_or_create(self, log_name: str | None = None) -> LogKeys:
        """The keys in the variable (which cannot be given new ones here)."""
        return self.load()

    def save(self, keys: LogKeys) -> None:
        """Always refuses: the process cannot change its own environment's source."""
        raise KeyRingError(
            f"log keys from the environment cannot be rotated in place; update {self._name}"
            " where it is defined (e.g. your secret manager) with the new log keys and"
            " restart"
        )
