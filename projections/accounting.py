"""The accounting of disclosures of 45 CFR 164.528, as pure functions over plain data.

Two questions, both answered here and nowhere else:

* :func:`exemption` -- is one disclosure left out of the accounting, and under which
  paragraph of 164.528(a)(1)? Judged when the disclosure is projected, from the event
  alone (purpose code, recipient kind, authorization, outcome, date), so the reason is
  stored with the disclosure and shown to privacy officers.
* :func:`account` -- the accounting itself: every accountable disclosure with the content
  164.528(b)(2) asks for, oldest first, where repeated disclosures to one recipient for
  one purpose may be summarised as 164.528(b)(3) allows (the first in full, how many,
  and the date of the last).

What cannot be judged from an event is *not* exempted: disclosures incident to another
use (a)(1)(iii), for national security (vi), to correctional institutions (vii) or as
part of a limited data set (viii) carry nothing in the event that says so, and an
accounting that lists one disclosure too many is the safe side of that doubt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger.protect import ERASED

# Treatment, payment and health care operations (164.506): HL7 v3 PurposeOfUse codes.
TREATMENT: Final = frozenset({"TREAT", "ETREAT", "BTG", "CAREMGT", "COC"})
PAYMENT: Final = frozenset({
    "HPAYMT", "CLMATTCH", "COVAUTH", "COVERAGE", "ELIGDTRM", "ELIGVER", "ENROLLM",
    "REMITADV", "PMTDS",
})
OPERATIONS: Final = frozenset({
    "HOPERAT", "POPHLTH", "HACCRED", "HCOMPL", "HDIRECT", "HDM", "HLEGAL", "HOUTCOMS", "HPRGRP",
    "HQUALIMP", "HSYSADMIN", "LABELING", "METAMGT", "MEMADMIN", "PATADMIN", "PATSFTY",
    "PERFMSR", "RECORDMGT", "SYSDEV", "HTEST", "TRAIN",
})
TPO: Final = TREATMENT | PAYMENT | OPERATIONS
# Persons involved in the individual's care, and disaster-relief notification (164.510(b)).
INVOLVED_IN_CARE: Final = frozenset({"FAMRQT", "SUPNWK", "DISASTER"})
# The individual, or their personal representative, who stands in their place (164.502(g)).
THE_INDIVIDUAL: Final = frozenset({"patient", "personal_representative"})
# 164.528(a)(1)(ix): nothing before the Privacy Rule's compliance date is accountable.
COMPLIANCE_DATE_UTC: Final = "2003-04-14T00:00:00.000000Z"

EXEMPTIONS: Final = {
    "not_made": "not a disclosure: it did not take place (outcome was not success)",
    "tpo": "164.528(a)(1)(i): for treatment, payment or health care operations",
    "to_individual": "164.528(a)(1)(ii): to the individual or their personal representative",
    "authorized": "164.528(a)(1)(iv): under the individual's authorization",
    "involved_in_care": "164.528(a)(1)(v): to persons involved in the individual's care "
                        "or for notification purposes (164.510)",
    "before_compliance": "164.528(a)(1)(ix): before the compliance date (2003-04-14)",
}

PURPOSES: Final = {
    "TREAT": "treatment", "ETREAT": "emergency treatment", "BTG": "emergency access",
    "HPAYMT": "payment", "HOPERAT": "health care operations",
    "PATRQT": "at the patient's request", "FAMRQT": "at the family's request",
    "PWATRNY": "to a holder of power of attorney", "SUPNWK": "to the patient's support network",
    "DISASTER": "disaster relief", "THREAT": "to avert a serious threat to health or safety",
    "PUBHLTH": "public health activities (164.512(b))", "HRESCH": "research (164.512(i))",
    "CLINTRCH": "clinical trial research", "LEGAL": "judicial or administrative proceedings "
    "(164.512(e))", "GOV": "specialised government functions (164.512(k))",
    "FRAUD": "fraud investigation", "DONAT": "organ, eye or tissue donation (164.512(h))",
    "HDECD": "about a decedent (164.512(g))", "MILCDM": "military command (164.512(k)(1))",
    "HMARKT": "marketing", "COC": "continuity of care", "CAREMGT": "care management",
}


def exemption(event: dict[str, Any], occurred_utc: str) -> str | None:
    """Why a ``disclose`` event is left out of the accounting (a key of
    :data:`EXEMPTIONS`), or None when it must be accounted for."""
    if event.get("outcome") != "success":
        return "not_made"
    disclosure = event.get("disclosure") or {}
    recipient = disclosure.get("recipient") or {}
    purpose = event.get("purpose")
    if occurred_utc < COMPLIANCE_DATE_UTC:
        return "before_compliance"
    if recipient.get("kind") in THE_INDIVIDUAL:
        return "to_individual"
    if disclosure.get("authorization_id"):
        return "authorized"
    if purpose in TPO:
        return "tpo"
    if purpose in INVOLVED_IN_CARE or (
        recipient.get("kind") == "family" and purpose in {"PWATRNY", "PATRQT"}
    ):
        return "involved_in_care"
    return None


def purpose_statement(code: str | None) -> str:
    """A brief statement of purpose, as 164.528(b)(2)(iv) asks, for a PurposeOfUse code."""
    if code is None:
        return "not stated"
    return f"{PURPOSES.get(code, 'purpose')} ({code})"


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One disclosure, readable (PHI revealed for the accounting's reader)."""

    seq: int
    occurred_at: str
    occurred_utc: str
    recipient_name: str
    recipient_address: str | None
    recipient_kind: str
    description: str
    purpose: str | None
    channel: str | None
    outcome: str
    exempt: str | None
    authorization_id: str | None = None


@dataclass(frozen=True, slots=True)
class AccountingEntry:
    """One line of the accounting: a disclosure, or (``count`` > 1) the summary of
    repeated disclosures to one recipient for one purpose (164.528(b)(3))."""

    first: Disclosure
    count: int
    last: Disclosure

    @property
    def summarised(self) -> bool:
        return self.count > 1


@dataclass(frozen=True, slots=True)
class Accounting:
    """What a patient is owed: accountable disclosures, and those left out with why."""

    entries: tuple[AccountingEntry, ...]
    exempt: tuple[Disclosure, ...]

    @property
    def disclosures(self) -> int:
        return sum(e.count for e in self.entries)


def account(disclosures: Iterable[Disclosure], *, summarise: bool = True) -> Accounting:
    """The accounting of ``disclosures`` (in time order, already limited to the period).

    With ``summarise`` repeated disclosures to the same recipient (name and address) for
    the same purpose become one entry, placed where the first of them occurred."""
    ordered = sorted(disclosures, key=lambda d: (d.occurred_utc, d.seq))
    accountable = [d for d in ordered if d.exempt is None]
    exempt = tuple(d for d in ordered if d.exempt is not None)
    if not summarise:
        return Accounting(tuple(AccountingEntry(d, 1, d) for d in accountable), exempt)
    groups: dict[tuple[object, ...], list[Disclosure]] = {}
    for d in accountable:
        key: tuple[object, ...] = (d.recipient_name, d.recipient_address, d.purpose)
        if d.recipient_name == ERASED:
            # The patient was crypto-shredded: erased recipients cannot be told apart, so
            # none of them is summarised with another (that would claim one recipient).
            key = (ERASED, d.seq)
        groups.setdefault(key, []).append(d)
    entries = [AccountingEntry(g[0], len(g), g[-1]) for g in groups.values()]
    entries.sort(key=lambda e: (e.first.occurred_utc, e.first.seq))
    return Accounting(tuple(entries), exempt)


def explain(code: str | None) -> str | None:
    """The human reason for an exemption code (None for accountable disclosures)."""
    return None if code is None else EXEMPTIONS[code]


def count_by_exemption(disclosures: Sequence[Disclosure]) -> dict[str, int]:
    """How many disclosures each exemption left out (for the report's footnote)."""
    counts: dict[str, int] = {}
    for d in disclosures:
        if d.exempt is not None:
            counts[d.exempt] = counts.get(d.exempt, 0) + 1
    return counts
