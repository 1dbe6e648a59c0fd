"""Posted times, normalised so that text order is time order.

Events carry RFC 3339 times with any UTC offset and up to nanoseconds. Views keep them as
posted (that is what the application said) and, beside them, as fixed-width UTC strings
``YYYY-MM-DDTHH:MM:SS.ffffffZ``: comparing two of those as text compares the instants,
on SQLite and PostgreSQL alike, and an index on them serves time-ordered pages.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=65_536)
def utc_of(moment: str) -> str:
    """``moment`` (RFC 3339, any offset) as fixed-width UTC; sub-microsecond digits are
    dropped (the ledger's ``seq`` orders anything closer than that). Cached: events of
    one minute share their times more often than not."""
    # Python 3.11's fromisoformat reads RFC 3339 whole, truncating past microseconds.
    return format_utc(datetime.fromisoformat(moment))


def format_utc(moment: datetime) -> str:
    """A timezone-aware datetime as fixed-width UTC text."""
    return _offsetless(moment.astimezone(UTC).replace(tzinfo=None)) + "Z"


def _offsetless(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


@lru_cache(maxsize=1024)
def parse_bound(value: str) -> str:
    """A query bound (``from``/``to``) as fixed-width UTC; raises ValueError when it is not
    an RFC 3339 time with an offset."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", value):
        raise ValueError("must be an RFC 3339 time with an offset")
    return utc_of(value)
