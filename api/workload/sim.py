"""The state of one simulation run: staff, providers, patients, identifiers and the event queue.

Times are integer milliseconds after ``start``. :meth:`Sim.emit` schedules an event on a heap;
:func:`api.workload.episodes.run` pops them in time order. Nothing here reads a clock or global
random state: every choice comes from ``Sim.rng``.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from api.workload.data import (
    APPS,
    AREAS,
    CONDITIONS,
    FIRST,
    HOUR,
    LAST,
    ORG,
    PROVIDERS,
    SITES,
    STREETS,
    TOWNS,
)


@dataclass
class Patient:
    """A patient as the service knows them; mutated when their record is updated."""

    mrn: str
    name: str
    dob: str
    phone: str
    address: str
    email: str
    condition: str


@dataclass
class Staff:
    """A workforce member or an on-call provider (providers have ``contact`` details)."""

    id: str
    role: str
    shift: int  # index into SHIFTS; 3 = office hours, 4 = on call (providers)
    site: str
    device: str
    ip: str
    mfa: bool = True
    org: str = ORG
    active: bool = True
    session: str | None = None
    contact: dict[str, str] = field(default_factory=dict)


Who = Staff | str  # a person, or the name of an application (a key of APPS)


def res(kind: str, ident: str | None, phi: tuple[str, ...] = ()) -> dict[str, Any]:
    """A fresh ``resource`` object (patient records go by ``patient.id`` alone)."""
    out: dict[str, Any] = {"type": kind, "phi": list(phi)}
    if ident is not None:
        out["id"] = ident
    return out


def disclosure(recipient: tuple[str, str | None, str], description: str,
               encrypted: bool | None = None, authorization: str | None = None
               ) -> dict[str, Any]:
    """A fresh ``disclosure`` object; ``recipient`` is (name, address or None, kind)."""
    name, address, kind = recipient
    out: dict[str, Any] = {"recipient": {"name": name, "kind": kind}, "description": description,
                           "encrypted": encrypted}
    if address is not None:
        out["recipient"]["address"] = address
    if authorization is not None:
        out["authorization_id"] = authorization
    return out


class Sim:
    """One run: the people and patients, the identifiers handed out, the scheduled events."""

    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = rng = random.Random(seed)
        self.start = start
        self.heap: list[tuple[int, int, dict[str, Any]]] = []
        self.later: list[tuple[int, int, Callable[[], None]]] = []  # work to do at a given time
        self.pushed = self.floor = self.days = self.nights = self.vendor = 0
        self.serial = rng.randrange(10_000, 80_000)
        self.next_mrn = rng.randrange(10_000, 60_000)
        self.patients: list[Patient] = []
        self.pending: list[tuple[int, str, Patient]] = []  # created, not yet usable by others
        self.staff: list[Staff] = []
        for i in range(rng.randint(24, 36)):  # call agents, at least three on each shift
            shift = i % 3 if i < 9 else rng.choices((0, 1, 2), (35, 40, 25))[0]
            self.add_staff("agent", "call_agent", shift)
        for shift in (0, 1, 2, rng.randrange(3)):
            self.add_staff("sup", "supervisor", shift)
        self.office = [self.add_staff("hr", "hr_admin", 3),
                       self.add_staff("priv", "privacy_officer", 3)]
        self.providers = [self.provider(i, name, org) for i, (name, org) in enumerate(PROVIDERS)]
        self.midnight = -1000 * (start.hour * 3600 + start.minute * 60 + start.second)
        k = (-self.midnight - 6 * HOUR) // (8 * HOUR)  # the shift under way at ``start``
        self.next_k, self.next_b = k, self.midnight + 6 * HOUR + k * 8 * HOUR
        self.roster: list[Staff] = []  # the shift on duty
        self.incoming: list[Staff] = []  # the next shift, on duty from ``switch_at``
        self.switch_at = 0

    # -- people and patients -------------------------------------------------------------------
    def add_staff(self, prefix: str, role: str, shift: int) -> Staff:
        site, n = self.rng.choices(list(SITES), (45, 35, 20))[0], len(self.staff) + 1
        device = f"{'lt' if site == 'Lakeview' else 'ws'}-{n:02d}"
        staff = Staff(f"{prefix}-{n:04d}", role, shift, site, device,
                      f"{SITES[site]}.{self.rng.randint(20, 250)}", self.rng.random() < 0.9)
        self.staff.append(staff)
        return staff

    def provider(self, i: int, name: str, org: str) -> Staff:
        first, last = name.split()[1], name.split()[-1]
        email = f"{first[0]}.{last}@{org.replace(' ', '-')}.example".lower()
        doc = Staff(f"prov-{i + 1:02d}", "physician", 4, "Northside", f"phone-{i + 1:02d}",
                    f"192.0.2.{self.rng.randint(20, 250)}", org=org)
        doc.contact = {"name": name, "mobile": self.phone(), "email": email,
                       "pager": f"on-call pager {self.rng.randint(1000, 9999)}",
                       "fax": f"fax {self.phone()}"}
        return doc

    def phone(self) -> str:
        rng = self.rng
        return f"({rng.choice(AREAS)}) {rng.randint(201, 989)}-{rng.randint(0, 9999):04d}"

    def address(self) -> str:
        town, zipcode = self.rng.choice(TOWNS)
        return f"{self.rng.randint(12, 9800)} {self.rng.choice(STREETS)}, {town}, MA {zipcode}"

    def email(self, name: str) -> str:
        first, last = name.split()[0], name.split()[-1]
        return f"{first}.{last}{self.rng.randint(10, 999)}@mail.example".lower()

    def new_patient(self, ready: int, register: bool = True) -> Patient:
        """A new patient; others may pick them (``known``) from ``ready`` on, if registered."""
        rng = self.rng
        self.next_mrn += rng.randint(1, 9)
        dob = date(1932, 1, 1) + timedelta(days=rng.randrange(33_000))
        name = f"{rng.choice(FIRST)} {chr(65 + rng.randrange(26))}. {rng.choice(LAST)}"
        patient = Patient(f"MRN-{self.next_mrn:07d}", name, dob.isoformat(), self.phone(),
                          self.address(), self.email(name), rng.choice(CONDITIONS))
        if register:
            heapq.heappush(self.pending, (ready, patient.mrn, patient))
        return patient

    def known(self, t: int) -> Patient | None:
        """A patient whose record exists at ``t`` (None before the first one)."""
        while self.pending and self.pending[0][0] <= t:
            self.patients.append(heapq.heappop(self.pending)[2])
        return self.rng.choice(self.patients) if self.patients else None

    def on_duty(self, t: int, role: str) -> Staff:
        """Someone logged in at ``t`` with ``role`` (anyone on the shift if nobody has it)."""
        if t >= self.switch_at:
            self.roster = self.incoming
        return self.rng.choice([s for s in self.roster if s.role == role] or self.roster)

    # -- identifiers and times -----------------------------------------------------------------
    def next_id(self, prefix: str) -> str:
        self.serial += self.rng.randint(1, 7)
        return f"{prefix}-{self.serial}"

    def session(self) -> str:
        return f"s-{self.rng.getrandbits(40):010x}"

    def odd_ip(self) -> str:
        """An address nobody at the service uses (IPv6 documentation prefix)."""
        return f"2001:db8:{self.rng.randrange(0x1000, 0xFFFF):x}::{self.rng.randrange(1, 0xFFFF):x}"

    def step(self, lo: int = 15, hi: int = 90) -> int:
        """A pause of ``lo`` to ``hi`` seconds, in milliseconds."""
        return self.rng.randint(lo * 1000, hi * 1000)

    def hour(self, ms: int) -> int:
        """The local hour of day at ``ms``."""
        return (ms - self.midnight) // HOUR % 24

    def defer(self, ms: int, work: Callable[[], None]) -> None:
        """Run ``work`` once the simulation reaches ``ms`` (so it sees the state of then)."""
        heapq.heappush(self.later, (ms, self.pushed, work))
        self.pushed += 1

    # -- events --------------------------------------------------------------------------------
    def emit(self, ms: int, action: str, who: Who, patient: Patient | None = None, *,
             outcome: str = "success", resource: dict[str, Any] | None = None,
             purpose: str | None = None, channel: str | None = None,
             disclosure: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
             over: dict[str, Any] | None = None) -> None:
        """Schedule one event at ``ms``; ``over`` overrides actor fields (a stolen login, say)."""
        if isinstance(who, str):
            actor: dict[str, Any] = {"id": who, "kind": "application", "role": "integration",
                                     "organization": ORG, "device_id": f"srv-{who}",
                                     "ip": APPS[who]}
            source = {"system": who, "site": "Northside"}
        else:
            actor = {"id": who.id, "kind": "user", "role": who.role, "organization": who.org,
                     "mfa": who.mfa, "device_id": who.device, "ip": who.ip,
                     "session_id": who.session}
            source = {"system": "answer-desk", "site": who.site}
        actor.update(over or {})
        ms = max(ms, self.floor)  # never before an event already handed out
        event = {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "occurred_at": (self.start + timedelta(milliseconds=ms)).isoformat("T", "milliseconds"),
            "action": action,
            "outcome": outcome,
            "actor": actor,
            "patient": {"id": patient.mrn} if patient else None,
            "resource": resource,
            "purpose": purpose,
            "channel": channel,
            "disclosure": disclosure,
            "data": data,
            "source": source,
        }
        heapq.heappush(self.heap, (ms, self.pushed, event))
        self.pushed += 1
