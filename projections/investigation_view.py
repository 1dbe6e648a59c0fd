"""Investigations: where each investigation's entries sit in the ledger.

One row per ``investigation_opened``, ``investigation_amended`` or
``investigation_closed`` entry. The entries themselves hold the investigation (title,
discovery, scope, notes, outcome); the row only finds them, so an investigation is read
as a few entries by seq rather than by scanning the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from projections.investigations import INVESTIGATION_ACTIONS
from projections.view import Change, Sql, View, insert_rows

COLUMNS: Final = ("ledger", "investigation_id", "seq", "action", "recorded_at")


class InvestigationsView(View):
    """Every investigation entry, findable by ledger and investigation id."""

    name = "investigations"
    actions = INVESTIGATION_ACTIONS
    tables = ("view_investigations",)

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        rows = []
        for change in changes:
            if change.event["action"] not in INVESTIGATION_ACTIONS:
                continue
            resource = change.event.get("resource") or {}
            rows.append((change.ledger, resource.get("id"), change.seq,
                         change.event["action"], change.recorded_at))
        insert_rows(tx, sql, "view_investigations", COLUMNS, rows)
