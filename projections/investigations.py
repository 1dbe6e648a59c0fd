"""Breach investigations: which entries a scope covers, who is affected, what must be told
to whom by when (45 CFR 164.402-408). Pure functions over plain rows: no I/O, no clock.

The rows are those of the ``accesses`` view (:data:`projections.accesses.COLUMNS`), PHI
still sealed; a patient is known here by its blind index (``patient_ref``) only. What the
view does not hold is passed in: whether each disclosure was sent encrypted, and each
patient's state of residence as their record stood at the same point of the ledger.

Guarantees, as the contract words them:

* an entry is in scope when ``from <= occurred_at < to`` and it matches any non-empty list
  of the scope (actor id, device id, IP, patient);
* ``affected`` holds one item per patient of a successful PHI action in scope (the
  service's own records of reads excluded: an investigator looking is not an exposure);
  ``secured`` only when every such entry is a disclosure sent encrypted;
* ``counts`` and ``duties`` are over the unsecured patients only;
* :func:`duties` is a pure function of the discovery date and the unsecured patients'
  states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import orjson

PHI_ACTIONS = frozenset(
    {"read", "create", "update", "delete", "disclose", "export", "print", "query"})
# Factor 3 of the risk assessment: was the PHI actually acquired or viewed?
ACQUIRING_ACTIONS = ("read", "export", "print", "disclose")
SECURE_CHANNELS = frozenset({"secure_sms", "encrypted_email"})
# The entries the service writes when someone reads PHI through it.
SERVICE_SYSTEM = "phi-ledger"
UNKNOWN_STATE = "unknown"
NOTICE_DAYS = 60
HHS_NOW_THRESHOLD = 500  # 164.408(b): 500 or more -> HHS at once
MEDIA_THRESHOLD = 500  # 164.406: more than 500 residents of a state -> media

OPENED = "investigation_opened"
AMENDED = "investigation_amended"
CLOSED = "investigation_closed"
INVESTIGATION_ACTIONS = frozenset({OPENED, AMENDED, CLOSED})


@dataclass(frozen=True, slots=True)
class Scope:
    """What an investigation looks at. Patients are blind indexes; times fixed-width UTC
    (``until_utc`` None: no end)."""

    actors: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    patient_refs: tuple[str, ...] = ()
    since_utc: str = ""
    until_utc: str | None = None

    def covers(self, row: Mapping[str, Any]) -> bool:
        """Whether the access row is in scope (the contract's rule, word for word)."""
        when = row["occurred_utc"]
        if when < self.since_utc or (self.until_utc is not None and when >= self.until_utc):
            return False
        return (row["actor_id"] in self.actors or row["device_id"] in self.devices
                or row["ip"] in self.ips or row["patient_ref"] in self.patient_refs)


@dataclass(slots=True)
class Affected:
    """One affected patient (by blind index), as the answer's ``affected`` item."""

    patient_ref: str
    actions: Counter[str] = field(default_factory=Counter)
    phi: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    first: str = ""
    last: str = ""
    first_utc: str = ""
    last_utc: str = ""
    secured: bool = True
    sample: Mapping[str, Any] | None = None  # a row naming the patient (to open its id)

    def item(self, patient_id: str | None, state: str | None) -> dict[str, Any]:
        return {"patient": {"id": patient_id}, "state": state or UNKNOWN_STATE,
                "actions": dict(sorted(self.actions.items())), "phi": sorted(self.phi),
                "channels": sorted(self.channels), "first": self.first, "last": self.last,
                "secured": self.secured}


def counts_as_exposure(row: Mapping[str, Any]) -> bool:
    """A successful PHI action on a patient, not one of the service's own read records."""
    return (row["action"] in PHI_ACTIONS and row["outcome"] == "success"
            and row["patient_ref"] is not None
            and not (row["action"] == "query" and row["source_system"] == SERVICE_SYSTEM))


def is_secured(row: Mapping[str, Any], encrypted: bool | None) -> bool:
    """A disclosure sent encrypted: ``disclosure.encrypted`` true or a secure channel."""
    return row["action"] == "disclose" and (encrypted is True
                                            or row["channel"] in SECURE_CHANNELS)


def affected(rows: Iterable[Mapping[str, Any]], encrypted: Mapping[int, bool | None]
             ) -> list[Affected]:
    """The affected patients of in-scope ``rows`` (any order), by first access then ref.
    ``encrypted`` maps a disclosure's seq to its ``disclosure.encrypted``."""
    found: dict[str, Affected] = {}
    for row in rows:
        if not counts_as_exposure(row):
            continue
        ref = row["patient_ref"]
        item = found.get(ref)
        if item is None:
            item = found[ref] = Affected(ref, sample=row)
        item.actions[row["action"]] += 1
        if row["resource_phi"]:
            item.phi.update(_categories(row["resource_phi"]))
        if row["channel"]:
            item.channels.add(row["channel"])
        key = row["occurred_utc"]
        if not item.first_utc or key < item.first_utc:
            item.first_utc, item.first = key, row["occurred_at"]
        if not item.last_utc or key >= item.last_utc:
            item.last_utc, item.last = key, row["occurred_at"]
        if not is_secured(row, encrypted.get(row["seq"])):
            item.secured = False
    return sorted(found.values(), key=lambda a: (a.first_utc, a.patient_ref))


@lru_cache(maxsize=4096)
def _categories(phi: str) -> tuple[str, ...]:
    # Rows repeat a handful of category lists: each is parsed once.
    return tuple(orjson.loads(phi))


def counts(patients: Sequence[Affected], states: Mapping[str, str | None]) -> dict[str, Any]:
    """``{"patients", "unsecured", "by_state"}``: by_state over the unsecured patients."""
    unsecured = [a for a in patients if not a.secured]
    by_state = Counter(states.get(a.patient_ref) or UNKNOWN_STATE for a in unsecured)
    return {"patients": len(patients), "unsecured": len(unsecured),
            "by_state": dict(sorted(by_state.items()))}


def _plus_days(day: date, days: int) -> str:
    # A deadline past the calendar (a discovery late in year 9999, which validation
    # accepts) is its last day: the query answers rather than overflowing into a 500.
    return date.fromordinal(min(day.toordinal() + days, date.max.toordinal())).isoformat()


def duties(discovered: date, unsecured_states: Sequence[str | None]) -> list[dict[str, Any]]:
    """The notification duties of 45 CFR 164.404-408 for a breach discovered on
    ``discovered`` with one state (or None: unknown) per unsecured patient."""
    count = len(unsecured_states)
    if count == 0:
        return []
    due = _plus_days(discovered, NOTICE_DAYS)
    out: list[dict[str, Any]] = [{
        "to": "individuals", "deadline": due,
        "basis": "45 CFR 164.404(b): without unreasonable delay and within 60 days of"
                 " discovery"}]
    if count >= HHS_NOW_THRESHOLD:
        out.append({"to": "hhs", "deadline": due,
                    "basis": "45 CFR 164.408(b): 500 or more individuals, contemporaneously"
                             " with the notice to individuals"})
    else:
        out.append({"to": "hhs",
                    "deadline": _plus_days(date(discovered.year, 12, 31), NOTICE_DAYS),
                    "basis": "45 CFR 164.408(c): fewer than 500 individuals, in the annual"
                             " log within 60 days after the end of the calendar year"})
    residents = Counter(s for s in unsecured_states if s and s != UNKNOWN_STATE)
    states = sorted(s for s, n in residents.items() if n > MEDIA_THRESHOLD)
    if states:
        out.append({"to": "media", "deadline": due, "states": states,
                    "basis": "45 CFR 164.406: more than 500 residents of a State or"
                             " jurisdiction"})
    return out


def acquired_or_viewed(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Factor 3 of 164.402(2), pre-filled: was any PHI in scope read, exported, printed or
    disclosed (successfully)?"""
    seen = Counter(r["action"] for r in rows
                   if r["action"] in ACQUIRING_ACTIONS and r["outcome"] == "success"
                   and r["patient_ref"] is not None)
    return {"acquired_or_viewed": bool(seen),
            "entries": {a: seen.get(a, 0) for a in ACQUIRING_ACTIONS}}


# -- a patient's state of residence, from their record ---------------------------------

STATE_FIELDS = ("state", "address.state")


def fold_state(state: str | None, action: str, outcome: str, data: Mapping[str, Any] | None,
               *, shredded: bool = False) -> str | None:
    """The state of residence after one record event (as :mod:`projections.patients`
    folds records: ``create`` starts afresh, ``update`` merges, null removes; ``delete``
    hides the record but the last known state stays, which is what a notice needs)."""
    if shredded:
        return None
    if outcome != "success" or action not in ("create", "update"):
        return state
    data = data or {}
    if action == "create":
        state = None
    for name in STATE_FIELDS:
        if name in data:
            value = data[name]
            state = value if _is_state(value) else None
    return state


def _is_state(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 2 and value.isascii() and value.isupper()


# -- the investigation itself, folded from its entries -----------------------------------

SCOPE_KEYS = ("actors", "devices", "ips", "patients", "from", "to")


def fold_investigation(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """An investigation as the API shows it, from its ledger entries (exported form:
    ``{"seq", "recorded_at", "event"}``) in seq order; None when none opened it.

    ``scope.patients`` holds blind indexes: the ledger never keeps a scope's patient ids
    in clear."""
    record: dict[str, Any] | None = None
    for entry in entries:
        event = entry["event"]
        data = event.get("data") or {}
        action = event["action"]
        if action == OPENED:
            record = {
                "investigation_id": event["resource"]["id"], "title": data.get("title"),
                "discovered_at": data.get("discovered_at"),
                "scope": {k: data.get(f"scope.{k}") for k in SCOPE_KEYS},
                "status": "open", "opened_at": event["occurred_at"],
                "opened_by": event["actor"]["id"], "notes": [], "closed": None,
                "seqs": [],
            }
        if record is None:
            continue
        record["seqs"].append(entry["seq"])
        if action == AMENDED:
            for key in SCOPE_KEYS:
                if f"scope.{key}" in data:
                    record["scope"][key] = data[f"scope.{key}"]
        if data.get("note"):
            record["notes"].append({"at": event["occurred_at"], "by": event["actor"]["id"],
                                    "note": data["note"]})
        if action == CLOSED:
            record["status"] = "closed"
            record["closed"] = {
                "at": event["occurred_at"], "by": event["actor"]["id"],
                "outcome": data.get("outcome"),
                "risk_assessment": {k.removeprefix("risk."): v for k, v in data.items()
                                    if k.startswith("risk.")},
            }
    return record


def scope_of(record: Mapping[str, Any], since_utc: str, until_utc: str | None) -> Scope:
    """The :class:`Scope` of a folded investigation (its bounds already in UTC)."""
    s = record["scope"]
    return Scope(tuple(s.get("actors") or ()), tuple(s.get("devices") or ()),
                 tuple(s.get("ips") or ()), tuple(s.get("patients") or ()), since_utc,
                 until_utc)
