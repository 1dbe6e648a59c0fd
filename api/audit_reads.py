"""The audit reads, one path for every face of the service: the JSON API
(:mod:`api.routers.audit`) and the console (:mod:`api.console`) call these, so a read is
checked, performed and recorded in the ledger the same way whoever asks.

Each function checks its parameters (every bad one named in one :class:`ApiError`),
waits for the views when asked (``min_seq``), reads and opens the rows off the event loop
and records the read (a ``query`` event per patient shown, :mod:`api.access_reports`)
before the answer may leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar, cast, get_args

from fastapi import Query
from fastapi.responses import Response

from api.access_reports import (
    ACCESS_REPORT,
    DISCLOSURE_ACCOUNTING,
    PATIENT_RECORD,
    USER_ACCESS_REPORT,
    AccessReports,
    Reader,
    SealedPatient,
    access_items,
)
from api.errors import ApiError
from api.event_schema import BOUND, comma_list
from api.routers.common import DB_INT_MAX, json_response
from api.services import Services
from ledger.event import Action, PurposeOfUse
from projections.accounting import Accounting, account
from projections.cursor import BadCursor, Position, decode_cursor, encode_cursor
from projections.instants import parse_bound
from projections.patients import PatientRow
from projections.queries import AccessFilter, Order

T = TypeVar("T")

PURPOSES = frozenset(get_args(PurposeOfUse))
ACTIONS = frozenset(get_args(Action)) | {"patient_shredded"}
MAX_LIMIT = 1000

# The views are built from the ledger a moment after each append: a patient posted a
# moment ago may not be in them yet. Say how to wait instead of letting the caller guess.
VIEWS_TRAIL = ("; views may trail the ledger by a moment after a write: pass min_seq=<the"
               " receipt's seq> to wait until they include it")
NO_ACCESS = "no access to this patient is recorded" + VIEWS_TRAIL
MAX_WAIT_MS = 10_000

# Refused with a 400 of its own when missing (naming every bad parameter at once), so
# optional to the framework; the published schema says required (api.error_docs).
Purpose = Annotated[str | None, Query(
    description="Why you are looking (HL7 PurposeOfUse, e.g. HOPERAT for an audit); "
                "recorded in the ledger with the read.",
    json_schema_extra={"x-required": True, "enum": sorted(PURPOSES)})]
From = Annotated[str | None, Query(
    alias="from", description="RFC 3339 with an offset, or a date YYYY-MM-DD (midnight UTC);"
    " inclusive", json_schema_extra={"pattern": BOUND})]
To = Annotated[str | None, Query(
    alias="to", description="RFC 3339 with an offset, or a date YYYY-MM-DD (midnight UTC);"
    " exclusive", json_schema_extra={"pattern": BOUND})]
MinSeq = Annotated[int | None, Query(
    ge=1, le=DB_INT_MAX, description="Answer only once the views include this seq of the ledger.")]
WaitMs = Annotated[int, Query(ge=0, le=MAX_WAIT_MS, description="How long min_seq may wait.")]


# Checked with the other parameters (one 400 naming them all); published as they are.
Limit = Annotated[int, Query(json_schema_extra={"minimum": 1, "maximum": MAX_LIMIT})]
Actions = Annotated[str | None, Query(
    description="Event actions, comma-separated",
    json_schema_extra={"pattern": comma_list(ACTIONS)})]
ReportFormat = Annotated[str, Query(json_schema_extra={"enum": ["json", "csv", "html"]})]
OrderParam = Annotated[str, Query(json_schema_extra={"enum": ["asc", "desc"]})]


class Problems:
    """Collects every bad parameter, so one 400 names them all."""

    def __init__(self) -> None:
        self.fields: list[str] = []
        self.messages: list[str] = []

    def add(self, field: str, message: str) -> None:
        self.fields.append(field)
        self.messages.append(f"{field} {message}")

    def bound(self, field: str, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_bound(value)
        except ValueError as error:
            self.add(field, str(error))
            return None

    def raise_any(self) -> None:
        if self.fields:
            raise ApiError(400, "invalid_request", "; ".join(self.messages), self.fields)


def check_purpose(problems: Problems, purpose: str | None) -> str:
    if purpose is None:
        problems.add("purpose", "is required: say why you are looking (e.g. HOPERAT)")
    elif purpose not in PURPOSES:
        problems.add("purpose", "must be an HL7 PurposeOfUse code (e.g. TREAT, HOPERAT)")
    return purpose or ""


def _actions(problems: Problems, action: str | None) -> tuple[str, ...]:
    if not action:
        return ()
    chosen = tuple(dict.fromkeys(a.strip() for a in action.split(",") if a.strip()))
    if not chosen or any(a not in ACTIONS for a in chosen):
        problems.add("action", "must be a comma-separated list of event actions")
    return chosen


def _period(problems: Problems, since: str | None, until: str | None) -> None:
    if since is not None and until is not None and since >= until:
        problems.add("from", "must be before to")


async def await_views(svc: Services, ledger: str, min_seq: int | None, wait_ms: int) -> None:
    if min_seq is None:
        return
    position = await asyncio.to_thread(svc.store.notification_of, ledger, min_seq)
    if position is None:
        raise ApiError(400, "invalid_request",
                       "min_seq is beyond the ledger's newest entry", ["min_seq"])
    reached = await asyncio.to_thread(svc.projector.wait_for, position, wait_ms / 1000)
    if not reached:
        raise ApiError(503, "views_behind",
                       "the views have not reached min_seq yet; retry shortly", ["min_seq"],
                       headers={"Retry-After": "1"})


async def off_loop(read: Callable[[], T]) -> T:
    """Run a request's reads (several database round trips and the decryption) on a
    worker thread: on the event loop they would hold up every other request meanwhile."""
    return await asyncio.to_thread(read)


def _after(problems: Problems, cursor: str | None, scope: dict[str, Any]) -> Position | None:
    """Where the page starts: the position ``cursor`` holds, if it belongs to ``scope``."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor, scope)
    except BadCursor as error:
        problems.add("cursor", str(error))
        return None


@dataclass(frozen=True, slots=True)
class SealedPage:
    """A page of access rows as the view holds them, its patients' ids opened."""

    rows: list[dict[str, Any]]
    ids: dict[SealedPatient, str | None]
    next_cursor: str | None

    def items(self) -> list[dict[str, Any]]:
        """The page's items as the API shows them."""
        return access_items(self.rows, self.ids)

    @property
    def shown(self) -> list[str]:
        """The patients whose ids the page shows, in the order they first appear."""
        return [i for i in self.ids.values() if i]


def _read_page(
    reports: AccessReports, ledger: str, where: AccessFilter, scope: dict[str, Any],
    after: Position | None, order: str, limit: int,
) -> SealedPage:
    # _list_params has refused any order but asc and desc.
    rows, more = reports.access_rows(ledger, where, after, cast(Order, order), limit)
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(Position(last["occurred_utc"], last["seq"]), scope)
    return SealedPage(rows, reports.open_patients(ledger, rows), next_cursor)


def json_page(head: dict[str, Any], page: SealedPage) -> Response:
    return json_response({**head, "items": page.items(), "next_cursor": page.next_cursor})


def _list_params(problems: Problems, since: str | None, until: str | None,
                 action: str | None, order: str, limit: int) -> tuple[str | None, str | None,
                                                                     tuple[str, ...]]:
    since_utc, until_utc = problems.bound("from", since), problems.bound("to", until)
    _period(problems, since_utc, until_utc)
    if order not in ("asc", "desc"):
        problems.add("order", "must be asc or desc")
    if not 1 <= limit <= MAX_LIMIT:
        problems.add("limit", f"must be between 1 and {MAX_LIMIT}")
    return since_utc, until_utc, _actions(problems, action)


@dataclass(frozen=True)
class HistoryParams:
    """The parameters both access histories take (one dependency, one definition)."""

    purpose: str | None
    since: str | None
    until: str | None
    action: str | None
    cursor: str | None
    limit: int
    order: str
    min_seq: int | None
    wait_ms: int


async def history_params(
    purpose: Purpose = None, since: From = None, until: To = None, action: Actions = None,
    cursor: str | None = None, limit: Limit = 100, order: OrderParam = "asc",
    min_seq: MinSeq = None, wait_ms: WaitMs = 2000,
) -> HistoryParams:
    # async although it awaits nothing: FastAPI runs a plain ``def`` dependency on its
    # thread pool, a hand-off to another thread and back on every history page.
    return HistoryParams(purpose, since, until, action, cursor, limit, order, min_seq, wait_ms)


async def history(
    svc: Services, ledger: str, where: AccessFilter, q: HistoryParams,
    exists: Callable[[], bool], missing: ApiError, build: Callable[[SealedPage], T],
    reader: Reader, what: str, ahead: list[str] | None = None,
) -> T:
    """One page of an access history (a patient's or a user's): parameters checked
    (every bad one named at once), views awaited, rows read and opened off the loop, the
    read recorded (as ``reader``'s look at ``what``). ``where`` names whose history; the
    time and action filters are added here; ``build`` makes the answer of the page (the
    API's JSON, the console's page) and runs off the loop.

    The answer leaves only once the record of the read is durable, but the two are made
    side by side: when whose PHI the page shows is known before it is read (``ahead``: a
    patient's history), the read is recorded while the page is read, once the history is
    known to exist; otherwise as soon as the page's patients are opened, while its items
    are built and encoded. Either way the answer waits for the slower of the two rather
    than their sum."""
    problems = Problems()
    purpose = check_purpose(problems, q.purpose)
    since_utc, until_utc, actions = _list_params(problems, q.since, q.until, q.action, q.order,
                                                 q.limit)
    scope = {"p": where.patient_ref, "a": where.actor_id, "f": since_utc, "t": until_utc,
             "x": actions, "o": q.order}
    after = _after(problems, q.cursor, scope)  # a bad cursor is named with the rest
    problems.raise_any()
    await await_views(svc, ledger, q.min_seq, q.wait_ms)
    reports = AccessReports(svc)
    where = replace(where, since_utc=since_utc, until_utc=until_utc, actions=actions)

    def page() -> SealedPage:
        return _read_page(reports, ledger, where, scope, after, q.order, q.limit)

    def record(shown: list[str]) -> Awaitable[None]:
        return reports.record_reads(ledger, reader, shown, purpose, what)

    if ahead is not None:
        if not await off_loop(exists):
            raise missing
        answer, _ = await asyncio.gather(off_loop(lambda: build(page())),
                                         record(ahead))
        return answer

    def read() -> SealedPage:
        # A history with rows on this page exists: the existence check (a round trip)
        # is needed only to tell an empty page from an unknown patient or user.
        shown = page()
        if not shown.rows and not exists():
            raise missing
        return shown

    sealed = await off_loop(read)
    answer, _ = await asyncio.gather(off_loop(lambda: build(sealed)),
                                     record(sealed.shown))
    return answer


async def patient_history(
    svc: Services, ledger: str, reader: Reader, patient_id: str, actor: str | None,
    q: HistoryParams, build: Callable[[SealedPage], T],
) -> T:
    """A page of who touched ``patient_id``'s PHI (recorded as an ``access_report``)."""
    ref = svc.protection.patient_ref(ledger, patient_id)
    return await history(
        svc, ledger, AccessFilter(patient_ref=ref, actor_id=actor), q,
        exists=lambda: svc.queries.has_accesses(ledger, patient_ref=ref),
        missing=ApiError(404, "patient_not_found", NO_ACCESS,
                         ["patient_id"]),
        build=build, reader=reader, what=ACCESS_REPORT, ahead=[patient_id],
    )


async def user_history(
    svc: Services, ledger: str, reader: Reader, user_id: str, patient: str | None,
    q: HistoryParams, build: Callable[[SealedPage], T],
) -> T:
    """A page of what ``user_id`` did (recorded as a ``user_access_report`` per patient
    the page shows)."""
    ref = svc.protection.patient_ref(ledger, patient) if patient else None
    return await history(
        svc, ledger, AccessFilter(patient_ref=ref, actor_id=user_id), q,
        exists=lambda: svc.queries.has_accesses(ledger, actor_id=user_id),
        missing=ApiError(404, "user_not_found", "nothing is recorded for this user",
                         ["user_id"]),
        build=build, reader=reader, what=USER_ACCESS_REPORT,
    )


async def patient_record(
    svc: Services, ledger: str, reader: Reader, patient_id: str, purpose: str | None,
    min_seq: int | None = None, wait_ms: int = 2000,
) -> tuple[PatientRow, dict[str, Any]]:
    """A patient's current record, opened, and the read recorded (``patient_record``)."""
    problems = Problems()
    purpose = check_purpose(problems, purpose)
    problems.raise_any()
    await await_views(svc, ledger, min_seq, wait_ms)
    reports = AccessReports(svc)

    def read() -> tuple[PatientRow, dict[str, Any]]:
        row = svc.queries.patient(ledger, reports.patient_ref(ledger, patient_id))
        if row is None:
            raise ApiError(404, "patient_not_found", "no record of this patient" + VIEWS_TRAIL,
                           ["patient_id"])
        if row.deleted:
            raise ApiError(404, "patient_deleted",
                           "this patient's record was deleted; its access history remains",
                           ["patient_id"])
        return row, reports.open_record(ledger, row)[1]

    row, record = await off_loop(read)
    await reports.record_reads(ledger, reader, [patient_id], purpose, PATIENT_RECORD)
    return row, record


@dataclass(frozen=True)
class AccountingRead:
    """An accounting of disclosures as read: the period it covers and its entries."""

    period: tuple[str, str]
    accounting: Accounting


async def disclosure_accounting(
    svc: Services, ledger: str, reader: Reader, patient_id: str, purpose: str | None,
    since: str | None, until: str | None, *, summarize: bool = True,
    problems: Problems | None = None, min_seq: int | None = None, wait_ms: int = 2000,
) -> AccountingRead:
    """The 45 CFR 164.528 accounting of one patient's disclosures over the period
    (6 years back by default), the read recorded (``disclosure_accounting``).
    ``problems`` may hold the caller's own bad parameters, named with these."""
    problems = problems or Problems()
    purpose = check_purpose(problems, purpose)
    since_utc, until_utc = problems.bound("from", since), problems.bound("to", until)
    _period(problems, since_utc, until_utc)
    problems.raise_any()
    await await_views(svc, ledger, min_seq, wait_ms)
    reports = AccessReports(svc)
    ref = reports.patient_ref(ledger, patient_id)
    period = reports.accounting_period(since_utc, until_utc)

    def read() -> Accounting:
        if not svc.queries.has_accesses(ledger, patient_ref=ref):
            raise ApiError(404, "patient_not_found", NO_ACCESS,
                           ["patient_id"])
        rows = svc.queries.disclosures(ledger, ref, *period)
        return account(reports.open_disclosures(ledger, rows), summarise=summarize)

    accounting = await off_loop(read)
    await reports.record_reads(ledger, reader, [patient_id], purpose, DISCLOSURE_ACCOUNTING)
    return AccountingRead(period, accounting)
