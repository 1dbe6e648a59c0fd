"""A realistic synthetic workload: days at a medical answering service, as ledger events.

``Workload(seed).events(n)`` simulates Northside Answering (sites Northside, Riverside and
Lakeview, 24-36 call agents on day, evening and night shifts, supervisors, HR, a privacy officer,
six on-call providers, and the applications answer-desk, sms-gateway, ehr-bridge and fax-server).
Patients call or leave voicemails; agents look them up or register them, take messages and relay
them to on-call providers by phone, secure SMS, encrypted e-mail and fax; providers read them
through the portal; the EHR bridge imports and updates records; supervisors review calls (and
share samples with a QA vendor); patients (PATRQT), health plans (HPAYMT), the health department
(PUBHLTH), a court and the police (LEGAL) receive disclosures; duplicates are deleted; HR and the
privacy officer record hires, training, MFA enrolment, role changes, removals and business
associate agreements. The patient population grows with ``n`` (a few hundred patients in 5,000
events, a few thousand in 100,000); about 3,300 events make a day.

A few percent of events are bad practice for monitoring to find: PHI relayed by plain ``sms`` or
``email`` (``encrypted: false``), an agent reading 8-25 records with no call behind them,
break-the-glass (``ETREAT``) reads after a denial, a login without MFA from an IPv6 address
nobody uses at 02:00-04:00 followed by reads and an export, a removed staff member's account
used hours after ``staff_removed``, denied exports and reads, failed faxes, password guessing.
The first simulated day and night contain one of each workforce action and each incident.

Guarantees:

* Deterministic: the output depends only on ``seed``, ``start`` and ``n`` (no clock, no global
  random state), and ``events(n)`` is a prefix of ``events(m)`` whenever ``n <= m``.
* Every event passes :func:`ledger.event.check_event` and is JSON-ready (str, int, bool, None,
  list and dict only; never a float). Every event has all twelve top-level fields (some null).
* ``occurred_at`` never decreases; it has millisecond precision and the UTC offset of ``start``.
* :meth:`Workload.phi_strings` holds only strings of at least 6 characters that occur verbatim
  (also inside ``json.dumps`` output: plain ASCII, no quotes or backslashes) in events yielded.
* Everything is fictitious: documentation IP ranges, ``.example`` domains, made-up numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from api.workload.data import DEFAULT_START, PHI_KEYS
from api.workload.episodes import run
from api.workload.sim import Sim

__all__ = ["DEFAULT_START", "Workload", "phi_of"]

# What ``staff_added`` data holds about the person (the rest -- staff id, role, site,
# shift -- is workforce data).
STAFF_PHI = frozenset({"name", "dob", "patient_id"})


def phi_of(event: dict[str, Any]) -> Iterator[str]:
    """The PHI strings of one workload event.

    The patient's MRN, the PHI fields of ``data`` on ``create``/``update``, a staff
    member's name, date of birth and own patient id on ``staff_added`` (the monitoring
    conventions: the person is a patient too), and a disclosure's recipient name, address
    and description.
    """
    if event.get("patient"):
        yield event["patient"]["id"]
    if event["action"] in ("create", "update") and event.get("data"):
        yield from (v for k, v in event["data"].items() if k in PHI_KEYS and isinstance(v, str))
    if event["action"] == "staff_added" and event.get("data"):
        yield from (v for k, v in event["data"].items()
                    if k in STAFF_PHI and isinstance(v, str))
    if disclosure := event.get("disclosure"):
        yield disclosure["recipient"]["name"]
        yield disclosure["description"]
        if disclosure["recipient"].get("address"):
            yield disclosure["recipient"]["address"]


class Workload:
    """A deterministic synthetic answering-service workload (see the module docstring).

    ``start`` must carry a UTC offset; by default it is 2026-11-23T06:00-05:00, the start of a
    day shift. Times keep ``start``'s offset throughout (no daylight-saving changes).
    """

    def __init__(self, seed: int = 7, start: datetime | None = None) -> None:
        start = DEFAULT_START if start is None else start
        offset = start.utcoffset()
        if offset is None:
            raise ValueError("start must carry a UTC offset")
        self.seed = seed
        self.start = start.astimezone(timezone(offset))
        self._phi: set[str] = set()

    def events(self, n: int) -> Iterator[dict[str, Any]]:
        """Exactly ``n`` fresh events in ``occurred_at`` order; each call starts from scratch."""
        if n < 0:
            raise ValueError("n must not be negative")
        return self._events(n)

    def _events(self, n: int) -> Iterator[dict[str, Any]]:
        for event in itertools.islice(run(Sim(self.seed, self.start)), n):
            self._phi.update(phi_of(event))
            yield event

    def phi_strings(self) -> set[str]:
        """Every PHI string in the events yielded so far, by any call of :meth:`events`.

        MRNs, patient names, dates of birth, phone and callback numbers, addresses, e-mail
        addresses, conditions, symptoms, message texts, and each disclosure's recipient name,
        address and description (see :func:`phi_of`). A fresh set; yours to change.
        """
        return set(self._phi)
