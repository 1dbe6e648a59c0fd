"""Audit queries: patient records, access histories and the accounting of disclosures.

Every route here shows PHI, so every route requires a ``purpose`` (a PurposeOfUse code)
and records the read in the ledger before answering. The reads themselves live in
:mod:`api.audit_reads`, which the console calls too: one path for every reader.
``min_seq`` asks to see the views at least as far as that seq of the ledger (waiting up
to ``wait_ms``): read-your-writes for a client that has just posted.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from api.accounting_report import ACCOUNTING_CSP, as_csv, as_html, as_json
from api.audit_reads import (
    ACTIONS,
    MAX_LIMIT,
    PURPOSES,
    From,
    HistoryParams,
    MinSeq,
    Problems,
    Purpose,
    ReportFormat,
    To,
    WaitMs,
    disclosure_accounting,
    history_params,
    json_page,
    off_loop,
    patient_history,
    user_history,
)
from api.audit_reads import (
    patient_record as read_patient_record,
)
from api.error_docs import REPORT_200, errors
from api.routers.common import chosen_ledger, json_response, reader_of
from api.services import Services, services
from projections.instants import format_utc

router = APIRouter(prefix="/v1", tags=["audit"])

__all__ = ["ACTIONS", "MAX_LIMIT", "PURPOSES", "off_loop", "router"]


_reader = reader_of
# 400 for a bad parameter (also min_seq beyond the head); 404 for nothing recorded;
# 503 views_behind when min_seq is not reached within wait_ms.
READ_ERRORS = errors(400, 404, 503)


@router.get("/patients/{patient_id}", summary="A patient's current record",
            responses=READ_ERRORS)
async def patient_record(
    patient_id: str, request: Request, purpose: Purpose = None, min_seq: MinSeq = None,
    wait_ms: WaitMs = 2000, ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    row, record = await read_patient_record(svc, ledger, _reader(request), patient_id,
                                            purpose, min_seq, wait_ms)
    return json_response({
        "patient": {"id": patient_id}, "ledger": ledger, "record": record,
        "shredded": row.shredded, "created_seq": row.created_seq,
        "updated_seq": row.updated_seq, "updated_at": row.updated_utc,
    })


@router.get("/patients/{patient_id}/accesses", summary="Who touched this patient's PHI",
            responses=READ_ERRORS)
async def patient_accesses(
    patient_id: str, request: Request, actor: str | None = None,
    q: HistoryParams = Depends(history_params), ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    head = {"patient": {"id": patient_id}, "ledger": ledger}
    return await patient_history(svc, ledger, _reader(request), patient_id, actor, q,
                                 lambda page: json_page(head, page))


@router.get("/users/{user_id}/accesses",
            summary="Everything one workforce member or application did",
            responses=READ_ERRORS)
async def user_accesses(
    user_id: str, request: Request, patient: str | None = None,
    q: HistoryParams = Depends(history_params), ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    head = {"user": {"id": user_id}, "ledger": ledger}
    return await user_history(svc, ledger, _reader(request), user_id, patient, q,
                              lambda page: json_page(head, page))


@router.get(
    "/patients/{patient_id}/disclosures",
    summary="The 45 CFR 164.528 accounting of disclosures",
    response_class=Response, responses={**REPORT_200, **READ_ERRORS},
)
async def patient_disclosures(
    patient_id: str, request: Request, purpose: Purpose = None, since: From = None,
    until: To = None, format: ReportFormat = "json", summarize: bool = True,
    min_seq: MinSeq = None, wait_ms: WaitMs = 2000, ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    problems = Problems()
    if format not in ("json", "csv", "html"):
        problems.add("format", "must be json, csv or html")
    read = await disclosure_accounting(
        svc, ledger, _reader(request), patient_id, purpose, since, until,
        summarize=summarize, problems=problems, min_seq=min_seq, wait_ms=wait_ms)
    generated = format_utc(svc.clock())
    if format == "csv":
        return Response(as_csv(read.accounting), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 'attachment; filename="accounting-of-disclosures.csv"'})
    if format == "html":
        return HTMLResponse(as_html(patient_id, ledger, read.period, generated,
                                    read.accounting),
                            headers={"Content-Security-Policy": ACCOUNTING_CSP})
    return json_response(as_json(patient_id, ledger, read.period, generated, read.accounting))
