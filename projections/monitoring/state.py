"""The monitoring state: what the rules need to know of the ledger before an entry.

Pure: a :data:`State` is a mapping of ``(kind, key)`` to a small JSON-able dict, and
:func:`facts_for` reads it for one entry while :func:`observe` folds the entry into it.
The view (:mod:`projections.alerts`) loads the keys a batch needs (:func:`keys_for`),
folds, and writes back the ones that changed. Nothing here holds PHI in the clear:
names and dates of birth are keyed digests (:class:`Written`), patients blind indexes.

Kinds: ``roster`` (whether any ``staff_added`` was seen), ``staff`` (by staff id),
``patient`` (by blind index), ``partner`` (BAA spans), ``care`` and ``pending`` (by user
and patient: care relationships, and alerts a later one may explain), ``day`` (distinct
patients per local day), ``export`` (the last hour of exports), ``failed`` (failed logins).
Lists are capped: the rules look back at most 14 days, and a user's last few dozen
events in each list say all the windows need. Care lists also drop what lies more than
ten days behind their newest (:data:`CARE_KEPT`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from projections.monitoring.rules import (
    BREAK_GLASS_AFTER,
    CARE_BEFORE,
    EXPLAINABLE,
    EXPORT_WINDOW,
    PHI_ACTIONS,
    VOLUME_FLOOR,
    Entry,
    Facts,
    Finding,
    Record,
    Staff,
    within,
)

State = MutableMapping[tuple[str, str], dict[str, Any]]

STAFF_EVENTS: Final = frozenset({"staff_added", "staff_removed", "role_changed",
                                  "training_completed"})
BAA_EVENTS: Final = frozenset({"baa_signed", "baa_ended"})
RECORD_TYPES: Final = (None, "patient")
CARE_TYPES: Final = ("call", "message")
CAP_CARE: Final = 32
# Care relationships kept behind a pair's newest: the 72 hours that can explain, and a week
# more for entries posted late (an entry's care window ends at its own time, which a late
# entry has before the newest care). Only the last hours are ever read in order; a pair
# whose list held a few dozen entries of years back cost every batch their parsing.
CARE_KEPT: Final = CARE_BEFORE + timedelta(days=7)
CAP_PENDING: Final = 32
CAP_FAILED: Final = 20
CAP_TRAININGS: Final = 8
DAYS_KEPT: Final = 20
DAY_SETS_KEPT: Final = 3


@dataclass(frozen=True, slots=True)
class Written:
    """What an entry's ``data`` says in the conventions' terms, PHI already digested:
    for each of ``family``, ``name``, ``dob``, ``patient``, ``vip``, ``shift`` a value, or
    None to clear it; absent fields are untouched. Plus the subject of a workforce event
    (``staff_id`` / ``partner``) and whether a training counts as HIPAA training."""

    fields: dict[str, Any] = field(default_factory=dict)
    staff_id: str | None = None
    partner: str | None = None
    hipaa: bool = False


def pair(actor: str, patient: str) -> str:
    return f"{actor}\x1f{patient}"


def keys_for(entry: Entry, written: Written) -> list[tuple[str, str]]:
    """The state keys :func:`facts_for` and :func:`observe` read or write for ``entry``
    (a list: the caller gathers a batch's into one set)."""
    actor = entry.actor_id
    keys = [("roster", ""), ("staff", actor), ("day", actor), ("export", actor),
            ("failed", actor)]
    if written.staff_id:
        keys.append(("staff", written.staff_id))
    if written.partner:
        keys.append(("partner", written.partner))
    if entry.partner:
        keys.append(("partner", entry.partner))
    if entry.patient:
        both = pair(actor, entry.patient)
        keys += (("patient", entry.patient), ("care", both), ("pending", both))
    return keys


@lru_cache(maxsize=65_536)
def _time(text: str) -> datetime:
    # The state's times are read again for every later entry of the same user (trainings,
    # care, exports, failed logins): parsed once each. Datetimes are immutable.
    return datetime.fromisoformat(text)


def _staff(value: dict[str, Any] | None) -> Staff | None:
    if not value:
        return None
    shift = value.get("shift")
    return Staff(added=value.get("added", False), removed=value.get("removed", False),
                 trainings=tuple(_time(t) for t in value.get("train", ())),
                 shift=(shift[0], shift[1]) if shift else None,
                 family=value.get("family"), name=value.get("name"), dob=value.get("dob"),
                 patient=value.get("patient"))


def _in_force(spans: list[list[Any]], at: datetime) -> bool:
    return any(_time(s) <= at and (e is None or at < _time(e)) for s, e in spans)


def facts_for(entry: Entry, written: Written, state: State,
              staff_seen: dict[str, Staff | None] | None = None) -> Facts:
    """What the ledger said before ``entry``, with this entry's own counts (distinct
    patients today, in the export hour) included where a rule counts it.

    ``staff_seen`` caches the actors' :class:`Staff` across the entries of a batch; the
    caller empties it whenever a staff event changes the state (:data:`STAFF_EVENTS`)."""
    actor = entry.actor_id
    record_value = state.get(("patient", entry.patient)) if entry.patient else None
    record = Record(record_value.get("family"), record_value.get("name"),
                    record_value.get("dob"), bool(record_value.get("vip"))
                    ) if record_value else None
    baa = None
    if entry.partner:
        spans = (state.get(("partner", entry.partner)) or {}).get("spans", [])
        baa = _in_force(spans, entry.at)
    facts: dict[str, Any] = {}
    phi = entry.phi
    if phi:
        # Only the rules on a user's access to PHI read the roster and the actor's staff
        # facts (see rules.RULES_BY_ACTION): built for those entries alone.
        if staff_seen is None:
            staff = _staff(state.get(("staff", actor)))
        elif actor in staff_seen:
            staff = staff_seen[actor]
        else:
            staff = staff_seen[actor] = _staff(state.get(("staff", actor)))
        facts.update(roster=bool(state.get(("roster", ""))), staff=staff)
    if phi and entry.patient is not None:
        day = (state.get(("day", actor)) or {})
        today = entry.day
        seen = day.get("sets", {}).get(today, [])
        new = entry.patient not in seen
        day_patients = len(seen) + (1 if new else 0)
        day_fired = today in day.get("fired", [])
        # The earlier days matter only to a day that may be a spike: one past the floor
        # every threshold is at least, on a new patient, not yet flagged.
        counts = (day.get("counts", {})
                  if new and not day_fired and day_patients > VOLUME_FLOOR else {})
        facts.update(day_counts=counts, day_new_patient=new, day_patients=day_patients,
                     day_fired=day_fired)
        if entry.action in ("export", "print"):
            window = _export_window(state.get(("export", actor)) or {}, entry.at)
            patients = {ref for _, ref in window}
            new = entry.patient not in patients
            fired = (state.get(("export", actor)) or {}).get("fired")
            facts.update(export_new_patient=new,
                         export_patients=len(patients) + (1 if new else 0),
                         export_fired_in_window=bool(
                             fired and within(entry.at, _time(fired), EXPORT_WINDOW)))
    if entry.action == "login":
        facts["failures"] = tuple(
            _time(t) for t in (state.get(("failed", actor)) or {}).get("at", ()))
    return Facts(record=record, baa_in_force=baa, **facts)


def _export_window(value: dict[str, Any], at: datetime) -> list[tuple[str, str]]:
    return [(t, ref) for t, ref in value.get("w", ())
            if within(at, _time(t), EXPORT_WINDOW)]


def care_explains(state: State, entry: Entry) -> int | None:
    """The seq of the newest care relationship of ``entry``'s user with its patient in
    the 72 hours before it (None when there is none)."""
    if not entry.patient:
        return None
    best: tuple[str, int] | None = None
    for t, seq in (state.get(("care", pair(entry.actor_id, entry.patient))) or {}).get("at", ()):
        if within(entry.at, _time(t), CARE_BEFORE) and (best is None or seq > best[1]):
            best = (t, seq)
    return None if best is None else best[1]


def is_care(entry: Entry) -> bool:
    """Whether ``entry`` makes a care relationship between its user and patient."""
    if entry.outcome != "success" or entry.patient is None or entry.actor_kind != "user":
        return False
    if entry.action == "update":
        return entry.resource_type in RECORD_TYPES
    if entry.action == "create":
        return entry.resource_type in RECORD_TYPES or entry.resource_type in CARE_TYPES
    return False


def _capped(items: list[Any], cap: int) -> list[Any]:
    return sorted(items)[-cap:]


def _recent(items: list[list[Any]], kept: timedelta) -> list[list[Any]]:
    """``items`` (sorted ``[utc text, ...]`` lists) less those more than ``kept`` before
    the newest; all of them where that bound falls before year 1."""
    try:
        # In the form of utc text (projections.instants.format_utc): the newest is UTC.
        floor = (_time(items[-1][0]) - kept).isoformat(timespec="microseconds")[:-6] + "Z"
    except OverflowError:
        return items
    return [item for item in items if item[0] >= floor]


def observe(entry: Entry, written: Written, raised: list[tuple[Finding, int | None]],
            state: State) -> list[tuple[int, str, int]]:
    """Fold ``entry`` (and the alerts ``raised`` on it, each with the seq that explained
    it or None) into ``state``. Returns the earlier open alerts this entry explains:
    ``(alert seq, rule, explaining seq)``."""
    actor, at = entry.actor_id, entry.at
    utc = entry.utc
    explained: list[tuple[int, str, int]] = []
    if entry.outcome == "success" and not entry.system:
        _fold_workforce(entry, written, state, utc)
        if entry.patient and entry.action in ("create", "update", "delete") and \
                entry.resource_type in RECORD_TYPES:
            _fold_record(entry, written, state)
    if entry.action == "login_failed":
        value = state.setdefault(("failed", actor), {})
        value["at"] = _capped([*value.get("at", []), utc], CAP_FAILED)
    if entry.patient and not entry.system:
        key = pair(actor, entry.patient)
        pending_value = state.get(("pending", key)) or {}
        pending = [p for p in pending_value.get("alerts", [])]
        # Written back only when this entry changed the list: stored lists are capped
        # and sorted already.
        changed = False
        if is_care(entry):
            changed = True
            care = state.setdefault(("care", key), {})
            care["at"] = _recent(_capped([*care.get("at", []), [utc, entry.seq]], CAP_CARE),
                                 CARE_KEPT)
            still = []
            for alert_seq, rule, alert_at in pending:
                when = _time(alert_at)
                after = BREAK_GLASS_AFTER if rule == "break_glass" else timedelta(0)
                if -CARE_BEFORE <= at - when <= after:
                    explained.append((alert_seq, rule, entry.seq))
                else:
                    still.append([alert_seq, rule, alert_at])
            pending = still
        for finding, by in raised:
            if finding.rule in EXPLAINABLE and by is None:
                pending.append([entry.seq, finding.rule, utc])
                changed = True
        if changed and (pending or ("pending", key) in state):
            state[("pending", key)] = {"alerts": _capped(pending, CAP_PENDING)}
        if entry.actor_kind == "user" and entry.action in PHI_ACTIONS and \
                entry.outcome == "success":
            _fold_counts(entry, raised, state, utc)
    return explained


def _fold_counts(entry: Entry, raised: list[tuple[Finding, int | None]], state: State,
                 utc: str) -> None:
    actor, patient = entry.actor_id, entry.patient
    assert patient is not None
    rules = {f.rule for f, _ in raised}
    day = state.setdefault(("day", entry.actor_id), {})
    today = entry.day
    sets = day.setdefault("sets", {})
    seen = sets.setdefault(today, [])
    if patient not in seen:
        seen.append(patient)
        counts = day.setdefault("counts", {})
        if today in counts:
            counts[today] += 1  # no new day: the kept days stay as they were trimmed
        else:
            counts[today] = 1
            day["counts"] = dict(sorted(counts.items())[-DAYS_KEPT:])
        if len(sets) > DAY_SETS_KEPT:
            day["sets"] = dict(sorted(sets.items())[-DAY_SETS_KEPT:])
    if "volume_spike" in rules:
        day["fired"] = _capped([*day.get("fired", []), today], DAY_SETS_KEPT)
    if entry.action in ("export", "print"):
        value = state.setdefault(("export", actor), {})
        window = _export_window(value, entry.at)
        value["w"] = [list(x) for x in sorted([*window, (utc, patient)])]
        if "bulk_export" in rules:
            value["fired"] = utc


def _fold_workforce(entry: Entry, written: Written, state: State, utc: str) -> None:
    action = entry.action
    if action in STAFF_EVENTS and written.staff_id:
        staff = state.setdefault(("staff", written.staff_id), {})
        if action == "staff_added":
            staff["added"], staff["removed"] = True, False
            state[("roster", "")] = {"any": True}
        elif action == "staff_removed":
            staff["removed"] = True
        elif action == "training_completed" and written.hipaa:
            staff["train"] = _capped([*staff.get("train", []), utc], CAP_TRAININGS)
        if action in ("staff_added", "role_changed"):
            for name in ("family", "name", "dob", "patient", "shift"):
                if name in written.fields:
                    staff[name] = written.fields[name]
    if action in BAA_EVENTS and written.partner:
        value = state.setdefault(("partner", written.partner), {})
        spans = value.setdefault("spans", [])
        if action == "baa_signed":
            spans.append([utc, None])
        else:
            for span in spans:
                if span[1] is None and span[0] <= utc:
                    span[1] = utc
        value["spans"] = sorted(spans, key=lambda s: s[0])[-16:]


def _fold_record(entry: Entry, written: Written, state: State) -> None:
    key = ("patient", entry.patient or "")
    if entry.action == "delete":
        return  # a deleted record keeps what it said: accesses to it still concern it
    record = state.setdefault(key, {})
    if entry.action == "create" and record.get("deleted"):
        record.clear()
    for name in ("family", "name", "dob", "vip"):
        if name in written.fields:
            record[name] = written.fields[name]
