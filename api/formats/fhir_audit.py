"""FHIR AuditEvent (R4, IHE BALP; STU3 names where unambiguous) <-> the contract event.

:func:`to_event` maps one AuditEvent (a parsed JSON object) to a contract event, or raises
:class:`FormatRejected` naming every element it cannot use by FHIRPath (never a value).
:func:`to_audit_event` renders a stored event back as a BALP-shaped R4 AuditEvent; what
the contract holds that AuditEvent has no element for rides in extensions under
:data:`EXT`, so ``to_event(to_audit_event(e))`` gives ``e`` back (but its ``event_id``,
which is derived from who posted it). Both are pure; the table of the mapping is in
docs/standard-formats.md.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from api.formats.codes import (
    ACT_REASON,
    APPLICATION,
    APPLICATION_ACTIVITY,
    APPLICATION_LAUNCHER,
    AUDIT_EVENT_TYPE,
    DCM,
    DESTINATION_ROLE,
    EXPORT,
    LIFECYCLE,
    LOGIN,
    LOGOUT,
    NETWORK_TYPE,
    OBJECT_ROLE,
    OBJECT_TYPE,
    OUTCOME_CODES,
    OUTCOMES,
    PATIENT_ROLE,
    PERSON_TYPE,
    QUERY_ROLE,
    RECIPIENT,
    RESTFUL,
    SECURITY_ALERT,
    SOURCE_ROLE,
    USER_AUTHENTICATION,
    Coded,
    actor_segment,
    classify,
    has,
    purpose_of,
)
from ledger.event import AUTH_ACTIONS, PHI_ACCESS_ACTIONS, SECURITY_ACTIONS
from ledger.instant import check_instant

_T = TypeVar("_T")

# Our own extensions and code systems (what the contract holds and AuditEvent does not).
EXT = "urn:phi-ledger:fhir:extension:"
ACTION_SYSTEM = "urn:phi-ledger:fhir:action"
RESOURCE_SYSTEM = "urn:phi-ledger:fhir:resource-type"
DATA_SYSTEM = "urn:phi-ledger:fhir:data"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
MAPPABLE_ACTIONS = PHI_ACCESS_ACTIONS | AUTH_ACTIONS | SECURITY_ACTIONS
ACTOR_KINDS = frozenset({"user", "application", "system", "patient"})
RECIPIENT_KINDS = frozenset({
    "provider", "health_plan", "patient", "personal_representative", "family",
    "business_associate", "public_health", "health_oversight", "law_enforcement", "court",
    "researcher", "employer", "coroner", "organ_procurement", "government", "other",
})
DEFAULT_CHANNEL = "api"


class FormatRejected(ValueError):
    """A standard message the ledger cannot take as it is; ``problems`` are
    ``(path, message)`` pairs, the path a FHIRPath (or an XML path for ATNA)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


# -- reading tolerant JSON -------------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def codings(value: Any) -> list[Coded]:
    """Codes of a Coding, a CodeableConcept, or a list of either."""
    out: list[Coded] = []
    for item in _list(value):
        item = _obj(item)
        if "coding" in item:
            out.extend(codings(item["coding"]))
            continue
        code = item.get("code")
        if isinstance(code, str) and code:
            out.append(Coded(code, _text(item.get("system")), _text(item.get("display"))))
    return out


def _in_system(codes: list[Coded], system: str) -> str | None:
    """The first code of ``system`` (a loop: asked several times an AuditEvent)."""
    for c in codes:
        if c.system == system:
            return c.code
    return None


def _exts(element: Any) -> dict[str, Any]:
    """Our extensions of ``element`` by name (``EXT`` + name): of each name, the value of
    the first that has a ``value[x]``. One pass over the extensions, however many of
    them are read."""
    out: dict[str, Any] = {}
    for ext in _list(_obj(element).get("extension")):
        url = _obj(ext).get("url")
        if not isinstance(url, str) or not url.startswith(EXT) or url[len(EXT):] in out:
            continue
        for key, value in ext.items():
            if key.startswith("value"):
                out[url[len(EXT):]] = value
                break
    return out


def _ref_id(reference: Any, resource_type: str) -> str | None:
    """``Patient/123`` (or a full URL, or ``.../_history/2``) -> ``123``."""
    found = _typed_reference(_text(_obj(reference).get("reference")))
    return found[1] if found is not None and found[0] == resource_type else None


def _who_id(agent: dict[str, Any]) -> str | None:
    who = _obj(agent.get("who")) or _obj(agent.get("reference"))  # STU3: agent.reference
    return (
        _text(_obj(who.get("identifier")).get("value"))
        or _text(_obj(agent.get("userId")).get("value"))  # STU3
        or _reference_id(_text(who.get("reference")))
        or _text(agent.get("altId"))
        or _text(who.get("display"))
        or _text(agent.get("name"))
    )


def _reference_id(ref: str | None) -> str | None:
    """An agent's ``who.reference`` as its actor id, one URL path segment: a typed
    reference as ``Type/id`` (a base URL and a ``_history`` left out) percent-encoded,
    ``Practitioner%2Fdr-rivera`` -- the type kept, so ``RelatedPerson/7`` is not
    ``Practitioner/7`` -- and anything else as written, percent-encoded likewise."""
    if ref is None:
        return None
    found = _typed_reference(ref)
    return actor_segment(f"{found[0]}/{found[1]}" if found is not None else ref.strip())


def _is_ip(value: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return True
        except OSError:
            continue
    return False


# -- AuditEvent -> event ---------------------------------------------------------------


class MappingMemo:
    """What mapping the AuditEvents of one request reads again and again: each distinct
    entity's and agent's codes and extensions, each distinct requestor's actor (a Bundle
    from one sender repeats its agents and entities). Keyed by the element's JSON as
    ``orjson`` encodes it, for resources as ``orjson.loads`` gives them; what it holds
    may be PHI: made for one request and dropped with it."""

    __slots__ = ("actors", "agents", "entities")

    def __init__(self) -> None:
        self.entities: dict[bytes, tuple[list[Coded], list[Coded]]] = {}
        self.agents: dict[bytes, tuple[list[Coded], list[Coded], dict[str, Any]]] = {}
        self.actors: dict[bytes, dict[str, Any]] = {}


def _key(element: dict[str, Any], memo: MappingMemo | None) -> bytes | None:
    if memo is None:
        return None
    try:
        return orjson.dumps(element)
    except TypeError:  # not JSON: read it each time
        return None


def _read_once(table: dict[bytes, _T] | None, key: bytes | None,
               read: Callable[[dict[str, Any]], _T], element: dict[str, Any]) -> _T:
    """``read(element)``, kept in ``table`` under ``key`` (the element's JSON) when there
    is one."""
    if table is None or key is None:
        return read(element)
    found = table.get(key)
    if found is None:
        found = table[key] = read(element)
    return found


@dataclass(slots=True)
class _Entity:
    """One ``entity`` of an AuditEvent with its codes read once (several steps ask)."""

    index: int
    json: dict[str, Any]
    types: list[Coded]
    roles: list[Coded]


def _entities(resource: dict[str, Any], memo: MappingMemo | None) -> list[_Entity]:
    out = []
    for i, e in enumerate(_list(resource.get("entity"))):
        entity = _obj(e)
        read = _read_once(memo.entities if memo else None, _key(entity, memo), _entity_codes,
                          entity)
        out.append(_Entity(i, entity, *read))
    return out


@dataclass(slots=True)
class _Agent:
    """One ``agent`` with its codes (type, then role) and our extensions read once."""

    index: int
    json: dict[str, Any]
    roles: list[Coded]
    codes: list[Coded]
    exts: dict[str, Any]
    key: bytes | None  # its JSON, when a memo keeps what is read of it

    @property
    def recipient(self) -> bool:
        return has(self.codes, DESTINATION_ROLE, RECIPIENT)

    @property
    def source(self) -> bool:
        return has(self.codes, SOURCE_ROLE)


def _agents(resource: dict[str, Any], memo: MappingMemo | None) -> list[_Agent]:
    out = []
    for i, a in enumerate(_list(resource.get("agent"))):
        agent = _obj(a)
        key = _key(agent, memo)
        read = _read_once(memo.agents if memo else None, key, _agent_codes, agent)
        out.append(_Agent(i, agent, *read, key))
    return out


def _entity_codes(entity: dict[str, Any]) -> tuple[list[Coded], list[Coded]]:
    return codings(entity.get("type")), codings(entity.get("role"))


def _agent_codes(agent: dict[str, Any]) -> tuple[list[Coded], list[Coded], dict[str, Any]]:
    roles = codings(agent.get("role"))
    return roles, codings(agent.get("type")) + roles, _exts(agent)


def _what(entity: dict[str, Any]) -> dict[str, Any]:
    return _obj(entity.get("what")) or _obj(entity.get("reference"))  # STU3: reference


def _patient_entities(entities: list[_Entity]) -> list[tuple[int, str | None]]:
    found = []
    for entity in entities:
        what = _what(entity.json)
        pid = _ref_id(what, "Patient")
        is_patient = pid is not None or (has(entity.roles, PATIENT_ROLE) and (
            not entity.types or has(entity.types, PERSON_TYPE)))
        if is_patient:
            found.append((entity.index,
                          _text(_obj(what.get("identifier")).get("value"))
                          or _text(_obj(entity.json.get("identifier")).get("value"))  # STU3
                          or pid))
    return found


def _requestor(agents: list[_Agent], path: str,
               problems: list[tuple[str, str]]) -> _Agent | None:
    requestors = [a for a in agents if a.json.get("requestor") is True]
    if len(requestors) == 1:
        return requestors[0]
    if not requestors:
        # Liberal: one agent that is not the recipient or the source is the actor.
        others = [a for a in agents if not a.recipient and not a.source]
        if len(others) == 1:
            return others[0]
        problems.append((f"{path}.agent", "must name exactly one requestor agent (the user "
                                          "or application that acted)"))
        return None
    problems.append((f"{path}.agent", "names more than one requestor agent"))
    return None


def _actor(agent: _Agent, at: str, problems: list[tuple[str, str]],
           memo: MappingMemo | None) -> dict[str, Any]:
    """The contract actor of the requestor ``agent`` (a copy of the one a memo holds for
    an equal agent that mapped without problems)."""
    if memo is not None and agent.key is not None and agent.key in memo.actors:
        return dict(memo.actors[agent.key])  # its values are strings and booleans
    before = len(problems)
    actor = _read_actor(agent, at, problems)
    if memo is not None and agent.key is not None and len(problems) == before:
        memo.actors[agent.key] = dict(actor)
    return actor


def _read_actor(agent: _Agent, at: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    json = agent.json
    actor_id = _who_id(json)
    if actor_id is None:
        problems.append((f"{at}.who", "must identify the agent (who.identifier.value, "
                                      "who.reference or who.display)"))
        actor_id = "-"
    kind = agent.exts.get("actor-kind")
    if kind not in ACTOR_KINDS:
        who_ref = _text(_obj(json.get("who")).get("reference")) or ""
        if has(agent.codes, APPLICATION, APPLICATION_LAUNCHER) or who_ref.startswith("Device/"):
            kind = "application"
        elif who_ref.startswith("Patient/"):
            kind = "patient"
        else:
            kind = "user"
    actor: dict[str, Any] = {"id": actor_id, "kind": kind}
    role = agent.roles[0].code if agent.roles else next(
        (t for r in _list(json.get("role")) if (t := _text(_obj(r).get("text")))), None)
    if role:
        actor["role"] = role
    network = _obj(json.get("network"))
    address = _text(network.get("address"))
    if address:
        if network.get("type") == "2" or (network.get("type") != "1" and _is_ip(address)):
            if _is_ip(address):
                actor["ip"] = address
            else:
                problems.append((f"{at}.network.address", "must be an IP address when "
                                                          "network.type is 2"))
        else:
            actor["device_id"] = address
    for name, key in (("device-id", "device_id"), ("session-id", "session_id"),
                      ("organization", "organization")):
        if (value := _text(agent.exts.get(name))) is not None:
            actor[key] = value
    if isinstance(mfa := agent.exts.get("mfa"), bool):
        actor["mfa"] = mfa
    return actor


# A resource type in a reference (FHIR's are [A-Z][A-Za-z]+; any name is taken).
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*", re.ASCII)


def _typed_reference(ref: str | None) -> tuple[str, str] | None:
    """``Observation/7`` (or a full URL, or ``.../_history/2``) -> (type, id)."""
    if ref is None:
        return None
    parts = ref.strip().split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or not _TYPE_NAME.fullmatch(parts[-2]) or not parts[-1]:
        return None
    return parts[-2], parts[-1]


def _resource(entities: list[_Entity], patient_at: set[int]) -> dict[str, Any] | None:
    for entity in entities:
        if entity.index in patient_at or has(entity.roles, QUERY_ROLE):
            continue
        types = entity.types
        if has(types, "data") and _in_system(types, DATA_SYSTEM) is not None:
            continue
        ours = _in_system(types, RESOURCE_SYSTEM)
        what = _what(entity.json)
        exts = _exts(entity.json)
        out: dict[str, Any]
        if ours is not None:
            exact = exts.get("resource-type")  # as posted: blank is a type too
            out = {"type": exact if isinstance(exact, str) and exact else ours}
            if (rid := _text(_obj(what.get("identifier")).get("value"))) is not None:
                out["id"] = rid
        else:
            found = _typed_reference(_text(what.get("reference")))
            if found is None:
                continue
            out = {"type": found[0], "id": found[1]}
        phi = _text(exts.get("phi"))
        if phi is not None:
            try:
                categories = orjson.loads(phi)
            except orjson.JSONDecodeError:
                categories = None
            if isinstance(categories, list):
                out["phi"] = categories
        return out
    return None


def _data(entities: list[_Entity], path: str,
          problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    for entity in entities:
        if _in_system(entity.types, DATA_SYSTEM) is None:
            continue
        data: dict[str, Any] = {}
        for j, detail in enumerate(_list(entity.json.get("detail"))):
            detail = _obj(detail)
            name = _text(detail.get("type"))
            try:
                value = orjson.loads(detail.get("valueString", ""))
            except (orjson.JSONDecodeError, TypeError):
                name = None
            if name is None:
                problems.append((f"{path}.entity[{entity.index}].detail[{j}]",
                                 "must be a field name and its JSON value"))
                continue
            data[name] = value
        return data
    return None


def _disclosure(agents: list[_Agent], entities: list[_Entity], path: str,
                problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    for agent in agents:
        if not agent.recipient:
            continue
        json, exts = agent.json, agent.exts
        who = _obj(json.get("who")) or _obj(json.get("reference"))
        who_id = _who_id(json)
        name = _text(who.get("display")) or _text(json.get("name")) or who_id
        if name is None:
            problems.append((f"{path}.agent[{agent.index}].who", "must name the recipient"))
            return None
        kind = exts.get("recipient-kind")
        recipient: dict[str, Any] = {"name": name,
                                     "kind": kind if kind in RECIPIENT_KINDS else "other"}
        address = _text(exts.get("recipient-address")) or _text(
            _obj(json.get("network")).get("address")) or (
            _text(_obj(who.get("identifier")).get("value")) if name != who_id else None)
        if address:
            recipient["address"] = address
        description = _text(exts.get("disclosure-description")) or next(
            (d for e in entities if (d := _text(e.json.get("description")))),
            None) or "disclosure recorded by a FHIR AuditEvent"
        disclosure: dict[str, Any] = {"recipient": recipient, "description": description}
        if isinstance(encrypted := exts.get("encrypted"), bool):
            disclosure["encrypted"] = encrypted
        if (authorization := _text(exts.get("authorization-id"))) is not None:
            disclosure["authorization_id"] = authorization
        if (partner := _text(exts.get("recipient-partner"))) is not None:
            recipient["partner"] = partner
        return disclosure
    problems.append((f"{path}.agent", "a disclosure must name its recipient agent (type "
                                      "DCM 110152 Destination Role ID, or IRCP)"))
    return None


def _source(resource: dict[str, Any]) -> dict[str, Any] | None:
    source = _obj(resource.get("source"))
    if _exts(source).get("no-source") is True:
        return None
    observer = _obj(source.get("observer"))
    system = (_text(_obj(observer.get("identifier")).get("value"))
              or _text(_obj(source.get("identifier")).get("value"))  # STU3
              or _text(observer.get("display")) or _text(observer.get("reference")))
    if system is None:
        return None
    out: dict[str, Any] = {"system": system}
    if (site := _text(source.get("site"))) is not None:
        out["site"] = site
    return out


def to_event(resource: Any, *, event_id: str, default_purpose: str | None = None,
             path: str = "AuditEvent", memo: MappingMemo | None = None) -> dict[str, Any]:
    """The contract event an AuditEvent records. ``path`` prefixes the FHIRPaths of the
    problems (``Bundle.entry[3].resource`` in a bundle). ``memo``: one request's
    (:class:`MappingMemo`), so that what its AuditEvents share is read once."""
    problems: list[tuple[str, str]] = []
    if not isinstance(resource, dict) or resource.get("resourceType") != "AuditEvent":
        raise FormatRejected([(path, "must be an AuditEvent resource")])
    outcome_code = resource.get("outcome")
    outcome = OUTCOMES.get(str(outcome_code)) if outcome_code is not None else "success"
    if outcome is None:
        problems.append((f"{path}.outcome", "must be 0, 4, 8 or 12"))
        outcome = "failure"
    types = codings(resource.get("type"))
    subtypes = codings(resource.get("subtype"))
    entities = _entities(resource, memo)
    agents = _agents(resource, memo)
    # STU3's entity.lifecycle (RFC 3881 11, Disclosure; or the ISO 21089 code) says it too.
    if any(has(codings(e.json["lifecycle"]), "11", "disclose")
           for e in entities if "lifecycle" in e.json):
        subtypes = [*subtypes, Coded("disclose")]
    ours = _in_system(types, ACTION_SYSTEM) or _in_system(subtypes, ACTION_SYSTEM)
    if ours in MAPPABLE_ACTIONS:
        action: str | None = ours
    else:
        action, reason = classify(_text(resource.get("action")), types, subtypes,
                                  outcome != "success")
        if action is None:
            problems.append((f"{path}.type", reason or "is not mapped"))
    recorded = _text(resource.get("recorded"))
    exts = _exts(resource)
    if recorded is None:
        problems.append((f"{path}.recorded", "is required (an instant with a time zone)"))
    else:
        # An entry rendered back keeps its time as posted in `occurred-at` when FHIR
        # could not hold it (an offset beyond 14 hours): taken when it is that moment.
        exact = _text(exts.get("occurred-at"))
        if (exact is not None and exact != recorded and check_instant(exact) is None
                and fhir_instant(exact) == recorded):
            recorded = exact
    event: dict[str, Any] = {"event_id": event_id, "occurred_at": recorded or "",
                             "action": action or "read", "outcome": outcome}
    found = _requestor(agents, path, problems)
    if found is not None:
        event["actor"] = _actor(found, f"{path}.agent[{found.index}]", problems, memo)
    else:
        event["actor"] = {"id": "-", "kind": "user"}
    patients = _patient_entities(entities)
    distinct = {pid for _, pid in patients}
    if len(distinct) > 1:
        problems.append((f"{path}.entity", "names more than one patient: post one "
                                           "AuditEvent per patient"))
    elif patients:
        i, pid = patients[0]
        if pid is None:
            problems.append((f"{path}.entity[{i}].what", "must identify the patient "
                                                         "(identifier.value or Patient/id)"))
        else:
            event["patient"] = {"id": pid}
    elif action in PHI_ACCESS_ACTIONS:
        problems.append((f"{path}.entity", "must name the patient (role 1, or a what "
                                           "referring to a Patient)"))
    resource_ = _resource(entities, {i for i, _ in patients})
    if resource_ is not None:
        event["resource"] = resource_
    purpose = purpose_of(codings(resource.get("purposeOfEvent")))
    if purpose is None and found is not None:
        purpose = purpose_of(codings(found.json.get("purposeOfUse")))
    if purpose is None and action in PHI_ACCESS_ACTIONS:
        purpose = default_purpose
    if purpose is not None:
        event["purpose"] = purpose
    elif action in PHI_ACCESS_ACTIONS:
        problems.append((f"{path}.purposeOfEvent", "must hold an HL7 PurposeOfUse code "
                                                   "(or agent.purposeOfUse)"))
    channel = _text(exts.get("channel"))
    if action in PHI_ACCESS_ACTIONS or channel:
        event["channel"] = channel or DEFAULT_CHANNEL
    if action == "disclose":
        disclosure = _disclosure(agents, entities, path, problems)
        if disclosure is not None:
            event["disclosure"] = disclosure
    data = _data(entities, path, problems)
    if data is not None:
        event["data"] = data
    if (source := _source(resource)) is not None:
        event["source"] = source
    if problems:
        raise FormatRejected(problems)
    return event


# -- event -> AuditEvent ---------------------------------------------------------------


def _extension(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"url": EXT + name, "valueBoolean": value}
    if isinstance(value, int):
        return {"url": EXT + name, "valueInteger": value}
    return {"url": EXT + name, "valueString": value}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


# action -> (type, subtypes, FHIR action code, BALP profile)
_SHAPES: dict[str, tuple[dict[str, Any], list[dict[str, Any]], str, str | None]] = {
    "create": (_coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
               [_coding(RESTFUL, "create", "create")], "C", "Create"),
    "read": (_coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
             [_coding(RESTFUL, "read", "read")], "R", "PatientRead"),
    "update": (_coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
               [_coding(RESTFUL, "update", "update")], "U", "Update"),
    "delete": (_coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
               [_coding(RESTFUL, "delete", "delete")], "D", "Delete"),
    "query": (_coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
              [_coding(RESTFUL, "search-type", "search type")], "E", "PatientQuery"),
    "disclose": (_coding(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event"),
                 [_coding(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event")], "R",
                 "PrivacyDisclosure.Source"),
    "export": (_coding(DCM, EXPORT, "Export"), [], "R", None),
    "print": (_coding(ACTION_SYSTEM, "print"), [], "R", None),
    "login": (_coding(DCM, USER_AUTHENTICATION, "User Authentication"),
              [_coding(DCM, LOGIN, "Login")], "E", None),
    "login_failed": (_coding(DCM, USER_AUTHENTICATION, "User Authentication"),
                     [_coding(DCM, LOGIN, "Login")], "E", None),
    "logout": (_coding(DCM, USER_AUTHENTICATION, "User Authentication"),
               [_coding(DCM, LOGOUT, "Logout")], "E", None),
    "security_alert": (_coding(DCM, SECURITY_ALERT, "Security Alert"), [], "E", None),
    "application_activity": (_coding(DCM, APPLICATION_ACTIVITY, "Application Activity"), [],
                             "E", None),
}


def action_code(action: str) -> str:
    """The AuditEvent.action code (C, R, U, D or E) an entry of ``action`` renders with
    (actions with no BALP pattern, workforce and system records among them: E)."""
    shape = _SHAPES.get(action)
    return shape[2] if shape else "E"


def balp_profile(action: str) -> str | None:
    shape = _SHAPES.get(action)
    return BALP + shape[3] if shape and shape[3] else None


def _agent_of(actor: dict[str, Any], purpose: str | None) -> dict[str, Any]:
    agent: dict[str, Any] = {"who": {"identifier": {"value": actor["id"]}}, "requestor": True}
    extensions = []
    if actor["kind"] == "application":
        agent["type"] = {"coding": [_coding(DCM, APPLICATION, "Application")]}
    elif actor["kind"] != "user":
        extensions.append(_extension("actor-kind", actor["kind"]))
    if actor.get("role"):
        agent["role"] = [{"text": actor["role"]}]
    if actor.get("ip"):
        agent["network"] = {"address": actor["ip"], "type": "2"}
        if actor.get("device_id"):
            extensions.append(_extension("device-id", actor["device_id"]))
    elif actor.get("device_id"):
        agent["network"] = {"address": actor["device_id"], "type": "1"}
    for name, key in (("session-id", "session_id"), ("organization", "organization"),
                      ("mfa", "mfa")):
        if actor.get(key) is not None:
            extensions.append(_extension(name, actor[key]))
    if purpose:
        agent["purposeOfUse"] = [{"coding": [_coding(ACT_REASON, purpose)]}]
    if extensions:
        agent["extension"] = extensions
    return agent


def _recipient_of(disclosure: dict[str, Any]) -> dict[str, Any]:
    recipient = disclosure["recipient"]
    extensions = [_extension("recipient-kind", recipient["kind"]),
                  _extension("disclosure-description", disclosure["description"])]
    if recipient.get("address"):
        extensions.append(_extension("recipient-address", recipient["address"]))
    if disclosure.get("encrypted") is not None:
        extensions.append(_extension("encrypted", disclosure["encrypted"]))
    if disclosure.get("authorization_id"):
        extensions.append(_extension("authorization-id", disclosure["authorization_id"]))
    if recipient.get("partner"):
        extensions.append(_extension("recipient-partner", recipient["partner"]))
    return {"type": {"coding": [_coding(DCM, DESTINATION_ROLE, "Destination Role ID")]},
            "who": {"display": recipient["name"]}, "requestor": False,
            "extension": extensions}


# FHIR's instant: an offset of at most 14 hours (RFC 3339, and so the contract, allows 23:59).
_FHIR_OFFSET = re.compile(r"Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00)", re.ASCII)


def fhir_instant(moment: str) -> str:
    """A contract instant (:func:`ledger.instant.check_instant` accepts it) as a FHIR
    ``instant``: itself, unless its offset is beyond FHIR's 14 hours; then the same
    moment in UTC, its fraction's digits kept."""
    offset_at = len(moment) - (1 if moment.endswith("Z") else 6)
    if _FHIR_OFFSET.fullmatch(moment[offset_at:]):
        return moment
    local = datetime.fromisoformat(moment[:19] + moment[offset_at:])
    fraction = moment[19:offset_at]
    # isoformat, not strftime: glibc's %Y does not pad a year below 1000 to four digits.
    utc = local.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    return utc + fraction + "Z"


def fhir_code(text: str) -> str:
    """``text`` as a FHIR ``code`` (no leading, trailing or repeated whitespace); an
    entry keeps the exact text in an extension where they differ."""
    return " ".join(text.split()) or "-"


def to_audit_event(event: dict[str, Any], *, resource_id: str,
                   received: dict[str, Any] | None = None) -> dict[str, Any]:
    """``event`` (as posted, PHI opened) as an R4 AuditEvent with id ``resource_id``."""
    action = event["action"]
    shape = _SHAPES.get(action)
    if shape is None:  # workforce events: no BALP pattern, our own code says what it was
        shape = (_coding(ACTION_SYSTEM, action), [], action_code(action), None)
    type_, subtypes, code, profile = shape
    if action in AUTH_ACTIONS | SECURITY_ACTIONS or action == "print":
        subtypes = [*subtypes, _coding(ACTION_SYSTEM, action)]
    out: dict[str, Any] = {"resourceType": "AuditEvent", "id": resource_id}
    if profile:
        out["meta"] = {"profile": [BALP + profile]}
    recorded = fhir_instant(event["occurred_at"])
    out.update({"type": type_, "action": code, "recorded": recorded,
                "outcome": OUTCOME_CODES[event["outcome"]]})
    if subtypes:
        out["subtype"] = subtypes
    purpose = event.get("purpose")
    if purpose:
        out["purposeOfEvent"] = [{"coding": [_coding(ACT_REASON, purpose)]}]
    agents = [_agent_of(event["actor"], purpose)]
    if event.get("disclosure"):
        agents.append(_recipient_of(event["disclosure"]))
    out["agent"] = agents
    source = event.get("source") or {"system": "phi-ledger"}
    out["source"] = {"observer": {"identifier": {"value": source["system"]}},
                     "type": [_coding("http://terminology.hl7.org/CodeSystem/"
                                      "security-source-type", "4", "Application Server")]}
    if source.get("site"):
        out["source"]["site"] = source["site"]
    if not event.get("source"):
        out["source"]["extension"] = [_extension("no-source", True)]
    entities: list[dict[str, Any]] = []
    if event.get("patient"):
        entities.append({
            "what": {"identifier": {"value": event["patient"]["id"]}},
            "type": _coding(OBJECT_TYPE, PERSON_TYPE, "Person"),
            "role": _coding(OBJECT_ROLE, PATIENT_ROLE, "Patient"),
        })
    resource = event.get("resource")
    if resource:
        type_code = fhir_code(resource["type"])
        entity: dict[str, Any] = {"type": _coding(RESOURCE_SYSTEM, type_code)}
        exact = [] if type_code == resource["type"] else [
            _extension("resource-type", resource["type"])]
        if resource.get("id"):
            entity["what"] = {"identifier": {"value": resource["id"]}}
        if resource.get("phi") is not None:
            exact.append(_extension("phi", orjson.dumps(resource["phi"]).decode()))
        if exact:
            entity["extension"] = exact
        entities.append(entity)
    if event.get("data") is not None:
        entities.append({
            "type": _coding(DATA_SYSTEM, "data"),
            "detail": [{"type": k, "valueString": orjson.dumps(v).decode()}
                       for k, v in event["data"].items()],
        })
    if entities:
        out["entity"] = entities
    extensions = []
    if event.get("channel"):
        extensions.append(_extension("channel", event["channel"]))
    extensions.append(_extension("event-id", event["event_id"]))
    if recorded != event["occurred_at"]:
        extensions.append(_extension("occurred-at", event["occurred_at"]))
    if received:
        extensions.append(_extension("received-format", received["format"]))
        extensions.append(_extension("received-sha256", received["sha256"]))
        if received.get("entry") is not None:  # the resource's index in the posted Bundle
            extensions.append(_extension("received-entry", received["entry"]))
    out["extension"] = extensions
    return _fhir_strings(out)


# Whitespace a FHIR string cannot hold ([ \r\n\t\S]+: no vertical tab, no NBSP, no
# line separator...), which contract text may: rendered as a space (the entry keeps it).
_NOT_FHIR_STRING = re.compile(r"[^\S \t\n\r]")


def _fhir_strings(value: Any) -> Any:
    """``value`` with every string FHIR-safe (new containers: the codings the renderer
    shares between resources stay as they are)."""
    if isinstance(value, str):
        return _NOT_FHIR_STRING.sub(" ", value)
    if isinstance(value, dict):
        return {key: _fhir_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fhir_strings(item) for item in value]
    return value


__all__ = ["EXT", "NETWORK_TYPE", "FormatRejected", "MappingMemo", "action_code",
           "balp_profile", "codings",
           "to_audit_event", "to_event"]
