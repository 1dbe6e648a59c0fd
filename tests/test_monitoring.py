"""The alerts view on both backends: rules judged against what the ledger said before,
explanations by care relationship (also by a later entry), rebuilds that raise the same
alerts, independence from unrelated users' order, and the record convention."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from projections.alert_queries import alerts_for_seqs
from projections.runner import Projector
from projections.view import is_service_record
from tests.monitoring_support import (
    alerts,
    at,
    event,
    post,
    read,
    record,
    rules_of,
    staff_added,
    trained,
    user,
)


def _by_id(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["alert_id"]: a for a in found}


def test_care_relationship_explains_at_raise_and_later(svc: Any) -> None:
    seqs = post(svc, [
        staff_added("agent-1", name="Ana Reyes"), trained("agent-1"),
        record("MRN-1", name="Bo Reyes", vip=True),
        # a message about MRN-1 created by agent-1: a care relationship from here on
        event("create", at(0), patient="MRN-1", resource={"type": "message", "id": "m1"}),
        read("MRN-1", at(60)),  # explained by the message
        read("MRN-2", at(hours=2), purpose="ETREAT"),  # break-glass, no care yet
        read("MRN-3", at(hours=3), purpose="ETREAT"),  # break-glass, care 25 h after
        event("create", at(hours=20), patient="MRN-2",
              resource={"type": "call", "id": "c1"}),
        event("create", at(hours=28), patient="MRN-3",
              resource={"type": "call", "id": "c2"}),
    ])
    found = _by_id(alerts(svc))
    vip = found[f"{seqs[4]}-vip_access"]
    assert vip["status"] == "explained" and vip["explained_by"] == seqs[3]
    assert found[f"{seqs[4]}-same_last_name"]["explained_by"] == seqs[3]
    late = found[f"{seqs[5]}-break_glass"]
    assert late["status"] == "explained" and late["explained_by"] == seqs[7]
    assert found[f"{seqs[6]}-break_glass"]["status"] == "open"
    # The message itself (an access to a VIP record) had no care before it: open.
    assert found[f"{seqs[3]}-vip_access"]["status"] == "open"


def test_state_is_what_the_ledger_said_before(svc: Any) -> None:
    seqs = post(svc, [
        staff_added("agent-1", shift="08:00-17:00"), trained("agent-1"),
        read("MRN-1", at(hours=9, minutes=-1)),  # 17:59 local: inside the grace
        read("MRN-1", at(hours=9, minutes=1)),  # 18:01: more than 60 minutes out
        event("staff_removed", at(hours=10), actor="hr-1", data={"staff_id": "agent-1"},
              resource={"type": "staff", "id": "agent-1"}),
        read("MRN-1", at(hours=10, minutes=1)),
        *[event("login_failed", at(hours=11, minutes=m), actor="agent-2", outcome="failure")
          for m in range(4)],
        event("login", at(hours=11, minutes=5), actor="agent-2"),
        event("login_failed", at(hours=11, minutes=6), actor="agent-2", outcome="failure"),
        event("login", at(hours=11, minutes=7), actor="agent-2"),
    ])
    found = alerts(svc)
    assert "after_hours" not in rules_of(found, seqs[2])
    assert "after_hours" in rules_of(found, seqs[3])
    assert "removed_staff" not in rules_of(found, seqs[3])
    assert "removed_staff" in rules_of(found, seqs[5])
    assert "login_guessing" not in rules_of(found, seqs[10])  # after the 4th failure
    assert rules_of(found, seqs[12]) == {"login_guessing"}  # after the 5th


def test_volume_spike_on_the_51st_patient_once(svc: Any) -> None:
    seqs = post(svc, [read(f"MRN-{i}", at(i)) for i in range(53)])
    found = [a for a in alerts(svc) if a["rule"] == "volume_spike"]
    assert [a["seq"] for a in found] == [seqs[50]]


def test_bulk_export_on_the_100th_patient_within_the_hour(svc: Any) -> None:
    spread = [event("export", at(i * 0.5), patient=f"MRN-{i}") for i in range(99)]
    # MRN-0 (minute 0) is out of the hour at minute 60.5: 99 in the window, no alert.
    late = event("export", at(60.5), patient="MRN-X")
    seqs = post(svc, [*spread, late, event("export", at(61), patient="MRN-Y"),
                      event("export", at(61.5), patient="MRN-Z")])
    found = [a for a in alerts(svc) if a["rule"] == "bulk_export"]
    # Each later export pushes an early one out of the hour: still 99 at 61 and 61.5.
    assert found == []
    # At 62 four early ones are out (95 left) and X, Y, Z count: the second new one is
    # the 100th; the third is the 101st of the same hour (one alert, not two).
    seqs = post(svc, [event("export", at(62), patient=f"MRN-N{i}") for i in range(3)])
    found = [a for a in alerts(svc) if a["rule"] == "bulk_export"]
    assert [a["seq"] for a in found] == [seqs[1]]


# -- properties over generated days ------------------------------------------------------
#
# A user's day is a list of steps: what they do, to which patient, how many minutes after
# the previous step, with or without MFA. The users share patients (one VIP, one sharing
# the staff's family name) but change no patient's record, so they are unrelated: the
# rules' state for one (care relationships, counts, failed logins) is not the other's.
# Each example posts to ledgers of its own.

KINDS = ("read", "read", "break_glass", "message", "export", "sms", "login_failed",
         "login_failed", "login")
# Mostly minutes apart (failed logins within 15 minutes, care within 24 hours), now and
# then hours (out of the shift, into the next day).
GAP = st.one_of(st.integers(0, 4), st.integers(0, 4), st.integers(0, 600))
# A step may be repeated a minute apart (a burst of failed logins, of reads).
STEP = st.tuples(st.sampled_from(KINDS), st.integers(0, 3), GAP, st.booleans(),
                 st.sampled_from((1, 1, 2, 3, 5)))
DAY = st.lists(STEP, min_size=1, max_size=10)
PROPERTY = settings(max_examples=25, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
# A rebuild folds every ledger the examples made so far: fewer of those.
REBUILDS = settings(PROPERTY, max_examples=10)
_ledgers = itertools.count()


def _roster(users: str) -> list[dict[str, Any]]:
    """Staff (agent-a trained, the others not) and the patients' records."""
    out = [record("MRN-0", name="Bo Vance", vip=True), record("MRN-1", name="Cy Reyes")]
    for u in users:
        out.append(staff_added(f"agent-{u}", name=f"Ana {u.upper()} Reyes",
                               shift="08:00-17:00"))
        if u == "a":
            out.append(trained(f"agent-{u}"))
    return out


def _day(u: str, steps: list[tuple[str, int, int, bool, int]]) -> list[dict[str, Any]]:
    """The user's steps as events, after a read of the VIP patient (never alert-free)."""
    out, minutes = [], 0
    bursts = [("read", 0, 0, True, 1), *steps]
    for kind, p, gap, mfa in [(k, p, g if i == 0 else 1, m)
                              for k, p, g, m, n in bursts for i in range(n)]:
        minutes += gap
        when, patient, who = at(minutes), f"MRN-{p}", f"agent-{u}"
        if kind == "login_failed":
            one = event("login_failed", when, who, outcome="failure")
        elif kind == "login":
            one = event("login", when, who)
        elif kind == "message":
            one = event("create", when, who, patient,
                        resource={"type": "message", "id": f"m{minutes}"})
        elif kind == "export":
            one = event("export", when, who, patient)
        else:
            fields = {"purpose": "ETREAT"} if kind == "break_glass" else (
                {"channel": "sms"} if kind == "sms" else {})
            one = read(patient, when, who, **fields)
        one["actor"] = user(who, mfa=mfa)
        out.append(one)
    return out


def _summary(svc: Any, ledger: str, seq_names: dict[int, tuple[str, int]]
             ) -> set[tuple[Any, ...]]:
    """The ledger's alerts, each entry named by (user, index in their own list)."""
    return {(seq_names[a["seq"]], a["rule"], a["status"],
             None if a["explained_by"] is None else seq_names[a["explained_by"]])
            for a in alerts(svc, ledger)}


@REBUILDS
@given(days=st.lists(DAY, min_size=1, max_size=3))
def test_rebuild_raises_the_same_alerts(svc: Any, days: list[Any]) -> None:
    users = "abc"[:len(days)]
    ledger = f"rebuild-{next(_ledgers)}"
    events = _roster(users)
    for u, steps in zip(users, days, strict=True):
        events += _day(u, steps)
    events.sort(key=lambda e: e["occurred_at"])
    post(svc, events, ledger=ledger)
    first = alerts(svc, ledger)
    assert first
    Projector(svc.store, protection=svc.protection, batch=7).rebuild(["alerts"])
    assert alerts(svc, ledger) == first


def _merge(a: list[Any], b: list[Any], picks: list[bool]) -> list[int]:
    """Which user's next event comes next: 1 (b) where ``picks`` says True while both have
    events left; the rest in order."""
    merged, left = [], {0: len(a), 1: len(b)}
    for pick in picks:
        if not (left[0] and left[1]):
            break
        merged.append(int(pick))
        left[int(pick)] -= 1
    return merged + [0] * left[0] + [1] * left[1]


@PROPERTY
@given(a=DAY, b=DAY, picks=st.lists(st.booleans(), max_size=80))
# Failed logins are counted per user: a signs in after three of their own failures, with
# two of b's in the same minutes (five if they were counted together): no alert for a.
@example(a=[("login_failed", 0, 1, True, 3), ("login", 0, 1, True, 1)],
         b=[("login_failed", 0, 1, True, 2)], picks=[True] * 3)
def test_unrelated_users_order_does_not_matter(svc: Any, a: list[Any], b: list[Any],
                                               picks: list[bool]) -> None:
    """Two users' days posted one after the other, and interleaved any other way: each
    user's alerts (rule, status, what explained them) are the same."""
    summaries = []
    days = {0: _day("a", a), 1: _day("b", b)}
    for merge in ([0] * len(days[0]) + [1] * len(days[1]),
                  _merge(days[0], days[1], picks)):
        ledger = f"order-{next(_ledgers)}"
        events = _roster("ab")
        names = [("roster", i) for i in range(len(events))]
        taken = {0: 0, 1: 0}
        for who in merge:
            # A fresh event id per ledger: the same event posted to two ledgers.
            events.append(dict(days[who][taken[who]], event_id=str(uuid.uuid4())))
            names.append(("ab"[who], taken[who]))
            taken[who] += 1
        seqs = post(svc, events, ledger=ledger)
        summaries.append(_summary(svc, ledger, dict(zip(seqs, names, strict=True))))
    assert summaries[0] == summaries[1] != set()


def test_alerts_for_seqs(svc: Any) -> None:
    seqs = post(svc, [read("MRN-1", at(1), purpose="ETREAT"), read("MRN-1", at(2))])
    alerts(svc)
    found = alerts_for_seqs(svc.store, "default", seqs)
    assert list(found) == [seqs[0]] and found[seqs[0]][0]["rule"] == "break_glass"


def test_only_record_events_change_the_patient_record(svc: Any) -> None:
    post(svc, [record("MRN-1", name="Di Lee"),
               event("create", at(1), patient="MRN-1", resource={"type": "message", "id": "m"},
                     data={"name": "Someone Else", "note": "call back"})])
    Projector(svc.store, protection=svc.protection).catch_up()
    with svc.store.reading() as curs:
        curs.execute("SELECT record FROM view_patients")
        (record_text,), = curs.fetchall()
    assert '"note"' not in record_text  # the message's data stayed out of the record


def test_a_source_that_merely_starts_like_the_service_is_judged(svc: Any) -> None:
    """Only the service's own records escape the rules: a client's source
    ``phi-ledger-bridge`` was taken for the service's (a prefix match) and raised nothing."""
    seqs = post(svc, [read("MRN-1", at(0), purpose="ETREAT",
                           source={"system": "phi-ledger-bridge"})])
    assert "break_glass" in rules_of(alerts(svc), seqs[0])


def test_service_records_are_told_by_who_submitted_them() -> None:
    service = {"identity": "phi-ledger", "credential": None}
    client = {"identity": "app-0123456789", "credential": "key-0123456789"}
    ours = {"event": {"source": {"system": "phi-ledger"}}}
    assert is_service_record({**ours, "submitted_by": service})
    assert is_service_record(ours), "entries older than submitted_by: by their source"
    assert not is_service_record({**ours, "submitted_by": client})
    assert not is_service_record({"event": {"source": {"system": "ehr"}},
                                  "submitted_by": service})
