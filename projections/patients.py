"""Patients: each patient's current record, folded from ``create``/``update``/``delete``.

Rules, applied in ledger order to successful events only, and only to events about the
record itself (``resource.type`` ``patient``, or no resource: creating a ``call`` or
``message`` about a patient is an access, not a change to the record):

* ``create`` starts a record (or revives a deleted one) from its ``data``;
* ``update`` merges its ``data`` into the record; a null value removes that field;
* ``delete`` hides the record -- its history (accesses, disclosures) stays;
* ``patient_shredded`` erases every value: the key that opened them is gone.

Values stay sealed tokens, each bound to ``data.<field>`` under the patient's data key.
A record keeps the id of the key its tokens need; when events arrive under a newer key
(the patient was shredded, then seen again) the older values read as erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ledger.canonical import canonical, parse
from ledger.protect import ERASED
from ledger.shredding import SHREDDED
from projections.accesses import patient_of
from projections.view import Change, Sql, View, select_keyed, upsert_rows

RECORD_ACTIONS = frozenset({"create", "update", "delete"})
COLUMNS = (
    "ledger", "patient_ref", "patient_token", "key_id", "record", "deleted", "shredded",
    "created_seq", "updated_seq", "updated_utc",
)


@dataclass(frozen=True, slots=True)
class PatientRow:
    """One patient's current record, as the view stores it (values sealed)."""

    ledger: str
    patient_ref: str
    patient_token: str
    key_id: str | None
    record: dict[str, Any]
    deleted: bool
    shredded: bool
    created_seq: int
    updated_seq: int
    updated_utc: str

    def as_row(self) -> tuple[Any, ...]:
        return (
            self.ledger, self.patient_ref, self.patient_token, self.key_id,
            canonical(self.record).decode(), self.deleted,
            self.shredded, self.created_seq, self.updated_seq, self.updated_utc,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> PatientRow:
        return cls(
            row[0], row[1], row[2], row[3], parse(row[4]), bool(row[5]), bool(row[6]),
            int(row[7]), int(row[8]), row[9],
        )


def touches_record(change: Change) -> bool:
    """Whether ``change`` changes a patient's record: a shred, or a successful
    ``create``/``update``/``delete`` of the record itself (``resource.type`` ``patient``,
    or no resource). Creating a ``call`` or ``message`` about a patient is an access."""
    event = change.event
    action = event["action"]
    if event.get("patient") is None:
        return False
    if action == SHREDDED:
        return True
    resource = event.get("resource")
    return (action in RECORD_ACTIONS and event["outcome"] == "success"
            and (resource is None or resource.get("type") == "patient"))


def _erased(record: dict[str, Any]) -> dict[str, Any]:
    return {name: ERASED for name in record}


def fold(current: PatientRow | None, change: Change) -> PatientRow | None:
    """The record after ``change`` (which :func:`touches_record`)."""
    event = change.event
    action = event["action"]
    if action == SHREDDED:
        if current is None:
            return None
        return replace(current, record=_erased(current.record), shredded=True,
                       updated_seq=change.seq, updated_utc=change.occurred_utc)
    ref, token, key_id = patient_of(event)
    assert ref is not None and token is not None
    when = change.occurred_utc
    if current is None:
        current = PatientRow(change.ledger, ref, token, key_id, {}, action == "delete", False,
                             change.seq, change.seq, when)
    record = dict(current.record)
    if current.key_id != key_id:
        # Sealed under a key this event no longer uses: it cannot be opened any more.
        record = _erased(record)
    deleted = current.deleted
    created_seq = current.created_seq
    if action == "delete":
        deleted = True
    elif action == "create" and current.deleted:
        record, deleted, created_seq = {}, False, change.seq
    for name, value in (event.get("data") or {}).items() if action != "delete" else ():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value
    return replace(current, patient_token=token, key_id=key_id, record=record,
                   deleted=deleted, created_seq=created_seq, updated_seq=change.seq,
                   updated_utc=when)


class PatientsView(View):
    """Each patient's current record, findable by blind index."""

    name = "patients"
    actions = RECORD_ACTIONS | {SHREDDED}
    tables = ("view_patients",)
    columns = ", ".join(COLUMNS)

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        relevant = [c for c in changes if touches_record(c)]
        if not relevant:
            return
        rows: dict[tuple[str, str], PatientRow | None] = {}
        by_ledger: dict[str, set[str]] = {}
        for c in relevant:
            ref = patient_of(c.event)[0]
            assert ref is not None
            by_ledger.setdefault(c.ledger, set()).add(ref)
        for ledger, refs in by_ledger.items():
            for key in refs:
                rows[(ledger, key)] = None
            for found in select_keyed(tx, sql, "view_patients", self.columns, "patient_ref",
                                      ledger, sorted(refs)):
                row = PatientRow.from_row(found)
                rows[(ledger, row.patient_ref)] = row
        changed: set[tuple[str, str]] = set()
        for c in relevant:
            at = (c.ledger, patient_of(c.event)[0] or "")
            rows[at] = fold(rows[at], c)
            changed.add(at)
        out = [kept.as_row() for at in sorted(changed) if (kept := rows[at]) is not None]
        upsert_rows(tx, sql, "view_patients", COLUMNS, ("ledger", "patient_ref"), out)
