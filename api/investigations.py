"""The investigations service: opening, amending and closing investigations (ledger
events), and answering them (:mod:`projections.investigations` over the views), opened
for the reader.

The router and the console both call :class:`InvestigationService`; the answer is plain
data (:class:`Answer`) that the JSON, CSV and HTML renderers share.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from api.access_reports import AccessReports, Reader, SealedPatient, access_item
from api.alert_desk import alert_item
from api.errors import ApiError
from ledger.admission import Accepted, Pending
from ledger.attestation import BY_SERVICE
from ledger.canonical import parse
from ledger.entry import Entry, Receipt
from ledger.event_ids import new_event_id
from ledger.transparency.evidence import encode_evidence
from ledger.transparency.tree import assemble, inclusion_plan, plan_nodes
from projections.alert_queries import alerts_for_seqs
from projections.instants import format_utc, utc_of
from projections.investigation_queries import InvestigationQueries
from projections.investigations import (
    AMENDED,
    CLOSED,
    OPENED,
    Affected,
    acquired_or_viewed,
    affected,
    counts,
    duties,
    fold_investigation,
    fold_state,
    scope_of,
)

INVESTIGATION = "investigation"  # what a `query` event says was looked at
SOURCE = {"system": "phi-ledger"}
READS_PER_BATCH = 1000


def alerts_for(svc: Any, ledger: str, seqs: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The alerts continual monitoring raised on each of ``seqs``, shaped as ``GET
    /v1/alerts`` shapes them, without the patient (the entry they sit on shows it)."""
    found = alerts_for_seqs(svc.store, ledger, seqs)
    return {seq: [{k: v for k, v in alert_item(row, None).items() if k != "patient"}
                  for row in rows] for seq, rows in found.items()}


def sent_encrypted(stored: bytes) -> bool:
    """``disclosure.encrypted`` of a stored ``disclose`` entry, read without decoding it:
    stored entries are canonical JSON, and in a disclosure only ``disclosure`` has an
    ``encrypted`` member (``data`` is refused on a disclosure; actor, resource and source
    have none), so the member's text is found exactly."""
    return b'"encrypted":true' in stored


@dataclass(frozen=True)
class Answer:
    """An investigation answered through one seq: every list whole (pages are cut from
    it), patients by blind index; ``ids`` opens the ones a page shows."""

    ledger: str
    record: dict[str, Any]
    through: int
    as_of: str | None
    rows: list[dict[str, Any]]
    patients: list[Affected]
    states: dict[str, str | None]
    counts: dict[str, Any]
    duties: list[dict[str, Any]]
    factor3: dict[str, Any]

    def head(self) -> dict[str, Any]:
        return {"investigation": public(self.record), "ledger": self.ledger,
                "as_of": self.as_of, "through_seq": self.through, "counts": self.counts,
                "duties": self.duties,
                "risk_assessment": {"acquired_or_viewed": self.factor3}}


def public(record: Mapping[str, Any]) -> dict[str, Any]:
    """An investigation record as answers show it."""
    return {k: v for k, v in record.items() if k != "seqs"}


def timeline_items(rows: Sequence[dict[str, Any]], ids: Mapping[SealedPatient, str | None],
                   alerts: Mapping[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{**access_item(r, ids.get((r["patient_ref"], r["key_id"], r["patient_token"]))),
             "alerts": alerts.get(r["seq"], [])} for r in rows]


def affected_items(patients: Sequence[Affected], ids: Mapping[SealedPatient, str | None],
                   states: Mapping[str, str | None]) -> list[dict[str, Any]]:
    out = []
    for a in patients:
        sample = a.sample or {}
        key = (sample.get("patient_ref"), sample.get("key_id"), sample.get("patient_token"))
        out.append(a.item(ids.get(key), states.get(a.patient_ref)))
    return out


class InvestigationService:
    """Investigations of one running service. Every write is a ledger entry; every
    answer is computed from the views through a seq and names that seq."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.queries = InvestigationQueries(svc.store)
        self.reports = AccessReports(svc)

    # -- writing ---------------------------------------------------------------------

    def _event(self, action: str, reader: Reader, investigation_id: str,
               data: dict[str, Any]) -> dict[str, Any]:
        actor: dict[str, Any] = {"id": reader.id, "kind": reader.kind}
        if reader.role:
            actor["role"] = reader.role[:256]
        return {"event_id": new_event_id(),
                "occurred_at": self.svc.clock().isoformat(timespec="microseconds"),
                "action": action, "outcome": "success", "actor": actor,
                "resource": {"type": INVESTIGATION, "id": investigation_id},
                "source": SOURCE, "data": data}

    async def _append(self, ledger: str, event: dict[str, Any]) -> Receipt:
        pending = Pending(event["event_id"], self.svc.protection.fingerprint(ledger, event),
                          event, BY_SERVICE.members())
        outcome = await asyncio.wrap_future(self.svc.writer.submit(ledger, [pending]))
        assert isinstance(outcome, Accepted)  # a fresh event id: never a replay
        return outcome.receipts[0]

    def scope_data(self, ledger: str, scope: Mapping[str, Any]) -> dict[str, Any]:
        """A posted scope as the ledger keeps it: patient ids as blind indexes."""
        data = {f"scope.{k}": scope[k] for k in ("actors", "devices", "ips", "from", "to")
                if k in scope}
        if "patients" in scope:
            data["scope.patients"] = sorted({self.svc.protection.patient_ref(ledger, p)
                                             for p in scope["patients"]})
        return data

    async def open(self, ledger: str, reader: Reader, title: str, discovered_at: str,
                   scope: Mapping[str, Any], note: str | None) -> tuple[str, Receipt]:
        investigation_id = str(uuid.uuid4())
        data = {"investigation_id": investigation_id, "title": title,
                "discovered_at": discovered_at, **self.scope_data(ledger, scope)}
        for key in ("actors", "devices", "ips", "patients"):
            data.setdefault(f"scope.{key}", [])
        data.setdefault("scope.to", None)
        if note:
            data["note"] = note
        receipt = await self._append(ledger, self._event(OPENED, reader, investigation_id,
                                                         data))
        return investigation_id, receipt

    async def amend(self, ledger: str, reader: Reader, investigation_id: str,
                    scope: Mapping[str, Any], note: str | None) -> Receipt:
        record = await asyncio.to_thread(self.load, ledger, investigation_id)
        if record["status"] == "closed":
            raise ApiError(409, "investigation_closed", "a closed investigation is not amended",
                           ["investigation_id"])
        data = self.scope_data(ledger, scope)
        if note:
            data["note"] = note
        return await self._append(ledger, self._event(AMENDED, reader, investigation_id, data))

    async def close(self, ledger: str, reader: Reader, investigation_id: str, outcome: str,
                    risk: Mapping[str, Any], note: str | None = None) -> Receipt:
        answer = await self.answer(ledger, investigation_id, None)
        if answer.record["status"] == "closed":
            raise ApiError(409, "investigation_closed", "the investigation is closed already",
                           ["investigation_id"])
        data: dict[str, Any] = {"outcome": outcome,
                                **{f"risk.{k}": v for k, v in risk.items() if v is not None}}
        # Factor 3, pre-filled from the entries: what the record shows, beside (never
        # instead of) what the investigator concluded.
        data["risk.acquired_or_viewed.from_ledger"] = answer.factor3["acquired_or_viewed"]
        data.setdefault("risk.acquired_or_viewed", answer.factor3["acquired_or_viewed"])
        data["risk.computed_through_seq"] = answer.through
        if note:
            data["note"] = note
        return await self._append(ledger, self._event(CLOSED, reader, investigation_id, data))

    # -- reading ---------------------------------------------------------------------

    def _entries(self, ledger: str, seqs: Sequence[int]) -> dict[int, Entry]:
        found = self.svc.store.entries_at(ledger, list(seqs))
        return found

    def _fold(self, ledger: str, seqs: Sequence[int]) -> dict[str, Any] | None:
        entries = self._entries(ledger, seqs)
        return fold_investigation([{"seq": s, "recorded_at": entries[s].recorded_at,
                                    "event": entries[s].event} for s in sorted(entries)])

    def list(self, ledger: str) -> list[dict[str, Any]]:
        found: dict[str, list[int]] = {}
        for investigation_id, seq, _, _ in self.queries.investigation_entries(ledger):
            found.setdefault(investigation_id, []).append(seq)
        records = [r for seqs in found.values() if (r := self._fold(ledger, seqs))]
        return sorted((public(r) for r in records), key=lambda r: r["opened_at"])

    def load(self, ledger: str, investigation_id: str) -> dict[str, Any]:
        seqs = [s for _, s, _, _ in self.queries.investigation_entries(ledger,
                                                                       investigation_id)]
        record = self._fold(ledger, seqs) if seqs else None
        if record is None:
            raise ApiError(404, "investigation_not_found", "no such investigation",
                           ["investigation_id"])
        return record

    async def through(self, ledger: str, as_of_utc: str | None, wait_s: float = 10.0) -> int:
        """The seq an answer is computed through: the head (or the last entry recorded at
        or before ``as_of_utc``), once the views have applied the head."""
        head = (await asyncio.to_thread(self.svc.store.head, ledger)).seq
        if head:
            position = await asyncio.to_thread(self.svc.store.notification_of, ledger, head)
            if position is not None and not await asyncio.to_thread(
                    self.svc.projector.wait_for, position, wait_s):
                raise ApiError(503, "views_behind", "the views are catching up; retry shortly",
                               headers={"Retry-After": "1"})
        if as_of_utc is None:
            return int(head)
        return await asyncio.to_thread(self.queries.seq_as_of, ledger, as_of_utc, head)

    async def answer(self, ledger: str, investigation_id: str, as_of_utc: str | None,
                     through: int | None = None) -> Answer:
        if through is None:
            through = await self.through(ledger, as_of_utc)
        return await asyncio.to_thread(self.compute, ledger, investigation_id, through,
                                       as_of_utc)

    def compute(self, ledger: str, investigation_id: str, through: int,
                as_of_utc: str | None) -> Answer:
        record = self.load(ledger, investigation_id)
        s = record["scope"]
        scope = scope_of(record, utc_of(s["from"]), utc_of(s["to"]) if s.get("to") else None)
        rows = self.queries.in_scope(ledger, scope, through)
        disclosures = [r["seq"] for r in rows if r["action"] == "disclose"]
        encrypted = {seq: sent_encrypted(raw)
                     for seq, raw in self.svc.store.stored_at(ledger, disclosures).items()}
        patients = affected(rows, encrypted)
        states = self.states(ledger, [a.patient_ref for a in patients], through)
        tally = counts(patients, states)
        unsecured = [states.get(a.patient_ref) for a in patients if not a.secured]
        discovered = date.fromisoformat(record["discovered_at"][:10])
        return Answer(ledger, record, through, as_of_utc, rows, patients, states, tally,
                      duties(discovered, unsecured), acquired_or_viewed(rows))

    def states(self, ledger: str, refs: Sequence[str], through: int) -> dict[str, str | None]:
        """Each patient's state of residence as their record stood at seq ``through``."""
        found = self.queries.record_seqs(ledger, refs, through)
        entries = self._entries(ledger, [seq for seq, _, _ in found])
        stored = [entries[seq].event for seq, _, _ in found]
        opened = self.svc.protection.reveal_many(ledger, stored)
        states: dict[str, str | None] = dict.fromkeys(refs)
        for (_, ref, action), event in zip(found, opened, strict=True):
            states[ref] = fold_state(states[ref], action, event["outcome"], event.get("data"),
                                     shredded=action == "patient_shredded")
        return states

    # -- evidence ----------------------------------------------------------------------

    def evidence(self, ledger: str, investigation_id: str) -> bytes:
        """The evidence file: every in-scope entry the newest signed checkpoint covers,
        as stored (PHI sealed), each with its inclusion proof against that checkpoint."""
        record = self.load(ledger, investigation_id)
        tlog = self.svc.tlog
        checkpoint = None if tlog is None else tlog.latest(ledger)
        if tlog is None or checkpoint is None:
            raise ApiError(404, "not_checkpointed", "no signed checkpoint yet; retry shortly",
                           headers={"Retry-After": "1"})
        size = checkpoint.size
        s = record["scope"]
        scope = scope_of(record, utc_of(s["from"]), utc_of(s["to"]) if s.get("to") else None)
        seqs = sorted(r["seq"] for r in self.queries.in_scope(ledger, scope, size))
        entries = self._entries(ledger, seqs)
        plans = {seq: inclusion_plan(seq - 1, size) for seq in seqs}
        nodes = list(dict.fromkeys(n for p in plans.values() for n in plan_nodes(p)))
        found = self.svc.store.subtrees(ledger, nodes)
        proofs = {seq: assemble(plan, found) for seq, plan in plans.items()}
        return encode_evidence(ledger, investigation_id, public(record)["scope"],
                               checkpoint.note, size,
                               [parse(entries[seq].encode()) for seq in seqs], proofs)

    # -- pages, opened for the reader -------------------------------------------------

    def open_page(self, answer: Answer, rows: Sequence[dict[str, Any]],
                  patients: Sequence[Affected]
                  ) -> tuple[builtins.list[dict[str, Any]], builtins.list[dict[str, Any]],
                             builtins.list[str]]:  # builtins: the class has a method `list`
        """The timeline items of ``rows`` and the affected items of ``patients``, their
        patient ids opened; and the ids shown (each to be recorded as read)."""
        whole = self.queries.accesses_at(answer.ledger, [r["seq"] for r in rows])
        rows = [whole[r["seq"]] for r in rows]
        samples = [a.sample for a in patients if a.sample is not None]
        ids = self.reports.open_patients(answer.ledger, [*rows, *samples])
        alerts = alerts_for(self.svc, answer.ledger, [r["seq"] for r in rows])
        timeline = timeline_items(rows, ids, alerts)
        items = affected_items(patients, ids, answer.states)
        shown = [i for i in ids.values() if i]
        return timeline, items, shown

    async def record_reads(self, ledger: str, reader: Reader, shown: Sequence[str],
                           purpose: str) -> None:
        # A report may show more patients than one batch of events holds.
        shown = list(dict.fromkeys(shown))
        for start in range(0, len(shown), READS_PER_BATCH):
            await self.reports.record_reads(ledger, reader, shown[start:start + READS_PER_BATCH],
                                            purpose, INVESTIGATION)


def utc_or_none(value: str | None, parse: Callable[[str], str]) -> str | None:
    return None if value is None else parse(value)


def generated_at(clock: Callable[[], datetime]) -> str:
    return format_utc(clock())
