"""The views are a fold of the ledger: a model-based check against a brute-force oracle.

Hypothesis generates small random workloads -- three patients, a handful of actors (users,
applications, a patient), every PHI action with every outcome, ``create``/``update`` whose
``data`` sets and removes (null) fields, deletes and revivals, disclosures for many
purposes to every kind of recipient with and without an authorization (some before the
Privacy Rule's compliance date), logins, every workforce and business-associate action,
two ledgers, and now and then a crypto-shred (``ledger.shredding.shred_patient``).
They go in through the real ingest path (``build_services`` + ``Ingest.record_sync``, so
PHI is sealed at rest exactly as in production) and the projector catches up.

The oracle here reads the ledger back as ``phi-ledger export`` gives it (``store.stream``:
the stored bytes, parsed with ``json``) and recomputes every view table from those entries
with code written from the rules in the views' docstrings and 45 CFR 164.528 -- none of the
views' own fold, row or exemption functions is used. Every table is then compared row for
row with what the projector wrote. A second, plaintext model follows the *posted* events
(no ledger, no keys) and checks the patient record as the API opens it.

The second property: projecting incrementally -- random batch sizes, steps interleaved
with appends, single views rebuilt midway so views stand at different positions -- gives
tables equal, row for row, to one ``rebuild`` and to the oracle.

Each property runs on SQLite and PostgreSQL (``database_url``); one database serves all of
a property's examples, each example writing to ledgers of its own.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from api.access_reports import AccessReports
from api.services import Services
from ledger.clock import utc_now
from ledger.shredding import shred_patient
from ledger.store import LedgerStore
from projections.runner import Projector
from tests.support import envelope_of

ERASED = "[erased]"
EXAMPLES = 25
HYPOTHESIS = hsettings(
    max_examples=EXAMPLES, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)

# -- the world the workloads are drawn from -------------------------------------------

PATIENTS = ("MRN-4100001", "MRN-4100002", "MRN-4100003")
ACTORS: tuple[dict[str, Any], ...] = (
    {"id": "agent-0007", "kind": "user", "role": "call_agent", "organization": "Northside",
     "mfa": True, "device_id": "ws-1", "ip": "198.51.100.7", "session_id": "s-1"},
    {"id": "agent-0008", "kind": "user", "role": "supervisor", "mfa": False,
     "ip": "2001:db8::7"},
    {"id": "ehr-bridge", "kind": "application"},
    {"id": "dr-rivera", "kind": "user", "role": None, "organization": None, "mfa": None,
     "device_id": None, "ip": None, "session_id": None},
    {"id": "pt-portal-11", "kind": "patient", "mfa": True},
)
PHI_ACTIONS = ("create", "update", "update", "update", "delete", "read", "disclose",
               "disclose", "export", "print", "query")
OUTCOMES = ("success",) * 6 + ("failure", "denied")
# Purposes a disclosure is made for, and how 164.528 treats each (written out here, not
# taken from the product): T/P/O is exempt (a)(1)(i); FAMRQT/SUPNWK/DISASTER are 164.510
# disclosures to persons involved in care (a)(1)(v); the rest must be accounted for
# unless another exemption applies.
TPO_PURPOSES = {"TREAT", "ETREAT", "COC", "HPAYMT", "COVERAGE", "HOPERAT", "HQUALIMP"}
CARE_PURPOSES = {"FAMRQT", "SUPNWK", "DISASTER"}
OTHER_PURPOSES = {"PUBHLTH", "LEGAL", "HRESCH", "PATRQT", "PWATRNY", "THREAT", "GOV",
                  "HMARKT", "DONAT", "HDECD"}
PURPOSES = sorted(TPO_PURPOSES | CARE_PURPOSES | OTHER_PURPOSES)
RECIPIENT_KINDS = ("provider", "health_plan", "patient", "personal_representative", "family",
                   "public_health", "law_enforcement", "court", "researcher", "other")
RECIPIENTS = ("Dr. A. Rivera", "County Health Dept", "Acme Health Plan", "J. Doe (sister)")
CHANNELS = ("ehr", "phone", "secure_sms", "fax", "encrypted_email", "portal")
STAFF_ACTIONS = ("staff_added", "staff_removed", "role_changed", "training_completed",
                 "mfa_enrolled")
PARTNER_ACTIONS = ("baa_signed", "baa_ended")
STAFF = ("agent-0007", "agent-0008", "agent-0099")
PARTNERS = ("qa-vendor", "shred-co")
FIELDS = ("name", "phone", "dob", "allergies", "flag")
OFFSETS = ("Z", "+00:00", "-05:00", "+05:30", "-09:30", "+14:00")


def _record_values() -> st.SearchStrategy[Any]:
    text = st.text(alphabet="abcdefghij XYZ-0123456789", min_size=1, max_size=12)
    return st.one_of(
        text, st.integers(-(2**53) + 1, 2**53 - 1), st.booleans(),
        st.lists(st.one_of(text, st.integers(0, 99), st.booleans(), st.none()), max_size=3),
    )


@st.composite
def moments(draw: st.DrawFn) -> str:
    """An RFC 3339 time with any offset and 0-9 fraction digits; a few before 2003-04-14."""
    if draw(st.integers(0, 9)) == 0:
        base = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(
            seconds=draw(st.integers(0, 3 * 365 * 86400)))
    else:
        base = datetime(2026, 11, 26, tzinfo=UTC) + timedelta(
            seconds=draw(st.integers(-86400 * 3, 86400 * 3)))
    offset = draw(st.sampled_from(OFFSETS))
    if offset == "Z":
        local = base.astimezone(UTC)
    else:
        sign = 1 if offset[0] == "+" else -1
        local = base.astimezone(timezone(sign * timedelta(hours=int(offset[1:3]),
                                                         minutes=int(offset[4:6]))))
    digits = draw(st.sampled_from((0, 1, 3, 6, 9)))
    fraction = "" if digits == 0 else "." + "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits)))
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset


def _maybe(draw: st.DrawFn, value: Any) -> Any:
    return value if draw(st.booleans()) else None


@st.composite
def phi_event(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(PHI_ACTIONS))
    event: dict[str, Any] = {
        "occurred_at": draw(moments()),
        "action": action,
        "outcome": draw(st.sampled_from(OUTCOMES)),
        "actor": dict(draw(st.sampled_from(ACTORS))),
        "patient": {"id": draw(st.sampled_from(PATIENTS))},
        "purpose": draw(st.sampled_from(PURPOSES)),
        "channel": draw(st.sampled_from(CHANNELS)),
    }
    if draw(st.booleans()):
        event["resource"] = {"type": draw(st.sampled_from(("patient", "message", "chart"))),
                             "id": _maybe(draw, f"r-{draw(st.integers(1, 9))}"),
                             "phi": _maybe(draw, draw(st.lists(
                                 st.sampled_from(FIELDS), max_size=3, unique=True)))}
    else:
        event["resource"] = None
    if draw(st.booleans()):
        event["source"] = {"system": "answer-desk", "site": _maybe(draw, "Northside")}
    if action in ("create", "update"):
        data = draw(st.dictionaries(st.sampled_from(FIELDS),
                                    st.one_of(st.none(), _record_values()), max_size=4))
        event["data"] = data if bool(data) or draw(st.booleans()) else None
    if action == "disclose":
        recipient: dict[str, Any] = {"name": draw(st.sampled_from(RECIPIENTS)),
                                     "kind": draw(st.sampled_from(RECIPIENT_KINDS))}
        if draw(st.booleans()):
            recipient["address"] = draw(st.sampled_from(("pager 4471", "1 Main St")))
        disclosure: dict[str, Any] = {
            "recipient": recipient,
            "description": draw(st.sampled_from(("callback and symptoms", "lab results",
                                                 "full chart"))),
            "encrypted": _maybe(draw, draw(st.booleans())),
        }
        if draw(st.integers(0, 3)) == 0:
            disclosure["authorization_id"] = f"auth-{draw(st.integers(1, 3))}"
        event["disclosure"] = disclosure
    return event


@st.composite
def workforce_event(draw: st.DrawFn) -> dict[str, Any]:
    partner = draw(st.booleans())
    action = draw(st.sampled_from(PARTNER_ACTIONS if partner else STAFF_ACTIONS))
    subject = draw(st.sampled_from(PARTNERS if partner else STAFF))
    keys = (("partner", "service", "agreement_id") if partner
            else ("staff_id", "role", "site", "reason", "to_role", "course", "method"))
    data: dict[str, Any] = {}
    by_resource = draw(st.booleans())
    for key in keys:
        if key in ("partner", "staff_id"):
            if not by_resource:
                data[key] = subject
            continue
        choice = draw(st.integers(0, 5))
        if choice in (1, 4):
            data[key] = draw(st.sampled_from(("supervisor", "night", "HIPAA-101", "totp",
                                              "QA sampling", "agr-7")))
        elif choice == 2:
            data[key] = None
        elif choice == 3:
            data[key] = draw(st.sampled_from((0, "")))  # not text: must be ignored
    return {
        "occurred_at": draw(moments()),
        "action": action,
        "outcome": draw(st.sampled_from(OUTCOMES)),
        "actor": {"id": draw(st.sampled_from(("hr-1", "privacy-officer"))), "kind": "user",
                  "role": "hr"},
        "resource": {"type": "partner" if partner else "staff",
                     "id": subject if by_resource else draw(st.sampled_from(
                         (None, "someone-else")))},
        "data": data or None,
    }


@st.composite
def auth_event(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "occurred_at": draw(moments()),
        "action": draw(st.sampled_from(("login", "logout", "login_failed"))),
        "outcome": draw(st.sampled_from(OUTCOMES)),
        "actor": dict(draw(st.sampled_from(ACTORS))),
        "channel": _maybe(draw, "portal"),
    }


LEDGER_SLOTS = (0, 0, 0, 1)  # most events go to the first of the example's two ledgers

ops = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(LEDGER_SLOTS), phi_event()),
    st.tuples(st.just("event"), st.sampled_from(LEDGER_SLOTS), phi_event()),
    st.tuples(st.just("event"), st.sampled_from(LEDGER_SLOTS), phi_event()),
    st.tuples(st.just("event"), st.sampled_from(LEDGER_SLOTS), phi_event()),
    st.tuples(st.just("event"), st.sampled_from(LEDGER_SLOTS), workforce_event()),
    st.tuples(st.just("event"), st.sampled_from(LEDGER_SLOTS), workforce_event()),
    st.tuples(st.just("event"), st.sampled_from(LEDGER_SLOTS), auth_event()),
    st.tuples(st.just("flush"), st.just(0), st.just(None)),
    st.tuples(st.just("shred"), st.sampled_from(LEDGER_SLOTS), st.sampled_from(PATIENTS)),
)
workloads = st.lists(ops, min_size=20, max_size=70)
# Incremental projection: a step of a projector with batch size k, n times; or one view
# rebuilt on its own (so the views stand at different positions afterwards).
VIEW_NAMES = ("patients", "accesses", "disclosures", "workforce")
projection_ops = st.one_of(
    st.tuples(st.just("step"), st.integers(1, 12), st.integers(1, 4)),
    st.tuples(st.just("rebuild"), st.sampled_from(VIEW_NAMES), st.just(0)),
)


# -- driving the product ----------------------------------------------------------------

_ledger_numbers = itertools.count(1)


def fresh_ledgers() -> tuple[str, str]:
    n = next(_ledger_numbers)
    tag = uuid.uuid4().hex[:6]
    return f"m{n}-{tag}-a", f"m{n}-{tag}-b"


@dataclass
class Driver:
    """Posts a workload through the real ingest path and keeps the plaintext model."""

    svc: Services
    ledgers: tuple[str, str]
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    posted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    shredded: list[tuple[str, str]] = field(default_factory=list)

    def event(self, slot: int, body: dict[str, Any]) -> None:
        event = {"event_id": str(uuid.uuid4()), **body}
        self.pending.append((self.ledgers[slot], event))

    def flush(self) -> None:
        for ledger, group in itertools.groupby(self.pending, key=lambda p: p[0]):
            events = [e for _, e in group]
            accepted = self.svc.ingest.record_sync(ledger, events, batch=True)
            assert len(accepted.receipts) == len(events)
            self.posted.setdefault(ledger, []).extend(events)
        self.pending = []

    def shred(self, slot: int, mrn: str) -> None:
        self.flush()
        ledger = self.ledgers[slot]
        shred_patient(self.svc.store, envelope_of(self.svc), ledger, mrn, actor="privacy-1",
                      reason="REQ-1", clock=utc_now)
        self.posted.setdefault(ledger, []).append({"action": "patient_shredded", "mrn": mrn})

    def run(self, op: tuple[str, Any, Any]) -> None:
        kind, slot, body = op
        if kind == "event":
            self.event(slot, body)
        elif kind == "flush":
            self.flush()
        else:
            self.shred(slot, body)


# -- reading the tables back --------------------------------------------------------------

BOOLEAN_COLUMNS = {"actor_mfa", "deleted", "shredded", "active", "baa_active"}
TABLES: dict[str, tuple[str, ...]] = {
    "view_patients": ("ledger", "patient_ref"),
    "view_accesses": ("ledger", "seq"),
    "view_disclosures": ("ledger", "seq"),
    "view_workforce": ("ledger", "staff_id"),
    "view_partners": ("ledger", "partner"),
}


def _normal(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in BOOLEAN_COLUMNS:
        assert value in (0, 1, True, False), (column, value)
        return bool(value)
    if column == "record":
        return json.loads(value)
    return value


def snapshot(store: LedgerStore, ledgers: tuple[str, ...] | None = None
             ) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every row of every view table (of ``ledgers``, or all), keyed by primary key, with
    booleans and the record JSON normalised (SQLite keeps booleans as integers)."""
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    with store.reading() as curs:
        for table, keys in TABLES.items():
            statement = f"SELECT * FROM {table}"
            params: list[Any] = []
            if ledgers is not None:
                statement += f" WHERE ledger IN ({', '.join(['%s'] * len(ledgers))})"
                params = list(ledgers)
            curs.execute(store.sql(statement), params)
            names = [d[0] for d in curs.description]
            rows: dict[tuple[Any, ...], dict[str, Any]] = {}
            for raw in curs.fetchall():
                row = {c: _normal(c, v) for c, v in zip(names, raw, strict=True)}
                key = tuple(row[k] for k in keys)
                assert key not in rows, f"{table}: two rows for {key}"
                rows[key] = row
            out[table] = rows
    return out


def assert_tables_equal(actual: dict[str, Any], expected: dict[str, Any], what: str,
                        tables: tuple[str, ...] = tuple(TABLES)) -> None:
    for table in tables:
        got, want = actual[table], expected[table]
        missing = sorted(set(want) - set(got), key=repr)[:3]
        extra = sorted(set(got) - set(want), key=repr)[:3]
        assert not missing and not extra, (
            f"{what}: {table} rows missing {missing}, unexpected {extra}")
        for key, row in want.items():
            assert got[key] == row, f"{what}: {table} row {key}:\n got  {got[key]}\n want {row}"


def entries_of(store: LedgerStore, ledger: str) -> list[dict[str, Any]]:
    """The ledger as ``phi-ledger export`` writes it: stored bytes, one JSON entry each."""
    entries = [json.loads(raw) for _, raw in store.stream(ledger)]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    return entries


# -- the oracle: every view table from the exported entries ---------------------------------

_MOMENT = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|([+-])(\d\d):(\d\d))$")
COMPLIANCE = datetime(2003, 4, 14, tzinfo=UTC)


def utc_text(moment: str) -> str:
    """``moment`` as UTC with exactly six fraction digits (extra digits cut, not rounded)."""
    m = _MOMENT.match(moment)
    assert m, moment
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micros = int((m.group(7) or "").ljust(6, "0")[:6])
    if m.group(8) == "Z":
        tz = UTC
    else:
        sign = 1 if m.group(9) == "+" else -1
        tz = timezone(sign * timedelta(hours=int(m.group(10)), minutes=int(m.group(11))))
    at = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz).astimezone(UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond:06d}Z"


def stored_patient(event: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(ref, id token, key id) of a stored event's patient."""
    patient = event.get("patient")
    if not patient:
        return None, None, None
    return patient["ref"], patient.get("id"), patient.get("key")


def exemption_of(event: dict[str, Any]) -> str | None:
    """45 CFR 164.528(a)(1), judged from one stored ``disclose`` event."""
    disclosure = event["disclosure"]
    if event["outcome"] != "success":
        return "not_made"
    at = datetime.fromisoformat(utc_text(event["occurred_at"]).replace("Z", "+00:00"))
    if at < COMPLIANCE:
        return "before_compliance"
    kind = disclosure["recipient"]["kind"]
    if kind in ("patient", "personal_representative"):
        return "to_individual"
    if disclosure.get("authorization_id"):
        return "authorized"
    if event.get("purpose") in TPO_PURPOSES:
        return "tpo"
    if event.get("purpose") in CARE_PURPOSES or (
            kind == "family" and event.get("purpose") in ("PWATRNY", "PATRQT")):
        return "involved_in_care"
    return None


def _text(value: Any) -> str | None:
    """A ``data`` value that is text ("" included; an empty one never wins an ``or``)."""
    return value if isinstance(value, str) else None


def oracle(store: LedgerStore, ledgers: tuple[str, ...], upto: dict[str, int] | None = None,
           read: dict[str, list[dict[str, Any]]] | None = None,
           ) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every view table from the ledgers' entries (those up to seq ``upto[ledger]``;
    ``read``: the entries already read with :func:`entries_of`)."""
    tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in TABLES}
    for ledger in ledgers:
        for entry in read[ledger] if read else entries_of(store, ledger):
            if upto is not None and entry["seq"] > upto[ledger]:
                break
            seq, event = entry["seq"], entry["event"]
            action, ok = event["action"], event["outcome"] == "success"
            ref, token, key = stored_patient(event)
            when = utc_text(event["occurred_at"])
            actor = event["actor"]
            resource = event.get("resource") or {}
            source = event.get("source") or {}
            phi = resource.get("phi")
            tables["view_accesses"][(ledger, seq)] = {
                "ledger": ledger, "seq": seq, "event_id": event["event_id"],
                "occurred_at": event["occurred_at"], "occurred_utc": when,
                "recorded_at": entry["recorded_at"], "action": action,
                "outcome": event["outcome"], "purpose": event.get("purpose"),
                "channel": event.get("channel"), "actor_id": actor["id"],
                "actor_kind": actor["kind"], "actor_role": actor.get("role"),
                "actor_organization": actor.get("organization"), "actor_mfa": actor.get("mfa"),
                "device_id": actor.get("device_id"), "ip": actor.get("ip"),
                "session_id": actor.get("session_id"), "patient_ref": ref,
                "patient_token": token, "key_id": key,
                "resource_type": resource.get("type"), "resource_id": resource.get("id"),
                "resource_phi": None if phi is None else json.dumps(phi, separators=(",", ":")),
                "source_system": source.get("system"), "source_site": source.get("site"),
            }
            if action == "disclose":
                d = event["disclosure"]
                tables["view_disclosures"][(ledger, seq)] = {
                    "ledger": ledger, "seq": seq, "event_id": event["event_id"],
                    "occurred_at": event["occurred_at"], "occurred_utc": when,
                    "outcome": event["outcome"], "patient_ref": ref, "key_id": key,
                    "recipient_name": d["recipient"]["name"],
                    "recipient_address": d["recipient"].get("address"),
                    "recipient_kind": d["recipient"]["kind"], "description": d["description"],
                    "purpose": event.get("purpose"), "channel": event.get("channel"),
                    "actor_id": actor["id"], "authorization_id": d.get("authorization_id"),
                    "exempt": exemption_of(event),
                }
            patients = tables["view_patients"]
            if action == "patient_shredded":
                row = patients.get((ledger, ref))
                if row is not None:
                    row["record"] = {k: ERASED for k in row["record"]}
                    row["shredded"] = True
                    row["updated_seq"] = seq
                    row["updated_utc"] = when
            elif ok and action in ("create", "update", "delete") and (
                    resource.get("type") in (None, "patient")):  # the record itself only
                row = patients.get((ledger, ref))
                if row is None:
                    row = patients[(ledger, ref)] = {
                        "ledger": ledger, "patient_ref": ref, "patient_token": token,
                        "key_id": key, "record": {}, "deleted": action == "delete",
                        "shredded": False, "created_seq": seq,
                    }
                if row["key_id"] != key:  # sealed under a key that is gone
                    row["record"] = {k: ERASED for k in row["record"]}
                if action == "delete":
                    row["deleted"] = True
                else:
                    if action == "create" and row["deleted"]:
                        row.update(record={}, deleted=False, created_seq=seq)
                    for name, value in (event.get("data") or {}).items():
                        if value is None:
                            row["record"].pop(name, None)
                        else:
                            row["record"][name] = value
                row.update(patient_token=token, key_id=key, updated_seq=seq, updated_utc=when)
            if ok and action in STAFF_ACTIONS:
                data = event.get("data") or {}
                who = _text(data.get("staff_id")) or _text(resource.get("id"))
                if who:
                    staff = tables["view_workforce"].setdefault((ledger, who), {
                        "ledger": ledger, "staff_id": who, "role": None, "site": None,
                        "active": True, "added_utc": None, "removed_utc": None,
                        "removal_reason": None, "training_utc": None,
                        "training_course": None, "mfa_enrolled_utc": None,
                        "mfa_method": None})
                    if action == "staff_added":
                        staff.update(role=_text(data.get("role")) or staff["role"],
                                     site=_text(data.get("site")) or staff["site"],
                                     active=True, added_utc=when, removed_utc=None,
                                     removal_reason=None)
                    elif action == "staff_removed":
                        staff.update(active=False, removed_utc=when,
                                     removal_reason=_text(data.get("reason")))
                    elif action == "role_changed":
                        staff["role"] = _text(data.get("to_role")) or _text(data.get("role"))
                    elif action == "training_completed":
                        staff.update(training_utc=when, training_course=_text(data.get("course")))
                    else:
                        staff.update(mfa_enrolled_utc=when, mfa_method=_text(data.get("method")))
                    staff["updated_seq"] = seq
            if ok and action in PARTNER_ACTIONS:
                data = event.get("data") or {}
                who = _text(data.get("partner")) or _text(resource.get("id"))
                if who:
                    partner = tables["view_partners"].setdefault((ledger, who), {
                        "ledger": ledger, "partner": who, "service": None,
                        "agreement_id": None, "baa_active": False, "signed_utc": None,
                        "ended_utc": None})
                    if action == "baa_signed":
                        partner.update(
                            baa_active=True, signed_utc=when, ended_utc=None,
                            service=_text(data.get("service")) or partner["service"],
                            agreement_id=_text(data.get("agreement_id"))
                            or partner["agreement_id"])
                    else:
                        partner.update(baa_active=False, ended_utc=when)
                    partner["updated_seq"] = seq
    return tables


# -- the plaintext model: the record as posted, read through the API's opener ---------------


@dataclass
class PlainRecord:
    record: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    shredded: bool = False


def plain_records(posted: dict[str, list[dict[str, Any]]]
                  ) -> dict[tuple[str, str], PlainRecord]:
    """Each patient's record from the posted events alone: what a reader must see."""
    records: dict[tuple[str, str], PlainRecord] = {}
    for ledger, events in posted.items():
        for event in events:
            action = event["action"]
            if action == "patient_shredded":
                found = records.get((ledger, event["mrn"]))
                if found is not None:
                    found.record = {k: ERASED for k in found.record}
                    found.shredded = True
                continue
            if action not in ("create", "update", "delete") or event["outcome"] != "success":
                continue
            if (event.get("resource") or {}).get("type") not in (None, "patient"):
                continue  # a call or message about the patient: an access, not the record
            key = (ledger, event["patient"]["id"])
            if key not in records:
                records[key] = PlainRecord(deleted=action == "delete")
            found = records[key]
            if action == "delete":
                found.deleted = True
                continue
            if action == "create" and found.deleted:
                found.record, found.deleted = {}, False
            for name, value in (event.get("data") or {}).items():
                if value is None:
                    found.record.pop(name, None)
                else:
                    found.record[name] = value
    return records


def check_plain_records(svc: Services, driver: Driver) -> None:
    reports = AccessReports(svc)
    expected = plain_records(driver.posted)
    for ledger in driver.ledgers:
        for mrn in PATIENTS:
            ref = svc.protection.patient_ref(ledger, mrn)
            row = svc.queries.patient(ledger, ref)
            want = expected.get((ledger, mrn))
            if want is None:
                assert row is None, f"{ledger}/{mrn}: a record no posted event made"
                continue
            assert row is not None, f"{ledger}/{mrn}: record missing"
            assert (row.deleted, row.shredded) == (want.deleted, want.shredded), (ledger, mrn)
            patient_id, record = reports.open_record(ledger, row)
            assert record == dict(sorted(want.record.items())), (ledger, mrn, record, want)
            # The id opens while the patient's current key exists; shredded since: erased.
            assert patient_id in (mrn, ERASED)


# -- the properties ------------------------------------------------------------------------


def test_views_equal_a_brute_force_fold_of_the_exported_ledger(svc: Services) -> None:
    @HYPOTHESIS
    @given(workloads)
    def check(workload: list[tuple[str, Any, Any]]) -> None:
        driver = Driver(svc, fresh_ledgers())
        for op in workload:
            driver.run(op)
        driver.flush()
        Projector(svc.store).catch_up()
        assert_tables_equal(snapshot(svc.store, driver.ledgers),
                            oracle(svc.store, driver.ledgers), "projected")
        check_plain_records(svc, driver)

    check()


def test_the_oracle_sees_what_it_should(svc: Services) -> None:
    """Guards the property above: one fixed workload touching every table, and a view
    row altered by hand is reported as a difference."""
    driver = Driver(svc, fresh_ledgers())
    when = "2026-11-26T10:00:00.5-05:00"
    patient = {"id": PATIENTS[0]}
    common = {"occurred_at": when, "outcome": "success", "actor": dict(ACTORS[0]),
              "patient": patient, "purpose": "TREAT", "channel": "ehr"}
    driver.event(0, {**common, "action": "create", "data": {"name": "Ann", "phone": "555"}})
    driver.event(0, {**common, "action": "update", "data": {"phone": None, "dob": "1960"}})
    driver.event(0, {**common, "action": "disclose", "purpose": "PUBHLTH", "disclosure": {
        "recipient": {"name": "County", "kind": "public_health"}, "description": "case"}})
    driver.event(0, {"occurred_at": when, "action": "staff_added", "outcome": "success",
                     "actor": {"id": "hr-1", "kind": "user"},
                     "data": {"staff_id": "agent-0099", "role": "call_agent"}})
    driver.event(0, {"occurred_at": when, "action": "baa_signed", "outcome": "success",
                     "actor": {"id": "hr-1", "kind": "user"}, "data": {"partner": "qa-vendor"}})
    driver.flush()
    Projector(svc.store).catch_up()
    actual = snapshot(svc.store, driver.ledgers)
    expected = oracle(svc.store, driver.ledgers)
    assert {t: len(rows) for t, rows in expected.items()} == {
        "view_patients": 1, "view_accesses": 5, "view_disclosures": 1, "view_workforce": 1,
        "view_partners": 1}
    assert_tables_equal(actual, expected, "fixed workload")
    (row,) = expected["view_patients"].values()
    assert sorted(row["record"]) == ["dob", "name"]
    assert next(iter(expected["view_disclosures"].values()))["exempt"] is None
    check_plain_records(svc, driver)

    with svc.store.transaction() as tx:
        tx.execute(svc.store.sql("UPDATE view_accesses SET purpose = %s WHERE ledger = %s"
                                 " AND seq = 2"), ("HOPERAT", driver.ledgers[0]))
    with pytest.raises(AssertionError, match="view_accesses row"):
        assert_tables_equal(snapshot(svc.store, driver.ledgers), expected, "altered")


def test_incremental_projection_in_random_batches_equals_one_rebuild(svc: Services) -> None:
    @HYPOTHESIS
    @given(st.lists(st.one_of(st.tuples(st.just("op"), ops),
                              st.tuples(st.just("project"), projection_ops)),
                    min_size=20, max_size=70),
           st.integers(1, 50))
    def check(script: list[tuple[str, Any]], final_batch: int) -> None:
        driver = Driver(svc, fresh_ledgers())
        for kind, what in script:
            if kind == "op":
                driver.run(what)
                continue
            driver.flush()
            if what[0] == "step":
                projector = Projector(svc.store, batch=what[1])
                for _ in range(what[2]):
                    projector.step()
            else:
                Projector(svc.store).rebuild([what[1]])
        driver.flush()
        Projector(svc.store, batch=final_batch).catch_up()
        incremental = snapshot(svc.store, driver.ledgers)
        Projector(svc.store).rebuild()
        rebuilt = snapshot(svc.store, driver.ledgers)
        assert_tables_equal(incremental, rebuilt, "incremental vs rebuild")
        assert_tables_equal(rebuilt, oracle(svc.store, driver.ledgers), "rebuild vs oracle")

    check()
