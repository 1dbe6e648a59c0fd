"""The fourteen monitoring rules of the contract, as pure functions.

Each rule is ``rule(entry, facts) -> Finding | None``: ``entry`` is one ledger entry as
the rules see it (:class:`Entry`, PHI already reduced to keyed digests and blind
indexes) and ``facts`` what the ledger said *before* it (:class:`Facts`). No I/O, no
clock: the same entry and facts always give the same findings, so a rebuild raises the
same alerts. Windows are measured on ``occurred_at`` (as UTC instants); local times
(shifts, days) in the offset the event was posted with.

``details`` say why in words a reviewer understands, and never hold PHI: counts, codes,
channels and times of the entry itself only.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

from projections.instants import format_utc

PHI_ACTIONS: Final = frozenset(
    {"read", "create", "update", "delete", "disclose", "export", "print", "query"})
EXPLAINABLE: Final = frozenset({"same_last_name", "vip_access", "break_glass"})

SHIFT_GRACE: Final = timedelta(minutes=60)
TRAINING_VALID: Final = timedelta(days=365)
CARE_BEFORE: Final = timedelta(hours=72)
BREAK_GLASS_AFTER: Final = timedelta(hours=24)
VOLUME_FLOOR: Final = 50
VOLUME_FACTOR: Final = 3
VOLUME_DAYS: Final = 14
VOLUME_MIN_DAYS: Final = 7
EXPORT_WINDOW: Final = timedelta(minutes=60)
EXPORT_PATIENTS: Final = 100
GUESS_WINDOW: Final = timedelta(minutes=15)
GUESS_FAILURES: Final = 5

# Bump when any rule's meaning changes: the ledger records which version raised alerts.
RULESET_VERSION: Final = "2026.12.1"

SEVERITY: Final = {
    "insecure_channel": "high",
    "no_mfa": "medium",
    "untrained": "medium",
    "not_on_roster": "high",
    "removed_staff": "critical",
    "no_baa": "high",
    "same_last_name": "medium",
    "self_access": "high",
    "vip_access": "medium",
    "after_hours": "low",
    "break_glass": "medium",
    "volume_spike": "high",
    "bulk_export": "critical",
    "login_guessing": "high",
}


# Not frozen, though nothing changes an entry once made: a frozen dataclass sets each of
# its eighteen fields through object.__setattr__, and making entries was a tenth of the
# alerts view's catch-up.
@dataclass(slots=True)
class Entry:
    """One ledger entry as the rules read it: no PHI in the clear (names are keyed
    digests, patients blind indexes)."""

    ledger: str
    seq: int
    action: str
    outcome: str
    actor_id: str
    actor_kind: str
    at: datetime  # occurred_at, aware, in the offset it was posted with
    system: bool = False  # written by the service itself
    mfa: bool | None = None
    purpose: str | None = None
    channel: str | None = None
    patient: str | None = None  # blind index
    resource_type: str | None = None
    encrypted: bool | None = None  # disclosure.encrypted
    partner: str | None = None  # disclosure.recipient.partner
    # ``utc`` when the caller has it already (a view's Change.occurred_utc): converting
    # ``at`` again cost more than the rest of the entry. Not a field, so ``replace`` with
    # another ``at`` derives it anew.
    known_utc: InitVar[str | None] = None
    # Derived from the above once, when the entry is made (and again by ``replace``):
    # most rules and the state read them for every entry.
    phi: bool = field(init=False)  # a user's successful access to PHI
    day: str = field(init=False)  # the local day of ``at``, YYYY-MM-DD
    utc: str = field(init=False)  # ``at`` as fixed-width UTC text (projections.instants)

    def __post_init__(self, known_utc: str | None) -> None:
        self.phi = (self.actor_kind == "user" and self.action in PHI_ACTIONS
                    and self.outcome == "success")
        self.day = self.at.date().isoformat()
        self.utc = known_utc if known_utc is not None else format_utc(self.at)


@dataclass(frozen=True, slots=True)
class Staff:
    """What the roster said of one staff member (``staff_id`` = the actor id)."""

    added: bool = False  # ever staff_added
    removed: bool = False  # staff_removed, and no staff_added since
    trainings: tuple[datetime, ...] = ()  # HIPAA training_completed, occurred_at, oldest first
    shift: tuple[int, int] | None = None  # start, end: minutes of the local day
    family: str | None = None  # keyed digest of the family name
    name: str | None = None  # keyed digest of the full name
    dob: str | None = None  # keyed digest of the date of birth
    patient: str | None = None  # blind index of their own patient id


@dataclass(slots=True)  # not frozen, as Entry
class Record:
    """What a patient's record said: digests only, and whether it is ``vip``."""

    family: str | None = None
    name: str | None = None
    dob: str | None = None
    vip: bool = False


@dataclass(slots=True)  # not frozen, as Entry: one is made for every entry
class Facts:
    """What the ledger said before the entry, as far as its rules need."""

    roster: bool = False  # some staff_added before
    staff: Staff | None = None  # the actor's
    record: Record | None = None  # the patient's
    baa_in_force: bool | None = None  # for a disclose naming a partner; None: no partner
    day_counts: Mapping[str, int] = field(default_factory=dict)  # by local day, YYYY-MM-DD
    day_patients: int = 0  # distinct patients this local day, this entry included
    day_new_patient: bool = False  # this entry's patient is new this day
    day_fired: bool = False  # volume_spike already raised this day
    export_patients: int = 0  # distinct export/print patients in the hour, this one in
    export_new_patient: bool = False
    export_fired_in_window: bool = False
    failures: tuple[datetime, ...] = ()  # the actor's login_failed, occurred_at


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    details: dict[str, Any]


_ZERO: Final = timedelta(0)


def within(at: datetime, t: datetime, window: timedelta) -> bool:
    """Whether ``t`` lies in ``[at - window, at]``. Compared as a difference, never as a
    shifted instant: ``at - window`` overflows for an ``at`` early in year 1, and one
    such event would stop the view."""
    return _ZERO <= at - t <= window


def is_user_phi(entry: Entry) -> bool:
    return entry.phi


def insecure_channel(entry: Entry, facts: Facts) -> Finding | None:
    if entry.action != "disclose" or entry.outcome != "success":
        return None
    if entry.channel in ("sms", "email"):
        return Finding("insecure_channel", {
            "why": f"PHI disclosed over {entry.channel}, which is not encrypted",
            "channel": entry.channel})
    if entry.encrypted is False:
        return Finding("insecure_channel", {
            "why": "PHI disclosed without encryption", "channel": entry.channel})
    return None


def no_mfa(entry: Entry, facts: Facts) -> Finding | None:
    if is_user_phi(entry) and entry.mfa is False:
        return Finding("no_mfa", {"why": f"{entry.action} of PHI in a session without "
                                         "multi-factor sign-in"})
    return None


def untrained(entry: Entry, facts: Facts) -> Finding | None:
    if not (is_user_phi(entry) and facts.roster):
        return None
    trainings = facts.staff.trainings if facts.staff else ()
    # Oldest first (the state keeps them sorted): the newest one not after the entry
    # decides, as every earlier one is older still.
    at = entry.at
    for t in reversed(trainings):
        if t <= at:
            if at - t <= TRAINING_VALID:
                return None
            break
    return Finding("untrained", {"why": "no HIPAA training completed in the 365 days "
                                        "before this access"})


def not_on_roster(entry: Entry, facts: Facts) -> Finding | None:
    if is_user_phi(entry) and facts.roster and not (facts.staff and facts.staff.added):
        return Finding("not_on_roster", {"why": "the user was never added to the staff "
                                                "roster"})
    return None


def removed_staff(entry: Entry, facts: Facts) -> Finding | None:
    if is_user_phi(entry) and facts.staff is not None and facts.staff.removed:
        return Finding("removed_staff", {"why": "the user was removed from the staff "
                                                "roster before this access"})
    return None


def no_baa(entry: Entry, facts: Facts) -> Finding | None:
    if (entry.action == "disclose" and entry.outcome == "success"
            and entry.partner is not None and facts.baa_in_force is False):
        return Finding("no_baa", {"why": "disclosed to a business associate with no "
                                         "agreement in force", "partner": entry.partner})
    return None


def _on_patient(entry: Entry, facts: Facts) -> bool:
    return is_user_phi(entry) and entry.patient is not None


def same_last_name(entry: Entry, facts: Facts) -> Finding | None:
    staff, record = facts.staff, facts.record
    if (_on_patient(entry, facts) and staff and record and staff.family
            and staff.family == record.family):
        return Finding("same_last_name", {"why": "the patient has the user's family name"})
    return None


def self_access(entry: Entry, facts: Facts) -> Finding | None:
    staff, record = facts.staff, facts.record
    if not (_on_patient(entry, facts) and staff):
        return None
    if staff.patient is not None and staff.patient == entry.patient:
        return Finding("self_access", {"why": "the user opened their own record (their "
                                              "patient id)"})
    if (record and staff.name and staff.dob and staff.name == record.name
            and staff.dob == record.dob):
        return Finding("self_access", {"why": "the user opened their own record (same "
                                              "full name and date of birth)"})
    return None


def vip_access(entry: Entry, facts: Facts) -> Finding | None:
    if _on_patient(entry, facts) and facts.record is not None and facts.record.vip:
        return Finding("vip_access", {"why": "the record is marked VIP"})
    return None


def outside_by(second: int, shift: tuple[int, int]) -> int:
    """How many seconds ``second`` (of the local day) lies outside ``shift`` (start and
    end in minutes of the day); 0 inside. A shift may cross midnight (start > end)."""
    start, end = shift[0] * 60, shift[1] * 60
    if start == end:
        return 0  # round the clock
    inside = start <= second < end if start < end else (second >= start or second < end)
    if inside:
        return 0
    return min((start - second) % 86400, (second - end) % 86400)


def after_hours(entry: Entry, facts: Facts) -> Finding | None:
    staff = facts.staff
    if not (is_user_phi(entry) and staff and staff.shift):
        return None
    local = entry.at
    away = outside_by(local.hour * 3600 + local.minute * 60 + local.second, staff.shift)
    if away > SHIFT_GRACE.total_seconds():
        return Finding("after_hours", {
            "why": f"access {away // 60} minutes outside the user's shift",
            "local_time": local.strftime("%H:%M")})
    return None


def spike_threshold(day: date, counts: Mapping[str, int]) -> int:
    """The distinct-patient count a user's day must exceed to be a spike; ``counts`` by
    local day as ``YYYY-MM-DD`` (as the state keeps them: compared as text, which orders
    as the days do, with no date parsed per entry)."""
    today = day.isoformat()
    first = date.fromordinal(max(1, day.toordinal() - VOLUME_DAYS)).isoformat()
    earlier = [n for d, n in counts.items() if first <= d < today and n > 0]
    if len(earlier) < VOLUME_MIN_DAYS:
        return VOLUME_FLOOR
    return max(VOLUME_FLOOR, int(VOLUME_FACTOR * statistics.median(earlier)))


def volume_spike(entry: Entry, facts: Facts) -> Finding | None:
    if not (_on_patient(entry, facts) and facts.day_new_patient) or facts.day_fired:
        return None
    threshold = spike_threshold(entry.at.date(), facts.day_counts)
    if facts.day_patients > threshold:
        return Finding("volume_spike", {
            "why": f"{facts.day_patients} distinct patients in one day, above the "
                   f"user's threshold of {threshold}",
            "patients": facts.day_patients, "threshold": threshold})
    return None


def bulk_export(entry: Entry, facts: Facts) -> Finding | None:
    if not (_on_patient(entry, facts) and entry.action in ("export", "print")):
        return None
    if (facts.export_new_patient and facts.export_patients >= EXPORT_PATIENTS
            and not facts.export_fired_in_window):
        return Finding("bulk_export", {
            "why": f"exports or prints covering {facts.export_patients} distinct patients "
                   "within 60 minutes", "patients": facts.export_patients})
    return None


def login_guessing(entry: Entry, facts: Facts) -> Finding | None:
    if entry.action != "login" or entry.outcome != "success":
        return None
    failed = sum(1 for t in facts.failures if timedelta(0) < entry.at - t <= GUESS_WINDOW)
    if failed >= GUESS_FAILURES:
        return Finding("login_guessing", {
            "why": f"signed in after {failed} failed logins in the 15 minutes before",
            "failures": failed})
    return None


def break_glass(entry: Entry, facts: Facts) -> Finding | None:
    if is_user_phi(entry) and entry.purpose == "ETREAT":
        return Finding("break_glass", {"why": "emergency access (break-the-glass, ETREAT)"})
    return None


Rule = Callable[[Entry, Facts], Finding | None]
RULES: Final[dict[str, Rule]] = {
    "insecure_channel": insecure_channel,
    "no_mfa": no_mfa,
    "untrained": untrained,
    "not_on_roster": not_on_roster,
    "removed_staff": removed_staff,
    "no_baa": no_baa,
    "same_last_name": same_last_name,
    "self_access": self_access,
    "vip_access": vip_access,
    "after_hours": after_hours,
    "break_glass": break_glass,
    "volume_spike": volume_spike,
    "bulk_export": bulk_export,
    "login_guessing": login_guessing,
}


# The actions each rule can fire on (its first test): an entry is put only to the rules
# of its action, in the order of RULES. All but the three named in _ANY_ACTOR fire only
# on a user's successful access to PHI (is_user_phi).
_FIRES_ON: Final[dict[str, frozenset[str]]] = {
    "insecure_channel": frozenset({"disclose"}),
    "no_baa": frozenset({"disclose"}),
    "bulk_export": frozenset({"export", "print"}),
    "login_guessing": frozenset({"login"}),
}
_ANY_ACTOR: Final = frozenset({"insecure_channel", "no_baa", "login_guessing"})
# (action, whether the entry is a user's access to PHI) -> its rules.
RULES_BY_ACTION: Final[dict[tuple[str, bool], tuple[Rule, ...]]] = {
    (action, phi): tuple(rule for code, rule in RULES.items()
                         if action in _FIRES_ON.get(code, PHI_ACTIONS)
                         and (phi or code in _ANY_ACTOR))
    for action in PHI_ACTIONS | {"login"} for phi in (False, True)
}


def evaluate(entry: Entry, facts: Facts) -> list[Finding]:
    """Every rule's finding on ``entry`` (none for an entry the service wrote)."""
    if entry.system:
        return []
    return [f for rule in RULES_BY_ACTION.get((entry.action, is_user_phi(entry)), ())
            if (f := rule(entry, facts)) is not None]


def ruleset_digest() -> str:
    """SHA-256 over the version, the rule codes, severities and thresholds: what the
    ledger records so a reviewer can tell which rules were in force."""
    described = "|".join([RULESET_VERSION, *(f"{c}:{SEVERITY[c]}" for c in RULES), *map(str, (
        SHIFT_GRACE, TRAINING_VALID, CARE_BEFORE, BREAK_GLASS_AFTER, VOLUME_FLOOR,
        VOLUME_FACTOR, VOLUME_DAYS, VOLUME_MIN_DAYS, EXPORT_WINDOW, EXPORT_PATIENTS,
        GUESS_WINDOW, GUESS_FAILURES))])
    return hashlib.sha256(described.encode()).hexdigest()
