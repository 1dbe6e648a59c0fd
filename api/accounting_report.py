"""The accounting of disclosures, rendered: JSON for systems, CSV for spreadsheets, and a
printable HTML letter a privacy office can mail to the patient (45 CFR 164.528(c))."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from html import escape
from typing import Any

from api.spreadsheet import inert_row
from projections.accounting import (
    Accounting,
    AccountingEntry,
    Disclosure,
    explain,
    purpose_statement,
)

STYLE = """
 body { font: 11pt/1.4 Georgia, serif; margin: 2cm; color: #111; }
 h1 { font-size: 16pt; margin-bottom: 0; }
 table { border-collapse: collapse; width: 100%; margin-top: 1em; }
 th, td { border: 1px solid #999; padding: 4pt 6pt; vertical-align: top; text-align: left; }
 th { background: #eee; }
 .meta { color: #444; }
 @media print { body { margin: 1cm; } }
""".strip()
# The page's one stylesheet, allowed by its hash: the service's default policy
# (default-src 'none') would block it, and nothing else on the page may run or load.
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
ACCOUNTING_CSP = (f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; base-uri 'none';"
                  " form-action 'none'; frame-ancestors 'none'")

CSV_COLUMNS = (
    "date", "recipient_name", "recipient_address", "description", "purpose",
    "disclosures", "last_date", "channel", "seq",
)


def _disclosure(d: Disclosure) -> dict[str, Any]:
    return {
        "seq": d.seq, "occurred_at": d.occurred_at,
        "recipient": {"name": d.recipient_name, "address": d.recipient_address,
                      "kind": d.recipient_kind},
        "description": d.description, "purpose": d.purpose,
        "purpose_statement": purpose_statement(d.purpose), "channel": d.channel,
    }


def _entry(e: AccountingEntry) -> dict[str, Any]:
    body = _disclosure(e.first)
    body["disclosures"] = e.count
    if e.summarised:
        body["last_occurred_at"] = e.last.occurred_at
    return body


def as_json(patient_id: str, ledger: str, period: tuple[str, str], generated_at: str,
            accounting: Accounting) -> dict[str, Any]:
    return {
        "patient": {"id": patient_id}, "ledger": ledger,
        "period": {"from": period[0], "to": period[1]}, "generated_at": generated_at,
        "disclosures": accounting.disclosures,
        "entries": [_entry(e) for e in accounting.entries],
        "exempt": [
            {**_disclosure(d), "outcome": d.outcome, "exemption": d.exempt,
             "reason": explain(d.exempt)}
            for d in accounting.exempt
        ],
    }


def as_csv(accounting: Accounting) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in accounting.entries:
        d = e.first
        writer.writerow(inert_row([
            d.occurred_at, d.recipient_name, d.recipient_address or "", d.description,
            purpose_statement(d.purpose), e.count, e.last.occurred_at if e.summarised else "",
            d.channel or "", d.seq,
        ]))
    return out.getvalue()


def as_html(patient_id: str, ledger: str, period: tuple[str, str], generated_at: str,
            accounting: Accounting) -> str:
    rows = []
    for e in accounting.entries:
        d = e.first
        note = (f"{e.count} disclosures to this recipient for this purpose; the last on "
                f"{escape(e.last.occurred_at[:10])}" if e.summarised else "")
        address = f"<br><small>{escape(d.recipient_address)}</small>" if d.recipient_address else ""
        rows.append(
            f"<tr><td>{escape(d.occurred_at[:10])}</td>"
            f"<td>{escape(d.recipient_name)}{address}</td>"
            f"<td>{escape(d.description)}</td><td>{escape(purpose_statement(d.purpose))}</td>"
            f"<td>{note}</td></tr>"
        )
    body = "\n".join(rows) or (
        '<tr><td colspan="5">No disclosures of your health information that must be '
        "accounted for were made in this period.</td></tr>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Accounting of disclosures</title>
<style>{STYLE}</style></head>
<body>
<h1>Accounting of disclosures of protected health information</h1>
<p class="meta">Patient: <strong>{escape(patient_id)}</strong><br>
Organisation: {escape(ledger)}<br>
Period: {escape(period[0][:10])} to {escape(period[1][:10])}<br>
Prepared: {escape(generated_at[:10])}</p>
<p>As 45 CFR 164.528 requires, this lists the disclosures of your health information made
in the period above, with the date, the recipient, what was disclosed and why. Disclosures
for your treatment, for payment and health care operations, to you, under your written
authorization, and to people involved in your care are not listed, as the rule allows.</p>
<table>
<thead><tr><th>Date</th><th>Recipient</th><th>Information disclosed</th><th>Purpose</th>
<th>Repeated disclosures</th></tr></thead>
<tbody>
{body}
</tbody></table>
<p class="meta">Total disclosures accounted for: {accounting.disclosures}.</p>
</body></html>
"""
