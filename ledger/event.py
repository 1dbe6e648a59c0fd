"""The event as applications post it (CONTRACT.md), validated strictly.

Validation is total: every problem in an event is reported, each named by the dotted
path of its field, and no message ever repeats a submitted value (values may be PHI).
Validated events stay plain dicts: the ledger stores what was posted, field for field,
so the schema here only decides *whether* an event is acceptable.
"""

from __future__ import annotations

import re
import socket
from typing import Annotated, Any, Literal, NotRequired, cast

import orjson
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from ledger.canonical import MAX_SAFE_INTEGER, canonical
from ledger.instant import check_instant

MAX_EVENT_BYTES = 64 * 1024
MAX_BATCH_EVENTS = 1000

PHI_ACCESS_ACTIONS = frozenset(
    {"read", "create", "update", "delete", "disclose", "export", "print", "query"}
)
AUTH_ACTIONS = frozenset({"login", "logout", "login_failed"})
WORKFORCE_ACTIONS = frozenset(
    {"staff_added", "staff_removed", "role_changed", "training_completed", "mfa_enrolled",
     "baa_signed", "baa_ended"}
)
# Events the ledger writes about itself (shredding, access control: identities, keys,
# lockouts); applications cannot post them. (Logins, failed logins and logouts use the
# public AUTH_ACTIONS, which the service also writes for its own users.)
SYSTEM_ACTIONS = frozenset({
    "patient_shredded",
    # continual monitoring: a reviewer's triage of an alert, the rule set in force
    "alert_acknowledged", "alert_dismissed", "monitoring_rules",
    "identity_created", "key_created", "key_revoked", "password_set", "totp_enrolled",
    "account_locked", "account_unlocked", "staff_ids_set",
    "investigation_opened", "investigation_amended", "investigation_closed",
})
DATA_ACTIONS = frozenset({"create", "update"}) | WORKFORCE_ACTIONS
# Events of the standard audit formats that record no access to PHI (docs/standard-formats.md):
# an application started or stopped (DICOM 110100), a security alert such as a failed node
# authentication (DICOM 110113). ``patient`` is optional on them, as on logins.
SECURITY_ACTIONS = frozenset({"application_activity", "security_alert"})

Action = Literal[
    "read", "create", "update", "delete", "disclose", "export", "print", "query",
    "login", "logout", "login_failed",
    "staff_added", "staff_removed", "role_changed", "training_completed", "mfa_enrolled",
    "baa_signed", "baa_ended",
    "application_activity", "security_alert",
]
Outcome = Literal["success", "failure", "denied"]
# HL7 v3 PurposeOfUse (2.16.840.1.113883.1.11.20448), the codes in current use.
PurposeOfUse = Literal[
    "TREAT", "ETREAT", "BTG", "CAREMGT", "CLINTRCH", "CLINTRCHNPC", "CLINTRCHPC", "POPHLTH",
    "PATRQT", "FAMRQT", "PWATRNY", "SUPNWK", "DISASTER", "THREAT", "COC",
    "HPAYMT", "CLMATTCH", "COVAUTH", "COVERAGE", "ELIGDTRM", "ELIGVER", "ENROLLM", "REMITADV",
    "HOPERAT", "HACCRED", "HCOMPL", "HDECD", "HDIRECT", "HDM", "HLEGAL", "HOUTCOMS",
    "HPRGRP", "HQUALIMP", "HSYSADMIN", "LABELING", "METAMGT", "MEMADMIN", "MILCDM",
    "PATADMIN", "PATSFTY", "PERFMSR", "RECORDMGT", "SYSDEV", "HTEST", "TRAIN",
    "HMARKT", "HRESCH", "PUBHLTH", "GOV", "LEGAL", "FRAUD", "DONAT", "PMTDS", "TRANSRCH",
]
Channel = Literal[
    "ehr", "portal", "api", "phone", "voicemail", "sms", "secure_sms", "email",
    "encrypted_email", "fax", "paper", "in_person",
]

CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
# What PostgreSQL ``text`` (and any UTF-8 encoder) cannot hold: NUL and lone surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT = "must not contain NUL or unpaired surrogate characters"


def storable(text: str) -> bool:
    """Whether ``text`` can be stored as it is by every backend (no NUL, no lone
    surrogate)."""
    return _UNSTORABLE.search(text) is None


def _uuid(value: str) -> str:
    if not CANONICAL_UUID.fullmatch(value):
        raise ValueError("must be a UUID in canonical lower-case form")
    return value


def _timestamp(value: str) -> str:
    why = check_instant(value)
    if why is not None:
        raise ValueError(why)
    return value


def _ip(value: str) -> str:
    # inet_pton is the C parser: ipaddress.ip_address costs ~10 us an event.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return value
        except OSError:
            continue
    raise ValueError("must be an IPv4 or IPv6 address")


Text = Annotated[StrictStr, Field(min_length=1, max_length=256)]
LongText = Annotated[StrictStr, Field(min_length=1, max_length=8192)]
Identifier = Annotated[StrictStr, Field(min_length=1, max_length=128)]


def _path_segment(value: str) -> str:
    # Patients and actors are queried as one path segment (/v1/patients/{id}/...): an
    # id that cannot be one would be recorded but never be found again.
    if "/" in value or value in (".", ".."):
        raise ValueError("must not contain '/' nor be '.' or '..' (it is queried as a"
                         " URL path segment)")
    return value


# An identifier that is queried as a URL path segment (patients, actors).
SegmentIdentifier = Annotated[StrictStr, Field(min_length=1, max_length=128),
                              AfterValidator(_path_segment)]
EventId = Annotated[StrictStr, AfterValidator(_uuid)]
Timestamp = Annotated[StrictStr, AfterValidator(_timestamp)]
IpAddress = Annotated[StrictStr, Field(max_length=64), AfterValidator(_ip)]
SafeInt = Annotated[StrictInt, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_SAFE_INTEGER
    return isinstance(value, str) and len(value) <= 8192


def _record_data(data: Any) -> dict[str, Any] | None:
    """``data`` maps field names to strings, integers, booleans, null or lists of those."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise FieldProblems([("data", "must be an object of field -> value")])
    problems: list[tuple[str, str]] = []
    if len(data) > 256:
        problems.append(("data", "must hold at most 256 fields"))
    for key, value in data.items():
        # a Python caller's dict may have keys JSON cannot (an int): a problem, not a crash
        if not (isinstance(key, str) and FIELD_NAME.fullmatch(key)):
            problems.append(("data", "field names must match [A-Za-z][A-Za-z0-9_.-]{0,63}"))
            continue
        ok = _is_scalar(value) or (
            isinstance(value, list) and len(value) <= 256 and all(map(_is_scalar, value))
        )
        if not ok:
            problems.append((f"data.{key}", "must be a string, a safe integer, a boolean, "
                             "null or a list of those (no floats)"))
    if problems:
        raise FieldProblems(problems)
    return data


RecordData = Annotated[Any, AfterValidator(_record_data)]


# TypedDicts rather than models: the ledger keeps the posted dict, so validation need
# not build objects (three times faster, and ingest validates every event).
_STRICT = ConfigDict(extra="forbid", strict=True)


@with_config(_STRICT)
class Actor(TypedDict):
    id: SegmentIdentifier
    kind: Literal["user", "application", "system", "patient"]
    role: NotRequired[Text | None]
    organization: NotRequired[Text | None]
    mfa: NotRequired[StrictBool | None]
    device_id: NotRequired[Identifier | None]
    ip: NotRequired[IpAddress | None]
    session_id: NotRequired[Identifier | None]


@with_config(_STRICT)
class Patient(TypedDict):
    id: SegmentIdentifier


@with_config(_STRICT)
class Resource(TypedDict):
    type: Identifier
    id: NotRequired[Identifier | None]
    phi: NotRequired[Annotated[list[Identifier], Field(max_length=64)] | None]


@with_config(_STRICT)
class Recipient(TypedDict):
    name: Text
    address: NotRequired[LongText | None]
    kind: Literal[
        "provider", "health_plan", "patient", "personal_representative", "family",
        "business_associate", "public_health", "health_oversight", "law_enforcement",
        "court", "researcher", "employer", "coroner", "organ_procurement", "government",
        "other",
    ]
    # The business associate's id, as in ``baa_signed`` (monitoring's ``no_baa``).
    partner: NotRequired[Text | None]


@with_config(_STRICT)
class Disclosure(TypedDict):
    recipient: Recipient
    description: LongText
    encrypted: NotRequired[StrictBool | None]
    authorization_id: NotRequired[Identifier | None]


@with_config(_STRICT)
class Source(TypedDict):
    system: Identifier
    site: NotRequired[Text | None]


@with_config(_STRICT)
class Event(TypedDict):
    """One access event. See CONTRACT.md for the meaning of each field."""

    event_id: EventId
    occurred_at: Timestamp
    action: Action
    outcome: Outcome
    actor: Actor
    patient: NotRequired[Patient | None]
    resource: NotRequired[Resource | None]
    purpose: NotRequired[PurposeOfUse | None]
    channel: NotRequired[Channel | None]
    disclosure: NotRequired[Disclosure | None]
    data: NotRequired[RecordData]
    source: NotRequired[Source | None]


def _rules_between_fields(event: dict[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    action = event["action"]
    if action in PHI_ACCESS_ACTIONS:
        for name in ("patient", "purpose", "channel"):
            if event.get(name) is None:
                problems.append((name, f"is required for action '{action}'"))
    has_disclosure = event.get("disclosure") is not None
    if action == "disclose" and not has_disclosure:
        problems.append(("disclosure", "is required for action 'disclose'"))
    if action != "disclose" and has_disclosure:
        problems.append(("disclosure", "is only allowed with action 'disclose'"))
    if event.get("data") is not None and action not in DATA_ACTIONS:
        problems.append(("data", f"is not allowed with action '{action}'"))
    return problems


class FieldProblems(ValueError):
    """Problems that span fields; carried through pydantic to :func:`check_event`."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f} {m}" for f, m in problems))
        self.problems = problems


class EventRejected(ValueError):
    """An event (or batch) is not acceptable. ``fields`` names every offending field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(f for f, _ in self.problems))


_EVENT = TypeAdapter(Event)
_PATIENT = TypeAdapter(Patient)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _problems(
    error: ValidationError, prefix: str, value: Any = None
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_input=False, include_url=False):
        ctx_error = (item.get("ctx") or {}).get("error")
        if isinstance(ctx_error, FieldProblems):
            problems.extend((_join(prefix, f), m) for f, m in ctx_error.problems)
            continue
        # Taken whole: the schema has no unions (an optional field is a nullable schema),
        # so pydantic adds no tags to the path, and the last part of an unknown member's
        # path is the posted name, whatever characters it holds.
        loc = item["loc"]
        if item["type"] == "extra_forbidden":
            # The unknown name itself may be PHI ("SSN 123-45-6789"): name its object
            # and its position among the object's members, never the name.
            problems.append((_join(prefix, _path(loc[:-1])),
                             f"unknown field (member {member_label(value, loc)})"))
            continue
        message = item["msg"].removeprefix("Value error, ")
        problems.append((_join(prefix, _path(loc)), message))
    return problems


def member_label(value: Any, loc: tuple[Any, ...]) -> str:
    """The 1-based position of the member ``loc[-1]`` in its object within ``value``."""
    for part in loc[:-1]:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return "?"
    if isinstance(value, dict):
        for i, key in enumerate(value, 1):
            if key == loc[-1]:
                return str(i)
    return "?"


def _unstorable(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    """Every string (and object key) below ``value`` that no backend can store."""
    if isinstance(value, str):
        if not storable(value):
            out.append((path, UNSTORABLE_TEXT))
    elif isinstance(value, dict):
        for i, (key, item) in enumerate(value.items(), 1):
            if not (isinstance(key, str) and FIELD_NAME.fullmatch(key)):
                # A name refused elsewhere (or unknown): never repeated in a message.
                inner: list[tuple[str, str]] = []
                _unstorable(item, "", inner)
                if inner or (isinstance(key, str) and not storable(key)):
                    out.append((path or "(event)", f"{UNSTORABLE_TEXT} (member {i})"))
                continue
            _unstorable(item, _join(path, key) if path else key, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _unstorable(item, f"{path}[{i}]", out)


def _plainly_storable(value: Any, encoded: bytes | None = None) -> bool:
    """True when no text in ``value`` can hold NUL or a lone surrogate, read off its JSON
    encoding (``encoded``, when the caller made it already; a few microseconds an event,
    where :func:`_unstorable` visits every string and key with its path: about 14):
    ``orjson`` refuses a lone surrogate and writes NUL as ``\\u0000``, and it encodes
    every string and key the walk visits. False is not proof of anything (a backslash
    followed by ``u0000``, a value orjson cannot encode): the walk then decides."""
    try:
        return b"\\u0000" not in (encoded if encoded is not None else orjson.dumps(value))
    except TypeError:  # orjson's refusals (JSONEncodeError) are TypeErrors
        return False


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path or "(event)"
    if not path:
        return prefix
    return f"{prefix}.{path}"


def _encoded(event: Any) -> bytes | None:
    try:
        return canonical(event)
    except TypeError:
        return None


def encoded_size(event: Any) -> int | None:
    encoded = _encoded(event)
    return None if encoded is None else len(encoded)


def check_event(
    event: Any, prefix: str = "", size: int | None = None
) -> list[tuple[str, str]]:
    """Every problem with one posted event, as ``(field path, message)``; [] if valid.

    ``size`` is the length of the event's canonical encoding when the caller has it."""
    if not isinstance(event, dict):
        return [(prefix or "(event)", "must be a JSON object")]
    encoded = None
    if size is None:
        # One encoding for the size and the storable-text test below.
        encoded = _encoded(event)
        size = None if encoded is None else len(encoded)
    problems: list[tuple[str, str]] = []
    if size is not None and size > MAX_EVENT_BYTES:
        problems.append((prefix or "(event)", f"is larger than {MAX_EVENT_BYTES} bytes"))
    try:
        _EVENT.validate_python(event)
    except ValidationError as error:
        problems.extend(_problems(error, prefix, event))
    else:
        problems.extend((_join(prefix, f), m) for f, m in _rules_between_fields(event))
    if not _plainly_storable(event, encoded):
        _unstorable(event, prefix, problems)
    if size is None and not problems:
        # A value canonical JSON cannot encode (an integer beyond what it holds) that no
        # field rule named: the event still may not pass, and is not "too large" either.
        problems.append((prefix or "(event)", "holds a value canonical JSON cannot encode"))
    return problems


def validate_event(event: Any, size: int | None = None) -> dict[str, Any]:
    """Return ``event`` if it is acceptable, else raise :class:`EventRejected`."""
    problems = check_event(event, size=size)
    if problems:
        raise EventRejected(problems)
    return cast("dict[str, Any]", event)  # checked above: an object of the contract's fields


def _check_batch_size(events: Any) -> None:
    if not isinstance(events, list):
        raise EventRejected([("events", "must be a list of events")])
    if not events:
        raise EventRejected([("events", "must hold at least one event")])
    if len(events) > MAX_BATCH_EVENTS:
        raise EventRejected([("events", f"must hold at most {MAX_BATCH_EVENTS} events")])


def validate_batch(events: Any, sizes: list[int | None] | None = None) -> list[dict[str, Any]]:
    """Validate a whole batch; raise one :class:`EventRejected` naming every bad field."""
    _check_batch_size(events)
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, event in enumerate(events):
        problems.extend(check_event(event, f"events[{i}]", sizes[i] if sizes else None))
        event_id = event.get("event_id") if isinstance(event, dict) else None
        if isinstance(event_id, str):
            if event_id in seen:
                problems.append((f"events[{i}].event_id",
                                 f"repeats the event_id of events[{seen[event_id]}]"))
            seen.setdefault(event_id, i)
    if problems:
        raise EventRejected(problems)
    return cast("list[dict[str, Any]]", events)  # checked above: a list of valid events


def validate_alike(
    events: list[dict[str, Any]], sizes: list[int | None] | None = None
) -> list[dict[str, Any]]:
    """Validate events made alike: each a copy of ``events[0]`` but for its
    ``event_id`` and ``patient`` (the service's own records of a read, one per patient a
    page shows). What they share is checked whole once, as :func:`validate_batch` checks
    an event; each event's id and patient by the same rules. A page's ~31 reads then cost
    one event's validation and thirty id checks, not thirty-one events' (about a sixth of
    the CPU of recording them, in one process). ``sizes`` are the events' canonical
    lengths, when the caller has them (else each event is measured here, as
    :func:`validate_batch` measures it). Raises :class:`EventRejected` naming
    ``events[i].field``; a bad shared field is named once, at ``events[0]``."""
    _check_batch_size(events)
    if sizes is None:
        sizes = [encoded_size(event) for event in events]
    # What the events share, checked whole once (with a stand-in patient, so that a bad
    # patient of the first does not hide the rules between the shared fields).
    shared = {**events[0], "patient": {"id": "-"}}
    problems = check_event(shared, "events[0]", sizes[0])
    seen = {events[0].get("event_id")}
    for i, event in enumerate(events):
        if i:
            size = sizes[i]
            if size is not None and size > MAX_EVENT_BYTES:
                problems.append((f"events[{i}]", f"is larger than {MAX_EVENT_BYTES} bytes"))
            event_id = event.get("event_id")
            if not isinstance(event_id, str) or not CANONICAL_UUID.fullmatch(event_id):
                problems.append((f"events[{i}].event_id",
                                 "must be a UUID in canonical lower-case form"))
            elif event_id in seen:
                problems.append((f"events[{i}].event_id", "repeats an earlier event_id"))
            seen.add(event_id)
        patient = event.get("patient")
        try:
            _PATIENT.validate_python(patient)
        except ValidationError as error:
            problems.extend(_problems(error, f"events[{i}].patient", patient))
        _unstorable(patient, f"events[{i}].patient", problems)
    if problems:
        raise EventRejected(problems)
    return events
