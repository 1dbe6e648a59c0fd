"""The key ring and where it lives (the shell: files and the environment).

A :class:`KeyRing` holds the key-encryption keys (KEKs) that wrap per-patient data keys,
which one of them wraps new data keys, and the key for blind indexes. Old KEKs stay in
the ring after a rotation so that data keys wrapped under them still unwrap; a KEK is
retired only once nothing is wrapped under it any more.

Providers load and save a ring: :class:`FileKeyProvider` (a 0600 JSON file) and
:class:`EnvKeyProvider` (the same JSON in an environment variable). A cloud KMS would
implement :class:`KeyProvider`. The on-disk form is::

    {"version": 1, "active_kek": "kek-1a2b3c4d",
     "keks": {"kek-1a2b3c4d": "<base64 of 32 bytes>"}, "index_key": "<base64 of 32 bytes>",
     "log_name": "phi-ledger.example.org", "active_log_key": "log-5e6f7a8b",
     "log_keys": {"log-5e6f7a8b": {"public": "<base64 of 32 bytes>",
                                   "seed": "<base64 of 32 bytes> or null",
                                   "created_at": "2026-11-26T19:03:22Z"}}}

The three ``log_*`` fields are the transparency log's checkpoint signing keys (Ed25519):
``log_name`` names the log (each ledger's checkpoints have origin ``<log_name>/<ledger>``),
the active key signs new checkpoints, other keys with a seed co-sign them until retired,
and a retired key keeps only its public half so that old checkpoints still verify. A
ring written before they existed lacks them; :meth:`FileKeyProvider.ensure_log_key`
adds them.

Every failure is a :class:`KeyRingError` whose message names the file (or variable) and
says what is wrong, and never contains key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

KEY_BYTES: Final = 32
FORMAT_VERSION: Final = 1
ENV_SOURCE: Final = "LEDGER_KEYS"
_KEK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELDS: Final = frozenset({"version", "active_kek", "keks", "index_key"})
_LOG_FIELDS: Final = frozenset({"log_name", "log_keys", "active_log_key"})
# A log name is part of every checkpoint's origin and key name: a host-like name.
_LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}")


class KeyRingError(Exception):
    """The key ring cannot be loaded, saved or changed as asked.

    The message is meant for an operator: it names the file or variable and the problem,
    and never holds key bytes.
    """


def _new_kek_id(taken: set[str] | frozenset[str] = frozenset(), prefix: str = "kek-") -> str:
    while True:
        kek_id = prefix + secrets.token_hex(4)
        if kek_id not in taken:
            return kek_id


def default_log_name() -> str:
    """``phi-ledger.<host name>``: the log's name when ``LEDGER_LOG_NAME`` gives none.

    It is written into the ring when the log key is made and never read from the host
    again, so a renamed host keeps its log's name (a log's origin must never change).
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
        if not isinstance(self.key_id, str) or not _KEK_ID.fullmatch(self.key_id):
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
        return cls(_new_kek_id(taken, "log-"), _ed25519_public(seed), seed, _utc_now())

    @property
    def signing(self) -> bool:
        return self.seed is not None

    def __repr__(self) -> str:
        return f"LogKey({self.key_id!r}, signing={self.signing})"


@dataclass(frozen=True, repr=False)
class KeyRing:
    """KEKs by id, the id of the active one, and the blind-index key.

    Guarantees: every key is 32 bytes, the active KEK is in the ring, and the ring is
    never changed in place (rotation returns a new ring). ``repr`` shows ids only.
    """

    keks: dict[str, bytes]
    active_kek_id: str
    index_key: bytes
    # The transparency log's checkpoint keys (see the module doc); empty in a ring made
    # before they existed.
    log_name: str | None = None
    log_keys: tuple[LogKey, ...] = field(default=())
    active_log_key: str | None = None

    def __post_init__(self) -> None:
        # A private copy, so a caller's later edits to its dict cannot change this ring.
        object.__setattr__(self, "keks", dict(self.keks))
        if not self.keks:
            raise KeyRingError("a key ring needs at least one KEK")
        for kek_id, kek in self.keks.items():
            if not isinstance(kek_id, str) or not _KEK_ID.fullmatch(kek_id):
                raise KeyRingError(
                    "KEK ids must be 1-64 characters of letters, digits, '.', '_' or '-'"
                )
            if not isinstance(kek, bytes) or len(kek) != KEY_BYTES:
                raise KeyRingError(f"KEK {kek_id!r} must be exactly {KEY_BYTES} bytes")
        if self.active_kek_id not in self.keks:
            raise KeyRingError(f"the active KEK {self.active_kek_id!r} is not in the ring")
        if not isinstance(self.index_key, bytes) or len(self.index_key) != KEY_BYTES:
            raise KeyRingError(f"the index key must be exactly {KEY_BYTES} bytes")
        object.__setattr__(self, "log_keys", tuple(self.log_keys))
        if self.log_keys or self.log_name is not None or self.active_log_key is not None:
            if self.log_name is None or self.active_log_key is None or not self.log_keys:
                raise KeyRingError("log_name, log_keys and active_log_key come together")
            check_log_name(self.log_name)
            ids = [k.key_id for k in self.log_keys]
            if len(set(ids)) != len(ids):
                raise KeyRingError("two log keys share an id")
            active = {k.key_id: k for k in self.log_keys}.get(self.active_log_key)
            if active is None or not active.signing:
                raise KeyRingError(
                    f"the active log key {self.active_log_key!r} is not a signing key in the"
                    " ring")

    @classmethod
    def generate(cls, log_name: str | None = None) -> KeyRing:
        """A new ring: one fresh active KEK, a fresh index key and a fresh log key."""
        kek_id = _new_kek_id()
        log_key = LogKey.generate()
        return cls({kek_id: os.urandom(KEY_BYTES)}, kek_id, os.urandom(KEY_BYTES),
                   check_log_name(log_name or default_log_name()), (log_key,), log_key.key_id)

    def active_log(self) -> LogKey:
        """The log key that signs new checkpoints first."""
        for key in self.log_keys:
            if key.key_id == self.active_log_key:
                return key
        raise KeyRingError("the key ring holds no log signing key")

    def with_new_log_key(self, log_name: str | None = None) -> KeyRing:
        """A ring with one more, fresh log key, made active; every other log key is kept
        (and keeps co-signing until retired). ``log_name`` names the log when the ring
        has no log key yet; a log's name never changes afterwards."""
        name = self.log_name or check_log_name(log_name or default_log_name())
        key = LogKey.generate({k.key_id for k in self.log_keys})
        return replace(self, log_name=name, log_keys=(*self.log_keys, key),
                       active_log_key=key.key_id)

    def with_log_key_retired(self, key_id: str) -> KeyRing:
        """A ring where log key ``key_id`` no longer signs: its seed is dropped, its public
        key kept. Refuses the active key and ids not in the ring."""
        if key_id == self.active_log_key:
            raise KeyRingError(
                f"log key {key_id!r} is active; rotate to a new log key before retiring it")
        if key_id not in {k.key_id for k in self.log_keys}:
            raise KeyRingError(f"log key {key_id!r} is not in the key ring")
        keys = tuple(replace(k, seed=None) if k.key_id == key_id else k for k in self.log_keys)
        return replace(self, log_keys=keys)

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
        kek_id = _new_kek_id(set(self.keks))
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
        return (f"KeyRing(active_kek_id={self.active_kek_id!r}, kek_ids={sorted(self.keks)!r},"
                f" active_log_key={self.active_log_key!r})")


@runtime_checkable
class KeyProvider(Protocol):
    """Where a key ring comes from and goes to (a file, the environment, a cloud KMS)."""

    def load(self) -> KeyRing:
        """The stored ring; :class:`KeyRingError` if it is absent or unusable."""
        ...

    def save(self, ring: KeyRing) -> None:
        """Replace the stored ring with ``ring``, atomically."""
        ...

    def ensure_log_key(self, log_name: str | None = None) -> KeyRing:
        """The ring, with a log signing key (added first, when the provider can)."""
        ...


def encode_ring(ring: KeyRing) -> bytes:
    """The JSON form of ``ring`` (contains key material: write it only somewhere private)."""
    document = {
        "version": FORMAT_VERSION,
        "active_kek": ring.active_kek_id,
        "keks": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(ring.keks.items())},
        "index_key": base64.b64encode(ring.index_key).decode("ascii"),
    }
    if ring.log_keys:
        document["log_name"] = ring.log_name
        document["active_log_key"] = ring.active_log_key
        document["log_keys"] = {
            k.key_id: {
                "public": base64.b64encode(k.public).decode("ascii"),
                "seed": None if k.seed is None else base64.b64encode(k.seed).decode("ascii"),
                "created_at": k.created_at,
            }
            for k in ring.log_keys
        }
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def _key(value: Any, source: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyRingError(f"{source}: {what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"{source}: {what} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyRingError(
            f"{source}: {what} must decode to {KEY_BYTES} bytes, not {len(raw)}"
        )
    return raw


def decode_ring(text: bytes | str, source: str) -> KeyRing:
    """Parse the JSON form of a ring; ``source`` names its origin in error messages."""
    if isinstance(text, bytes):
        # Decoded here rather than by json.loads, which would also guess UTF-16 and -32.
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyRingError(f"{source}: is not UTF-8 text") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        # Position only: the message must not quote the document, which holds keys.
        raise KeyRingError(
            f"{source}: is not valid JSON (line {error.lineno}, column {error.colno})"
        ) from None
    if not isinstance(document, dict):
        raise KeyRingError(f"{source}: must be a JSON object")
    missing = sorted(_FIELDS - document.keys())
    if missing:
        raise KeyRingError(f"{source}: missing field(s) {', '.join(missing)}")
    unknown = sorted(str(k) for k in document.keys() - _FIELDS - _LOG_FIELDS)
    if unknown:
        raise KeyRingError(f"{source}: unexpected field(s) {', '.join(unknown)}")
    if document["version"] != FORMAT_VERSION or isinstance(document["version"], bool):
        raise KeyRingError(f"{source}: version must be {FORMAT_VERSION}")
    keks = document["keks"]
    if not isinstance(keks, dict) or not keks:
        raise KeyRingError(f"{source}: keks must be a non-empty object of id -> base64 key")
    decoded: dict[str, bytes] = {}
    for kek_id, value in keks.items():
        if not _KEK_ID.fullmatch(kek_id):
            raise KeyRingError(
                f"{source}: KEK ids must be 1-64 characters of letters, digits, '.', '_' or '-'"
            )
        decoded[kek_id] = _key(value, source, f"keks.{kek_id}")
    active = document["active_kek"]
    if not isinstance(active, str) or active not in decoded:
        raise KeyRingError(f"{source}: active_kek must be the id of one of the keks")
    index_key = _key(document["index_key"], source, "index_key")
    log_name, log_keys, active_log = _log_keys(document, source)
    try:
        return KeyRing(decoded, active, index_key, log_name, log_keys, active_log)
    except KeyRingError as error:
        raise KeyRingError(f"{source}: {error}") from None


def _log_keys(
    document: dict[str, Any], source: str
) -> tuple[str | None, tuple[LogKey, ...], str | None]:
    present = _LOG_FIELDS & document.keys()
    if not present:
        return None, (), None
    if present != _LOG_FIELDS:
        raise KeyRingError(f"{source}: log_name, log_keys and active_log_key come together")
    entries = document["log_keys"]
    if not isinstance(entries, dict) or not entries:
        raise KeyRingError(f"{source}: log_keys must be a non-empty object of id -> key")
    keys = []
    for key_id, value in entries.items():
        if not isinstance(value, dict) or set(value) != {"public", "seed", "created_at"}:
            raise KeyRingError(f"{source}: log_keys.{key_id} must hold public, seed and"
                               " created_at")
        seed = None if value["seed"] is None else _key(value["seed"], source,
                                                       f"log_keys.{key_id}.seed")
        public = _key(value["public"], source, f"log_keys.{key_id}.public")
        if not isinstance(value["created_at"], str):
            raise KeyRingError(f"{source}: log_keys.{key_id}.created_at must be a string")
        keys.append(LogKey(key_id, public, seed, value["created_at"]))
    name, active = document["log_name"], document["active_log_key"]
    if not isinstance(name, str) or not isinstance(active, str):
        raise KeyRingError(f"{source}: log_name and active_log_key must be strings")
    return name, tuple(keys), active


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open directories.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class FileKeyProvider:
    """A key ring in a JSON file readable by its owner only (mode 0600).

    Guarantees: the file is never written in place (a private temporary file is renamed
    over it), is created 0600 whatever the umask, and is refused when group or others
    may read it, when it is not valid, or when any key has the wrong length.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._source = f"key file {self.path}"

    def __repr__(self) -> str:
        return f"FileKeyProvider({str(self.path)!r})"

    def load(self) -> KeyRing:
        """The ring in the file; :class:`KeyRingError` if absent, exposed or invalid."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyRingError(f"{self._source}: does not exist") from None
        except PermissionError:
            raise KeyRingError(f"{self._source}: cannot be read (permission denied)") from None
        except OSError as error:
            raise KeyRingError(f"{self._source}: cannot be opened ({error.strerror})") from None
        try:
            # fstat the open descriptor, not the path, so the checked file is the read one.
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise KeyRingError(f"{self._source}: is not a regular file")
            if info.st_mode & 0o077:
                raise KeyRingError(
                    f"{self._source}: is accessible to group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {self.path}` "
                    "and consider rotating the keys"
                )
            try:
                with os.fdopen(fd, "rb", closefd=False) as handle:
                    data = handle.read()
            except OSError as error:
                raise KeyRingError(f"{self._source}: cannot be read ({error.strerror})") from None
        finally:
            os.close(fd)
        return decode_ring(data, self._source)

    def load_or_create(self, log_name: str | None = None) -> KeyRing:
        """The ring in the file, creating the file (and its directory) with a new ring first.

        Creation is atomic and exclusive: when several processes start at once, exactly one
        ring is created and every process returns that one. ``log_name`` names the log in
        a new ring (default :func:`default_log_name`).
        """
        if not self.path.exists():
            self._create(KeyRing.generate(log_name))
        return self.load()

    def ensure_log_key(self, log_name: str | None = None) -> KeyRing:
        """The ring, given a log signing key first if it has none (a ring written before
        checkpoints existed).

        Several processes may start at once: each takes an exclusive lock on the file it
        opened, then reads the file again by name, and only adds a key when that ring still
        has none. So exactly one key is added, and every process signs with that one.
        """
        ring = self.load()
        if ring.log_keys:
            return ring
        import fcntl

        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            ring = self.load()
            if not ring.log_keys:
                ring = ring.with_new_log_key(log_name)
                self.save(ring)
        finally:
            os.close(fd)  # releases the lock
        return ring

    def save(self, ring: KeyRing) -> None:
        """Replace the file with ``ring`` atomically (readers see the old or the new ring).

        Two concurrent saves are not merged: the last one wins. Rotate from one place.
        """
        temp = self._write_temp(ring)
        try:
            os.replace(temp, self.path)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise KeyRingError(f"{self._source}: cannot be replaced ({error.strerror})") from None
        _fsync_dir(self.path.parent)

    def _create(self, ring: KeyRing) -> None:
        temp = self._write_temp(ring)
        try:
            # link() fails if the target exists, unlike replace(): a process losing the
            # race must adopt the winner's keys rather than overwrite them, or data the
            # winner already encrypted would be under a KEK that no longer exists.
            os.link(temp, self.path)
        except FileExistsError:
            pass
        except OSError as error:
            raise KeyRingError(
                f"{self._source}: cannot be created ({error.strerror}); the filesystem may "
                "not support hard links: create the file yourself with mode 0600, or provide "
                "the keys in LEDGER_KEYS"
            ) from None
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def _write_temp(self, ring: KeyRing) -> Path:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise KeyRingError(
                f"{self._source}: cannot create directory {directory} ({error.strerror})"
            ) from None
        temp = directory / f".{self.path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise KeyRingError(
                f"{self._source}: cannot write in {directory} ({error.strerror})"
            ) from None
        try:
            with os.fdopen(fd, "wb") as handle:
                # The umask can only remove bits; set 0600 exactly so the owner can read it.
                os.fchmod(handle.fileno(), 0o600)
                handle.write(encode_ring(ring))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise KeyRingError(f"{self._source}: cannot be written ({error.strerror})") from None
        return temp


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

    def ensure_log_key(self, log_name: str | None = None) -> KeyRing:
        """The ring, which must already hold a log signing key (it cannot be added here)."""
        ring = self.load()
        if not ring.log_keys:
            raise KeyRingError(
                f"environment variable {self._name}: holds no log signing key (log_name,"
                " log_keys, active_log_key): write the ring to a private file, run"
                " `phi-ledger keys rotate-log-key` with LEDGER_KEY_FILE pointing at it, and"
                f" put the file's content back into {self._name}"
            )
        return ring

    def save(self, ring: KeyRing) -> None:
        """Always refuses: the process cannot change its own environment's source."""
        raise KeyRingError(
            f"keys from the environment cannot be rotated in place; update {self._name} "
            "where it is defined (e.g. your secret manager) with the new key ring and restart"
        )
