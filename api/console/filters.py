"""What a console list is narrowed to: a time range and an action, as typed in a form.

Pure: the form's strings in, the API's parameters (RFC 3339 bounds, an action) out, or the
names of the fields that were wrong. Dates are UTC days; a ``to`` date includes its day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from api.audit_reads import ACTIONS
from projections.instants import parse_bound

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MINUTE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")


def _bound(value: str, *, end: bool) -> str:
    """An RFC 3339 instant for a form's date, date-and-minute or RFC 3339 value; raises
    ValueError when it is none of them."""
    if _DATE.match(value):
        day = date.fromisoformat(value)
        if end:
            day += timedelta(days=1)
        return f"{day.isoformat()}T00:00:00Z"
    if _MINUTE.match(value):
        datetime.fromisoformat(value)  # a real date and time
        return f"{value}:00Z"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no offset")
    return value


@dataclass(frozen=True)
class Filters:
    """A list's filters: as typed (to fill the form again) and as the API takes them."""

    typed_from: str
    typed_to: str
    action: str
    since: str | None
    until: str | None
    bad: tuple[str, ...]

    @classmethod
    def parse(cls, since: str | None, until: str | None, action: str | None) -> Filters:
        bad = []
        bounds: list[str | None] = []
        for name, value, end in (("from", since, False), ("to", until, True)):
            value = (value or "").strip()
            if not value:
                bounds.append(None)
                continue
            try:
                bounds.append(_bound(value, end=end))
            except ValueError:
                bad.append(name)
                bounds.append(None)
        chosen = (action or "").strip()
        if chosen and chosen not in ACTIONS:
            bad.append("action")
            chosen = ""
        return cls((since or "").strip()[:40], (until or "").strip()[:40], chosen,
                   bounds[0], bounds[1], tuple(bad))

    def instant(self, which: str) -> datetime | None:
        value = self.since if which == "from" else self.until
        if value is None:
            return None
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def utc_bounds(filters: Filters, bad: list[str]) -> tuple[str | None, str | None]:
    """The filters' bounds as the views' fixed-width UTC text, which is what compares as
    time (an RFC 3339 bound compared as typed puts ``...00Z`` after ``...00.000000Z``)."""
    out: list[str | None] = []
    for name, value in (("from", filters.since), ("to", filters.until)):
        try:
            out.append(None if value is None else parse_bound(value))
        except ValueError:
            bad.append(name)
            out.append(None)
    return out[0], out[1]
