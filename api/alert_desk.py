"""The alert desk: alerts listed for a reviewer (patients opened, the read recorded) and
their triage (acknowledge, dismiss) appended to the ledger.

The router only parses and answers; every decision is here, so the console calls the same
functions. Triage is a system entry (``alert_acknowledged``/``alert_dismissed``) that
applications cannot post; the alerts view folds it into the alert's status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from api.access_reports import AccessReports, Reader
from ledger.admission import Accepted, Pending
from ledger.attestation import BY_SERVICE
from ledger.event_ids import new_event_id
from projections import alert_queries
from projections.alert_queries import AlertFilter
from projections.cursor import Position

ALERT_LIST: Final = "alert_list"  # what the `query` events say was looked at
DECISIONS: Final = {"acknowledge": "alert_acknowledged", "dismiss": "alert_dismissed"}
MAX_REASON: Final = 1000


class TriageRefused(Exception):
    """Triage not allowed: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True, slots=True)
class Triage:
    alert_id: str
    status: str
    seq: int


def alert_item(row: dict[str, Any], patient_id: str | None) -> dict[str, Any]:
    """One alert as the contract shapes it (``patient_id`` already opened)."""
    return {
        "alert_id": row["alert_id"], "rule": row["rule"], "severity": row["severity"],
        "status": row["status"], "seq": row["seq"], "event_id": row["event_id"],
        "occurred_at": row["occurred_at"], "actor": {"id": row["actor_id"]},
        "patient": None if row["patient_ref"] is None else {"id": patient_id},
        "explained_by": row["explained_by"], "details": row["details"],
        "triaged_by_seq": row["triaged_seq"],
    }


def open_items(svc: Any, ledger: str, rows: Sequence[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """The alerts as the API shows them, and the patient ids they show."""
    ids = AccessReports(svc).open_patients(ledger, rows)
    items = [alert_item(r, ids.get((r["patient_ref"], r["key_id"], r["patient_token"])))
             for r in rows]
    shown = [i["patient"]["id"] for i in items if i["patient"] and i["patient"]["id"]]
    return items, shown


def list_page(svc: Any, ledger: str, where: AlertFilter, after: Position | None,
              limit: int) -> tuple[list[dict[str, Any]], list[str], Position | None]:
    """A page of alerts (opened), the patient ids shown, and where the next page starts."""
    rows = alert_queries.list_alerts(svc.store, ledger, where, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items, shown = open_items(svc, ledger, rows)
    last = Position(rows[-1]["alert_id"], rows[-1]["seq"]) if more and rows else None
    return items, shown, last


async def record_shown(svc: Any, ledger: str, reader: Reader, shown: list[str],
                       purpose: str) -> None:
    await AccessReports(svc).record_reads(ledger, reader, shown, purpose, ALERT_LIST)


def own_actor(svc: Any, caller: Any, actor_id: str) -> str | None:
    """Why ``actor_id`` is the caller, or None. Applications post the staff id a person
    acts as (the ``staff_id`` of ``staff_added``), the service its own entries under the
    identity id, and some applications the sign-in name: all three are the caller."""
    if actor_id == caller.id:
        return "the actor is your identity"
    if caller.name is not None and actor_id == caller.name:
        return "the actor is your sign-in name"
    if actor_id in svc.access.identities.staff_ids(caller.id):
        return "the actor is a staff id bound to you"
    return None


def triage(svc: Any, ledger: str, caller: Any, alert_id: str, decision: str,
           reason: str) -> Triage:
    """Append ``decision`` (acknowledge or dismiss) on ``alert_id`` to the ledger.

    Refused (:class:`TriageRefused`) when the alert does not exist in the caller's
    ledger (404), or is about the reviewer's own actions (403, :func:`own_actor`):
    nobody closes their own alert."""
    row = alert_queries.alert_by_id(svc.store, ledger, alert_id)
    if row is None:
        raise TriageRefused(404, "not_found", "no such alert in this ledger")
    why = own_actor(svc, caller, row["actor_id"])
    if why is not None:
        raise TriageRefused(403, "forbidden", f"this alert is about your own actions ({why}):"
                                              " another reviewer must triage it")
    now = svc.clock()
    event = {
        "event_id": new_event_id(), "occurred_at": now.isoformat(timespec="microseconds"),
        "action": DECISIONS[decision], "outcome": "success",
        "actor": {"id": caller.id, "kind": caller.kind, "role": "investigator"},
        "resource": {"type": "alert", "id": alert_id},
        "data": {"alert_id": alert_id, "reason": reason},
        "source": {"system": "phi-ledger"},
    }
    pending = Pending(event["event_id"], svc.protection.fingerprint(ledger, event), event,
                      BY_SERVICE.members())
    outcome = svc.store.append({ledger: [[pending]]}, now)[ledger][0]
    assert isinstance(outcome, Accepted)
    status = "acknowledged" if decision == "acknowledge" else "dismissed"
    return Triage(alert_id, status, outcome.receipts[0].seq)
