"""Admission rules: new, replay, conflict; first come first chained; all or nothing."""

from __future__ import annotations

from ledger.admission import Accepted, Conflicted, Pending, Recorded, outcomes, plan_admission
from ledger.chain import EMPTY_HEAD, extend


def p(event_id: str, fp: str = "f") -> Pending:
    return Pending(event_id, fp, {"event_id": event_id, "fp": fp})


def _answer(submissions, recorded=None, entries_at=None):
    plan = plan_admission(submissions, recorded or {})
    new = extend(EMPTY_HEAD, "default", [x.event for x in plan.new], "2026-01-01T00:00:00Z")
    return plan, outcomes(plan, new, entries_at or {})


def test_new_events_are_chained_in_submission_order() -> None:
    plan, out = _answer([[p("a")], [p("b"), p("c")]])
    assert [x.event_id for x in plan.new] == ["a", "b", "c"]
    assert isinstance(out[1], Accepted)
    assert [r.seq for r in out[1].receipts] == [2, 3]
    assert out[0].created and out[1].created


def test_replay_of_recorded_event_writes_nothing() -> None:
    old = extend(EMPTY_HEAD, "default", [{"event_id": "a"}], "2026-01-01T00:00:00Z")[0]
    plan, out = _answer([[p("a")]], {"a": Recorded(1, "f")}, {1: old})
    assert plan.new == []
    assert isinstance(out[0], Accepted) and not out[0].created
    assert out[0].receipts[0].hash == old.hash


def test_conflict_refuses_the_whole_submission() -> None:
    plan, out = _answer([[p("x"), p("a", "other")], [p("y")]], {"a": Recorded(1, "f")},
                        {})
    assert [x.event_id for x in plan.new] == ["y"]
    assert isinstance(out[0], Conflicted) and out[0].event_ids == ["a"]
    assert isinstance(out[1], Accepted) and out[1].receipts[0].seq == 1


def test_same_id_twice_in_one_group() -> None:
    plan, out = _answer([[p("a")], [p("a")], [p("a", "different")]])
    assert len(plan.new) == 1
    assert isinstance(out[0], Accepted) and out[0].created
    assert isinstance(out[1], Accepted) and not out[1].created
    assert out[1].receipts[0] == out[0].receipts[0]
    assert isinstance(out[2], Conflicted)
