"""The alerts view on both backends: rules judged against what the ledger said before,
explanations by care relationship (also by a later entry), rebuilds that raise the same
alerts, independence from unrelated users' order, and the record convention."""

from __future__ import annotations

from typing import Any

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


def test_rebuild_raises_the_same_alerts(svc: Any) -> None:
    post(svc, [staff_added("agent-1", name="Ana Reyes", shift="08:00-17:00"),
               record("MRN-1", name="Cy Reyes", vip=True),
               *[read(f"MRN-{i % 7}", at(i * 13), purpose="ETREAT" if i % 5 == 0 else "TREAT",
                      actor=f"agent-{i % 3}") for i in range(60)],
               event("create", at(200), patient="MRN-1", resource={"type": "call", "id": "c"})])
    first = alerts(svc)
    assert len(first) > 20
    Projector(svc.store, protection=svc.protection, batch=7).rebuild(["alerts"])
    assert alerts(svc) == first


def test_unrelated_users_order_does_not_matter(svc: Any) -> None:
    one = [read(f"MRN-{i}", at(i), actor="agent-a", purpose="ETREAT") for i in range(5)]
    two = [read(f"MRN-{i}", at(i), actor="agent-b") for i in range(5)]
    for e in two:
        e["actor"]["mfa"] = False
    post(svc, [*one, *two], ledger="first")
    interleaved = [e for pair in zip(two, one, strict=True) for e in pair]
    post(svc, [dict(e, event_id=e["event_id"][:-4] + "beef") for e in interleaved],
         ledger="second")

    def summary(ledger: str) -> set[tuple[str, str, str]]:
        return {(a["actor_id"], a["rule"], a["status"]) for a in alerts(svc, ledger)}

    assert summary("first") == summary("second") != set()
    assert len(alerts(svc, "first")) == len(alerts(svc, "second")) == 10


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
