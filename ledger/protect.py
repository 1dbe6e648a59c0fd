"""The recipe between a posted event and its stored form: PHI encrypted, identifiers blinded.

:func:`protect` turns a validated posted event into what the ledger stores and hashes;
:func:`reveal` turns it back for a reader holding the patient's data key. The stored form
keeps the shape of the posted event, and every field that is not PHI stays readable, so
chains verify and most views build without any key.

What is protected (:data:`PHI_FIELDS`):

* ``patient.id`` (the MRN) becomes a token, and ``patient.ref`` is added: the patient's
  blind index, computed by the caller, which views use to find the patient;
* ``disclosure.recipient.name``, ``disclosure.recipient.address`` and
  ``disclosure.description`` become tokens;
* every non-null value in ``data`` becomes a token of its canonical JSON (field names
  are kept: they say *which* fields changed, not what they hold).

Each token is bound by its AAD to the ledger, the patient ref and its dotted field path,
so a token copied to another field, patient or ledger does not open.

Events without a patient hold no patient PHI. The workforce and partner events
(``staff_added``, ``baa_signed``, ...) may hold a person's own: a staff member's name, date
of birth, own patient id, shift. :func:`protect_subject` seals those ``data`` values under
the data key of the person the event is about (its *subject*, :func:`subject_of`), with
``subject: {"ref", "key"}`` in place of ``patient``; the identifiers and codes the roster is
built from (:data:`WORKFORCE_PLAIN`) stay readable. Every other event without a patient is
stored unchanged.

Pure: no I/O, no clock; the only randomness is the nonces drawn inside :func:`seal`.
"""

from __future__ import annotations

from typing import Any, Final

from ledger.canonical import canonical, parse
from ledger.crypto.envelope import (
    DataKey,
    EnvelopeError,
    field_aad_prefix,
    field_aad_suffix,
    open_token,
    seal,
)
from ledger.event import WORKFORCE_ACTIONS

PATIENT_ID: Final = "patient.id"
RECIPIENT_NAME: Final = "disclosure.recipient.name"
RECIPIENT_ADDRESS: Final = "disclosure.recipient.address"
DESCRIPTION: Final = "disclosure.description"
DATA_FIELDS: Final = "data.*"
# ``data.*`` stands for every non-null value of ``data``; each is bound to ``data.<name>``.
PHI_FIELDS: Final = (PATIENT_ID, RECIPIENT_NAME, RECIPIENT_ADDRESS, DESCRIPTION, DATA_FIELDS)

ERASED: Final = "[erased]"

# Their ``data`` fields that name or classify rather than describe a person: what the roster
# and partner views read, without a key (ids, role, site, course, reason, BAA terms).
WORKFORCE_PLAIN: Final = frozenset({
    "staff_id", "role", "to_role", "site", "reason", "course", "method", "partner",
    "service", "agreement_id",
})

# The fixed parts of the AADs, encoded once rather than per event.
_PATIENT_ID = field_aad_suffix(PATIENT_ID)
_RECIPIENT_NAME = field_aad_suffix(RECIPIENT_NAME)
_RECIPIENT_ADDRESS = field_aad_suffix(RECIPIENT_ADDRESS)
_DESCRIPTION = field_aad_suffix(DESCRIPTION)


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    # Events are plain JSON (dicts, lists, scalars), so this is a complete deep copy at a
    # fraction of copy.deepcopy's cost; the result shares nothing mutable with the input.
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = type(item)
        if kind is dict:
            out[key] = _copy(item)
        elif kind is list:
            out[key] = _copy_list(item)
        else:
            out[key] = item
    return out


def _copy_list(value: list[Any]) -> list[Any]:
    return [
        _copy(item) if type(item) is dict else _copy_list(item) if type(item) is list else item
        for item in value
    ]


_DATA_SUFFIXES: dict[str, bytes] = {}  # data field name -> its AAD suffix


def _data_aad(prefix: bytes, name: str) -> bytes:
    suffix = _DATA_SUFFIXES.get(name)
    if suffix is None:
        # The same few field names recur in every event; a dict read, not an lru_cache
        # call and a string concatenation, per sealed value.
        suffix = field_aad_suffix("data." + name)
        if len(_DATA_SUFFIXES) < 4096:
            _DATA_SUFFIXES[name] = suffix
    return prefix + suffix


def protect(
    event: dict[str, Any],
    ledger: str,
    patient_ref: str,
    dek: DataKey,
    key_id: str | None = None,
    id_token: str | None = None,
) -> dict[str, Any]:
    """The stored form of a validated posted ``event``, as a new dict (the input is untouched).

    ``patient_ref`` is the blind index of ``event["patient"]["id"]`` in ``ledger`` and
    ``dek`` that patient's data key; ``key_id``, when given, is stored as
    ``patient.key`` so a reader knows which key the tokens need. The result holds no PHI
    in the clear and ``reveal(protect(e, l, r, k), l, k) == e``.

    Only the objects on the paths to protected fields are copied; the rest (actor,
    resource, source) is shared with the input, which ingest never changes after
    validation. Copying the whole event cost a third of the recipe's time.

    ``id_token``, when given, is an earlier token of this same patient id under this same
    key and ledger (see :func:`seal_patient_id`), stored instead of sealing the id again.
    Reusing it shows only that two events name one patient, which ``patient.ref``
    already shows.
    """
    if event.get("patient") is None:
        return _copy(event)
    out = dict(event)
    prefix = field_aad_prefix(ledger, patient_ref)
    patient: dict[str, Any] = {"ref": patient_ref}
    if key_id is not None:
        patient["key"] = key_id
    patient["id"] = id_token or seal_patient_id(event["patient"]["id"], ledger, patient_ref, dek)
    out["patient"] = patient
    if out.get("disclosure") is not None:
        disclosure = out["disclosure"] = dict(out["disclosure"])
        recipient = disclosure["recipient"] = dict(disclosure["recipient"])
        recipient["name"] = seal(dek, recipient["name"].encode("utf-8"), prefix + _RECIPIENT_NAME)
        address = recipient.get("address")
        if address is not None:
            recipient["address"] = seal(dek, address.encode("utf-8"), prefix + _RECIPIENT_ADDRESS)
        disclosure["description"] = seal(
            dek, disclosure["description"].encode("utf-8"), prefix + _DESCRIPTION
        )
    data = out.get("data")
    if data is not None:
        sealed = out["data"] = {}
        for name, value in data.items():
            sealed[name] = None if value is None else seal(
                dek, canonical(value), _data_aad(prefix, name))
    return out


def seal_patient_id(patient_id: str, ledger: str, patient_ref: str, dek: DataKey) -> str:
    """The token ``protect`` stores as ``patient.id``; reusable as its ``id_token``."""
    aad = field_aad_prefix(ledger, patient_ref) + _PATIENT_ID
    return seal(dek, patient_id.encode("utf-8"), aad)


def subject_of(event: dict[str, Any]) -> str | None:
    """The person whose data key seals a workforce or partner event's ``data``, or None
    when the event seals nothing that way (it has a patient, is of another action, or holds
    only :data:`WORKFORCE_PLAIN` fields): the staff id, else the partner, else the resource's
    id, else the actor's."""
    if event.get("patient") is not None or event["action"] not in WORKFORCE_ACTIONS:
        return None
    data = event.get("data")
    if not data or all(v is None or k in WORKFORCE_PLAIN for k, v in data.items()):
        return None
    resource = event.get("resource") or {}
    for who in (data.get("staff_id"), data.get("partner"), resource.get("id"),
                event["actor"].get("id")):
        if isinstance(who, str) and who:
            return who
    return None


def protect_subject(
    event: dict[str, Any], ledger: str, subject_ref: str, dek: DataKey,
    key_id: str | None = None,
) -> dict[str, Any]:
    """The stored form of a workforce or partner event whose :func:`subject_of` is the
    person behind ``subject_ref`` (the blind index of the subject's id) and ``dek`` that
    person's data key: its ``data`` values sealed but for :data:`WORKFORCE_PLAIN`, and
    ``subject: {"ref", "key"}`` added so a reader knows which key opens them."""
    out = dict(event)
    subject: dict[str, Any] = {"ref": subject_ref}
    if key_id is not None:
        subject["key"] = key_id
    out["subject"] = subject
    prefix = field_aad_prefix(ledger, subject_ref)
    out["data"] = {
        name: value if value is None or name in WORKFORCE_PLAIN
        else seal(dek, canonical(value), _data_aad(prefix, name))
        for name, value in event["data"].items()
    }
    return out


def reveal(stored: dict[str, Any], ledger: str, dek: DataKey | None) -> dict[str, Any]:
    """The posted event behind ``stored``, as a new dict.

    With the patient's key it is exactly the posted event; tokens that fail to open (wrong
    key, ledger or patient, moved or altered) raise :class:`EnvelopeError`. With
    ``dek=None`` -- the patient was crypto-shredded -- every protected field present reads
    :data:`ERASED` and nothing raises.
    """
    out = _copy(stored)
    subject = out.pop("subject", None)
    if subject is not None:
        return _reveal_subject(out, ledger, subject, dek)
    patient = out.get("patient")
    if patient is None:
        return out
    if dek is None:
        return _erase(out)
    ref = patient.get("ref")
    if not isinstance(ref, str):
        raise EnvelopeError("stored event has a patient without a ref; it is not protected")
    prefix = field_aad_prefix(ledger, ref)
    # A view row may carry a patient's other PHI without the id token: open what is there.
    out["patient"] = {} if patient.get("id") is None else {
        "id": _open_text(dek, patient["id"], prefix + _PATIENT_ID)
    }
    disclosure = out.get("disclosure")
    if disclosure is not None:
        recipient = disclosure["recipient"]
        recipient["name"] = _open_text(dek, recipient.get("name"), prefix + _RECIPIENT_NAME)
        if recipient.get("address") is not None:
            recipient["address"] = _open_text(
                dek, recipient["address"], prefix + _RECIPIENT_ADDRESS
            )
        disclosure["description"] = _open_text(
            dek, disclosure.get("description"), prefix + _DESCRIPTION
        )
    data = out.get("data")
    if data is not None:
        for name, value in data.items():
            if value is not None:
                data[name] = _open_json(dek, value, _data_aad(prefix, name))
    return out


def _reveal_subject(out: dict[str, Any], ledger: str, subject: Any,
                    dek: DataKey | None) -> dict[str, Any]:
    ref = subject.get("ref") if isinstance(subject, dict) else None
    if not isinstance(ref, str):
        raise EnvelopeError("stored event has a subject without a ref; it is not protected")
    data = out.get("data")
    if not isinstance(data, dict):
        return out
    prefix = field_aad_prefix(ledger, ref)
    for name, value in data.items():
        if value is not None and name not in WORKFORCE_PLAIN:
            data[name] = (ERASED if dek is None
                          else _open_json(dek, value, _data_aad(prefix, name)))
    return out


def _open_text(dek: DataKey, token: Any, aad: bytes) -> str:
    try:
        return open_token(dek, token, aad).decode("utf-8")
    except UnicodeDecodeError:
        # Authenticated yet not UTF-8 means it was sealed by something other than protect().
        raise EnvelopeError("token opened but does not hold UTF-8 text") from None


def _open_json(dek: DataKey, token: Any, aad: bytes) -> Any:
    try:
        return parse(open_token(dek, token, aad))
    except ValueError:
        # orjson's decode error is a ValueError; same reasoning as in _open_text.
        raise EnvelopeError("token opened but does not hold JSON") from None


def _erase(out: dict[str, Any]) -> dict[str, Any]:
    out["patient"] = {} if out["patient"].get("id") is None else {"id": ERASED}
    disclosure = out.get("disclosure")
    if isinstance(disclosure, dict):
        recipient = disclosure.get("recipient")
        if isinstance(recipient, dict):
            if "name" in recipient:
                recipient["name"] = ERASED
            if recipient.get("address") is not None:
                recipient["address"] = ERASED
        if "description" in disclosure:
            disclosure["description"] = ERASED
    data = out.get("data")
    if isinstance(data, dict):
        for name, value in data.items():
            if value is not None:
                data[name] = ERASED
    return out


def sealed_under(stored: dict[str, Any]) -> tuple[str, str | None] | None:
    """``(ref, key_id)`` of the data key a stored event's tokens need -- its patient's, or
    its subject's -- or None when it holds no tokens."""
    holder = stored.get("patient")
    if not isinstance(holder, dict):
        holder = stored.get("subject")
        if not isinstance(holder, dict):
            return None
    ref, key_id = holder.get("ref"), holder.get("key")
    if not isinstance(ref, str):
        return None
    return ref, key_id if isinstance(key_id, str) else None
