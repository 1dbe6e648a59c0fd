"""Admission: deciding, under the write lock, what a group of submissions appends.

Group commit puts many submissions (one posted event, or one all-or-nothing batch) into
one transaction. Inside it, after the lock is taken and the head read, each event is
either *new* (chained now), a *replay* (its ``event_id`` was recorded before with the
same fingerprint: answer with the first receipt, write nothing) or a *conflict* (the same
``event_id`` with another body: the whole submission is refused and writes nothing).
This module makes that decision; it is pure, so every rule here is tested without a
database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.attestation import NO_MEMBERS
from ledger.chain import Head, extend
from ledger.entry import Entry, Receipt


@dataclass(frozen=True, slots=True)
class Pending:
    """An event waiting to be chained: its id, the fingerprint of the posted body, and
    the event (as posted until the writer seals it; as stored once it reaches the store),
    and the members the service writes beside it (see ledger.attestation)."""

    event_id: str
    fingerprint: str
    event: dict[str, Any]
    members: Mapping[str, Any] = field(default_factory=lambda: NO_MEMBERS)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the ledger already holds for an ``event_id``."""

    seq: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submission that is durably in the chain: receipts in the posted order."""

    receipts: list[Receipt]
    created: bool


@dataclass(frozen=True, slots=True)
class Conflicted:
    """A submission refused because some ``event_id`` is already taken by another body."""

    event_ids: list[str]


Outcome = Accepted | Conflicted


@dataclass
class Plan:
    """What one transaction appends, and how each submission will be answered."""

    new: list[Pending] = field(default_factory=list)
    # Per submission: None when refused, else one slot per event: ("new", i) chains
    # plan.new[i]; ("dup", i) repeats plan.new[i] posted earlier in the same group;
    # ("seq", s) replays the entry already at seq s.
    slots: list[list[tuple[str, int]] | None] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)

    def replayed_seqs(self) -> set[int]:
        return {n for slots in self.slots if slots for kind, n in slots if kind == "seq"}


def plan_admission(
    submissions: Sequence[Sequence[Pending]], recorded: Mapping[str, Recorded]
) -> Plan:
    """Decide each submission against what is ``recorded`` and what earlier submissions
    of the same group admit (first come, first chained)."""
    plan = Plan()
    admitted: dict[str, tuple[str, int]] = {}  # event_id -> (fingerprint, index in new)
    for submission in submissions:
        slots: list[tuple[str, int]] = []
        conflicts: list[str] = []
        fresh: list[Pending] = []
        for pending in submission:
            before = recorded.get(pending.event_id)
            if before is not None:
                if before.fingerprint != pending.fingerprint:
                    conflicts.append(pending.event_id)
                slots.append(("seq", before.seq))
                continue
            earlier = admitted.get(pending.event_id)
            if earlier is not None:
                if earlier[0] != pending.fingerprint:
                    conflicts.append(pending.event_id)
                slots.append(("dup", earlier[1]))
                continue
            slots.append(("new", len(plan.new) + len(fresh)))
            fresh.append(pending)
        if conflicts:
            plan.slots.append(None)
            plan.conflicts.append(conflicts)
            continue
        for pending in fresh:
            admitted[pending.event_id] = (pending.fingerprint, len(plan.new))
            plan.new.append(pending)
        plan.slots.append(slots)
        plan.conflicts.append([])
    return plan


def chain_plan(plan: Plan, head: Head, ledger: str, recorded_at: str) -> list[Entry]:
    """The entries the plan appends after ``head``."""
    return extend(head, ledger, [p.event for p in plan.new], recorded_at,
                  [p.members for p in plan.new])


def outcomes(plan: Plan, new_entries: Sequence[Entry], replayed: Mapping[int, Entry]) -> list[
    Outcome
]:
    """Answer every submission of the plan, given the entries it wrote and the entries
    that replays point at."""
    results: list[Outcome] = []
    for slots, conflicts in zip(plan.slots, plan.conflicts, strict=True):
        if slots is None:
            results.append(Conflicted(conflicts))
            continue
        receipts = []
        created = False
        for kind, n in slots:
            if kind == "new":
                receipts.append(new_entries[n].receipt())
                created = True
            elif kind == "dup":
                receipts.append(new_entries[n].receipt())
            else:
                receipts.append(replayed[n].receipt())
        results.append(Accepted(receipts, created))
    return results
