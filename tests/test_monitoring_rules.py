"""Each rule fires on a minimal example and stays quiet on its nearest non-example
(pure: the rules are functions of an entry and what the ledger said before it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.alerts import entry_of
from projections.instants import format_utc, utc_of
from projections.monitoring.rules import (
    EXPLAINABLE,
    RULES,
    SEVERITY,
    Entry,
    Facts,
    Record,
    Staff,
    evaluate,
    outside_by,
    ruleset_digest,
    spike_threshold,
)
from projections.monitoring.state import Written, care_explains, facts_for, observe, pair
from projections.view import Change
from tests.test_instants import rfc3339

T = datetime.fromisoformat("2026-11-02T12:00:00-05:00")
READ = Entry("default", 10, "read", "success", "agent-1", "user", T, patient="ref-1")
ROSTERED = Staff(added=True, trainings=(T - timedelta(days=30),))


def fires(rule: str, entry: Entry, facts: Facts) -> bool:
    return RULES[rule](entry, facts) is not None


CASES = {
    # rule: (entry, facts that fire, entry/facts nearest that do not)
    "insecure_channel": (
        (replace(READ, action="disclose", channel="sms"), Facts()),
        (replace(READ, action="disclose", channel="secure_sms"), Facts())),
    "no_mfa": ((replace(READ, mfa=False), Facts()), (replace(READ, mfa=True), Facts())),
    "untrained": (
        (READ, Facts(roster=True, staff=Staff(added=True, trainings=(
            T - timedelta(days=365, minutes=1),)))),
        (READ, Facts(roster=True, staff=Staff(added=True, trainings=(
            T - timedelta(days=364, hours=23, minutes=59),))))),
    "not_on_roster": ((READ, Facts(roster=True)), (READ, Facts(roster=False))),
    "removed_staff": ((READ, Facts(staff=Staff(added=True, removed=True))),
                      (READ, Facts(staff=Staff(added=True, removed=False)))),
    "no_baa": ((replace(READ, action="disclose", partner="ba-1"), Facts(baa_in_force=False)),
               (replace(READ, action="disclose", partner="ba-1"), Facts(baa_in_force=True))),
    "same_last_name": ((READ, Facts(staff=Staff(family="d1"), record=Record(family="d1"))),
                       (READ, Facts(staff=Staff(family="d1"), record=Record(family="d2")))),
    "self_access": ((READ, Facts(staff=Staff(patient="ref-1"))),
                    (READ, Facts(staff=Staff(patient="ref-2")))),
    "vip_access": ((READ, Facts(record=Record(vip=True))), (READ, Facts(record=Record()))),
    # shift 08:00-11:00 local; T is 12:00: 60 minutes out is within the grace.
    "after_hours": ((replace(READ, at=T + timedelta(minutes=1)),
                     Facts(staff=Staff(shift=(480, 660)))),
                    (READ, Facts(staff=Staff(shift=(480, 660))))),
    "break_glass": ((replace(READ, purpose="ETREAT"), Facts()),
                    (replace(READ, purpose="TREAT"), Facts())),
    "volume_spike": ((READ, Facts(day_patients=51, day_new_patient=True)),
                     (READ, Facts(day_patients=50, day_new_patient=True))),
    "bulk_export": ((replace(READ, action="export"),
                     Facts(export_patients=100, export_new_patient=True)),
                    (replace(READ, action="export"),
                     Facts(export_patients=99, export_new_patient=True))),
    "login_guessing": (
        (replace(READ, action="login", patient=None),
         Facts(failures=tuple(T - timedelta(minutes=m) for m in (1, 2, 3, 4, 14)))),
        (replace(READ, action="login", patient=None),
         Facts(failures=tuple(T - timedelta(minutes=m) for m in (1, 2, 3, 4, 16))))),
}


def test_every_rule_has_a_case_and_a_severity() -> None:
    assert set(CASES) == set(RULES) == set(SEVERITY)
    assert len(RULES) == 14


@pytest.mark.parametrize("rule", sorted(CASES))
def test_fires_on_example_and_not_on_nearest_non_example(rule: str) -> None:
    (entry, facts), (near, near_facts) = CASES[rule]
    assert fires(rule, entry, facts)
    assert not fires(rule, near, near_facts)


def test_shift_boundaries_cross_midnight() -> None:
    night = (19 * 60, 7 * 60)  # 19:00-07:00
    assert outside_by(6 * 3600 + 59 * 60, night) == 0  # one minute inside
    assert outside_by(8 * 3600, night) == 3600  # the grace: not "more than 60"
    assert outside_by(8 * 3600 + 60, night) == 3660
    assert outside_by(17 * 3600 + 59 * 60, night) == 60 * 60 + 60


def test_volume_threshold_uses_the_median_only_with_seven_active_days() -> None:
    day = date(2026, 11, 20)
    def days(first: int, last: int, n: int = 40) -> dict[str, int]:
        return {(day - timedelta(days=d)).isoformat(): n for d in range(first, last + 1)}

    assert spike_threshold(day, days(1, 6)) == 50
    assert spike_threshold(day, days(1, 7)) == 120
    # the window is the 14 days before: the 15th day back and the day itself do not count
    assert spike_threshold(day, days(2, 8)) == 120
    assert spike_threshold(day, {**days(1, 6), **days(15, 15)}) == 50
    assert spike_threshold(day, {**days(1, 6), **days(0, 0, 90)}) == 50
    assert spike_threshold(day, {**days(8, 14), **days(1, 1, 0)}) == 120
    assert spike_threshold(day, {**days(1, 6), **days(7, 7, 0)}) == 50
    assert spike_threshold(day, days(15, 24)) == 50
    assert spike_threshold(date(1, 1, 3), {"0001-01-01": 5}) == 50


def test_only_users_and_successes_count_and_never_the_service() -> None:
    facts = Facts(record=Record(vip=True))
    assert fires("vip_access", READ, facts)
    assert not fires("vip_access", replace(READ, actor_kind="application"), facts)
    assert not fires("vip_access", replace(READ, outcome="denied"), facts)
    assert evaluate(replace(READ, system=True, purpose="ETREAT"), facts) == []


def test_the_ruleset_digest_names_the_rules() -> None:
    assert len(ruleset_digest()) == 64 and ruleset_digest() == ruleset_digest()


@given(st.integers(0, 86399), st.integers(0, 1439), st.integers(0, 1439))
def test_outside_is_zero_exactly_inside(second: int, start: int, end: int) -> None:
    away = outside_by(second, (start, end))
    assert 0 <= away <= 86400 // 2
    if start != end and away == 0 and second != end * 60:  # the end itself: 0 s out
        minute = second // 60
        assert (start <= minute < end) if start < end else (minute >= start or minute < end)


def _fold(entries: list[Entry]) -> tuple[list[str], list[tuple[int, str, int]]]:
    """Every entry through the view's steps (facts, rules, fold), as the alerts view
    runs them: the rules raised, and the alerts later entries explained."""
    state: dict[tuple[str, str], dict[str, object]] = {}
    raised_rules: list[str] = []
    explained: list[tuple[int, str, int]] = []
    for entry in entries:
        findings = evaluate(entry, facts_for(entry, Written(), state))
        raised = [(f, care_explains(state, entry) if f.rule in EXPLAINABLE else None)
                  for f in findings]
        raised_rules += [f.rule for f in findings]
        explained += observe(entry, Written(), raised, state)
    return raised_rules, explained


def test_rules_work_at_the_first_and_last_instants_validation_accepts() -> None:
    """Windows are compared as differences: ``at - 15 minutes`` in the first minutes of
    year 1 (or ``at + 24 hours`` on 9999-12-31) overflows and stopped the alerts view."""
    first = datetime.fromisoformat("0001-01-01T00:00:00+00:00")
    login = replace(READ, action="login", patient=None)
    failures = [replace(login, seq=i, action="login_failed", outcome="failure",
                        at=first + timedelta(minutes=i)) for i in range(5)]
    rules, _ = _fold([*failures, replace(login, seq=5, at=first + timedelta(minutes=5)),
                      replace(READ, seq=6, at=first, purpose="ETREAT", action="export")])
    assert rules == ["login_guessing", "break_glass"]
    assert spike_threshold(first.date(), {}) == 50

    last = datetime.fromisoformat("9999-12-31T23:59:59.999999+00:00")
    care = replace(READ, seq=8, action="create", resource_type="patient", at=last)
    rules, explained = _fold([replace(READ, seq=7, at=last, purpose="ETREAT"), care])
    assert rules == ["break_glass"] and explained == [(7, "break_glass", 8)]


def test_a_pairs_care_list_keeps_ten_days_behind_its_newest() -> None:
    """Only care in the 72 hours before an entry explains it; the state keeps a week more
    for entries posted late and drops the rest, which every batch would parse again."""
    care = replace(READ, action="create", resource_type="patient")
    state: dict[tuple[str, str], dict[str, object]] = {}
    for seq, day in enumerate([0, 1, 2, 5, 9, 10, 11, 12], start=1):
        observe(replace(care, seq=seq, at=T + timedelta(days=day)), Written(), [], state)
    kept = state[("care", pair("agent-1", "ref-1"))]["at"]
    assert isinstance(kept, list)
    # the newest is day 12: day 2 lies exactly ten days behind, and stays
    assert [seq for _, seq in kept] == [3, 4, 5, 6, 7, 8]
    # a read posted late, on day 6, is explained by day 5's care, which was kept
    assert care_explains(state, replace(READ, seq=20, at=T + timedelta(days=6))) == 4
    # one more than a week late, on day 1 at noon, it finds day 1's care gone
    assert care_explains(state, replace(READ, seq=21, at=T + timedelta(days=1, hours=1))) is None

    first = datetime.fromisoformat("0001-01-02T00:00:00+00:00")
    early: dict[tuple[str, str], dict[str, object]] = {}
    for seq in (1, 2):
        observe(replace(care, seq=seq, at=first + timedelta(hours=seq)), Written(), [], early)
    listed = early[("care", pair("agent-1", "ref-1"))]["at"]
    assert isinstance(listed, list) and [s for _, s in listed] == [1, 2]


@given(rfc3339())
def test_an_entry_made_from_a_change_has_the_utc_its_time_gives(moment: str) -> None:
    # entry_of hands the view's converted time to Entry instead of converting again:
    # the two must agree, or the state's windows would compare unlike texts.
    event = {"action": "read", "outcome": "success", "occurred_at": moment,
             "actor": {"id": "agent-1", "kind": "user"}, "event_id": "e-1"}
    entry = entry_of(Change(1, "default", 1, "2026-11-26T07:00:00Z", event, utc_of(moment)))
    made_here = Entry("default", 1, "read", "success", "agent-1", "user", entry.at)
    assert entry.utc == format_utc(entry.at) == made_here.utc
    # replace() with another time derives the text anew, not the old one carried over.
    later = replace(entry, at=entry.at + timedelta(hours=1, microseconds=1))
    assert later.utc == format_utc(entry.at + timedelta(hours=1, microseconds=1))

