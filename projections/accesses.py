"""Accesses: every event, by patient and by user.

One row per ledger entry -- PHI reads and writes, disclosures, logins, workforce changes,
the ledger's own events -- indexed twice: by patient (who touched this patient's PHI) and
by actor (everything one workforce member or application did). The patient appears only
as the stored blind index and sealed id token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ledger.canonical import canonical
from projections.view import Change, Sql, View, insert_rows

COLUMNS: Final = (
    "ledger", "seq", "event_id", "occurred_at", "occurred_utc", "recorded_at", "action",
    "outcome", "purpose", "channel", "actor_id", "actor_kind", "actor_role",
    "actor_organization", "actor_mfa", "device_id", "ip", "session_id", "patient_ref",
    "patient_token", "key_id", "resource_type", "resource_id", "resource_phi",
    "source_system", "source_site",
)


def patient_of(event: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(ref, token, key id)`` of an event's patient as stored; without encryption at
    rest (benchmarks only) the plain id stands for both ref and token."""
    patient = event.get("patient")
    if not isinstance(patient, dict):
        return None, None, None
    ref = patient.get("ref")
    token = patient.get("id")
    if ref is None:
        return token, token, None
    return ref, token, patient.get("key")


def access_row(change: Change) -> tuple[Any, ...]:
    """The view row of one entry, in :data:`COLUMNS` order."""
    event = change.event
    actor = event["actor"]
    resource = event.get("resource") or {}
    source = event.get("source") or {}
    ref, token, key_id = patient_of(event)
    phi = resource.get("phi")
    return (
        change.ledger, change.seq, event["event_id"], event["occurred_at"],
        change.occurred_utc, change.recorded_at, event["action"], event["outcome"],
        event.get("purpose"), event.get("channel"), actor["id"], actor["kind"],
        actor.get("role"), actor.get("organization"), actor.get("mfa"),
        actor.get("device_id"), actor.get("ip"), actor.get("session_id"), ref, token, key_id,
        resource.get("type"), resource.get("id"),
        None if phi is None else canonical(phi).decode(), source.get("system"),
        source.get("site"),
    )


class AccessesView(View):
    """Every entry, one row each, findable by patient and by actor in time order."""

    name = "accesses"
    tables = ("view_accesses",)

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        insert_rows(tx, sql, "view_accesses", COLUMNS, [access_row(c) for c in changes])
