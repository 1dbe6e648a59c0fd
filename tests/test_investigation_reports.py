"""The investigation's reports say what its JSON answer says, on SQLite and PostgreSQL.

``format=html`` is parsed (tables and paragraphs by section) and held against the JSON
answer of the same investigation: the duties with their deadlines and basis, the counts
and the unsecured patients by state, every affected patient, and at the end the ledger's
signed checkpoint (it verifies with the log's key and covers every entry listed) and the
seq range the report covers. ``format=csv`` is read back and its two tables, the timeline
and the affected list, compared cell by cell with the JSON items.
"""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser
from typing import Any

from fastapi.testclient import TestClient

from api.investigation_report import as_html
from ledger.transparency.checkpoint import open_checkpoint
from ledger.transparency.note import verifier_from_key
from tests.test_investigations_api import (
    P1,
    THIEF,
    answer,
    ev,
    open_investigation,
    post,
    scenario,
)
from tests.test_transparency_cli import size_of, wait_for

DUTIES = "Notification duties (45 CFR 164.404-408)"
CHECKPOINT = "Ledger checkpoint"


class Report(HTMLParser):
    """The report's text by section (the ``<h2>`` above it): its paragraphs and its
    tables (rows of cell texts). The SVG is skipped: its marks are checked in a browser
    by tests/test_investigation_report_render.py."""

    def __init__(self) -> None:
        super().__init__()
        self.h1 = ""
        self.section = ""
        self.paragraphs: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[list[str]]]] = {}
        self._text: list[str] | None = None
        self._tag = ""
        self._svg = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self._svg += 1
        if self._svg:
            return
        if tag == "table":
            self.tables.setdefault(self.section, []).append([])
        elif tag == "tr":
            self.tables[self.section][-1].append([])
        if tag in ("h1", "h2", "p", "td", "th"):
            self._text, self._tag = [], tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg -= 1
            return
        if self._svg or tag != self._tag or self._text is None:
            return
        text = "".join(self._text)
        if tag == "h1":
            self.h1 = text
        elif tag == "h2":
            self.section = text
        elif tag == "p":
            self.paragraphs.setdefault(self.section, []).append(text)
        else:
            self.tables[self.section][-1][-1].append(text)
        self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None and not self._svg:
            self._text.append(data)

    def table(self, section: str) -> list[list[str]]:
        """The section's one table, without its header row."""
        (rows,) = self.tables[section]
        return rows[1:]


def parse(html: str) -> Report:
    report = Report()
    report.feed(html)
    report.close()
    return report


def _investigation(client: TestClient) -> tuple[str, dict[str, Any]]:
    """The stolen laptop's week, one entry with an alert (no MFA), an investigation over
    the device, and its whole JSON answer once a checkpoint covers every entry."""
    scenario(client)
    post(client, ev("print", {**THIEF, "mfa": False}, "2026-11-25T04:00:00Z", "MRN-900005"),
         ev("read", THIEF, "2026-11-25T05:00:00Z", P1))  # P1's first and last differ
    inv = open_investigation(client, devices=["ws-stolen"])
    body = answer(client, inv, limit=500)
    assert body["next_cursor"] is None
    wait_for(client.get, body["through_seq"])
    return inv, body


def test_the_html_report_prints_duties_counts_patients_and_the_signed_checkpoint(
        client: TestClient) -> None:
    inv, body = _investigation(client)
    r = client.get(f"/v1/investigations/{inv}", params={"purpose": "HOPERAT",
                                                        "format": "html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    report = parse(r.text)
    assert report.h1 == "Breach investigation: Stolen laptop ws-stolen"
    assert "Discovered 2026-11-26T09:00:00-05:00." in report.paragraphs[""][0]

    assert len(body["duties"]) == 2
    assert report.table(DUTIES) == [
        [d["to"], d["deadline"], ", ".join(d.get("states", [])), d["basis"]]
        for d in body["duties"]]

    counts = body["counts"]
    assert report.paragraphs["Counts"][0].startswith(
        f"{counts['patients']} patients affected, {counts['unsecured']} unsecured.")
    assert report.table("Counts") == [[s, str(n)] for s, n in
                                      sorted(counts["by_state"].items())]

    want = {a["patient"]["id"]: [
        a["state"], "yes" if a["secured"] else "no", a["first"], a["last"],
        " ".join(f"{k}={n}" for k, n in a["actions"].items()), " ".join(a["phi"]),
        " ".join(a["channels"])] for a in body["affected"]}
    got = {row[0]: row[1:] for row in report.table("Affected patients")}
    assert got == want and len(report.table("Affected patients")) == len(want)
    assert got[P1][2] != got[P1][3]  # first and last

    # The end: the seq range covered, and the signed checkpoint that covers it.
    seqs = [i["seq"] for i in body["timeline"]]
    covered, coverage, note = report.paragraphs[CHECKPOINT]
    assert covered.startswith(f"Entries covered: seq {min(seqs)}-{max(seqs)} ")
    log_key = client.get("/v1/checkpoints/key").text.strip()
    checkpoint = open_checkpoint(note, verifier_from_key(log_key))
    assert checkpoint.size >= max(seqs)
    assert coverage == f"The checkpoint covers seq 1-{checkpoint.size}, every entry listed."
    assert client.get(f"/v1/checkpoints/{checkpoint.size}").text == note


def test_the_report_says_when_no_checkpoint_reaches_its_last_entry(client: TestClient
                                                                  ) -> None:
    _, body = _investigation(client)
    last = max(i["seq"] for i in body["timeline"])
    note = client.get("/v1/checkpoints/latest").text
    short = note.replace(f"\n{size_of(note)}\n", f"\n{last - 1}\n", 1)
    paragraphs = parse(as_html(body, body["timeline"], body["affected"], "now", short)
                       ).paragraphs[CHECKPOINT]
    assert paragraphs[1].startswith(f"The checkpoint covers seq 1-{last - 1}: entries after"
                                    " it are not yet covered")
    none = parse(as_html(body, body["timeline"], body["affected"], "now", None))
    assert none.paragraphs[CHECKPOINT][1:] == [
        "No signed checkpoint covers these entries yet.", "(no checkpoint signed yet)"]


def test_the_csv_holds_the_timeline_and_the_affected_list_of_the_answer(
        client: TestClient) -> None:
    inv, body = _investigation(client)
    r = client.get(f"/v1/investigations/{inv}", params={"purpose": "HOPERAT",
                                                        "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    blank = rows.index([])
    timeline, affected = rows[1:blank], rows[blank + 2:]

    def cell(value: Any) -> str:
        return "" if value is None else str(value)

    assert timeline == [[cell(v) for v in (
        i["seq"], i["occurred_at"], i["action"], i["outcome"], i["actor"]["id"],
        i["actor"].get("device_id"), i["actor"].get("ip"), (i.get("patient") or {}).get("id"),
        i.get("purpose"), i.get("channel"), (i.get("resource") or {}).get("type"),
        " ".join((i.get("resource") or {}).get("phi") or []),
        " ".join(a["rule"] for a in i["alerts"]))] for i in body["timeline"]]
    assert any(row[-1] for row in timeline)  # the alert column is not always empty
    assert affected == [[
        a["patient"]["id"], a["state"], "yes" if a["secured"] else "no", a["first"],
        a["last"], " ".join(f"{k}={n}" for k, n in a["actions"].items()),
        " ".join(a["phi"]), " ".join(a["channels"])] for a in body["affected"]]
