"""The two textual encodings every C2SP format here shares, parsed strictly.

Strict means one spelling per value: base64 must be the canonical standard encoding
(RFC 4648 section 4, padded, no stray bits) and decimals have no sign, no spaces and no
leading zeroes. A format with one spelling per value cannot be re-encoded into a
different-looking but equally valid text, which keeps signed texts byte-comparable.
The one exception is a note's signature lines, which no signature covers: there stray
padding bits are accepted, as Go's ``note.Open`` accepts them (see docs/interop.md).
"""

from __future__ import annotations

import base64
import binascii
import re

_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)
# Sizes, indexes and timestamps in these formats are unsigned 64-bit integers.
UINT64_LIMIT = 1 << 64


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, *, canonical: bool = True) -> bytes | None:
    """The bytes ``text`` encodes, or None when it is not padded standard base64.

    With ``canonical`` (the default) non-zero padding bits are refused too: they decode
    fine but are a second spelling of the same bytes. ``canonical=False`` accepts them, as
    Go's ``base64.StdEncoding`` (not ``.Strict()``) does; only signature lines use it.
    """
    if not _BASE64.fullmatch(text) or len(text) % 4:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if not canonical or b64encode(data) == text else None


def parse_decimal(text: str, limit: int = UINT64_LIMIT) -> int | None:
    """The value of an ASCII decimal with no leading zeroes below ``limit``, or None."""
    if not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if value < limit else None


def has_control_characters(text: str) -> bool:
    """True when ``text`` holds an ASCII control character other than newline."""
    return any(ord(c) < 0x20 and c != "\n" for c in text)
