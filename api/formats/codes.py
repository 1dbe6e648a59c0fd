"""The coded values the standard audit formats share, and how they meet the contract.

DICOM PS3.16 (the ``DCM`` code system), the FHIR audit-event-type, restful-interaction,
iso-21089-lifecycle, object-role and participation codes, and the outcome codes of
RFC 3881 / DICOM PS3.15 A.5 (0, 4, 8, 12), which FHIR R4 kept.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import NamedTuple, get_args

from ledger.event import PurposeOfUse

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
NETWORK_TYPE = "http://terminology.hl7.org/CodeSystem/network-type"  # FHIR R4 code system

PURPOSES = frozenset(get_args(PurposeOfUse))

# DICOM EventID codes.
APPLICATION_ACTIVITY = "110100"
EXPORT = "110106"
IMPORT = "110107"
PATIENT_RECORD = "110110"
QUERY = "110112"
SECURITY_ALERT = "110113"
USER_AUTHENTICATION = "110114"
# DICOM EventTypeCode codes.
LOGIN = "110122"
LOGOUT = "110123"
NODE_AUTHENTICATION = "110126"
EMERGENCY_OVERRIDE = "110127"
# DICOM role ids of active participants.
SOURCE_ROLE = "110153"
DESTINATION_ROLE = "110152"
APPLICATION = "110150"
APPLICATION_LAUNCHER = "110151"
RECIPIENT = "IRCP"  # v3 ParticipationType: information recipient

# RFC 3881 / DICOM EventOutcomeIndicator -> the contract, and back.
OUTCOMES = {"0": "success", "4": "failure", "8": "denied", "12": "failure"}
OUTCOME_CODES = {"success": "0", "failure": "4", "denied": "8"}

# A patient among the participant objects: type 1 (person), role 1 (patient).
PATIENT_ROLE = "1"
PERSON_TYPE = "1"
SYSTEM_OBJECT_TYPE = "2"
QUERY_ROLE = "24"

# The FHIR interaction subtypes that are searches, reads, writes.
SEARCHES = frozenset({"search", "search-type", "search-system", "history",
                      "history-instance", "history-type", "history-system"})
READS = frozenset({"read", "vread", "access"})


class Coded(NamedTuple):
    """One coded value, whichever spelling carried it (a tuple: an AuditEvent makes a
    dozen, and a frozen dataclass costs several times as much to make)."""

    code: str
    system: str | None = None
    display: str | None = None


def has(codes: Iterable[Coded], *wanted: str) -> bool:
    # A loop, not a set and a generator: asked a dozen times an AuditEvent, of a few
    # codes each.
    for c in codes:  # noqa: SIM110
        if c.code in wanted:
            return True
    return False


def classify(action: str | None, types: list[Coded], subtypes: list[Coded],
             failed: bool) -> tuple[str | None, str | None]:
    """The contract action for an audit record's (action, type, subtypes), or
    (None, reason) when none fits. ``failed``: the outcome was not success (a failed
    login is ``login_failed``)."""
    if has(types, USER_AUTHENTICATION) or has(subtypes, LOGIN, LOGOUT):
        if has(subtypes, LOGOUT):
            return "logout", None
        return ("login_failed" if failed else "login"), None
    if has(types, SECURITY_ALERT):
        return "security_alert", None
    if has(types, APPLICATION_ACTIVITY):
        return "application_activity", None
    if has(subtypes, "disclose") or (has(types, "disclose")):
        return "disclose", None
    if has(types, EXPORT) or has(subtypes, "export"):
        return "export", None
    if has(types, QUERY) or has(subtypes, *SEARCHES):
        return "query", None
    if has(types, IMPORT):
        return "create", None
    crud = {"C": "create", "R": "read", "U": "update", "D": "delete"}.get(action or "")
    if crud is not None:
        return crud, None
    if has(subtypes, *READS):
        return "read", None
    if has(subtypes, "create"):
        return "create", None
    if has(subtypes, "update", "patch"):
        return "update", None
    if has(subtypes, "delete"):
        return "delete", None
    return None, "names no action the ledger records (C, R, U, D, or E with a known type)"


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def derived_event_id(identity: str, key: str) -> str:
    """The event_id of a standard message: the same message posted again by the same
    identity gets the same id (idempotency), two identities never collide.

    ``str(uuid.uuid5(uuid.NAMESPACE_URL, "phi-ledger:<identity>:<key>"))``, made from the
    SHA-1 directly: a Bundle asks a thousand times, and the UUID object's arithmetic
    cost more than the hash."""
    digest = bytearray(hashlib.sha1(
        _URL_NAMESPACE + f"phi-ledger:{identity}:{key}".encode(), usedforsecurity=False
    ).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def purpose_of(codes: Iterable[Coded]) -> str | None:
    """The first code that is an HL7 PurposeOfUse (any system: senders vary)."""
    for c in codes:
        if c.code in PURPOSES:
            return c.code
    return None


def actor_segment(text: str) -> str:
    """``text`` as an actor id, one URL path segment: ``%``, ``/`` (and a ``.`` or ``..``
    alone) percent-encoded. Reversible, so two texts stay two actors."""
    encoded = text.replace("%", "%25").replace("/", "%2F")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded
