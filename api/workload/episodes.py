"""What happens at the answering service: shifts, office days, nights, and call-driven episodes.

:func:`run` draws episodes at random times (a Poisson process whose rate follows the hour of the
day) and hands out the events they schedule in time order. Each episode is a function of the
simulation and its start time; it may schedule events up to a few minutes (shift work) or hours
(office days, incidents) ahead, never before an event already handed out.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from api.workload.data import (
    CONDITIONS,
    COURT,
    DAY_CUM,
    ENCRYPTED,
    HEALTH_DEPT,
    HOUR,
    KINDS,
    LEAD,
    MEDS,
    MESSAGE_PHI,
    MESSAGES,
    MIN,
    NIGHT_CUM,
    PATIENT_PHI,
    PAYERS,
    POLICE,
    QA_VENDOR,
    RATE,
    RELAY,
    RELAY_WEIGHTS,
    SHIFTS,
    SYMPTOMS,
    VENDORS,
    WHEN,
)
from api.workload.sim import Patient, Sim, Staff, Who, disclosure, res


def run(sim: Sim) -> Iterator[dict[str, Any]]:
    """Events forever, in ``occurred_at`` order (ties in the order they were scheduled)."""
    rng, t = sim.rng, 0
    while True:
        while t >= sim.next_b - LEAD:
            shift_change(sim)
        while sim.later and sim.later[0][0] <= t:
            heapq.heappop(sim.later)[2]()
        hour = sim.hour(t)
        cum = NIGHT_CUM if hour >= 22 or hour < 6 else DAY_CUM
        EPISODES[rng.choices(KINDS, cum_weights=cum)[0]](sim, t)
        while sim.heap and sim.heap[0][0] <= t:  # nothing scheduled from now on is earlier
            sim.floor, _, event = heapq.heappop(sim.heap)
            yield event
        t += 1 + int(rng.expovariate(RATE[hour]) * HOUR)


# -- shifts, the office day, the night ---------------------------------------------------------
def shift_change(sim: Sim) -> None:
    """At ``sim.next_b`` the outgoing shift logs out (after handover) and the next one logs in."""
    rng, b, shift = sim.rng, sim.next_b, sim.next_k % 3
    sim.roster = sim.incoming
    for s in sim.roster:
        sim.emit(b + rng.randint(20 * MIN, 40 * MIN), "logout", s)
    sim.incoming, sim.switch_at = [s for s in sim.staff if s.active and s.shift == shift], b
    for s in sim.incoming:
        s.session, at = sim.session(), b - rng.randint(3 * MIN, 12 * MIN)  # before duty
        for _ in range(rng.choice((0,) * 15 + (1, 2, 3))):  # mistyped passwords
            sim.emit(at, "login_failed", s, outcome="failure", over={"session_id": None})
            at += sim.step(5, 30)
        sim.emit(at, "login", s)
    if shift == 0:
        office_day(sim, b)
    elif shift == 2:
        night_incident(sim, b)
    sim.next_k, sim.next_b = sim.next_k + 1, b + 8 * HOUR


def staff_event(sim: Sim, at: int, action: str, who: Staff, subject: Staff, **data: str) -> None:
    sim.emit(at, action, who, resource=res("staff", subject.id),
             data={"staff_id": subject.id, **data})


def office_day(sim: Sim, b: int) -> None:
    """HR and the privacy officer, 08:30-17:30: hires, training, role changes, removals, BAAs.

    The first office day has one of each; a removed account is then used again that night.
    """
    rng, first = sim.rng, sim.days == 0
    sim.days += 1
    hr, priv = sim.office
    for s in sim.office:
        s.session = sim.session()
        sim.emit(b + rng.randint(150, 180) * MIN, "login", s)
        sim.emit(b + rng.randint(690, 720) * MIN, "logout", s)
    t = b + 3 * HOUR + rng.randint(0, 60) * MIN
    if first or rng.random() < 0.3:
        new = sim.add_staff("agent", "call_agent", rng.choice((1, 2)))
        new.mfa = True
        staff_event(sim, t, "staff_added", hr, new, role=new.role, site=new.site,
                    shift=SHIFTS[new.shift])
        staff_event(sim, t + rng.randint(60, 120) * MIN, "training_completed", hr, new,
                    course="HIPAA privacy and security for answering services")
        staff_event(sim, t + rng.randint(130, 170) * MIN, "mfa_enrolled", hr, new, method="totp")
    for s in rng.sample([s for s in sim.staff if s.active], 2):
        staff_event(sim, t + rng.randint(0, 300) * MIN, "training_completed", hr, s,
                    course="annual HIPAA refresher 2026")
    evening, night = ([s for s in sim.staff if s.active and s.role == "call_agent"
                       and s.shift == shift] for shift in (1, 2))
    if (first or rng.random() < 0.2) and len(evening) > 3:  # not on duty until 14:00
        s = rng.choice(evening)
        s.role = "supervisor"
        staff_event(sim, t + rng.randint(0, 200) * MIN, "role_changed", hr, s,
                    from_role="call_agent", to_role="supervisor")
    if (first or rng.random() < 0.25) and len(night) > 3:  # off duty all day
        s, at = rng.choice(night), t + rng.randint(0, 180) * MIN
        s.active = False
        staff_event(sim, at, "staff_removed", hr, s, reason=rng.choice(("resigned", "terminated")))
        if first or rng.random() < 0.6:  # the account still works, and somebody uses it
            vpn = f"192.0.2.{rng.randint(20, 250)}"
            at += rng.randint(6 * HOUR, 14 * HOUR)
            sim.defer(at, partial(intruder, sim, at, s, vpn, 0, rng.randint(2, 5)))
    if first or rng.random() < 0.08:  # replace one business associate with the next
        sim.vendor += 1
        for i, action in enumerate(("baa_ended", "baa_signed")):
            partner, service = VENDORS[(sim.vendor - 1 + i) % len(VENDORS)]
            agreement = f"BAA-2026-{sim.vendor:02d}{i}"
            sim.emit(t + (i + 1) * rng.randint(10, 60) * MIN, action, priv,
                     resource=res("agreement", agreement),
                     data={"partner": partner, "service": service, "agreement_id": agreement})


def night_incident(sim: Sim, b: int) -> None:
    """Between 02:00 and 04:00, someone tries a day agent's password from an odd address."""
    rng, first = sim.rng, sim.nights == 0
    sim.nights += 1
    victims = [s for s in sim.staff if s.active and s.shift == 0]
    if victims and (first or rng.random() < 0.7):
        at, s, ip = b + 4 * HOUR + rng.randint(0, 120) * MIN, rng.choice(victims), sim.odd_ip()
        for _ in range(rng.randint(2, 4)):
            sim.emit(at, "login_failed", s, outcome="failure",
                     over={"ip": ip, "device_id": "unregistered", "session_id": None})
            at += sim.step(3, 20)
        if first or rng.random() < 0.7:
            sim.defer(at, partial(intruder, sim, at, s, ip, 1, rng.randint(4, 10)))


def intruder(sim: Sim, at: int, s: Staff, ip: str, exports: int, reads: int) -> None:
    """A login that should not have worked, without MFA, then browsing (and exports)."""
    s.session = sim.session()
    over = {"ip": ip, "mfa": False, "device_id": "unregistered"}
    sim.emit(at, "login", s, over=over)
    sim.known(at)
    for i, p in enumerate(sim.rng.sample(sim.patients, min(reads, len(sim.patients)))):
        at += sim.step(20, 120)
        sim.emit(at, "export" if i < exports else "read", s, p, purpose="TREAT", channel="ehr",
                 resource=res("patient", None, PATIENT_PHI), over=over)
    sim.emit(at + sim.step(), "logout", s, over=over)


# -- episodes ----------------------------------------------------------------------------------
def call(sim: Sim, t: int, voicemail: bool = False) -> None:
    """A patient calls (or left a voicemail): look up or register them, take a message, relay."""
    rng, a, s = sim.rng, sim.on_duty(t, "call_agent"), t
    p = sim.known(t) if voicemail or rng.random() < 0.7 else None
    if voicemail and p:
        sim.emit(s, "read", a, p, resource=res("recording", sim.next_id("rec"), (
            "voice", "name", "symptoms")), purpose="TREAT", channel="voicemail")
        s += sim.step(30, 150)
    if p is None:
        p = sim.new_patient(s)
        data = {"name": p.name, "dob": p.dob, "phone": p.phone, "address": p.address}
        if rng.random() < 0.5:
            data["condition"] = p.condition
        sim.emit(s, "create", a, p, resource=res("patient", None, tuple(data)),
                 purpose="TREAT", channel="phone", data=data)
    else:
        sim.emit(s, "query", a, p, resource=res("patient", None, ("phone",)), purpose="TREAT",
                 channel="ehr")
        s += sim.step(5, 20)
        sim.emit(s, "read", a, p, resource=res("patient", None, PATIENT_PHI), purpose="TREAT",
                 channel="ehr")
        if rng.random() < 0.15:
            p.phone, s = sim.phone(), s + sim.step()
            sim.emit(s, "update", a, p, resource=res("patient", None, ("phone",)),
                     purpose="TREAT", channel="phone", data={"phone": p.phone})
    symptom, msg = rng.choice(SYMPTOMS), sim.next_id("msg")
    cb = p.phone if rng.random() < 0.7 else sim.phone()
    text = rng.choice(MESSAGES).format(name=p.name, symptom=symptom, cb=cb,
                                       when=rng.choice(WHEN), med=rng.choice(MEDS))
    s += sim.step(40, 200)
    sim.emit(s, "create", a, p, resource=res("message", msg, MESSAGE_PHI), purpose="TREAT",
             channel="voicemail" if voicemail else "phone",
             data={"callback_number": cb, "message_text": text, "symptoms": symptom})
    s = relay(sim, s + sim.step(20, 120), a, p, msg, symptom)
    if rng.random() < 0.15:
        provider_visit(sim, s + rng.randint(5, 40) * MIN, p, msg)


def relay(sim: Sim, s: int, a: Staff, p: Patient, msg: str, symptom: str) -> int:
    """Pass a message to an on-call provider; plain ``sms`` and ``email`` are bad practice."""
    rng, contact = sim.rng, sim.rng.choice(sim.providers).contact
    ch = rng.choices(RELAY, RELAY_WEIGHTS)[0]
    who: Who = {"sms": "sms-gateway", "secure_sms": "sms-gateway", "fax": "fax-server"}.get(ch, a)
    address = {"phone": f"mobile {contact['mobile']}", "secure_sms": contact["pager"],
               "sms": f"text to {contact['mobile']}", "fax": contact["fax"]}.get(
                   ch, contact["email"])
    late = "after-hours " if sim.hour(s) >= 17 or sim.hour(s) < 8 else ""
    description = f"{late}message {msg} for {p.name}: callback number and {symptom}"
    recipient = (contact["name"], address, "provider")
    if ch == "fax" and rng.random() < 0.15:  # busy line; the fax server retries
        sim.emit(s, "disclose", who, p, outcome="failure", purpose="TREAT", channel=ch,
                 resource=res("message", msg, MESSAGE_PHI),
                 disclosure=disclosure(recipient, description))
        s += sim.step(60, 300)
    sim.emit(s, "disclose", who, p, resource=res("message", msg, MESSAGE_PHI), purpose="TREAT",
             channel=ch, disclosure=disclosure(recipient, description, ENCRYPTED.get(ch)))
    return s


def provider_visit(sim: Sim, s: int, p: Patient, msg: str | None = None) -> None:
    """An on-call provider signs in to the portal; a restricted record needs break-the-glass."""
    rng, doc = sim.rng, sim.rng.choice(sim.providers)
    doc.session = sim.session()
    sim.emit(s, "login", doc, channel="portal")
    if msg:
        s += sim.step(10, 60)
        sim.emit(s, "read", doc, p, resource=res("message", msg, MESSAGE_PHI), purpose="TREAT",
                 channel="portal")
    if rng.random() < 0.1:
        s += sim.step(10, 60)
        sim.emit(s, "read", doc, p, outcome="denied", resource=res("patient", None, PATIENT_PHI),
                 purpose="TREAT", channel="portal")
        s += sim.step(10, 40)
        sim.emit(s, "read", doc, p, resource=res("patient", None, PATIENT_PHI),
                 purpose="ETREAT", channel="portal")
    elif rng.random() < 0.5:
        s += sim.step(10, 60)
        sim.emit(s, "read", doc, p, resource=res("patient", None, PATIENT_PHI),
                 purpose="TREAT", channel="portal")
    sim.emit(s + sim.step(30, 300), "logout", doc, channel="portal")


def voicemail(sim: Sim, t: int) -> None:
    call(sim, t, voicemail=True)


def provider(sim: Sim, t: int) -> None:
    if p := sim.known(t):
        provider_visit(sim, t, p)


def sync(sim: Sim, t: int) -> None:
    """The EHR bridge imports a new patient, or updates or reads a known one."""
    rng, p, r = sim.rng, sim.known(t), sim.rng.random()
    if p is None or r < 0.3:
        p = sim.new_patient(t)
        data = {"name": p.name, "dob": p.dob, "phone": p.phone, "address": p.address,
                "email": p.email, "condition": p.condition}
        sim.emit(t, "create", "ehr-bridge", p, resource=res("patient", None, tuple(data)),
                 purpose="TREAT", channel="api", data=data)
    elif r < 0.75:
        key = rng.choice(("condition", "address", "email"))
        setattr(p, key, rng.choice(CONDITIONS) if key == "condition"
                else sim.address() if key == "address" else sim.email(p.name))
        sim.emit(t, "update", "ehr-bridge", p, resource=res("patient", None, (key,)),
                 purpose="TREAT", channel="api", data={key: getattr(p, key)})
    else:
        sim.emit(t, "read", "ehr-bridge", p, resource=res("patient", None, PATIENT_PHI),
                 purpose="TREAT", channel="api")


def review(sim: Sim, t: int) -> None:
    """A supervisor's quality review (HOPERAT), sometimes shared with the QA vendor."""
    rng, sup, p = sim.rng, sim.on_duty(t, "supervisor"), sim.known(t)
    if p is None:
        return
    rec = sim.next_id("rec")
    sim.emit(t, "read", sup, p, resource=res("recording", rec, ("voice",)), purpose="HOPERAT",
             channel="voicemail")
    t, r = t + sim.step(60, 300), rng.random()
    if r < 0.3:
        sim.emit(t, "disclose", sup, p, purpose="HOPERAT", channel="encrypted_email",
                 resource=res("recording", rec, ("voice",)), disclosure=disclosure(
                     QA_VENDOR, f"call quality sample for {p.name}: recording and message "
                     "transcript", True))
    elif r < 0.6:
        action, channel = ("export", "ehr") if r < 0.45 else ("print", "paper")
        sim.emit(t, action, sup, p, resource=res("message_history", sim.next_id("hist"),
                                                 MESSAGE_PHI), purpose="HOPERAT", channel=channel)


def patient_request(sim: Sim, t: int) -> None:
    """A patient asks for copies of their messages (PATRQT), to be sent or picked up."""
    rng, a, p = sim.rng, sim.on_duty(t, "call_agent"), sim.known(t)
    if p is None:
        return
    sim.emit(t, "read", a, p, resource=res("patient", None, PATIENT_PHI), purpose="PATRQT",
             channel="ehr")
    ch = rng.choices(("encrypted_email", "paper", "in_person", "portal"), (35, 30, 20, 15))[0]
    hist = sim.next_id("hist")
    if ch in ("paper", "in_person"):
        t += sim.step(60, 300)
        sim.emit(t, "print", a, p, resource=res("message_history", hist, MESSAGE_PHI),
                 purpose="PATRQT", channel="paper")
    address = {"encrypted_email": p.email, "paper": p.address,
               "portal": f"patient portal account {p.email}"}.get(ch)
    sim.emit(t + sim.step(60, 300), "disclose", a, p, purpose="PATRQT", channel=ch,
             resource=res("message_history", hist, MESSAGE_PHI), disclosure=disclosure(
                 (p.name, address, "patient"), f"copies of the call messages for {p.name}, "
                 "requested by the patient", ENCRYPTED.get(ch)))


def payer(sim: Sim, t: int) -> None:
    """A health plan gets the call log supporting a claim (HPAYMT), by fax."""
    rng, sup, p = sim.rng, sim.on_duty(t, "supervisor"), sim.known(t)
    if p is None:
        return
    claim, (name, address) = f"CLM-{rng.randint(10**6, 10**7 - 1)}", rng.choice(PAYERS)
    if rng.random() < 0.4:
        sim.emit(t, "export", sup, p, resource=res("claim_attachment", claim, ("name", "dob")),
                 purpose="HPAYMT", channel="api")
    sim.emit(t + sim.step(), "disclose", "fax-server", p, purpose="HPAYMT", channel="fax",
             resource=res("claim_attachment", claim, ("name", "dob")),
             disclosure=disclosure((name, address, "health_plan"), f"after-hours call log for "
                                   f"{p.name} ({p.mrn}) supporting claim {claim}"))


def public_health(sim: Sim, t: int) -> None:
    """A reportable condition goes to the county health department (PUBHLTH)."""
    if (p := sim.known(t)) is None:
        return
    sim.emit(t, "disclose", sim.on_duty(t, "supervisor"), p, purpose="PUBHLTH",
             channel=sim.rng.choice(("fax", "api")),
             resource=res("message", None, ("name", "dob", "symptoms")),
             disclosure=disclosure(HEALTH_DEPT, f"reportable condition notice for {p.name}, "
                                   f"born {p.dob}: {sim.rng.choice(SYMPTOMS)}"))


def legal(sim: Sim, t: int) -> None:
    """A subpoena (printed, delivered to the court) or a police request answered by fax."""
    rng, sup, p = sim.rng, sim.on_duty(t, "supervisor"), sim.known(t)
    if p is None:
        return
    docket = f"SUB-2026-{rng.randint(1000, 9999)}"
    if rng.random() < 0.6:
        sim.emit(t, "print", sup, p, resource=res("message_history", None, MESSAGE_PHI),
                 purpose="LEGAL", channel="paper")
        sim.emit(t + sim.step(300, 900), "disclose", sup, p, purpose="LEGAL",
                 channel=rng.choice(("paper", "in_person")),
                 resource=res("message_history", None, MESSAGE_PHI), disclosure=disclosure(
                     COURT, f"call records and messages for {p.name} produced under subpoena "
                     f"{docket}", None, docket))
    else:
        sim.emit(t, "disclose", sup, p, resource=res("message_history", None, MESSAGE_PHI),
                 purpose="LEGAL", channel="fax", disclosure=disclosure(
                     POLICE, f"callback number and call times for {p.name} released under "
                     f"warrant {docket}"))


def duplicate(sim: Sim, t: int) -> None:
    """An agent registers a caller twice; a supervisor deletes the duplicate record."""
    dup = sim.new_patient(t, register=False)
    sim.emit(t, "create", sim.on_duty(t, "call_agent"), dup, purpose="TREAT", channel="phone",
             resource=res("patient", None, ("name", "dob", "phone")),
             data={"name": dup.name, "dob": dup.dob, "phone": dup.phone})
    sim.emit(t + sim.step(120, 600), "delete", sim.on_duty(t, "supervisor"), dup,
             resource=res("patient", None), purpose="RECORDMGT", channel="ehr")


def denied(sim: Sim, t: int) -> None:
    """An agent tries an export, or opens a restricted record, and is refused."""
    if (p := sim.known(t)) is None:
        return
    sim.emit(t, sim.rng.choice(("export", "read")), sim.on_duty(t, "call_agent"), p,
             outcome="denied", resource=res("patient", None, PATIENT_PHI), purpose="TREAT",
             channel="ehr")


def snoop(sim: Sim, t: int) -> None:
    """An agent browses 8-25 patients' records with no call behind any of them."""
    a, k = sim.on_duty(t, "call_agent"), sim.rng.randint(8, 25)
    sim.known(t)
    for p in sim.rng.sample(sim.patients, min(k, len(sim.patients))):
        t += sim.step(8, 40)
        sim.emit(t, "read", a, p, resource=res("patient", None, PATIENT_PHI), purpose="TREAT",
                 channel="ehr")


def guessing(sim: Sim, t: int) -> None:
    """Password guessing against several accounts from one outside address."""
    ip = sim.odd_ip()
    for s in sim.rng.sample(sim.staff, sim.rng.randint(4, 10)):
        t += sim.step(1, 6)
        sim.emit(t, "login_failed", s, outcome="failure",
                 over={"ip": ip, "mfa": None, "device_id": None, "session_id": None})


EPISODES: dict[str, Callable[[Sim, int], None]] = {
    "call": call, "voicemail": voicemail, "sync": sync, "provider": provider, "review": review,
    "patient_request": patient_request, "payer": payer, "public_health": public_health,
    "legal": legal, "duplicate": duplicate, "denied": denied, "snoop": snoop,
    "guessing": guessing,
}
