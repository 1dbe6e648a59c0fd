"""A monitored answering service: the ``data`` conventions, every rule's violation, and the
ground truth of which alerts the contract's rules must raise -- kept apart from the ledger.

``MonitoredService(seed).events(n)`` yields ``n`` events in time order: a staff roster with
names, dates of birth and shifts (day, evening, a night shift crossing midnight), HIPAA
training, business associate agreements, patients with names, dates of birth, states and a
few VIP records, staff who are also patients, and agents' calls: a message created about
the caller (a care relationship), reads, secure disclosures to providers and to business
associates by fax. Into this run, at a few per thousand events each, go the violations:
PHI over plain SMS, a session without MFA, a lapsed trainee, an account not on the roster,
a removed agent's account, a disclosure to a partner whose BAA ended, relatives' and VIP
records (looked up with and without a call behind them), one's own record, access hours
after a shift, break-the-glass (half of them followed by the call that explains them),
a floater's day of 55 patients, an export of 105 patients in an hour, and password
guessing (and near misses: four failures, or five spread over more than 15 minutes).

:attr:`MonitoredService.truth` lists, per event index (0-based, in yield order), the
alerts the rules must raise on it: ``(rule, status, explained_by index or None)``. It is
worked out from what the generator did and knows in plain text (names, who is whose
relative, who was removed), not by running the rules, and never posted.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from api.workload import phi_of

START: Final = datetime.fromisoformat("2026-10-05T06:00:00-05:00")
GIVEN: Final = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo",
                "Kai", "Lena", "Milo", "Nia", "Omar", "Pia", "Quin", "Rosa", "Sam", "Tess")
STAFF_FAMILIES: Final = ("Abara", "Brandt", "Castell", "Dorsey", "Ekwueme", "Fontaine",
                         "Grieve", "Halvorsen", "Ishikawa", "Jablonski", "Kowalczyk",
                         "Lindqvist", "Moreau", "Nakagawa", "Okafor", "Petrov", "Quispe",
                         "Rasmussen", "Szabo", "Tanaka", "Underwood", "Varga", "Whitlock")
PATIENT_FAMILIES: Final = ("Reyes", "Nguyen", "Smith", "Patel", "Kim", "Garcia", "Brown",
                           "Lopez", "Wilson", "Clark", "Lewis", "Young", "Hall", "Allen",
                           "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson",
                           "Hill", "Campbell", "Mitchell", "Roberts", "Carter", "Phillips")
STATES: Final = ("NY", "NJ", "CT", "PA", "MA")
SHIFTS: Final = {"day": (7, 15), "evening": (15, 23), "night": (23, 7)}
INJECTION_RATE: Final = 0.035  # share of episodes that carry a violation
# Trained staff take the HIPAA course again each year, before the last one lapses (the
# `untrained` rule looks 365 days back): a long run is years of the service's time.
RETRAIN_EVERY: Final = timedelta(days=330)
PHI: Final = frozenset({"read", "create", "update", "delete", "disclose", "export",
                        "print", "query"})

Label = tuple[str, str, int | None]


@dataclass
class Person:
    staff_id: str
    given: str
    family: str
    shift: str
    dob: str
    patient_id: str | None = None
    trained: bool = True
    removed: bool = False


@dataclass
class MonitoredService:
    """The labelled workload (see the module docstring). Deterministic in ``seed``."""

    seed: int = 11
    truth: dict[int, list[Label]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._index = 0
        self._t = START
        self._care: dict[tuple[str, str], list[tuple[datetime, int]]] = {}
        self._families: dict[str, str] = {}  # patient -> family name
        self._vip: set[str] = set()
        self._staff_patient: dict[str, str] = {}  # staff id -> own patient id
        self._floater_days: dict[tuple[str, str], set[str]] = {}
        self._pending_bg: list[tuple[int, str, str, datetime]] = []
        self._last_sweep: dict[str, datetime] = {}
        self._phi_seen: set[str] = set()
        self._charts = 0

    # -- making events -----------------------------------------------------------------

    def _event(self, action: str, actor: dict[str, Any], when: datetime,
               **fields: Any) -> dict[str, Any]:
        out = {"event_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
               "occurred_at": when.isoformat(timespec="milliseconds"), "action": action,
               "outcome": fields.pop("outcome", "success"), "actor": actor,
               "purpose": fields.pop("purpose", "TREAT"), "channel": fields.pop("channel", "ehr"),
               "source": {"system": "answer-desk", "site": "Northside"}}
        out.update(fields)
        return out

    def _chart(self) -> dict[str, str]:
        """A patient record's resource: its own id, never the MRN (``resource.id`` is
        not sealed at rest; ``patient.id`` is)."""
        self._charts += 1
        return {"type": "patient", "id": f"chart-{self._charts}"}

    def _user(self, staff_id: str, mfa: bool = True) -> dict[str, Any]:
        return {"id": staff_id, "kind": "user", "role": "call_agent", "mfa": mfa}

    def _emit(self, event: dict[str, Any], labels: list[Label] | None = None
              ) -> tuple[int, dict[str, Any]]:
        index = self._index
        self._index += 1
        if labels:
            self.truth[index] = labels
        return index, event

    # -- the service -------------------------------------------------------------------

    def events(self, n: int) -> Iterator[dict[str, Any]]:
        """Exactly ``n`` events (fewer never: the run goes on as long as asked)."""
        for _, event in itertools.islice(self._run(), n):
            self._phi_seen.update(phi_of(event))
            yield event

    def phi_strings(self) -> set[str]:
        """Every PHI string of the events yielded so far (:func:`api.workload.phi_of`:
        MRNs, patients' and staff's names and dates of birth, staff's own patient ids,
        disclosure recipients and descriptions). A fresh set."""
        return set(self._phi_seen)

    def _on_shift(self, person: Person, when: datetime) -> bool:
        start, end = SHIFTS[person.shift]
        hour = when.hour + when.minute / 60
        # Strictly inside, ten minutes clear of either end.
        if start < end:
            return start + 0.2 <= hour <= end - 0.2
        return hour >= start + 0.2 or hour <= end - 0.2

    def _run(self) -> Iterator[tuple[int, dict[str, Any]]]:
        rng = self._rng
        hr = {"id": "hr-1", "kind": "user", "role": "hr"}
        bridge = {"id": "ehr-bridge", "kind": "application"}
        families = list(STAFF_FAMILIES)
        rng.shuffle(families)
        staff = [Person(f"agent-{i:02d}", GIVEN[i % len(GIVEN)], families[i],
                        ("day", "evening", "night")[i % 3],
                        f"19{70 + i}-0{1 + i % 9}-1{i % 10}") for i in range(18)]
        # Eight digits: a six-digit number could be a timestamp's microseconds.
        staff[3].patient_id, staff[7].patient_id = "MRN-93600003", "MRN-93600007"
        lapsed = staff[5]
        lapsed.trained = False
        floaters = [Person(f"float-{i}", "Wren", families[18 + i], "day",
                           f"198{i}-05-05") for i in range(2)]
        removable = [Person(f"agent-r{i}", "Zed", families[20 + i], "day",
                            f"1977-0{i + 1}-02") for i in range(2)]
        setup = self._t - timedelta(days=40)
        for person in [*staff, *floaters, *removable]:
            data: dict[str, Any] = {
                "staff_id": person.staff_id, "role": "call_agent", "site": "Northside",
                "name": f"{person.given} {person.family}",
                "shift": "{:02d}:00-{:02d}:00".format(*SHIFTS[person.shift]),
                "dob": person.dob}
            if person.patient_id:
                data["patient_id"] = person.patient_id
            yield self._emit(self._event("staff_added", hr, setup, data=data,
                                         resource={"type": "staff", "id": person.staff_id}))
            trained_at = setup + timedelta(days=1) if person.trained else \
                setup - timedelta(days=400)
            yield self._emit(self._event("training_completed", hr, trained_at, data={
                "staff_id": person.staff_id, "course": "HIPAA Privacy and Security"},
                resource={"type": "staff", "id": person.staff_id}))
        for partner in ("ba-fax", "ba-qa", "ba-lapsed"):
            yield self._emit(self._event("baa_signed", hr, setup, data={"partner": partner},
                                         resource={"type": "partner", "id": partner}))
        yield self._emit(self._event("baa_ended", hr, setup + timedelta(days=2),
                                     data={"partner": "ba-lapsed"},
                                     resource={"type": "partner", "id": "ba-lapsed"}))
        # Patients: ordinary ones, VIPs, relatives of staff, and the staff's own records.
        ordinary: list[str] = []
        vips: list[str] = []
        relatives: dict[str, str] = {}
        for i in range(400):
            pid = f"MRN-{41_700_000 + i}"
            family = rng.choice(PATIENT_FAMILIES)
            vip = i % 80 == 0
            (vips if vip else ordinary).append(pid)
            self._families[pid] = family
            data = {"name": f"{rng.choice(GIVEN)} {family}", "dob": f"19{rng.randint(30, 99)}"
                    f"-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}", "state": rng.choice(STATES)}
            if vip:
                data["vip"] = True
                self._vip.add(pid)
            yield self._emit(self._event("create", bridge, setup, patient={"id": pid},
                                         resource=self._chart(), data=data))
        for person in staff[:12]:
            pid = f"MRN-{82_400_000 + int(person.staff_id[-2:])}"
            relatives[person.staff_id] = pid
            self._families[pid] = person.family
            yield self._emit(self._event("create", bridge, setup, patient={"id": pid},
                                         resource=self._chart(), data={
                                             "name": f"Uma {person.family}", "dob": "1950-02-02",
                                             "state": "NY"}))
        for person in staff:
            if person.patient_id:
                self._families[person.patient_id] = person.family
                self._staff_patient[person.staff_id] = person.patient_id
                yield self._emit(self._event("create", bridge, setup,
                                             patient={"id": person.patient_id},
                                             resource=self._chart(),
                                             data={"name": f"{person.given} {person.family}",
                                                   "dob": person.dob, "state": "NJ"}))
        injections = [self._no_sms, self._no_mfa, self._lapsed, self._temp, self._removed,
                      self._no_baa, self._relative, self._vip_look, self._own,
                      self._after_hours, self._break_glass, self._floater_day,
                      self._bulk_export, self._guessing]
        context = {"staff": staff, "ordinary": ordinary, "vips": vips,
                   "relatives": relatives, "floaters": floaters, "removable": removable,
                   "lapsed": lapsed}
        turn = 0
        trained = {p.staff_id: (p, setup + timedelta(days=1))
                   for p in [*staff, *floaters, *removable] if p.trained}
        while True:
            self._t += timedelta(minutes=rng.uniform(4, 8))
            for staff_id, (person, last) in list(trained.items()):
                if not person.removed and self._t - last >= RETRAIN_EVERY:
                    trained[staff_id] = (person, self._t)
                    yield self._emit(self._event("training_completed", hr, self._t, data={
                        "staff_id": staff_id, "course": "HIPAA Privacy and Security"},
                        resource={"type": "staff", "id": staff_id}))
            on = [p for p in staff if self._on_shift(p, self._t) and not p.removed
                  and p.trained]
            if not on:
                continue
            agent = rng.choice(on)
            if rng.random() < INJECTION_RATE:
                injection = injections[turn % len(injections)]
                turn += 1
                yield from injection(agent, context)
            else:
                yield from self._call(agent, rng.choice(ordinary))

    # -- episodes ----------------------------------------------------------------------

    def _labels(self, staff_id: str, patient: str | None, when: datetime, action: str,
                purpose: str = "TREAT", index: int | None = None, person: Person | None = None,
                roster: bool = True) -> list[Label]:
        """What the rules must raise on a user's PHI action, from the generator's own
        knowledge: names (plain), VIPs, care relationships it made, who is whose relative."""
        labels: list[Label] = []
        if person is not None and not person.trained:
            labels.append(("untrained", "open", None))
        if patient is not None:
            care = self._care_before(staff_id, patient, when)
            fam = self._families.get(patient)
            if person is not None and fam == person.family:
                labels.append(("same_last_name", "open" if care is None else "explained",
                               care))
            if self._staff_patient.get(staff_id) == patient:
                labels.append(("self_access", "open", None))
            if patient in self._vip:
                labels.append(("vip_access", "open" if care is None else "explained", care))
            if purpose == "ETREAT":
                labels.append(("break_glass", "open" if care is None else "explained", care))
        return labels

    def _care_before(self, staff_id: str, patient: str, when: datetime) -> int | None:
        found = [i for t, i in self._care.get((staff_id, patient), [])
                 if when - timedelta(hours=72) <= t <= when]
        return max(found) if found else None

    def _phi(self, person: Person, action: str, patient: str, when: datetime,
             extra: list[Label] | None = None, mfa: bool = True, purpose: str = "TREAT",
             **fields: Any) -> tuple[int, dict[str, Any]]:
        resource = fields.pop("resource", {"type": "message", "id": f"m-{self._index}"})
        event = self._event(action, self._user(person.staff_id, mfa), when,
                            patient={"id": patient}, resource=resource, purpose=purpose,
                            **fields)
        labels = self._labels(person.staff_id, patient, when, action, purpose, person=person)
        labels += extra or []
        index, made = self._emit(event, labels)
        if action == "create" and resource.get("type") in ("message", "call", "patient"):
            self._care.setdefault((person.staff_id, patient), []).append((when, index))
            self._explain_break_glass(person.staff_id, patient, when, index)
        if person.staff_id.startswith("float"):
            self._floater_days.setdefault((person.staff_id, when.date().isoformat()),
                                          set()).add(patient)
        return index, made

    def _explain_break_glass(self, staff_id: str, patient: str, when: datetime,
                             index: int) -> None:
        for alert_index, s, p, t in list(self._pending_bg):
            if s == staff_id and p == patient and t <= when <= t + timedelta(hours=24):
                self.truth[alert_index] = [
                    ("break_glass", "explained", index) if rule == "break_glass" else
                    (rule, status, by) for rule, status, by in self.truth[alert_index]]
                self._pending_bg.remove((alert_index, s, p, t))

    def _call(self, agent: Person, patient: str) -> Iterator[tuple[int, dict[str, Any]]]:
        t = self._t
        yield self._phi(agent, "create", patient, t, channel="phone")
        yield self._phi(agent, "read", patient, t + timedelta(seconds=40))
        if self._rng.random() < 0.3:
            yield self._phi(agent, "disclose", patient, t + timedelta(minutes=1),
                            channel="secure_sms", disclosure=self._disclosure(True))
        elif self._rng.random() < 0.1:
            yield self._phi(agent, "disclose", patient, t + timedelta(minutes=1),
                            channel="fax", disclosure=self._disclosure(True, "ba-fax"))

    def _disclosure(self, encrypted: bool, partner: str | None = None) -> dict[str, Any]:
        recipient: dict[str, Any] = {"name": "Dr. On Call", "kind": "provider"}
        if partner:
            recipient = {"name": "Fax Relay Co", "kind": "business_associate",
                         "partner": partner}
        return {"recipient": recipient, "description": "message relayed",
                "encrypted": encrypted}

    # -- injections (each yields its events; truth labels ride on them) ----------------

    def _no_sms(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        patient = self._rng.choice(c["ordinary"])
        yield self._phi(agent, "create", patient, self._t, channel="phone")
        channel = self._rng.choice(("sms", "email"))
        yield self._phi(agent, "disclose", patient, self._t + timedelta(minutes=1),
                        [("insecure_channel", "open", None)], channel=channel,
                        disclosure=self._disclosure(False))

    def _no_mfa(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        yield self._phi(agent, "read", self._rng.choice(c["ordinary"]), self._t,
                        [("no_mfa", "open", None)], mfa=False)

    def _lapsed(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        lapsed: Person = c["lapsed"]
        if self._on_shift(lapsed, self._t):
            yield from self._call(lapsed, self._rng.choice(c["ordinary"]))

    def _temp(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        temp = Person(f"temp-{self._index}", "Temp", "Worker", "day", "1999-09-09",
                      trained=False)
        yield self._phi(temp, "read", self._rng.choice(c["ordinary"]), self._t,
                        [("not_on_roster", "open", None)])

    def _removed(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        left = [p for p in c["removable"] if not p.removed]
        if not left:
            return
        person = left[0]
        person.removed = True
        hr = {"id": "hr-1", "kind": "user", "role": "hr"}
        yield self._emit(self._event("staff_removed", hr, self._t,
                                     data={"staff_id": person.staff_id, "reason": "left"},
                                     resource={"type": "staff", "id": person.staff_id}))
        when = self._t + timedelta(minutes=2)
        if _outside_minutes(person, when) <= 60:
            yield self._phi(person, "read", self._rng.choice(c["ordinary"]), when,
                            [("removed_staff", "open", None)])
        else:
            yield self._phi(person, "read", self._rng.choice(c["ordinary"]), when,
                            [("removed_staff", "open", None), ("after_hours", "open", None)])

    def _no_baa(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        patient = self._rng.choice(c["ordinary"])
        yield self._phi(agent, "create", patient, self._t, channel="phone")
        yield self._phi(agent, "disclose", patient, self._t + timedelta(minutes=1),
                        [("no_baa", "open", None)], channel="fax",
                        disclosure=self._disclosure(True, "ba-lapsed"))

    def _relative(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        patient = c["relatives"].get(agent.staff_id)
        if patient is None:
            return
        if self._rng.random() < 0.5:
            yield from self._call(agent, patient)  # a call from a relative: explained
        else:
            yield self._phi(agent, "read", patient, self._t)

    def _vip_look(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        patient = self._rng.choice(c["vips"])
        if self._rng.random() < 0.5:
            yield from self._call(agent, patient)
        else:
            yield self._phi(agent, "read", patient, self._t)

    def _own(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        own = self._staff_patient.get(agent.staff_id)
        if own is not None:
            yield self._phi(agent, "read", own, self._t)

    def _after_hours(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        # Someone from the other shifts, well over an hour outside theirs.
        off = [p for p in c["staff"] if not p.removed and p.trained and
               _outside_minutes(p, self._t) > 90]
        if not off:
            return
        person = self._rng.choice(off)
        yield self._phi(person, "read", self._rng.choice(c["ordinary"]), self._t,
                        [("after_hours", "open", None)])

    def _break_glass(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        patient = self._rng.choice(c["ordinary"])
        index, event = self._phi(agent, "read", patient, self._t, purpose="ETREAT")
        if self._care_before(agent.staff_id, patient, self._t) is None:
            self._pending_bg.append((index, agent.staff_id, patient, self._t))
        yield index, event
        if self._rng.random() < 0.5:  # the call that explains it, minutes later
            yield self._phi(agent, "create", patient, self._t + timedelta(minutes=3),
                            channel="phone")

    def _floater_day(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        person = c["floaters"][0]
        if not self._on_shift(person, self._t) or self._t.hour >= 13:
            return
        yield from self._sweep(person, "read", 55, c, timedelta(seconds=50))

    def _bulk_export(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        person = c["floaters"][1]
        if not self._on_shift(person, self._t) or self._t.hour >= 13:
            return
        yield from self._sweep(person, "export", 105, c, timedelta(seconds=25))

    def _sweep(self, person: Person, action: str, count: int, c: dict[str, Any],
               step: timedelta) -> Iterator[Any]:
        # At most one sweep in three days: fewer than 7 active days in any 14, so the
        # floater's threshold stays the floor of 50.
        last = self._last_sweep.get(person.staff_id)
        if last is not None and self._t - last < timedelta(days=3):
            return
        self._last_sweep[person.staff_id] = self._t
        day = self._t.date().isoformat()
        seen = self._floater_days.setdefault((person.staff_id, day), set())
        patients = [p for p in c["ordinary"] if p not in seen][:count]
        exported = 0
        for i, patient in enumerate(patients):
            when = self._t + step * i
            extra: list[Label] = []
            if len(seen) + 1 == 51:
                extra.append(("volume_spike", "open", None))
            if action == "export":
                exported += 1
                if exported == 100:
                    extra.append(("bulk_export", "open", None))
            yield self._phi(person, action, patient, when, extra,
                            channel="api" if action == "export" else "ehr",
                            resource={"type": "report", "id": f"r-{self._index}"})
        self._t += step * len(patients)

    def _guessing(self, agent: Person, c: dict[str, Any]) -> Iterator[Any]:
        failures = self._rng.choice((4, 5, 6))
        spread = self._rng.choice((timedelta(minutes=1), timedelta(minutes=4)))
        user = self._user(agent.staff_id)
        for i in range(failures):
            yield self._emit(self._event("login_failed", user, self._t + spread * i,
                                         outcome="failure", channel="api"))
        login_at = self._t + spread * failures
        inside = sum(1 for i in range(failures)
                     if login_at - timedelta(minutes=15) <= self._t + spread * i < login_at)
        labels: list[Label] = [("login_guessing", "open", None)] if inside >= 5 else []
        yield self._emit(self._event("login", user, login_at, channel="api"), labels)
        self._t = login_at


def _outside_minutes(person: Person, when: datetime) -> float:
    start, end = SHIFTS[person.shift]
    minute = when.hour * 60 + when.minute
    s, e = start * 60, end * 60
    inside = s <= minute < e if s < e else (minute >= s or minute < e)
    if inside:
        return 0
    return min((s - minute) % 1440, (minute - e) % 1440)
