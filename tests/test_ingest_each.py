"""Ingest.submit_each: one submission per event, each answered alone, all queued together
(one writer group), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from api.services import Services
from ledger.admission import Accepted, Conflicted
from ledger.attestation import Attestation, Received, Submitter
from ledger.entry import Entry
from ledger.event import EventRejected
from ledger.ingest import ReservedSource
from tests.monitoring_support import event

BY = Attestation(Submitter("sender-1", "syslog"))


def test_each_event_is_answered_alone_and_all_commit_together(svc: Services) -> None:
    read = event("read", "2026-12-01T10:00:00Z", patient="p-1")
    taken = event("read", "2026-12-01T10:00:01Z", patient="p-2")
    svc.ingest.record_sync("default", [taken])
    other_body = {**taken, "occurred_at": "2026-12-01T10:00:09Z"}  # same event id, another body
    broken: dict[str, Any] = {**event("read", "2026-12-01T10:00:02Z", patient="p-3"),
                              "outcome": "maybe"}
    claims_service = {**event("read", "2026-12-01T10:00:03Z", patient="p-4"),
                      "source": {"system": "phi-ledger"}}
    again = event("login", "2026-12-01T10:00:04Z")
    transactions = svc.writer.stats.transactions
    answers = svc.ingest.submit_each([
        ("default", read, BY, Received("atna-syslog", "a" * 64)),
        ("default", other_body, BY, None),
        ("default", broken, BY, None),
        ("default", claims_service, BY, None),
        ("default", again, BY, None),
        ("default", again, BY, None),
    ])
    assert isinstance(answers[2], EventRejected) and not isinstance(answers[2], ReservedSource)
    assert [p for p, _ in answers[2].problems] == ["outcome"]
    assert isinstance(answers[3], ReservedSource)
    outcomes = [a.result() for a in answers if not isinstance(a, EventRejected)]
    assert isinstance(outcomes[1], Conflicted)
    first, dup = outcomes[2], outcomes[3]
    assert isinstance(outcomes[0], Accepted) and outcomes[0].created
    assert isinstance(first, Accepted) and isinstance(dup, Accepted)
    assert first.created and not dup.created and first.receipts == dup.receipts
    assert svc.writer.stats.transactions == transactions + 1  # queued together
    entries = svc.store.read("default", 0, 100)
    assert len(entries) == 3  # taken, read, the login once
    stored = svc.protection.reveal_many("default", [Entry.decode(r).event for r in entries])
    assert [e["event_id"] for e in stored] == [taken["event_id"], read["event_id"],
                                               again["event_id"]]
