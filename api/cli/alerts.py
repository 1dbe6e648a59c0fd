"""``phi-ledger alerts``: the alert queue at the command line, without PHI.

Lines name the alert, its rule, severity, status, the entry and the actor: never the
patient (a reviewer who needs the patient opens the alert through the API, which records
the read)."""

from __future__ import annotations

from typing import Any

import typer

from projections.alert_queries import AlertFilter, list_alerts
from projections.cursor import Position
from projections.monitoring.rules import RULES

STATUSES = ("open", "explained", "acknowledged", "dismissed")
PAGE = 1000


def alert_lines(store: Any, ledger: str, rule: str | None, status: str | None) -> list[str]:
    """Every alert of ``ledger`` matching ``rule``/``status``, newest first, one line each."""
    where = AlertFilter((rule,) if rule else (), (status,) if status else ())
    lines: list[str] = []
    after: Position | None = None
    while True:
        rows = list_alerts(store, ledger, where, after, PAGE)
        lines += ["\t".join([r["alert_id"], r["rule"], r["severity"], r["status"],
                             str(r["seq"]), r["occurred_at"], r["actor_id"],
                             "" if r["explained_by"] is None else str(r["explained_by"])])
                  for r in rows]
        if len(rows) < PAGE:
            return lines
        after = Position(rows[-1]["alert_id"], rows[-1]["seq"])


def check_choice(value: str | None, allowed: tuple[str, ...], name: str) -> None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{name} must be one of: {', '.join(allowed)}")


__all__ = ["RULES", "STATUSES", "alert_lines", "check_choice"]
