"""Where each key store is, from the settings (the shell around :mod:`ledger.crypto`).

Two stores, each with its own file or variable, because they differ in lifecycle and in
what their loss or theft costs (:mod:`ledger.crypto.log_keys` says how):

- the PHI key ring (KEKs and the blind-index key): ``LEDGER_KEYS``, else ``LEDGER_KEY_FILE``;
- the log's checkpoint signing keys: ``LEDGER_LOG_KEYS``, else ``LEDGER_LOG_KEY_FILE``
  (default: beside the key file, ``log-<its name>``, so ``./var/log-keys.json``).

A key ring written before the split also holds the log's keys. In a file they are moved
(:func:`move_log_keys`) the first time either store is asked for; in ``LEDGER_KEYS``, which
the service cannot change, they are read from there until ``LEDGER_LOG_KEYS`` is set.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import structlog

from ledger.crypto.keyfile import (
    KeyRingError,
    parse_document,
    read_private,
    replace_private,
)
from ledger.crypto.keyring import (
    RING_FIELDS,
    EnvKeyProvider,
    FileKeyProvider,
    KeyProvider,
    decode_ring,
    encode_ring,
)
from ledger.crypto.log_keys import (
    EnvLogKeyProvider,
    FileLogKeyProvider,
    LogKeyProvider,
    holds_log_keys,
    log_keys_of,
)
from ledger.settings import Settings

log = structlog.get_logger(__name__)


def key_provider(settings: Settings) -> KeyProvider:
    """Where the PHI key ring is kept: ``LEDGER_KEYS``, else the key file (whose log keys,
    if it still holds any, are moved out first, so saving the ring cannot drop them)."""
    if settings.keys_json:
        return EnvKeyProvider(settings.keys_json)
    move_log_keys(settings.key_file, log_key_path(settings))
    return FileKeyProvider(settings.key_file)


def log_key_provider(settings: Settings) -> LogKeyProvider:
    """Where the log's signing keys are kept: ``LEDGER_LOG_KEYS``; else the log keys a
    ``LEDGER_KEYS`` ring written before the split carries; else the log key file."""
    if not settings.keys_json:
        move_log_keys(settings.key_file, log_key_path(settings))
    if settings.log_keys_json:
        return EnvLogKeyProvider(settings.log_keys_json)
    if settings.keys_json:
        source = "environment variable LEDGER_KEYS"
        if holds_log_keys(parse_document(settings.keys_json, source)):
            log.warning("keys.log_keys_in_ring", source="LEDGER_KEYS",
                        advice="put the log's keys in LEDGER_LOG_KEYS, and only the KEKs and"
                               " index key in LEDGER_KEYS (docs/operations.md)")
            return EnvLogKeyProvider(settings.keys_json, "LEDGER_KEYS", ignore=RING_FIELDS)
        if settings.log_key_file is None:
            # A file beside a key file that does not exist is no place for them: a process
            # keyed from its environment often has no lasting disk, and a log key made
            # anew at every start would sign as a stranger to the log's own checkpoints.
            raise KeyRingError(
                f"{source}: holds no log signing key (log_name, log_keys, active_log_key),"
                " and neither LEDGER_LOG_KEYS nor LEDGER_LOG_KEY_FILE is set: run"
                " `phi-ledger keys rotate-log-key` with LEDGER_LOG_KEY_FILE naming a private"
                " file, then put that file's content into LEDGER_LOG_KEYS (or keep"
                " LEDGER_LOG_KEY_FILE set)")
    return FileLogKeyProvider(log_key_path(settings))


def log_key_path(settings: Settings) -> Path:
    """The log key file: ``LEDGER_LOG_KEY_FILE``, else beside the key file; never the key
    file itself."""
    path = settings.log_key_path
    if _same_file(path, settings.key_file):
        raise KeyRingError(
            f"log key file {path}: is the key file itself; the log's signing keys need a"
            " file of their own (set LEDGER_LOG_KEY_FILE to another path)")
    return path


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().absolute() == b.expanduser().absolute()


def move_log_keys(key_file: Path, log_key_file: Path) -> bool:
    """Move the log's keys out of a key ring file written before the stores were split;
    whether anything was moved.

    Nothing is ever without a copy: the log key file is written (fsync'd, then linked into
    place, its directory fsync'd) before the key file is replaced by the ring alone. A log
    key file already there is kept when it holds every key the ring does (a move cut short,
    or a key ring restored from a backup after a move); a log key file of other keys is
    refused, naming both files, rather than have either overwrite the other. Processes
    starting at once take turns on an exclusive lock on the key file, and each reads it
    again under the lock.
    """
    source = f"key file {key_file}"
    if not _holds_log_keys(key_file, source):
        return False
    with _locked(key_file):
        if not _holds_log_keys(key_file, source):
            return False  # another process moved them while this one waited
        data = read_private(key_file, source)
        keys = log_keys_of(parse_document(data, source), source, ignore=RING_FIELDS)
        ring = decode_ring(data, source)
        target = FileLogKeyProvider(log_key_file)
        target.create(keys)
        kept = target.load()
        if not kept.covers(keys):
            raise KeyRingError(
                f"{source}: holds log keys that {target.path} does not (both name log keys,"
                " and they differ); keep the file whose keys signed this database's"
                " checkpoints, and remove the other's log_name, log_keys and"
                " active_log_key")
        replace_private(key_file, encode_ring(ring), source)
    log.info("keys.log_keys_moved", key_file=str(key_file), log_key_file=str(log_key_file))
    return True


def _holds_log_keys(key_file: Path, source: str) -> bool:
    try:
        return holds_log_keys(parse_document(read_private(key_file, source), source))
    except KeyRingError:
        return False  # absent or unusable: loading the ring says why, in its own words


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
