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
import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

_INT_MAX = 2**63 - 1
_UTC_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)


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
    if not (isinstance(occurred_utc, str) and _UTC_TEXT.fullmatch(occurred_utc)
            and isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= _INT_MAX
            and isinstance(digest, str)):
        raise BadCursor("is not a cursor this service issued")
    if digest != query_digest(scope):
        raise BadCursor("belongs to a different query (filters or order changed)")
    return Position(occurred_utc, seq)
