"""Posted times, normalised so that text order is time order.

Events carry RFC 3339 times with any UTC offset and up to nanoseconds. Views keep them as
posted (that is what the application said) and, beside them, as fixed-width UTC strings
``YYYY-MM-DDTHH:MM:SS.ffffffZ``: comparing two of those as text compares the instants,
on SQLite and PostgreSQL alike, and an index on them serves time-ordered pages.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from ledger.instant import parse_instant, utc_text


def utc_of(moment: str) -> str:
    """``moment`` (RFC 3339, any offset) as fixed-width UTC; sub-microsecond digits are
    dropped (the ledger's ``seq`` orders anything closer than that).

    Every entry a view applies goes through here, and posted times are nearly all
    distinct, so the usual shape is taken apart as text: an offset is whole minutes, so
    it moves only the part up to the minute, while seconds and fraction carry over as
    they are. An offset of whole hours (nearly all of them) moves only the part up to the
    hour (converted once per hour and offset, and cached: a busy ledger's entries share
    their hours, rarely their minutes); another, the part up to the minute. Anything else
    takes the general path; all give the same answer (tested)."""
    if len(moment) >= 20 and moment[10] == "T" and moment[16] == ":" and moment[19] in ".Z+-":
        last = moment[-1]
        if last == "Z":
            body, offset = moment[:-1], "Z"
        elif moment[-6] in "+-" and moment[-3] == ":":
            body, offset = moment[:-6], moment[-6:]
        else:
            return _utc_in_general(moment)
        seconds, fraction = body[17:19], body[20:]
        if (seconds.isascii() and seconds.isdigit() and seconds < "60"
                and (len(body) == 19
                     or (body[19] == "." and fraction.isascii() and fraction.isdigit()))):
            rest = f"{body[16:19]}.{(fraction + '000000')[:6]}Z"
            minutes = body[14:16]
            if ((offset == "Z" or offset[4:] == "00") and body[13] == ":"
                    and minutes.isascii() and minutes.isdigit() and minutes < "60"):
                return f"{_utc_hour(body[:13], offset)}:{minutes}{rest}"
            return f"{_utc_minute(body[:16], offset)}{rest}"
    return _utc_in_general(moment)


@lru_cache(maxsize=65_536)
def _utc_hour(hour: str, offset: str) -> str:
    """``YYYY-MM-DDTHH`` at a whole-hour ``offset`` as the same text in UTC."""
    return _utc_minute(f"{hour}:00", offset)[:13]


@lru_cache(maxsize=65_536)
def _utc_minute(minute: str, offset: str) -> str:
    """``YYYY-MM-DDTHH:MM`` at ``offset`` as the same text in UTC."""
    moment = datetime.fromisoformat(f"{minute}:00{'+00:00' if offset == 'Z' else offset}")
    return format_utc(moment)[:16]


@lru_cache(maxsize=4096)
def _utc_in_general(moment: str) -> str:
    # Python 3.11's fromisoformat reads RFC 3339 whole, truncating past microseconds.
    return format_utc(datetime.fromisoformat(moment))


def format_utc(moment: datetime) -> str:
    """A timezone-aware datetime as fixed-width UTC text."""
    return _offsetless(moment.astimezone(UTC).replace(tzinfo=None)) + "Z"


def _offsetless(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


@lru_cache(maxsize=1024)
def parse_bound(value: str) -> str:
    """A query bound (``from``/``to``) as fixed-width UTC; raises ValueError (naming the
    rule, not the value) unless it is an instant of :func:`ledger.instant.parse_instant`
    or a bare date ``YYYY-MM-DD``, read as midnight UTC."""
    return utc_text(parse_instant(value, date_only=True))



_FRACTION = re.compile(r"\.(\d+)", re.ASCII)
# Above every fixed-width UTC text (the last is 9999-12-31T23:59:59.999999Z): the end of
# a span that would end after the year 9999.
AFTER_ALL = "9999-12-32"


def bound_range(value: str) -> tuple[str, str]:
    """The moments a search value names, ``[low, high)`` in fixed-width UTC, by its
    precision (FHIR's reading of a date parameter): a bare date is its whole day, an
    instant the span of its last digit (``10:00:00Z`` is that second, ``10:00:00.5Z``
    that tenth), at least one microsecond (what views hold). Raises ValueError (naming
    the rule, not the value) as :func:`parse_bound`."""
    moment = parse_instant(value, date_only=True)
    if "T" not in value:
        step = timedelta(days=1)
    else:
        fraction = _FRACTION.search(value)
        digits = len(fraction.group(1)) if fraction else 0
        step = timedelta(microseconds=10 ** (6 - digits) if digits <= 6 else 1)
    try:
        return utc_text(moment), utc_text(moment + step)
    except OverflowError:
        return utc_text(moment), AFTER_ALL
