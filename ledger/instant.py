"""The one parser of instants: events, query bounds and admin bodies all read times here.

An instant is RFC 3339 with an offset (``Z`` or ``+HH:MM``), up to nanoseconds. It is
accepted only if it is a real calendar moment *and* it still lies within the years
1-9999 once converted to UTC: ``9999-12-31T23:59:59-23:59`` is a valid RFC 3339 text but
names a moment in the year 10000, which no view, database or ``datetime`` can hold, so it
is refused here rather than stopping whatever reads it later. Pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)

NOT_RFC3339 = "must be an RFC 3339 timestamp with a UTC offset"
NOT_A_MOMENT = "is not a valid date and time"
OUT_OF_RANGE = "must lie within the years 1-9999 in UTC"


class InstantRefused(ValueError):
    """A text that is not an acceptable instant; the message names the rule, never the
    text (it may be PHI)."""


def parse_instant(text: object, *, date_only: bool = False) -> datetime:
    """``text`` as a timezone-aware datetime in UTC (microseconds; finer digits are
    dropped), or :class:`InstantRefused`.

    With ``date_only``, a bare ``YYYY-MM-DD`` is also accepted, as midnight UTC of that
    day (query bounds: ``from=2026-11-26``)."""
    if not isinstance(text, str):
        raise InstantRefused(NOT_RFC3339)
    if date_only and _DATE.fullmatch(text):
        try:
            day = datetime.fromisoformat(text)
        except ValueError:
            raise InstantRefused(NOT_A_MOMENT) from None
        return day.replace(tzinfo=UTC)
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InstantRefused(NOT_RFC3339)
    year, month, day_, hour, minute, second, fraction, offset = match.groups()
    micro = int(((fraction or ".")[1:] + "000000")[:6])
    try:
        if offset == "Z":
            zone = UTC
        else:
            sign = 1 if offset[0] == "+" else -1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if minutes > 59:
                raise ValueError(offset)
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        local = datetime(int(year), int(month), int(day_), int(hour), int(minute),
                         int(second), micro, tzinfo=zone)
    except ValueError:
        raise InstantRefused(NOT_A_MOMENT) from None
    try:
        return local.astimezone(UTC)
    except OverflowError:
        raise InstantRefused(OUT_OF_RANGE) from None


def check_instant(text: object, *, date_only: bool = False) -> str | None:
    """Why ``text`` is not an acceptable instant, or None when it is."""
    try:
        parse_instant(text, date_only=date_only)
    except InstantRefused as refused:
        return str(refused)
    return None


def utc_text(moment: datetime) -> str:
    """A timezone-aware datetime as fixed-width UTC text ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
    (text order is time order)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
