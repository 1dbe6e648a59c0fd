"""Alerts: the monitoring rules folded over the ledger, one alert per rule and entry.

For each entry, in ledger order: its PHI is reduced to keyed digests (:class:`Sight`),
the rules judge it against the state the earlier entries left
(:mod:`projections.monitoring`), and the entry is folded into that state. Alerts go to
``view_alerts``; the state to ``monitor_state`` (digests, blind indexes and counts only:
no name, date of birth or patient id in the clear). Both are views: a rebuild from the
ledger gives the same rows.

Later entries change an alert's status: a care relationship explains an open
``same_last_name``/``vip_access``/``break_glass`` alert (``explained``), and the
``alert_acknowledged``/``alert_dismissed`` entries a reviewer's triage appends set it
(see :mod:`projections.triage`).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any, Final

import orjson

from ledger.canonical import canonical
from ledger.crypto.blind_index import blind_index
from ledger.event import SYSTEM_ACTIONS
from ledger.protect import ERASED
from projections.accesses import patient_of
from projections.monitoring.rules import (
    SEVERITY,
    Entry,
    Finding,
    Staff,
    evaluate,
    ruleset_digest,
)
from projections.monitoring.state import (
    RECORD_TYPES,
    STAFF_EVENTS,
    State,
    Written,
    care_explains,
    facts_for,
    keys_for,
    observe,
)
from projections.view import Change, Sql, View, select_keyed, upsert_rows

TRIAGE_ACTIONS: Final = {"alert_acknowledged": "acknowledged", "alert_dismissed": "dismissed"}
RULES_RECORDED: Final = "monitoring_rules"
MONITORING_ACTIONS: Final = frozenset(TRIAGE_ACTIONS) | {RULES_RECORDED}
ALERT_COLUMNS: Final = (
    "ledger", "alert_id", "seq", "rule", "severity", "status", "event_id", "occurred_at",
    "occurred_utc", "actor_id", "patient_ref", "patient_token", "key_id", "explained_by",
    "details", "triaged_seq",
)
_UNSAFE_KEY: Final = b"phi-ledger/monitoring/plaintext"
_CONVENTION: Final = frozenset({"name", "dob", "vip", "shift", "patient_id"})


def alert_id(seq: int, rule: str) -> str:
    """An alert's id: the entry it was raised on and its rule (one per rule and entry)."""
    return f"{seq}-{rule}"


class Sight:
    """How monitoring sees PHI: record values opened with the patients' keys, names
    and dates of birth compared as keyed digests (the index key's), staff patient ids
    as blind indexes. ``protection`` None reads events as stored (plaintext ledgers)."""

    def __init__(self, protection: Any | None = None) -> None:
        self.protection = protection
        ring = getattr(protection, "ring", None)
        self._key: bytes = ring.index_key if ring is not None else _UNSAFE_KEY

    def digest(self, ledger: str, kind: str, value: str) -> str:
        if self._key is _UNSAFE_KEY:
            return hmac.new(_UNSAFE_KEY, f"{ledger}\0{kind}\0{value}".encode(),
                            sha256).hexdigest()[:32]
        return blind_index(self._key, ledger, f"monitoring/{kind}", value)

    def patient_ref(self, ledger: str, patient_id: str) -> str:
        if self.protection is None:
            return patient_id
        return str(self.protection.patient_ref(ledger, patient_id))

    def reveal(self, ledger: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.protection is None or not events:
            return events
        return list(self.protection.reveal_many(ledger, events))


_STAFF_ACTIONS: Final = ("staff", "role", "training")
_SUBJECT_ACTIONS: Final = (*_STAFF_ACTIONS, "baa")
_NOTHING_WRITTEN: Final = Written({})  # shared: nothing mutates a Written's fields


def _words(name: str) -> list[str]:
    return [w.strip(".,").casefold() for w in name.split() if w.strip(".,")]


def written_of(sight: Sight, ledger: str, event: dict[str, Any]) -> Written:
    """The conventions' fields of an entry's (opened) ``data``, PHI digested."""
    action, data = event["action"], event.get("data") or {}
    if not data and not action.startswith(_SUBJECT_ACTIONS):
        return _NOTHING_WRITTEN  # most entries: an access, nothing written of anyone
    out: dict[str, Any] = {}
    name = data.get("name")
    if isinstance(name, str) and (words := _words(name)):
        out["name"] = sight.digest(ledger, "name", " ".join(words))
        out["family"] = sight.digest(ledger, "family", words[-1])
    elif "name" in data and data["name"] is None:
        out["name"] = out["family"] = None
    dob = data.get("dob")
    if isinstance(dob, str) and dob != ERASED:
        out["dob"] = sight.digest(ledger, "dob", dob.strip())
    elif "dob" in data and dob is None:
        out["dob"] = None
    if "vip" in data:
        out["vip"] = data["vip"] is True
    shift = data.get("shift")
    if isinstance(shift, str):
        out["shift"] = _shift(shift)
    pid = data.get("patient_id")
    if isinstance(pid, str) and pid:
        out["patient"] = sight.patient_ref(ledger, pid)
    resource = event.get("resource") or {}
    subject = data.get("staff_id") if isinstance(data.get("staff_id"), str) else None
    partner = data.get("partner") if isinstance(data.get("partner"), str) else None
    course = data.get("course")
    return Written(
        out,
        staff_id=(subject or resource.get("id")) if action.startswith(_STAFF_ACTIONS)
        else None,
        partner=(partner or resource.get("id")) if action.startswith("baa") else None,
        hipaa=isinstance(course, str) and "hipaa" in course.casefold())


def _shift(text: str) -> list[int] | None:
    try:
        start, end = text.strip().split("-")
        values = []
        for part in (start, end):
            hours, minutes = part.split(":")
            h, m = int(hours), int(minutes)
            if not (0 <= h <= 24 and 0 <= m < 60):
                return None
            values.append((h * 60 + m) % 1440)
        return values
    except ValueError:
        return None


def entry_of(change: Change) -> Entry:
    event = change.event
    get = event.get
    actor = get("actor") or _EMPTY
    resource = get("resource") or _EMPTY
    disclosure = get("disclosure")
    action = event["action"]
    partner = encrypted = None
    if disclosure:
        encrypted = disclosure.get("encrypted")
        partner = (disclosure.get("recipient") or _EMPTY).get("partner")
    # Not a prefix of the source: a client's "phi-ledger-bridge" is judged like any other.
    system = action in SYSTEM_ACTIONS or action in MONITORING_ACTIONS or change.service_record
    actor_id, kind = actor.get("id", ""), actor.get("kind", "")
    patient = get("patient")
    return Entry(
        change.ledger, change.seq, action, event["outcome"],
        actor_id if type(actor_id) is str else str(actor_id),
        kind if type(kind) is str else str(kind),
        datetime.fromisoformat(event["occurred_at"]),
        system, actor.get("mfa"), get("purpose"), get("channel"),
        patient_of(event)[0] if patient else None, resource.get("type"), encrypted,
        partner if isinstance(partner, str) else None, change.occurred_utc)


_EMPTY: Final[dict[str, Any]] = {}  # read only: stands for an absent object


@dataclass(slots=True)
class AlertRow:
    ledger: str
    alert_id: str
    seq: int
    rule: str
    severity: str
    status: str
    event_id: str
    occurred_at: str
    occurred_utc: str
    actor_id: str
    patient_ref: str | None
    patient_token: str | None
    key_id: str | None
    explained_by: int | None
    details: str
    triaged_seq: int | None = None

    def as_row(self) -> tuple[Any, ...]:
        return (self.ledger, self.alert_id, self.seq, self.rule, self.severity, self.status,
                self.event_id, self.occurred_at, self.occurred_utc, self.actor_id,
                self.patient_ref, self.patient_token, self.key_id, self.explained_by,
                self.details, self.triaged_seq)


def _needs_opening(change: Change) -> bool:
    event = change.event
    data: Any = event.get("data")
    if event.get("subject") is not None:
        return True  # a workforce event holding its subject's sealed data (shift, name)
    return (bool(data) and event.get("patient") is not None
            and event["action"] in ("create", "update")
            and (event.get("resource") or {}).get("type") in RECORD_TYPES
            and not _CONVENTION.isdisjoint(data))


class AlertsView(View):
    """Every alert the rules raise, with its status; and the state the rules read."""

    name = "alerts"
    tables = ("view_alerts", "monitor_state")

    def __init__(self, protection: Any | None = None) -> None:
        self.sight = Sight(protection)
        self.digest = ruleset_digest()

    def apply(self, tx: Any, sql: Sql, changes: Sequence[Change]) -> None:
        by_ledger: dict[str, list[Change]] = {}
        for change in changes:
            by_ledger.setdefault(change.ledger, []).append(change)
        for ledger, mine in by_ledger.items():
            self._apply_ledger(tx, sql, ledger, mine)

    def _apply_ledger(self, tx: Any, sql: Sql, ledger: str, changes: list[Change]) -> None:
        opening = [i for i, c in enumerate(changes) if _needs_opening(c)]
        opened = self.sight.reveal(ledger, [changes[i].event for i in opening])
        events = [c.event for c in changes]
        for i, event in zip(opening, opened, strict=True):
            events[i] = event
        prepared = []
        keys: set[tuple[str, str]] = {("alerted", self.digest)}
        for change, event in zip(changes, events, strict=True):
            entry = entry_of(change)
            written = written_of(self.sight, ledger, event)
            prepared.append((change, entry, written))
            keys.update(keys_for(entry, written))
            if entry.action == RULES_RECORDED:
                keys.add(("ruleset", str((change.event.get("data") or {}).get("digest"))))
        state, before = self._load(tx, sql, ledger, keys)
        new: dict[str, AlertRow] = {}
        explained: list[tuple[str, int]] = []
        triaged: list[tuple[str, str, int]] = []
        staff_seen: dict[str, Staff | None] = {}
        for change, entry, written in prepared:
            action = entry.action
            if action == RULES_RECORDED:
                digest = (change.event.get("data") or {}).get("digest")
                if isinstance(digest, str):
                    state.setdefault(("ruleset", digest), {"seq": change.seq})
                continue
            if action in TRIAGE_ACTIONS:
                data = change.event.get("data") or {}
                if isinstance(data.get("alert_id"), str):
                    triaged.append((data["alert_id"], TRIAGE_ACTIONS[action], change.seq))
                continue
            findings = evaluate(entry, facts_for(entry, written, state, staff_seen))
            raised: list[tuple[Finding, int | None]] = []
            for finding in findings:
                by = (care_explains(state, entry)
                      if finding.rule in ("same_last_name", "vip_access", "break_glass")
                      else None)
                raised.append((finding, by))
                row = _alert(change, entry, finding, by)
                new[row.alert_id] = row
            if findings:
                # The first alert under this rule set: the service then records the set.
                state.setdefault(("alerted", self.digest), {"seq": change.seq})
            for seq, rule, by in observe(entry, written, raised, state):
                explained.append((alert_id(seq, rule), by))
            if action in STAFF_EVENTS:
                staff_seen.clear()  # the roster changed: the actors' staff facts too
        # Later entries change earlier alerts: in this batch's rows, else in the table.
        for ident, by in explained:
            if ident in new:
                if new[ident].status == "open":
                    new[ident].status, new[ident].explained_by = "explained", by
            else:
                tx.execute(sql("UPDATE view_alerts SET status = 'explained', explained_by = %s"
                               " WHERE ledger = %s AND alert_id = %s AND status = 'open'"),
                           (by, ledger, ident))
        for ident, status, seq in triaged:
            if ident in new:
                new[ident].status, new[ident].triaged_seq = status, seq
            else:
                tx.execute(sql("UPDATE view_alerts SET status = %s, triaged_seq = %s"
                               " WHERE ledger = %s AND alert_id = %s"),
                           (status, seq, ledger, ident))
        upsert_rows(tx, sql, "view_alerts", ALERT_COLUMNS, ("ledger", "alert_id"),
                    [r.as_row() for r in new.values()])
        changed = [(ledger, _key(kind, key), text.decode())
                   for (kind, key), value in state.items()
                   if before.get((kind, key)) != (text := canonical(value))]
        upsert_rows(tx, sql, "monitor_state", ("ledger", "key", "value"), ("ledger", "key"),
                    sorted(changed))

    def _load(self, tx: Any, sql: Sql, ledger: str, keys: set[tuple[str, str]],
              ) -> tuple[State, dict[tuple[str, str], bytes]]:
        """The state under ``keys``, and each row's value as stored: canonical JSON (this
        view writes nothing else), so a row whose value re-serialises to the same bytes
        is unchanged and need not be written back."""
        wanted = sorted(_key(kind, key) for kind, key in keys)
        state: State = {}
        stored: dict[tuple[str, str], bytes] = {}
        for key, value in select_keyed(tx, sql, "monitor_state", "key, value", "key", ledger,
                                       wanted):
            kind, _, rest = key.partition("\x1e")
            state[(kind, rest)] = orjson.loads(value)
            stored[(kind, rest)] = value.encode()
        return state, stored


def _key(kind: str, key: str) -> str:
    return f"{kind}\x1e{key}"


def _alert(change: Change, entry: Entry, finding: Finding, by: int | None) -> AlertRow:
    ref, token, key_id = patient_of(change.event)
    return AlertRow(
        change.ledger, alert_id(change.seq, finding.rule), change.seq, finding.rule,
        SEVERITY[finding.rule], "explained" if by is not None else "open",
        change.event["event_id"], change.event["occurred_at"], change.occurred_utc,
        entry.actor_id, ref, token, key_id, by, canonical(finding.details).decode())
