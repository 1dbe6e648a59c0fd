"""The audit service: answers from the views, opened for the reader, and the read recorded.

Every answer that shows PHI passes through here, which does three things in order:

1. reads sealed rows from the views (:mod:`projections.queries`);
2. opens them with the patients' data keys (a crypto-shredded patient reads as erased);
3. appends a ``query`` event per patient shown -- the caller, the purpose they gave,
   what they looked at -- and waits until it is durable, so no PHI leaves the service
   without the ledger knowing. (That read shows up in the next report of the patient's
   accesses, like any other access.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from ledger.protect import ERASED
from projections.accounting import Disclosure
from projections.cursor import Position
from projections.instants import format_utc
from projections.patients import PatientRow
from projections.queries import AccessFilter, Order

# What a ``query`` event says was looked at (its ``resource.type``).
PATIENT_RECORD = "patient_record"
ACCESS_REPORT = "access_report"
USER_ACCESS_REPORT = "user_access_report"
DISCLOSURE_ACCOUNTING = "disclosure_accounting"

ACCOUNTING_YEARS = 6


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading, as the ``query`` events name them."""

    id: str
    kind: str
    role: str | None = None
    organization: str | None = None

    @classmethod
    def of(cls, caller: Any) -> Reader:
        if caller is None:
            return cls("anonymous", "application")
        roles = sorted(getattr(caller, "roles", ()) or ())
        return cls(caller.id, caller.kind, ",".join(roles) or None)


# A patient as an access row names it: (blind index, data key id, sealed id token).
SealedPatient = tuple[str | None, str | None, str | None]


def _patient_of(row: Mapping[str, Any]) -> SealedPatient:
    return row["patient_ref"], row["key_id"], row["patient_token"]


def _sealed_patient(ref: str | None, key_id: str | None, token: str | None) -> dict[str, Any]:
    patient: dict[str, Any] = {"id": token}
    if key_id is not None:
        patient = {"ref": ref, "key": key_id, "id": token}
    return patient


_ACTOR_COLUMNS = (
    ("id", "actor_id"), ("kind", "actor_kind"), ("role", "actor_role"),
    ("organization", "actor_organization"), ("device_id", "device_id"), ("ip", "ip"),
    ("session_id", "session_id"),
)


def access_item(row: dict[str, Any], patient_id: str | None) -> dict[str, Any]:
    """One access row as the API shows it (``patient_id`` already opened)."""
    actor = {}
    for name, column in _ACTOR_COLUMNS:
        value = row[column]
        if value is not None:
            actor[name] = value
    if row["actor_mfa"] is not None:
        actor["mfa"] = bool(row["actor_mfa"])
    item: dict[str, Any] = {
        "seq": row["seq"], "event_id": row["event_id"], "occurred_at": row["occurred_at"],
        "recorded_at": row["recorded_at"], "action": row["action"], "outcome": row["outcome"],
        "purpose": row["purpose"], "channel": row["channel"], "actor": actor,
        "patient": None if row["patient_ref"] is None else {"id": patient_id},
        "resource": None, "source": None,
    }
    if row["resource_type"] is not None:
        item["resource"] = {"type": row["resource_type"], "id": row["resource_id"],
                            "phi": None if row["resource_phi"] is None
                            else orjson.loads(row["resource_phi"])}
    if row["source_system"] is not None:
        item["source"] = {"system": row["source_system"], "site": row["source_site"]}
    return item


def access_items(
    rows: Sequence[dict[str, Any]], ids: dict[SealedPatient, str | None]
) -> list[dict[str, Any]]:
    """The API's items for ``rows``, given their patients' opened ids."""
    return [access_item(r, ids.get(_patient_of(r))) for r in rows]


class AccessReports:
    """Patient records, access histories and accountings, opened for one reader."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc

    # -- opening ---------------------------------------------------------------------

    def _open(self, ledger: str, sealed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.svc.protection.reveal_many(ledger, list(sealed))

    def patient_ref(self, ledger: str, patient_id: str) -> str:
        return self.svc.protection.patient_ref(ledger, patient_id)

    def open_record(self, ledger: str, row: PatientRow) -> tuple[str, dict[str, Any]]:
        """The patient's id and record, opened (erased values stay erased)."""
        sealed = {k: v for k, v in row.record.items() if v != ERASED}
        opened = self._open(ledger, [{
            "patient": _sealed_patient(row.patient_ref, row.key_id, row.patient_token),
            "data": sealed,
        }])[0]
        record = {k: ERASED for k, v in row.record.items() if v == ERASED}
        record.update(opened.get("data") or {})
        return opened["patient"]["id"], dict(sorted(record.items()))

    def open_patients(
        self, ledger: str, rows: Sequence[Mapping[str, Any]]
    ) -> dict[SealedPatient, str | None]:
        """The id of each patient ``rows`` name, opened (``ERASED`` where shredded)."""
        # Ingest seals a patient's id once per data key and reuses the token, so a page
        # names few distinct tokens (one, mostly, in a patient's history): each is opened
        # once.
        sealed = list(dict.fromkeys(
            p for r in rows if (p := _patient_of(r))[0] is not None))
        opened = self._open(ledger, [{"patient": _sealed_patient(*p)} for p in sealed])
        return {p: o["patient"].get("id") for p, o in zip(sealed, opened, strict=True)}

    def open_disclosures(self, ledger: str, rows: Sequence[dict[str, Any]]) -> list[Disclosure]:
        opened = self._open(ledger, [{
            "patient": _sealed_patient(r["patient_ref"], r["key_id"], None),
            "disclosure": {"recipient": {"name": r["recipient_name"],
                                         "address": r["recipient_address"]},
                           "description": r["description"]},
        } for r in rows])
        out = []
        for r, o in zip(rows, opened, strict=True):
            d = o["disclosure"]
            out.append(Disclosure(
                seq=r["seq"], occurred_at=r["occurred_at"], occurred_utc=r["occurred_utc"],
                recipient_name=d["recipient"]["name"],
                recipient_address=d["recipient"].get("address"),
                recipient_kind=r["recipient_kind"], description=d["description"],
                purpose=r["purpose"], channel=r["channel"], outcome=r["outcome"],
                exempt=r["exempt"], authorization_id=r["authorization_id"],
            ))
        return out

    # -- recording the read ------------------------------------------------------------

    async def record_reads(self, ledger: str, reader: Reader, patient_ids: Iterable[str],
                           purpose: str, what: str) -> None:
        """Append one ``query`` event per patient shown; returns once they are durable."""
        now = self.svc.clock()
        actor: dict[str, Any] = {"id": reader.id, "kind": reader.kind}
        if reader.role:
            actor["role"] = reader.role[:256]
        template = {
            "occurred_at": now.isoformat(timespec="microseconds"),
            "action": "query", "outcome": "success", "actor": actor,
            "resource": {"type": what}, "purpose": purpose, "channel": "api",
            "source": {"system": "phi-ledger"},
        }
        shown = list(dict.fromkeys(p for p in patient_ids if p and p != ERASED))
        if shown:
            await self.svc.ingest.record_alike(ledger, template, shown)

    # -- the questions -----------------------------------------------------------------

    def access_rows(self, ledger: str, where: AccessFilter, after: Position | None,
                    order: Order, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A page of access rows as the view holds them (PHI sealed), and whether more
        follow."""
        rows = self.svc.queries.accesses(ledger, where, after=after, order=order,
                                         limit=limit + 1)
        return rows[:limit], len(rows) > limit

    def accounting_period(self, since: str | None, until: str | None) -> tuple[str, str]:
        now = self.svc.clock()
        start = since or format_utc(now - timedelta(days=365 * ACCOUNTING_YEARS + 2))
        return start, until or format_utc(now)
