"""Private key files: what both key stores share (the shell: files only).

The PHI key ring (:mod:`ledger.crypto.keyring`) and the log's signing keys
(:mod:`ledger.crypto.log_keys`) each live in their own JSON file readable by its owner only.
This module reads and writes such a file, and decodes the pieces both formats share.

Guarantees: a file is never written in place (a private temporary file in the same
directory is fsync'd, then renamed or linked over it, then the directory is fsync'd), is
created 0600 whatever the umask, and is refused on reading when group or others may read
it. Every failure is a :class:`KeyRingError` naming the file and never holding key bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Final

KEY_BYTES: Final = 32
FORMAT_VERSION: Final = 1
KEY_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyRingError(Exception):
    """A key store (the PHI key ring or the log's signing keys) cannot be loaded, saved or
    changed as asked.

    The message is meant for an operator: it names the file or variable and the problem,
    and never holds key bytes.
    """


def new_key_id(taken: set[str] | frozenset[str] = frozenset(), prefix: str = "kek-") -> str:
    while True:
        key_id = prefix + secrets.token_hex(4)
        if key_id not in taken:
            return key_id


def decode_key(value: Any, source: str, what: str) -> bytes:
    """A base64 string of exactly :data:`KEY_BYTES` bytes."""
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


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def parse_document(text: bytes | str, source: str) -> dict[str, Any]:
    """The JSON object in ``text``, with its ``version`` checked."""
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
    return document


def check_fields(document: dict[str, Any], source: str, required: frozenset[str],
                 allowed: frozenset[str]) -> None:
    """Every ``required`` field present, none beyond ``allowed``, and the version known."""
    missing = sorted(required - document.keys())
    if missing:
        raise KeyRingError(f"{source}: missing field(s) {', '.join(missing)}")
    unknown = sorted(str(k) for k in document.keys() - allowed)
    if unknown:
        raise KeyRingError(f"{source}: unexpected field(s) {', '.join(unknown)}")
    if document["version"] != FORMAT_VERSION or isinstance(document["version"], bool):
        raise KeyRingError(f"{source}: version must be {FORMAT_VERSION}")


def dump_document(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open directories.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_private(path: Path, source: str) -> bytes:
    """The bytes of ``path``; refused when absent, not a regular file, or readable by group
    or others."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyRingError(f"{source}: does not exist") from None
    except PermissionError:
        raise KeyRingError(f"{source}: cannot be read (permission denied)") from None
    except OSError as error:
        raise KeyRingError(f"{source}: cannot be opened ({error.strerror})") from None
    try:
        # fstat the open descriptor, not the path, so the checked file is the read one.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyRingError(f"{source}: is not a regular file")
        if info.st_mode & 0o077:
            raise KeyRingError(
                f"{source}: is accessible to group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}` "
                "and consider rotating the keys"
            )
        try:
            with os.fdopen(fd, "rb", closefd=False) as handle:
                return handle.read()
        except OSError as error:
            raise KeyRingError(f"{source}: cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)


def replace_private(path: Path, data: bytes, source: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old or the new content,
    and after a crash the file holds one of them. ``mode`` is 0600 but for a file meant to
    be read by others (a witness's cosigned checkpoint)."""
    temp = _write_temp(path, data, source, mode)
    try:
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise KeyRingError(f"{source}: cannot be replaced ({error.strerror})") from None
    fsync_dir(path.parent)


def create_private(path: Path, data: bytes, source: str, instead: str) -> None:
    """Create ``path`` holding ``data`` unless it exists (then leave it as it is).

    Exclusive: when several processes create at once, exactly one file is made and the
    others find it. ``instead`` names what an operator can do when the filesystem cannot
    (for the error message)."""
    temp = _write_temp(path, data, source)
    try:
        # link() fails if the target exists, unlike replace(): a process losing the race
        # must adopt the winner's keys rather than overwrite them, or what the winner
        # already used them for would be under keys that no longer exist.
        os.link(temp, path)
    except FileExistsError:
        pass
    except OSError as error:
        raise KeyRingError(
            f"{source}: cannot be created ({error.strerror}); the filesystem may not support"
            f" hard links: create the file yourself with mode 0600, or {instead}"
        ) from None
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _write_temp(path: Path, data: bytes, source: str, mode: int = 0o600) -> Path:
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise KeyRingError(
            f"{source}: cannot create directory {directory} ({error.strerror})"
        ) from None
    temp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as error:
        raise KeyRingError(f"{source}: cannot write in {directory} ({error.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            # The umask can only remove bits; set the mode exactly so the owner can read it.
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise KeyRingError(f"{source}: cannot be written ({error.strerror})") from None
    return temp
