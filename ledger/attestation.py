"""What the service itself states about an entry, beside the client's event.

A client's event says what happened; it cannot say who handed it to the ledger, since
anything in it was written by the client. The service therefore writes *members of its
own* into every entry it appends (beside ``ledger``, ``seq``, ``recorded_at``,
``prev_hash`` and ``event``), covered by the entry hash like everything else:

- ``submitted_by``: ``{"identity": <identity id>, "credential": <key or session id>}`` of
  the authenticated caller whose request appended the event; for the records the service
  composes itself (reads it recorded, identity and key changes, shreds, CLI actions)
  ``{"identity": "phi-ledger", "credential": null}`` -- no client identity can have that
  id (identity ids are ``<kind>-<hex>``), and no client event may claim the service's
  ``source.system`` (see :func:`reserved_source`).
- ``received``: ``{"format": <name>, "sha256": <hex>}`` (and ``"entry": <index>`` for a
  resource inside a FHIR Bundle) on entries made from a standard-format message: the
  SHA-256 of the exact bytes the service received (the request body; the syslog message),
  so an auditor holding what was sent can show the entry came from it. Entries posted
  as contract JSON have none.

One path carries these members from the authenticated caller to the entry: an
:class:`Attestation` passed to :class:`ledger.ingest.Ingest`, kept on each
:class:`ledger.admission.Pending` (``members``), sealed into the entry by
:func:`ledger.chain.extend`. ``received`` differs by event, not by submission: it goes
to ``Ingest`` as one :class:`Received` per event and joins the submission's members in
:meth:`Attestation.members`. A new service-written member is one more field here, one
more name in :data:`ledger.entry.SERVICE_MEMBERS` and a shape check in
:mod:`ledger.chain`.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

SERVICE_SYSTEM: Final = "phi-ledger"  # source.system of the records the service composes
SERVICE_IDENTITY: Final = "phi-ledger"  # submitted_by.identity of those records

NO_MEMBERS: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Submitter:
    """The authenticated identity (and the credential it presented) that submitted an
    entry; ``credential`` is None only for the service's own records."""

    identity: str
    credential: str | None

    def as_member(self) -> dict[str, Any]:
        return {"identity": self.identity, "credential": self.credential}


SERVICE: Final = Submitter(SERVICE_IDENTITY, None)


@dataclass(frozen=True, slots=True)
class Attestation:
    """The service-written members of the entries of one submission."""

    submitted_by: Submitter

    @property
    def by_service(self) -> bool:
        return self.submitted_by == SERVICE

    def members(self, received: Received | None = None) -> Mapping[str, Any]:
        members: dict[str, Any] = {"submitted_by": self.submitted_by.as_member()}
        if received is not None:
            members["received"] = received.as_member()
        return MappingProxyType(members)


RECEIVED_FORMAT = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Received:
    """What the service received for one entry made from a standard-format message:
    the format's name, the SHA-256 of the bytes as received, and -- for one resource of
    a FHIR Bundle, whose digest is the whole Bundle's -- the resource's index in
    ``Bundle.entry``."""

    format: str
    sha256: str
    entry: int | None = None

    def as_member(self) -> dict[str, Any]:
        member: dict[str, Any] = {"format": self.format, "sha256": self.sha256}
        if self.entry is not None:
            member["entry"] = self.entry
        return member


BY_SERVICE: Final = Attestation(SERVICE)


def reserved_source(events: Sequence[Any], *, batch: bool) -> list[str]:
    """The fields (``source.system``, or ``events[i].source.system`` in a batch) of the
    events that claim to be the service's own records: refused from every client."""
    fields = []
    for i, event in enumerate(events):
        source = event.get("source") if isinstance(event, dict) else None
        if isinstance(source, dict) and source.get("system") == SERVICE_SYSTEM:
            fields.append(f"events[{i}].source.system" if batch else "source.system")
    return fields


def well_formed_submitter(value: Any) -> bool:
    """Whether an entry's ``submitted_by`` has the shape the service writes."""
    return (isinstance(value, dict) and value.keys() == {"identity", "credential"}
            and isinstance(value["identity"], str) and bool(value["identity"])
            and (value["credential"] is None or isinstance(value["credential"], str)))


def well_formed_received(value: Any) -> bool:
    """Whether an entry's ``received`` has the shape the service writes."""
    if not isinstance(value, dict) or not {"format", "sha256"} <= value.keys() \
            or not value.keys() <= {"format", "sha256", "entry"}:
        return False
    entry = value.get("entry", 0)
    return (isinstance(value["format"], str) and RECEIVED_FORMAT.fullmatch(value["format"])
            is not None and isinstance(value["sha256"], str)
            and SHA256_HEX.fullmatch(value["sha256"]) is not None
            and type(entry) is int and entry >= 0)
