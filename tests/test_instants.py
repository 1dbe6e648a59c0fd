"""Posted times as fixed-width UTC (projections.instants): the text fast path must agree
with the general conversion through datetime on every RFC 3339 time, and refuse what the
general path refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.instants import parse_bound, utc_of


def reference(moment: str) -> str:
    """Written apart from the module: parse, shift to UTC, print microseconds."""
    head, _, rest = moment.partition(".")
    if rest:
        digits = rest.rstrip("Z").split("+")[0].split("-")[0]
        suffix = rest[len(digits):]
        moment = f"{head}.{(digits + '000000')[:6]}{suffix}"
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    when = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits,
                                            max_size=digits)))
    # Whole hours (nearly every offset in use, and a path of their own) half the time.
    minutes = draw(st.one_of(st.integers(-23, 23).map(lambda hours: hours * 60),
                             st.integers(-23 * 60 - 59, 23 * 60 + 59)))
    if (draw(st.booleans()) and minutes == 0) or draw(st.integers(0, 9)) == 0:
        return text + "Z"
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{mins:02d}"


@given(rfc3339())
def test_every_rfc3339_time_converts_as_datetime_does(moment: str) -> None:
    assert utc_of(moment) == reference(moment)


def test_examples_across_midnight_month_and_year() -> None:
    assert utc_of("2026-12-31T21:30:00.5-05:00") == "2027-01-01T02:30:00.500000Z"
    assert utc_of("2026-03-01T01:00:00+05:30") == "2026-02-28T19:30:00.000000Z"
    assert utc_of("2024-03-01T01:00:00+05:30") == "2024-02-29T19:30:00.000000Z"
    assert utc_of("2026-11-23T06:00:00.123456789Z") == "2026-11-23T06:00:00.123456Z"


def test_fixed_width_text_orders_as_time() -> None:
    base = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    moments = [base + timedelta(microseconds=n * 137_731) for n in range(200)]
    texts = [utc_of(m.astimezone(UTC).isoformat()) for m in moments]
    assert texts == sorted(texts)


@pytest.mark.parametrize("bad", ["2026-11-23T06:00:60Z", "2026-11-23T06:00:5xZ",
                                 "2026-13-23T06:00:00Z", "2026-11-23T06:00:00.1a-05:00",
                                 "2026-11-23T06:60:00Z", "2026-11-23T06:6x:00-05:00",
                                 "2026-11-23T24:00:00Z", "2026-11-23T06x00:00Z",
                                 "2026-02-29T06:00:00+01:00", "2026-11-23T06:00:00+24:00"])
def test_impossible_times_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        utc_of(bad)
    with pytest.raises(ValueError):
        parse_bound(bad)
