"""Canonical JSON (RFC 8785, the JSON Canonicalization Scheme) for ledger entries.

Entries hash their canonical form, so two encoders that disagree by one byte disagree
about the whole chain. Two implementations live here:

* :func:`canonical` is the fast path (``orjson`` with sorted keys). On the domain the
  event schema admits -- no floats, integers within +/-2**53, object keys made of ASCII
  -- its output is byte-for-byte RFC 8785.
* :func:`canonical_reference` is a plain transcription of RFC 8785 for that domain. It is
  what an independent verifier would write; the test suite checks that both agree.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53 - 1


class NotCanonicalizable(ValueError):
    """The value holds something this ledger never hashes (a float, a huge integer, ...)."""


def canonical(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (fast path; see the module docstring for its domain)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def parse(data: bytes | str) -> Any:
    """Parse JSON text into plain Python values."""
    return orjson.loads(data)


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _encode_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16_key(s: str) -> bytes:
    # RFC 8785 section 3.2.3: members are sorted by their names' UTF-16 code units.
    return s.encode("utf-16-be")


def _encode(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonicalizable("integer outside the interoperable range")
        return str(value)
    if isinstance(value, float):
        raise NotCanonicalizable("floating-point numbers are not allowed in the ledger")
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise NotCanonicalizable("object keys must be strings")
        items = sorted(value.items(), key=lambda kv: _utf16_key(kv[0]))
        return "{" + ",".join(_encode_string(k) + ":" + _encode(v) for k, v in items) + "}"
    raise NotCanonicalizable(f"cannot canonicalize a {type(value).__name__}")


def canonical_reference(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``, written for clarity rather than speed."""
    return _encode(value).encode("utf-8")
