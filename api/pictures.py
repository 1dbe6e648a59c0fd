"""Pictures of access histories as SVG markup: pure functions of plain data, no I/O.

Two pictures: the **timeline** (time across, one lane per user -- or per patient -- and a
mark per access, coloured by action; disclosures drawn as diamonds, break-the-glass
(purpose ``ETREAT``) ringed, entries with alerts boxed in red) and the **volume
picture** (distinct patients a user touched per day, against their own baseline; the
days above it marked).

The markup uses classes, never ``style`` attributes, so a page with a strict CSP (no
``unsafe-inline``) draws it with the console's stylesheet; colours also have a printed
fallback in presentation attributes (``fill``), which CSP does not govern. Every text
that comes from data is escaped. The console draws these; the investigation report can
draw the same timeline (``timeline_svg``) for its own entries.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape

# Colours by action: each at least 3:1 against white (WCAG 2.1 1.4.11, graphical
# objects); the shape and the legend carry the same information for those who cannot
# tell the colours apart (1.4.1).
ACTION_COLOURS: Mapping[str, str] = {
    "read": "#1f5fbf",
    "query": "#5c5c5c",
    "create": "#1a7f37",
    "update": "#8a5a00",
    "delete": "#a4262c",
    "disclose": "#7b2cbf",
    "export": "#b04a00",
    "print": "#00687a",
    "login": "#4d4d9e",
    "logout": "#6b5b3e",
    "login_failed": "#b3006b",
}
OTHER_COLOUR = "#404040"
BREAK_GLASS_PURPOSE = "ETREAT"
MAX_LANES = 30  # beyond this, the quietest lanes share one "others" lane
OTHERS = "(others)"

LANE_HEIGHT = 22
LABEL_WIDTH = 170
AXIS_HEIGHT = 34
PAD = 8


@dataclass(frozen=True, slots=True)
class Mark:
    """One access on the timeline. ``lane`` is the lane key (a user id, or a patient
    id); ``note`` is the tooltip text (shown on hover and to screen readers)."""

    lane: str
    at: datetime
    action: str
    purpose: str | None = None
    note: str = ""
    href: str | None = None
    alert: bool = False  # monitoring raised an alert on this entry
    seq: int | None = None

    @property
    def break_glass(self) -> bool:
        return self.purpose == BREAK_GLASS_PURPOSE


@dataclass(frozen=True, slots=True)
class Lane:
    """A lane: its key (as marks name it), the label shown, and where the label links."""

    key: str
    label: str
    href: str | None = None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


_STEPS = [timedelta(minutes=m) for m in (1, 5, 15, 30)] + [
    timedelta(hours=h) for h in (1, 3, 6, 12)] + [
    timedelta(days=d) for d in (1, 2, 7, 14, 30, 91, 182, 365)]


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _shift(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, held within the calendar: events at the first and last
    instants validation accepts (years 1 and 9999) are drawn, not an OverflowError."""
    try:
        return moment + delta
    except OverflowError:
        return _EARLIEST if delta < timedelta(0) else _LATEST


def time_ticks(start: datetime, end: datetime, most: int = 8) -> list[datetime]:
    """Round instants between ``start`` and ``end`` (UTC) at the smallest step that
    gives at most ``most`` of them."""
    start, end = _utc(start), _utc(end)
    span = max(end - start, timedelta(seconds=1))
    step = next((s for s in _STEPS if span / s <= most), _STEPS[-1])
    if step >= timedelta(days=1):
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        seconds = int(step.total_seconds())
        first = start.replace(microsecond=0)
        first = _shift(first, -timedelta(seconds=int(first.timestamp()) % seconds))
    ticks = []
    tick = first
    while tick <= end:
        if tick >= start:
            ticks.append(tick)
        if tick == _LATEST:
            break
        tick = _shift(tick, step)
    return ticks


def _tick_label(tick: datetime, span: timedelta) -> str:
    if span > timedelta(days=2):
        return tick.strftime("%Y-%m-%d")
    return tick.strftime("%m-%d %H:%M")


def choose_lanes(marks: Sequence[Mark], lanes: Sequence[Lane] = (),
                 most: int = MAX_LANES) -> list[Lane]:
    """The lanes to draw: those given (in order), then any other lane a mark names, by
    marks descending; past ``most``, the rest share one ``(others)`` lane."""
    known = {lane.key: lane for lane in lanes}
    counts: dict[str, int] = {}
    for mark in marks:
        counts[mark.lane] = counts.get(mark.lane, 0) + 1
    ordered = [lane for lane in lanes if lane.key in counts]
    ordered += [Lane(key, key) for key, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                if key not in known]
    if len(ordered) > most:
        ordered = [*ordered[:most - 1], Lane(OTHERS, OTHERS)]
    return ordered


def _mark_shape(mark: Mark, x: float, y: float) -> str:
    action = mark.action if mark.action in ACTION_COLOURS else "other"
    colour = ACTION_COLOURS.get(mark.action, OTHER_COLOUR)
    classes = f"mark action-{action}" + (" break-glass" if mark.break_glass else "")
    # data-seq and data-action let a reader (or a test) tie each mark to its entry.
    seq_attr = "" if mark.seq is None else f' data-seq="{mark.seq}"'
    data = f' data-action="{escape(mark.action)}"{seq_attr}'
    if mark.action == "disclose":
        shape = (f'<polygon class="{classes}"{data} fill="{colour}" points="{x:.1f},{y - 7:.1f} '
                 f'{x + 6:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 6:.1f},{y:.1f}"/>')
    else:
        shape = (f'<rect class="{classes}"{data} fill="{colour}" x="{x - 2:.1f}"'
                 f' y="{y - 7:.1f}"'
                 ' width="4" height="14"/>')
    if mark.break_glass:
        shape += (f'<circle class="break-glass-ring" fill="none" stroke="#c00000"'
                  f' stroke-width="2" cx="{x:.1f}" cy="{y:.1f}" r="9"/>')
    if mark.alert:
        shape += (f'<rect class="alert"{seq_attr} fill="none" stroke="#c00000" stroke-width="2"'
                  f' x="{x - 6:.1f}" y="{y - 10:.1f}" width="12" height="20"/>')
    title = escape(mark.note or f"{mark.action} {mark.at.isoformat()}")
    seq = "" if mark.seq is None else f' data-seq="{mark.seq}"'
    body = f"<g{seq}><title>{title}</title>{shape}</g>"
    if mark.href:
        body = f'<a href="{escape(mark.href)}">{body}</a>'
    return body


def timeline_svg(
    marks: Sequence[Mark], *, lanes: Sequence[Lane] = (), start: datetime | None = None,
    end: datetime | None = None, width: int = 1100, title: str = "Timeline of accesses",
) -> str:
    """The timeline as one ``<svg>`` element. Time runs left to right over
    ``[start, end]`` (the marks' own span when not given), one lane per
    :func:`choose_lanes`; marks outside the span are left out."""
    drawn = choose_lanes(marks, lanes)
    keys = {lane.key for lane in drawn}
    if marks:
        first = min(_utc(m.at) for m in marks)
        last = max(_utc(m.at) for m in marks)
    else:
        first = last = datetime.now(UTC)
    start = _utc(start) if start else first
    end = _utc(end) if end else last
    if end <= start:
        start, end = _shift(start, -timedelta(minutes=30)), _shift(end, timedelta(minutes=30))
    span = end - start
    plot = width - LABEL_WIDTH - 2 * PAD
    height = AXIS_HEIGHT + max(1, len(drawn)) * LANE_HEIGHT + PAD

    def x_of(moment: datetime) -> float:
        return LABEL_WIDTH + PAD + plot * ((_utc(moment) - start) / span)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img"'
           f' viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
           f' aria-label="{escape(title)}">', f"<title>{escape(title)}</title>"]
    for i, lane in enumerate(drawn):
        y = AXIS_HEIGHT + i * LANE_HEIGHT
        shade = "#f3f3f3" if i % 2 else "#ffffff"
        out.append(f'<rect class="lane" x="0" y="{y}" width="{width}"'
                   f' height="{LANE_HEIGHT}" fill="{shade}"/>')
        label = escape(lane.label[:26])
        text = (f'<text class="lane-label" x="{PAD}" y="{y + 15}" fill="#1a1a1a">'
                f"{label}</text>")
        if lane.href:
            text = f'<a class="lane-link" href="{escape(lane.href)}">{text}</a>'
        out.append(text)
    for tick in time_ticks(start, end):
        x = x_of(tick)
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{x:.1f}"'
                   f' y2="{height - PAD}" stroke="#767676" stroke-width="0.5"/>')
        out.append(f'<text class="tick-label" x="{x:.1f}" y="{AXIS_HEIGHT - 10}"'
                   f' text-anchor="middle" fill="#1a1a1a">{_tick_label(tick, span)}</text>')
    row = {lane.key: i for i, lane in enumerate(drawn)}
    for mark in marks:
        lane_key = mark.lane if mark.lane in keys else OTHERS
        if lane_key not in row or not start <= _utc(mark.at) <= end:
            continue
        middle = AXIS_HEIGHT + row[lane_key] * LANE_HEIGHT + LANE_HEIGHT / 2
        out.append(_mark_shape(mark, x_of(mark.at), middle))
    if not marks:
        out.append(f'<text class="empty" x="{LABEL_WIDTH + PAD}" y="{AXIS_HEIGHT + 15}"'
                   ' fill="#1a1a1a">No accesses in this period.</text>')
    out.append("</svg>")
    return "".join(out)


def legend_items(marks: Sequence[Mark]) -> list[tuple[str, str]]:
    """``(action, colour)`` for each action the marks use, in the fixed colour order."""
    used = {m.action for m in marks}
    items = [(a, c) for a, c in ACTION_COLOURS.items() if a in used]
    if used - set(ACTION_COLOURS):
        items.append(("other", OTHER_COLOUR))
    return items


# -- volume -------------------------------------------------------------------------

VOLUME_FLOOR = 50  # as the volume_spike rule: never flag fewer distinct patients than this
VOLUME_FACTOR = 3
BASELINE_DAYS = 14
BASELINE_MIN_ACTIVE = 7


@dataclass(frozen=True, slots=True)
class DayVolume:
    """One day of a user's activity: distinct patients, their baseline (the median of
    the active days among the 14 before, when there are at least 7), the threshold
    (max(50, 3 x baseline)) and whether the day went above it."""

    day: date
    patients: int
    baseline: float | None
    threshold: float | None

    @property
    def above(self) -> bool:
        return self.threshold is not None and self.patients > self.threshold


def daily_volumes(counts: Mapping[date, int], first: date | None = None,
                  last: date | None = None) -> list[DayVolume]:
    """Every day from ``first`` to ``last`` (the counts' own span by default), with its
    count (0 when idle) judged against the days before it, as the ``volume_spike``
    monitoring rule judges them."""
    if not counts and (first is None or last is None):
        return []
    first = first or min(counts)
    last = last or max(counts)
    days = []
    day = first
    while day <= last:
        ordinal = day.toordinal()
        window = [counts[d] for d in (date.fromordinal(ordinal - k)
                                      for k in range(1, min(BASELINE_DAYS, ordinal - 1) + 1))
                  if counts.get(d, 0) > 0]
        baseline = threshold = None
        if len(window) >= BASELINE_MIN_ACTIVE:
            baseline = float(statistics.median(window))
            threshold = float(max(VOLUME_FLOOR, VOLUME_FACTOR * baseline))
        days.append(DayVolume(day, counts.get(day, 0), baseline, threshold))
        if day == date.max:
            break
        day += timedelta(days=1)
    return days


def volume_svg(days: Sequence[DayVolume], *, width: int = 1100, height: int = 220,
               title: str = "Patients per day") -> str:
    """Bars of distinct patients per day; the baseline and the threshold as lines; the
    days above the threshold drawn as flagged bars (class ``above``)."""
    top = max([d.patients for d in days] + [d.threshold or 0 for d in days] + [1])
    left, bottom, right, head = 48, 28, PAD, 16
    plot_w, plot_h = width - left - right, height - bottom - head
    slot = plot_w / max(1, len(days))

    def y_of(value: float) -> float:
        return head + plot_h * (1 - value / top)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="volume" role="img"'
           f' viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
           f' aria-label="{escape(title)}">', f"<title>{escape(title)}</title>"]
    for value in sorted({0, top // 2, top}):
        y = y_of(value)
        out.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{width - right}"'
                   f' y2="{y:.1f}" stroke="#767676" stroke-width="0.5"/>')
        out.append(f'<text class="axis-label" x="{left - 6}" y="{y + 4:.1f}"'
                   f' text-anchor="end" fill="#1a1a1a">{value}</text>')
    label_every = max(1, len(days) // 10)
    for i, d in enumerate(days):
        x = left + i * slot
        bar_h = plot_h * d.patients / top
        cls = "bar above" if d.above else "bar"
        fill = "#a4262c" if d.above else "#1f5fbf"
        note = f"{d.day.isoformat()}: {d.patients} patients"
        if d.threshold is not None:
            note += f" (baseline {d.baseline:g}, threshold {d.threshold:g})"
        if d.above:
            note += " - above the baseline"
        out.append(f'<g><title>{escape(note)}</title><rect class="{cls}" fill="{fill}"'
                   f' x="{x + slot * 0.15:.1f}" y="{y_of(d.patients):.1f}"'
                   f' width="{max(1.0, slot * 0.7):.1f}" height="{bar_h:.1f}"/></g>')
        if d.above:
            out.append(f'<text class="above-flag" x="{x + slot / 2:.1f}"'
                       f' y="{y_of(d.patients) - 3:.1f}" text-anchor="middle"'
                       ' fill="#a4262c">!</text>')
        if i % label_every == 0:
            out.append(f'<text class="axis-label" x="{x + slot / 2:.1f}"'
                       f' y="{height - 8}" text-anchor="middle" fill="#1a1a1a">'
                       f"{d.day.strftime('%m-%d')}</text>")
    for attr, cls, colour in (("baseline", "baseline", "#1a7f37"),
                              ("threshold", "threshold", "#a4262c")):
        points = [(left + i * slot + slot / 2, y_of(getattr(d, attr)))
                  for i, d in enumerate(days) if getattr(d, attr) is not None]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline class="{cls}" fill="none" stroke="{colour}"'
                       f' stroke-width="2" points="{path}"/>')
    out.append("</svg>")
    return "".join(out)
