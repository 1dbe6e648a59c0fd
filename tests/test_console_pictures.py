"""The console's pictures are pure functions: parse the SVG and look at what is drawn."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring

from api.pictures import (
    MAX_LANES,
    OTHERS,
    Lane,
    Mark,
    choose_lanes,
    daily_volumes,
    time_ticks,
    timeline_svg,
    volume_svg,
)

NS = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)


def _classes(svg: Element, cls: str) -> list[Element]:
    return [e for e in svg.iter() if cls in (e.get("class") or "").split()]


def test_timeline_draws_one_lane_per_user_and_a_mark_per_access() -> None:
    marks = [Mark("alice", T0, "read"), Mark("bob", T0 + timedelta(hours=1), "update"),
             Mark("alice", T0 + timedelta(hours=2), "disclose"),
             Mark("carol", T0 + timedelta(hours=3), "read", purpose="ETREAT")]
    svg = fromstring(timeline_svg(marks, lanes=[Lane("bob", "Bob", "/console/users/bob")]))
    labels = [t.text for t in svg.iter(f"{NS}text") if t.get("class") == "lane-label"]
    assert labels == ["Bob", "alice", "carol"]  # given lanes first, then by marks
    assert len(_classes(svg, "mark")) == 4
    assert len(_classes(svg, "action-disclose")) == 1
    assert [e.tag for e in _classes(svg, "action-disclose")] == [f"{NS}polygon"]
    assert len(_classes(svg, "break-glass")) == 1 and len(_classes(svg, "break-glass-ring")) == 1
    links = [a.get("href") for a in svg.iter(f"{NS}a")]
    assert "/console/users/bob" in links
    # time runs across: the later mark is to the right of the earlier one
    xs = [float(e.attrib["x"]) for e in _classes(svg, "action-read") if e.tag == f"{NS}rect"]
    assert xs[0] < xs[1]


def test_timeline_escapes_text_from_data() -> None:
    marks = [Mark('<script>"x', T0, "read", note="<b>n</b>")]
    text = timeline_svg(marks)
    assert "<script>" not in text and "<b>" not in text
    fromstring(text)  # still well-formed


def test_lanes_beyond_the_limit_share_one() -> None:
    marks = [Mark(f"u{i:03}", T0, "read") for i in range(MAX_LANES + 5)]
    lanes = choose_lanes(marks)
    assert len(lanes) == MAX_LANES and lanes[-1].key == OTHERS
    svg = fromstring(timeline_svg(marks))
    assert len(_classes(svg, "mark")) == MAX_LANES + 5  # none dropped


def test_marks_outside_the_span_are_left_out_and_empty_says_so() -> None:
    marks = [Mark("a", T0, "read"), Mark("a", T0 + timedelta(days=9), "read")]
    svg = fromstring(timeline_svg(marks, start=T0 - timedelta(days=1), end=T0 + timedelta(days=1)))
    assert len(_classes(svg, "mark")) == 1
    assert _classes(fromstring(timeline_svg([])), "empty")


def test_time_ticks_are_round_and_few() -> None:
    ticks = time_ticks(T0, T0 + timedelta(days=20))
    assert 1 <= len(ticks) <= 8 and all(t.hour == 0 and t.minute == 0 for t in ticks)
    hours = time_ticks(T0 + timedelta(minutes=7), T0 + timedelta(hours=5))
    assert all(t.minute == 0 for t in hours) and len(hours) <= 8


def test_volume_baseline_follows_the_monitoring_rule() -> None:
    start = date(2026, 11, 1)
    counts = {start + timedelta(days=i): 20 for i in range(7)}
    counts[start + timedelta(days=7)] = 61  # 3 x 20 = 60 < 61, and above the floor of 50
    counts[start + timedelta(days=8)] = 55  # median still 20: threshold 60, not above
    days = daily_volumes(counts)
    assert [d.baseline for d in days[:7]] == [None] * 7  # fewer than 7 active days before
    assert days[7].baseline == 20 and days[7].threshold == 60 and days[7].above
    assert not days[8].above
    svg = fromstring(volume_svg(days))
    assert len(_classes(svg, "bar")) == 9 and len(_classes(svg, "above")) == 1
    assert _classes(svg, "baseline") and _classes(svg, "threshold")


def test_volume_floor_and_idle_days() -> None:
    start = date(2026, 11, 1)
    counts = {start + timedelta(days=2 * i): 5 for i in range(8)}
    counts[start + timedelta(days=16)] = 40  # 8 x the baseline, but under the floor of 50
    days = daily_volumes(counts)
    assert len(days) == 17 and days[1].patients == 0
    assert days[16].threshold == 50 and not days[16].above


FIRST = datetime(1, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_pictures_draw_the_first_and_last_instants_validation_accepts() -> None:
    """Events in the first minutes of year 1 or the last of 9999 are valid; drawing
    them stepped past the calendar (OverflowError: a 500 on the page) before."""
    for moment in (FIRST, LAST):
        svg = fromstring(timeline_svg([Mark("alice", moment, "read")]))
        assert len(_classes(svg, "mark")) == 1
    svg = fromstring(timeline_svg([Mark("a", FIRST, "read"), Mark("b", LAST, "read")]))
    assert len(_classes(svg, "mark")) == 2
    for start, end in ((FIRST, FIRST + timedelta(hours=1)), (LAST - timedelta(hours=1), LAST),
                       (FIRST, LAST)):
        ticks = time_ticks(start, end)
        assert ticks and all(start <= t <= end for t in ticks)
    early = daily_volumes({date(1, 1, 1): 3, date(1, 1, 2): 1})
    assert [(d.day, d.patients) for d in early] == [(date(1, 1, 1), 3), (date(1, 1, 2), 1)]
    late = daily_volumes({date.max: 2})
    assert [(d.day, d.patients) for d in late] == [(date.max, 2)]
