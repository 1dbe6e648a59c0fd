"""Opaque page cursors for time-ordered lists.

A cursor is the sort key of the last row a page showed -- ``(occurred_utc, seq)``, unique
per ledger -- plus a digest of the query it belongs to. Keyset paging on that key stays
correct while events keep arriving: a new row lands where its key puts it, and no page
repeats or skips a row that was there before. A cursor presented with other filters, or
tampered with, is refused rather than silently giving a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

_INT_MAX = 2**63 - 1
_KEY_MAX = 256


def _storable_key(text: object) -> bool:
    """A position's text key (an instant, an alert id) as a database can compare it: no
    NUL (PostgreSQL text cannot hold one), no lone surrogate, a bounded length."""
    if not isinstance(text, str) or len(text) > _KEY_MAX or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class BadCursor(ValueError):
    """The cursor was not issued for this query."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended, in the list's own order."""

    occurred_utc: str
    seq: int


def query_digest(scope: Mapping[str, object]) -> str:
    """A short digest of what a list is filtered and ordered by."""
    return hashlib.sha256(orjson.dumps(dict(scope), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def encode_cursor(position: Position, scope: Mapping[str, object]) -> str:
    raw = orjson.dumps([position.occurred_utc, position.seq, query_digest(scope)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, scope: Mapping[str, object]) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        occurred_utc, seq, digest = orjson.loads(raw)
    except (ValueError, TypeError):
        raise BadCursor("is not a cursor this service issued") from None
    # The digest is not a secret: a client can build a cursor, so its parts are checked
    # as any input is (a seq the database cannot hold, text it cannot store).
    if not (_storable_key(occurred_utc)
            and isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= _INT_MAX
            and isinstance(digest, str)):
        raise BadCursor("is not a cursor this service issued")
    if digest != query_digest(scope):
        raise BadCursor("belongs to a different query (filters or order changed)")
    return Position(occurred_utc, seq)


@dataclass(frozen=True, slots=True)
class Offset:
    """Where a page ended in a list computed once through one seq (an investigation's
    answer): every page of it is cut from the same answer, so the seq travels along."""

    through: int
    shown: int


def encode_offset(offset: Offset, scope: Mapping[str, object]) -> str:
    raw = orjson.dumps(["offset", offset.through, offset.shown, query_digest(scope)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _offset_parts(cursor: str) -> tuple[int, int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, through, shown, digest = orjson.loads(raw)
    except (ValueError, TypeError):
        raise BadCursor("is not a cursor this service issued") from None
    numbers_fit = all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= _INT_MAX
                      for n in (through, shown))
    if kind != "offset" or not numbers_fit or not isinstance(digest, str):
        raise BadCursor("is not a cursor this service issued")
    return through, shown, digest


def offset_through(cursor: str) -> int:
    """The seq a cursor's list was computed through (its query is checked by
    :func:`decode_offset` once the list is known)."""
    return _offset_parts(cursor)[0]


def decode_offset(cursor: str, scope: Mapping[str, object]) -> Offset:
    through, shown, digest = _offset_parts(cursor)
    if digest != query_digest(scope):
        raise BadCursor("belongs to a different query (filters or order changed)")
    return Offset(through, shown)
