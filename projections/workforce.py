"""Workforce and partners: who may touch PHI, and on what terms.

Staff, from ``staff_added``/``staff_removed``/``role_changed``/``training_completed``/
``mfa_enrolled`` (the subject is ``data.staff_id``, else the ``staff`` resource's id):
role, site, HIPAA training, MFA enrolment and whether the account should still be active.
Business associates, from ``baa_signed``/``baa_ended`` (``data.partner``, else the
resource id): whether a business associate agreement is in force. Only successful events
count. None of this is patient PHI, so nothing here is sealed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, replace
from typing import Any

from projections.view import Change, Sql, View, select_keyed, upsert_rows

STAFF_ACTIONS = frozenset(
    {"staff_added", "staff_removed", "role_changed", "training_completed", "mfa_enrolled"}
)
PARTNER_ACTIONS = frozenset({"baa_signed", "baa_ended"})


@dataclass(frozen=True, slots=True)
class StaffRow:
    ledger: str
    staff_id: str
    role: str | None = None
    site: str | None = None
    active: bool = True
    added_utc: str | None = None
    removed_utc: str | None = None
    removal_reason: str | None = None
    training_utc: str | None = None
    training_course: str | None = None
    mfa_enrolled_utc: str | None = None
    mfa_method: str | None = None
    updated_seq: int = 0


@dataclass(frozen=True, slots=True)
class PartnerRow:
    ledger: str
    partner: str
    service: str | None = None
    agreement_id: str | None = None
    baa_active: bool = False
    signed_utc: str | None = None
    ended_utc: str | None = None
    updated_seq: int = 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def subject_of(change: Change) -> tuple[str, str] | None:
    """``("staff" | "partner", id)`` of a workforce entry, or None for any other entry."""
    event = change.event
    action = event["action"]
    if event["outcome"] != "success":
        return None
    data = event.get("data") or {}
    resource = event.get("resource") or {}
    if action in STAFF_ACTIONS:
        who = _text(data.get("staff_id")) or _text(resource.get("id"))
        return ("staff", who) if who else None
    if action in PARTNER_ACTIONS:
        who = _text(data.get("partner")) or _text(resource.get("id"))
        return ("partner", who) if who else None
    return None


def fold_staff(current: StaffRow | None, change: Change, staff_id: str) -> StaffRow:
    event, data = change.event, change.event.get("data") or {}
    row = current or StaffRow(change.ledger, staff_id)
    when = change.occurred_utc
    match event["action"]:
        case "staff_added":
            row = replace(row, role=_text(data.get("role")) or row.role,
                          site=_text(data.get("site")) or row.site, active=True,
                          added_utc=when, removed_utc=None, removal_reason=None)
        case "staff_removed":
            row = replace(row, active=False, removed_utc=when,
                          removal_reason=_text(data.get("reason")))
        case "role_changed":
            row = replace(row, role=_text(data.get("to_role")) or _text(data.get("role")))
        case "training_completed":
            row = replace(row, training_utc=when, training_course=_text(data.get("course")))
        case "mfa_enrolled":
            row = replace(row, mfa_enrolled_utc=when, mfa_method=_text(data.get("method")))
    return replace(row, updated_seq=change.seq)


def fold_partner(current: PartnerRow | None, change: Change, partner: str) -> PartnerRow:
    event, data = change.event, change.event.get("data") or {}
    row = current or PartnerRow(change.ledger, partner)
    when = change.occurred_utc
    if event["action"] == "baa_signed":
        row = replace(row, baa_active=True, signed_utc=when, ended_utc=None,
                      service=_text(data.get("service")) or row.service,
                      agreement_id=_text(data.get("agreement_id")) or row.agreement_id)
    else:
        row = replace(row, baa_active=False, ended_utc=when)
    return replace(row, updated_seq=change.seq)


_STAFF_COLUMNS = (
    "ledger, staff_id, role, site, active, added_utc, removed_utc, removal_reason,"
    " training_utc, training_course, mfa_enrolled_utc, mfa_method, updated_seq"
)
_PARTNER_COLUMNS = (
    "ledger, partner, service, agreement_id, baa_active, signed_utc, ended_utc, updated_seq"
)


def _names(columns: str) -> list[str]:
    return [c.strip() for c in columns.split(",")]


class WorkforceView(View):
    """Staff and business associates, one current row each."""

    name = "workforce"
    actions = STAFF_ACTIONS | PARTNER_ACTIONS
    tables = ("view_workforce", "view_partners")

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        subjects = [(c, s) for c in changes if (s := subject_of(c)) is not None]
        if not subjects:
            return
        staff: dict[tuple[str, str], StaffRow | None] = {}
        partners: dict[tuple[str, str], PartnerRow | None] = {}
        # (kind, its rows, where they are stored, the row type): staff and partners alike.
        sources: tuple[tuple[str, dict[tuple[str, str], Any], tuple[str, Any, str],
                             Callable[..., Any]], ...] = (
            ("staff", staff, ("view_workforce", _STAFF_COLUMNS, "staff_id"), StaffRow),
            ("partner", partners, ("view_partners", _PARTNER_COLUMNS, "partner"), PartnerRow),
        )
        for kind, table, (name, columns, key), make in sources:
            wanted: dict[str, set[str]] = {}
            for c, (k, who) in subjects:
                if k == kind:
                    wanted.setdefault(c.ledger, set()).add(who)
                    table[(c.ledger, who)] = None
            for ledger, ids in wanted.items():
                for found in select_keyed(tx, sql, name, columns, key, ledger, sorted(ids)):
                    values = list(found)
                    values[4] = bool(values[4])  # SQLite keeps booleans as integers
                    table[(ledger, values[1])] = make(*values)
        for c, (kind, who) in subjects:
            if kind == "staff":
                staff[(c.ledger, who)] = fold_staff(staff[(c.ledger, who)], c, who)
            else:
                partners[(c.ledger, who)] = fold_partner(partners[(c.ledger, who)], c, who)
        upsert_rows(tx, sql, "view_workforce", _names(_STAFF_COLUMNS), ("ledger", "staff_id"),
                    [astuple(r) for _, r in sorted(staff.items()) if r is not None])
        upsert_rows(tx, sql, "view_partners", _names(_PARTNER_COLUMNS), ("ledger", "partner"),
                    [astuple(r) for _, r in sorted(partners.items()) if r is not None])
