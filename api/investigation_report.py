"""An investigation, rendered: CSV for spreadsheets, and a printable HTML report whose
timeline is a picture (an SVG: time across, one lane per actor, device or IP, a mark per
access coloured by action, alerts ringed in red).

Pure: plain data in, text out. The console reuses :func:`as_html` and
:func:`timeline_svg`. The HTML carries its one ``<style>`` element, allowed by its hash in
:data:`REPORT_CSP` (no ``unsafe-inline``); the SVG uses presentation attributes only.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from api.pictures import ACTION_COLOURS as SHARED_COLOURS
from api.pictures import Mark
from api.pictures import timeline_svg as shared_timeline_svg
from api.spreadsheet import inert_row

# The marks' colours: the shared renderer's, so legend and picture agree.
ACTION_COLOURS = dict(SHARED_COLOURS)

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #999; padding: .2em .5em; font-size: .85em; text-align: left; }
.mono { font-family: monospace; white-space: pre-wrap; font-size: .8em; }
.legend span { display: inline-block; margin-right: 1em; font-size: .8em; }
@media print { body { margin: 0; } }
""".strip()
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
REPORT_CSP = (f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src data:;"
              " base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

TIMELINE_COLUMNS = ("seq", "occurred_at", "action", "outcome", "actor_id", "device_id", "ip",
                    "patient_id", "purpose", "channel", "resource_type", "phi", "alerts")
AFFECTED_COLUMNS = ("patient_id", "state", "secured", "first", "last", "actions", "phi",
                    "channels")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _timeline_cells(item: Mapping[str, Any]) -> list[str]:
    actor = item["actor"]
    resource = item.get("resource") or {}
    patient = item.get("patient") or {}
    return [_text(v) for v in (
        item["seq"], item["occurred_at"], item["action"], item["outcome"], actor.get("id"),
        actor.get("device_id"), actor.get("ip"), patient.get("id"), item.get("purpose"),
        item.get("channel"), resource.get("type"), " ".join(resource.get("phi") or []),
        " ".join(a.get("rule", "") for a in item.get("alerts", [])))]


def _affected_cells(item: Mapping[str, Any]) -> list[str]:
    return [_text(v) for v in (
        item["patient"]["id"], item["state"], "yes" if item["secured"] else "no",
        item["first"], item["last"],
        " ".join(f"{a}={n}" for a, n in item["actions"].items()), " ".join(item["phi"]),
        " ".join(item["channels"]))]


def as_csv(timeline: Sequence[Mapping[str, Any]], affected: Sequence[Mapping[str, Any]]
           ) -> str:
    """Two tables in one file: the timeline, a blank line, then the affected patients."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(TIMELINE_COLUMNS)
    writer.writerows(inert_row(list(_timeline_cells(i))) for i in timeline)
    writer.writerow([])
    writer.writerow(AFFECTED_COLUMNS)
    writer.writerows(inert_row(list(_affected_cells(i))) for i in affected)
    return out.getvalue()


def _lanes(item: Mapping[str, Any]) -> list[str]:
    actor = item["actor"]
    lanes = [f"actor {actor['id']}"]
    if actor.get("device_id"):
        lanes.append(f"device {actor['device_id']}")
    if actor.get("ip"):
        lanes.append(f"ip {actor['ip']}")
    return lanes


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def timeline_svg(timeline: Sequence[Mapping[str, Any]], width: int = 960) -> str:
    """The timeline as an SVG, drawn by the shared renderer
    (:func:`api.pictures.timeline_svg`): one lane per actor, device and IP, a
    mark per access coloured by action (``class="mark"``, ``data-seq``), entries with
    alerts boxed in red (``class="alert"``)."""
    marks = [
        Mark(lane, datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00")),
             item["action"], item.get("purpose"),
             f"{item['occurred_at']} {item['action']}", alert=bool(item.get("alerts")),
             seq=item["seq"])
        for item in timeline for lane in _lanes(item)]
    return shared_timeline_svg(marks, width=width, title="Timeline of accesses")


def _legend() -> str:
    spans = "".join(f'<span><svg width="10" height="10"><circle cx="5" cy="5" r="4"'
                    f' fill="{c}"/></svg> {escape(a)}</span>' for a, c in ACTION_COLOURS.items())
    return f'<p class="legend">{spans}</p>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _coverage(note: str | None, last: int) -> str:
    """Whether the checkpoint printed covers the report's last entry."""
    try:
        size = int((note or "").split("\n")[1])
    except (IndexError, ValueError):
        return "<p>No signed checkpoint covers these entries yet.</p>"
    if size < last:
        return (f"<p>The checkpoint covers seq 1-{size}: entries after it are not yet"
                " covered; fetch the evidence file once a newer checkpoint is signed.</p>")
    return f"<p>The checkpoint covers seq 1-{size}, every entry listed.</p>"


def as_html(head: Mapping[str, Any], timeline: Sequence[Mapping[str, Any]],
            affected: Sequence[Mapping[str, Any]], generated: str,
            checkpoint_note: str | None) -> str:
    """The printable report of one investigation (every value escaped)."""
    record = head["investigation"]
    scope = record["scope"]
    duties = head["duties"]
    counts = head["counts"]
    scope_rows = [(k, ", ".join(v) if isinstance(v, list) else (v or "")) for k, v in
                  (("actors", scope.get("actors")), ("devices", scope.get("devices")),
                   ("IPs", scope.get("ips")),
                   ("patients (blind indexes)", len(scope.get("patients") or [])),
                   ("from", scope.get("from")), ("to", scope.get("to") or "(open)"))]
    duty_rows = [(d["to"], d["deadline"], ", ".join(d.get("states", [])), d["basis"])
                 for d in duties] or [("(none)", "", "", "no unsecured PHI in scope")]
    seqs = [i["seq"] for i in timeline]
    covered = f"{min(seqs)}-{max(seqs)}" if seqs else "(none)"
    factor3 = head["risk_assessment"]["acquired_or_viewed"]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Breach investigation: {escape(record['title'] or '')}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Breach investigation: {escape(record['title'] or '')}</h1>",
        f"<p>Investigation {escape(record['investigation_id'])} of ledger"
        f" {escape(head['ledger'])}, status {escape(record['status'])}. Discovered"
        f" {escape(record['discovered_at'] or '')}. Opened {escape(record['opened_at'])} by"
        f" {escape(record['opened_by'])}. Computed through seq {head['through_seq']}"
        f"{' as of ' + escape(head['as_of']) if head.get('as_of') else ''};"
        f" generated {escape(generated)}.</p>",
        "<h2>Scope</h2>", _table(("", "value"), scope_rows),
        "<h2>Notification duties (45 CFR 164.404-408)</h2>",
        _table(("to", "deadline", "states", "basis"), duty_rows),
        "<h2>Counts</h2>",
        f"<p>{counts['patients']} patients affected, {counts['unsecured']} unsecured."
        f" PHI acquired or viewed (read, exported, printed or disclosed):"
        f" {'yes' if factor3['acquired_or_viewed'] else 'no'}.</p>",
        _table(("state", "unsecured patients"), sorted(counts["by_state"].items())),
        "<h2>Affected patients</h2>",
        _table(AFFECTED_COLUMNS, [_affected_cells(i) for i in affected]),
        f"<h2>Timeline ({len(timeline)} entries)</h2>", _legend(), timeline_svg(timeline),
        _table(TIMELINE_COLUMNS, [_timeline_cells(i) for i in timeline]),
        "<h2>Ledger checkpoint</h2>",
        f"<p>Entries covered: seq {covered} (computed through seq {head['through_seq']})."
        " The signed checkpoint below commits to them; the evidence bundle"
        " (GET /v1/investigations/{id}/evidence) proves each entry is in it.</p>",
        _coverage(checkpoint_note, max(seqs) if seqs else 0),
        f'<p class="mono">{escape(checkpoint_note or "(no checkpoint signed yet)")}</p>',
        "</body></html>",
    ]
    return "".join(parts)
