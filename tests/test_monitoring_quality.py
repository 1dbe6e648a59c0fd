"""Measured quality: the labelled monitoring workload (api.workload.monitoring) goes in
through ingest, the projector raises alerts, and per rule the open alerts and the explained
ones are compared with the generator's ground truth (never posted): precision and recall
each at least 0.95, and every rule present in the truth."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from api.workload.monitoring import MonitoredService
from projections.monitoring.rules import PHI_ACTIONS, RULES, TRAINING_VALID
from tests.monitoring_support import alerts, post

EVENTS = 16_000
FLOOR = 0.95


def _score(expected: set[Any], found: set[Any]) -> tuple[float, float]:
    hits = len(expected & found)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(expected) if expected else 1.0
    return precision, recall


def test_precision_and_recall_per_rule(svc: Any) -> None:
    service = MonitoredService(seed=11)
    events = list(service.events(EVENTS))
    seqs = post(svc, events)
    raised = alerts(svc)
    seq_of = dict(enumerate(seqs))
    truth = [(seq_of[i], rule, status, None if by is None else seq_of[by])
             for i, labels in service.truth.items() for rule, status, by in labels]
    assert {rule for _, rule, _, _ in truth} == set(RULES)
    report = {}
    for rule in RULES:
        for status in ("open", "explained"):
            expected = {(s, by) for s, r, st, by in truth if r == rule and st == status}
            found = {(a["seq"], a["explained_by"]) for a in raised
                     if a["rule"] == rule and a["status"] == status}
            if not expected and not found:
                continue
            report[(rule, status)] = (_score(expected, found), len(expected), len(found))
    failing = {k: v for k, v in report.items() if min(v[0]) < FLOOR}
    assert not failing, failing
    print({f"{r}/{s}": v for (r, s), v in report.items()})


def test_years_of_the_workload_keep_its_staff_trained() -> None:
    """A long run is years of the service's time (a million events, about five): staff
    whose training is not meant to lapse take the course again each year, so `untrained`
    stays the injected violation it is, not most of the ledger. Checked on the events
    themselves over more than a year and a quarter: every PHI action by a user the truth
    does not call untrained has a HIPAA training of theirs in the 365 days before."""
    service = MonitoredService(seed=5)
    trained: dict[str, list[datetime]] = {}
    actions = 0
    for index, event in enumerate(service.events(240_000)):
        when = datetime.fromisoformat(event["occurred_at"])
        if event["action"] == "training_completed":
            trained.setdefault(event["data"]["staff_id"], []).append(when)
            continue
        actor = event["actor"]
        if (actor["kind"] != "user" or event["action"] not in PHI_ACTIONS
                or event["outcome"] != "success" or actor["id"] not in trained
                or any(rule == "untrained" for rule, *_ in service.truth.get(index, ()))):
            continue
        actions += 1
        assert any(timedelta(0) <= when - t <= TRAINING_VALID for t in trained[actor["id"]]), (
            f"{actor['id']} at {when} without training since {max(trained[actor['id']])}")
    assert when - min(min(ts) for ts in trained.values()) > timedelta(days=455)
    assert actions > 200_000
