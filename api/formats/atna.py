"""IHE ATNA ``AuditMessage`` (DICOM PS3.15 A.5; RFC 3881 spellings too) -> contract event.

Parsed with ``defusedxml`` (no DTDs, no entities, no external anything) after a size
check. Coded values are read in both spellings: DICOM's ``csd-code`` /
``codeSystemName`` / ``originalText`` and RFC 3881's ``code`` / ``displayName``.
:func:`to_event` is pure and raises :class:`FormatRejected` with XML paths (never values)
when a message cannot be mapped; the listener keeps such a message as a dead letter.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # the types only: parsing is defusedxml's
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from api.formats.codes import (
    APPLICATION,
    APPLICATION_LAUNCHER,
    DESTINATION_ROLE,
    EMERGENCY_OVERRIDE,
    OUTCOMES,
    PATIENT_RECORD,
    PERSON_TYPE,
    QUERY_ROLE,
    SOURCE_ROLE,
    SYSTEM_OBJECT_TYPE,
    Coded,
    actor_segment,
    classify,
    has,
    purpose_of,
)
from api.formats.fhir_audit import DEFAULT_CHANNEL, FormatRejected
from api.formats.syslog import BOM, MAX_FRAME
from ledger.event import PHI_ACCESS_ACTIONS

# ParticipantObjectDataLifeCycle 11: Disclosure (RFC 3881 / DICOM).
LIFECYCLE_DISCLOSURE = "11"
# The PHI action of a break-the-glass alert, by its EventActionCode (E: Execute, a view).
BREAK_GLASS_ACTIONS = {"C": "create", "R": "read", "U": "update", "D": "delete"}
_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if _local(c.tag) == name]


def _coded(element: ET.Element | None) -> Coded | None:
    if element is None:
        return None
    code = element.get("csd-code") or element.get("code")
    if not code:
        return None
    return Coded(code.strip(), element.get("codeSystemName") or element.get("codeSystem"),
                 element.get("originalText") or element.get("displayName"))


def _codes(element: ET.Element, name: str) -> list[Coded]:
    return [c for e in _children(element, name) if (c := _coded(e)) is not None]


def parse_audit_message(data: bytes, limit: int = MAX_FRAME) -> ET.Element:
    """The ``AuditMessage`` root of ``data``; raises FormatRejected."""
    if len(data) > limit:
        raise FormatRejected([("AuditMessage", f"is larger than {limit} bytes")])
    text: bytes | str = data
    if data.startswith(BOM):
        # RFC 5424: a BOM says the MSG is UTF-8, whatever encoding an XML declaration
        # names; parsed as text, the declaration's encoding is not applied again.
        try:
            text = data[len(BOM):].decode("utf-8")
        except UnicodeDecodeError:
            raise FormatRejected([("AuditMessage", "starts with a UTF-8 BOM but is not "
                                                   "UTF-8")]) from None
    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True,
                          forbid_external=True)
    except DefusedXmlException:
        raise FormatRejected([("AuditMessage", "uses a DTD or entities, which are refused")
                              ]) from None
    except ET.ParseError:
        raise FormatRejected([("AuditMessage", "is not well-formed XML")]) from None
    except LookupError:  # an XML declaration naming an encoding Python does not know
        raise FormatRejected([("AuditMessage", "declares an encoding that is not "
                                               "supported (send UTF-8)")]) from None
    if _local(root.tag) != "AuditMessage":
        raise FormatRejected([("AuditMessage", "the root element must be AuditMessage")])
    return root


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


MAX_ACTOR_ID = 128  # the contract's longest actor id


def _segment(text: str) -> bool:
    return "/" not in text and text not in (".", "..")


def _actor_id(participant: ET.Element) -> str:
    """The actor id of a participant: its UserID; one that cannot be an actor id as it
    is (a system's UserID is often a URL, the wsa:ReplyTo of its request) percent-
    encoded (:func:`actor_segment`: still that system); too long so, its
    AlternativeUserID or UserName. Empty when the participant names no one."""
    user = (participant.get("UserID") or "").strip()
    if not user:
        return (participant.get("AlternativeUserID") or "").strip()
    if _segment(user):
        return user
    encoded = actor_segment(user)
    if len(encoded) <= MAX_ACTOR_ID:
        return encoded
    for other in ("AlternativeUserID", "UserName"):
        text = (participant.get(other) or "").strip()
        if text and _segment(text) and len(text) <= MAX_ACTOR_ID:
            return text
    return encoded  # the contract refuses it: a dead letter that says so


def _actor(participants: list[tuple[int, ET.Element]], problems: list[tuple[str, str]]
           ) -> dict[str, Any]:
    """The requestor: a human requestor first (no source or destination role), else the
    one requesting system, else the only participant."""
    def roles(p: ET.Element) -> list[Coded]:
        return _codes(p, "RoleIDCode")

    requestors = [(i, p) for i, p in participants if _is_true(p.get("UserIsRequestor"))]
    humans = [(i, p) for i, p in requestors
              if not has(roles(p), SOURCE_ROLE, DESTINATION_ROLE, APPLICATION,
                         APPLICATION_LAUNCHER)]
    chosen = humans[:1] or requestors[:1] or (participants if len(participants) == 1 else [])
    if not chosen:
        problems.append(("AuditMessage/ActiveParticipant", "must name the requestor "
                                                          "(UserIsRequestor=\"true\")"))
        return {"id": "-", "kind": "user"}
    i, p = chosen[0]
    at = f"AuditMessage/ActiveParticipant[{i + 1}]"
    actor_id = _actor_id(p)
    if not actor_id:
        problems.append((f"{at}/@UserID", "is required"))
        actor_id = "-"
    system = has(roles(p), SOURCE_ROLE, DESTINATION_ROLE, APPLICATION, APPLICATION_LAUNCHER)
    actor: dict[str, Any] = {"id": actor_id, "kind": "application" if system else "user"}
    role = next((c.code for c in roles(p)
                 if c.code not in (SOURCE_ROLE, DESTINATION_ROLE)), None)
    if role:
        actor["role"] = role
    address = (p.get("NetworkAccessPointID") or "").strip()
    if address:
        kind = (p.get("NetworkAccessPointTypeCode") or "").strip()
        actor["ip" if kind == "2" else "device_id"] = address
    return actor


def _patient(objects: list[tuple[int, ET.Element]], problems: list[tuple[str, str]]
             ) -> str | None:
    patients = {(o.get("ParticipantObjectID") or "").split("^", 1)[0].strip()
                for _, o in objects
                if o.get("ParticipantObjectTypeCode") == PERSON_TYPE
                and o.get("ParticipantObjectTypeCodeRole") == "1"}
    if len(patients) > 1:
        problems.append(("AuditMessage/ParticipantObjectIdentification",
                         "names more than one patient"))
        return None
    pid = next(iter(patients), None)
    if pid == "":
        problems.append(("AuditMessage/ParticipantObjectIdentification/@ParticipantObjectID",
                         "the patient's id is empty"))
        return None
    return pid


def _resource(objects: list[tuple[int, ET.Element]]) -> dict[str, Any] | None:
    for _, o in objects:
        if (o.get("ParticipantObjectTypeCode") != SYSTEM_OBJECT_TYPE
                or o.get("ParticipantObjectTypeCodeRole") == QUERY_ROLE):
            continue
        id_type = _coded(next(iter(_children(o, "ParticipantObjectIDTypeCode")), None))
        rtype = (id_type.display or id_type.code) if id_type else "object"
        rid = (o.get("ParticipantObjectID") or "").strip()
        out: dict[str, Any] = {"type": rtype[:128]}
        if rid:
            out["id"] = rid[:128]
        return out
    return None


def _disclosure(participants: list[tuple[int, ET.Element]], description: str,
                problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    for _, p in participants:
        if has(_codes(p, "RoleIDCode"), DESTINATION_ROLE):
            name = ((p.get("UserName") or "").strip() or (p.get("UserID") or "").strip())
            if not name:
                break
            recipient: dict[str, Any] = {"name": name[:256], "kind": "other"}
            address = (p.get("NetworkAccessPointID") or "").strip() or (
                p.get("UserID") or "").strip()
            if address and address != name:
                recipient["address"] = address
            return {"recipient": recipient, "description": description}
    problems.append(("AuditMessage/ActiveParticipant", "a disclosure must name its "
                                                      "destination (RoleIDCode 110152)"))
    return None


def to_event(data: bytes, *, event_id: str, default_purpose: str | None = None
             ) -> dict[str, Any]:
    """The contract event an AuditMessage records; raises FormatRejected."""
    root = parse_audit_message(data)
    problems: list[tuple[str, str]] = []
    ident = next(iter(_children(root, "EventIdentification")), None)
    if ident is None:
        raise FormatRejected([("AuditMessage/EventIdentification", "is required")])
    event_ids = _codes(ident, "EventID")
    type_codes = _codes(ident, "EventTypeCode")
    outcome = OUTCOMES.get((ident.get("EventOutcomeIndicator") or "").strip())
    if outcome is None:
        problems.append(("AuditMessage/EventIdentification/@EventOutcomeIndicator",
                         "must be 0, 4, 8 or 12"))
        outcome = "failure"
    participants = list(enumerate(_children(root, "ActiveParticipant")))
    objects = list(enumerate(_children(root, "ParticipantObjectIdentification")))
    action_code = (ident.get("EventActionCode") or "").strip()
    if has(event_ids, PATIENT_RECORD) and action_code == "E":
        action_code = "R"
    lifecycle_disclose = any(o.get("ParticipantObjectDataLifeCycle") == LIFECYCLE_DISCLOSURE
                             for _, o in objects)
    subtypes = type_codes + ([Coded("disclose")] if lifecycle_disclose else [])
    action, reason = classify(action_code, event_ids, subtypes, outcome != "success")
    patient = _patient(objects, problems)
    override = has(type_codes, EMERGENCY_OVERRIDE)
    if action == "security_alert" and override and patient:
        # Break-the-glass on a patient's record is a PHI access under emergency purpose
        # (ETREAT), so monitoring's break_glass rule sees it; the security alert alone
        # would hide the access it is about.
        action = BREAK_GLASS_ACTIONS.get(action_code, "read")
    if action is None:
        problems.append(("AuditMessage/EventIdentification/EventID",
                         reason or "is not mapped"))
    occurred = (ident.get("EventDateTime") or "").strip()
    if not _OFFSET.search(occurred):
        problems.append(("AuditMessage/EventIdentification/@EventDateTime",
                         "must be a date and time with a UTC offset"))
    event: dict[str, Any] = {"event_id": event_id, "occurred_at": occurred,
                             "action": action or "read", "outcome": outcome,
                             "actor": _actor(participants, problems)}
    if patient:
        event["patient"] = {"id": patient}
    elif action in PHI_ACCESS_ACTIONS:
        problems.append(("AuditMessage/ParticipantObjectIdentification",
                         "must name the patient (TypeCode 1, TypeCodeRole 1)"))
    resource = _resource(objects)
    if resource is not None:
        event["resource"] = resource
    purpose = ("ETREAT" if override
               else purpose_of(_codes(ident, "PurposeOfUse"))
               or purpose_of(c for _, p in participants for c in _codes(p, "PurposeOfUse"))
               or (default_purpose if action in PHI_ACCESS_ACTIONS else None))
    if purpose:
        event["purpose"] = purpose
    elif action in PHI_ACCESS_ACTIONS:
        problems.append(("AuditMessage/EventIdentification/PurposeOfUse",
                         "must hold an HL7 PurposeOfUse code (no default is configured)"))
    if action in PHI_ACCESS_ACTIONS:
        event["channel"] = DEFAULT_CHANNEL
    if action == "disclose":
        described = next((c.display for c in type_codes + event_ids if c.display), None)
        disclosure = _disclosure(participants, described or "disclosure recorded by an ATNA "
                                 "AuditMessage", problems)
        if disclosure is not None:
            event["disclosure"] = disclosure
    source = next(iter(_children(root, "AuditSourceIdentification")), None)
    if source is not None and (system := (source.get("AuditSourceID") or "").strip()):
        event["source"] = {"system": system[:128]}
        if site := (source.get("AuditEnterpriseSiteID") or "").strip():
            event["source"]["site"] = site[:256]
    if problems:
        raise FormatRejected(problems)
    return event
