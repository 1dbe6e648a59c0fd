"""Disclosures: every ``disclose`` event, with its 164.528 exemption judged once.

The recipient's name and address and the description stay sealed tokens, as the ledger
stores them; the accounting (:mod:`projections.accounting`) opens them only for a reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from projections.accesses import patient_of
from projections.accounting import exemption
from projections.view import Change, Sql, View, insert_rows

COLUMNS: Final = (
    "ledger", "seq", "event_id", "occurred_at", "occurred_utc", "outcome", "patient_ref",
    "key_id", "recipient_name", "recipient_address", "recipient_kind", "description",
    "purpose", "channel", "actor_id", "authorization_id", "exempt",
)


def disclosure_row(change: Change) -> tuple[Any, ...] | None:
    """The view row of a ``disclose`` entry (None for any other entry)."""
    event = change.event
    if event["action"] != "disclose" or not event.get("disclosure"):
        return None
    disclosure = event["disclosure"]
    recipient = disclosure["recipient"]
    ref, _, key_id = patient_of(event)
    occurred_utc = change.occurred_utc
    return (
        change.ledger, change.seq, event["event_id"], event["occurred_at"], occurred_utc,
        event["outcome"], ref, key_id, recipient["name"], recipient.get("address"),
        recipient["kind"], disclosure["description"], event.get("purpose"),
        event.get("channel"), event["actor"]["id"], disclosure.get("authorization_id"),
        exemption(event, occurred_utc),
    )


class DisclosuresView(View):
    """Every disclosure of PHI, by patient in time order, exempt or accountable."""

    name = "disclosures"
    actions = frozenset({"disclose"})
    tables = ("view_disclosures",)

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        rows = [row for c in changes if (row := disclosure_row(c)) is not None]
        insert_rows(tx, sql, "view_disclosures", COLUMNS, rows)
