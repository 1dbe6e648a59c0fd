"""Scenarios for the monitoring tests: events on a timeline, and the alerts they raise."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from projections.runner import Projector

BASE = datetime.fromisoformat("2026-11-02T09:00:00-05:00")  # a Monday, 09:00 local


def at(minutes: float = 0, *, days: float = 0, hours: float = 0) -> str:
    moment = BASE + timedelta(days=days, hours=hours, minutes=minutes)
    return moment.isoformat(timespec="milliseconds")


def user(actor: str = "agent-1", *, mfa: bool = True) -> dict[str, Any]:
    return {"id": actor, "kind": "user", "role": "call_agent", "mfa": mfa}


def event(action: str, when: str, actor: str = "agent-1", patient: str | None = None,
          **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": str(uuid.uuid4()), "occurred_at": when, "action": action,
        "outcome": "success", "actor": fields.pop("actor", None) or user(actor),
        "purpose": "TREAT", "channel": "ehr", "source": {"system": "answer-desk"},
    }
    if patient is not None:
        out["patient"] = {"id": patient}
        out["resource"] = {"type": "patient", "id": patient}
    out.update(fields)
    return out


def staff_added(staff: str, when: str = "", **data: Any) -> dict[str, Any]:
    return event("staff_added", when or at(days=-30), actor="hr-1",
                 data={"staff_id": staff, "role": "call_agent", **data},
                 resource={"type": "staff", "id": staff})


def trained(staff: str, when: str = "") -> dict[str, Any]:
    return event("training_completed", when or at(days=-20), actor="hr-1",
                 data={"staff_id": staff, "course": "HIPAA Privacy 2026"},
                 resource={"type": "staff", "id": staff})


def record(patient: str, when: str = "", actor: str = "registrar", action: str = "create",
           **data: Any) -> dict[str, Any]:
    return event(action, when or at(days=-40), actor=actor, patient=patient, data=data)


def read(patient: str, when: str, actor: str = "agent-1", **fields: Any) -> dict[str, Any]:
    return event("read", when, actor=actor, patient=patient,
                 resource={"type": "message", "id": "m-1"}, **fields)


def post(svc: Any, events: list[dict[str, Any]], ledger: str = "default") -> list[int]:
    seqs = []
    for start in range(0, len(events), 500):
        receipts = svc.ingest.record_sync(ledger, events[start:start + 500], batch=True)
        seqs += [r.seq for r in receipts.receipts]
    return seqs


def alerts(svc: Any, ledger: str = "default") -> list[dict[str, Any]]:
    """Every alert of ``ledger`` after a catch-up, in (seq, rule) order."""
    Projector(svc.store, protection=svc.protection).catch_up()
    with svc.store.reading() as curs:
        curs.execute(svc.store.sql(
            "SELECT alert_id, seq, rule, severity, status, actor_id, explained_by, details,"
            " triaged_seq FROM view_alerts WHERE ledger = %s ORDER BY seq, rule"), (ledger,))
        names = [d[0] for d in curs.description]
        return [dict(zip(names, row, strict=True)) for row in curs.fetchall()]


def rules_of(found: list[dict[str, Any]], seq: int | None = None) -> set[str]:
    return {a["rule"] for a in found if seq is None or a["seq"] == seq}


