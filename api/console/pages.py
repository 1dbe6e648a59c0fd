"""The console's pages under ``/console``: sign-in, the purpose, patients, users, ledger.

Every page that shows PHI reads it through :mod:`api.audit_reads`, exactly as the JSON
API does, so each read is checked and recorded in the ledger the same way (a ``query``
event per patient shown, with the purpose the person gave).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api.access_reports import Reader
from api.accounting_report import as_csv, as_html
from api.audit_reads import (
    AccountingRead,
    HistoryParams,
    SealedPage,
    disclosure_accounting,
    patient_history,
    patient_record,
    user_history,
)
from api.auth.identities import AccessError
from api.auth.limits import retry_after
from api.console.filters import Filters, utc_bounds
from api.console.session import (
    PRESESSION,
    PURPOSE,
    SESSION,
    cookie_header,
    cookie_name,
    csrf_token,
    is_loopback,
    new_presession,
    purpose_value,
    safe_next,
)
from api.console.web import (
    CSP,
    PURPOSE_CODES,
    STATIC,
    Stop,
    Viewer,
    client_of,
    letter_csp,
    markup,
    may,
    page_link,
    render,
    require,
    require_csrf,
    require_purpose,
    secure_request,
    services_of,
    viewer_of,
)
from api.errors import ApiError
from api.pictures import Lane, Mark, daily_volumes, legend_items, timeline_svg, volume_svg
from api.verifications import last_verification, verify_and_record
from projections.instants import format_utc

router = APIRouter(prefix="/console", include_in_schema=False)
T = TypeVar("T")

PAGE_SIZE = 50
TIMELINE_LIMIT = 1000  # the newest accesses drawn on a timeline
VOLUME_DAYS = 60
PHI_ACTIONS = ("read", "create", "update", "delete", "disclose", "export", "print", "query")
ACTION_CHOICES = [*sorted(PHI_ACTIONS), "login", "login_failed", "logout"]
LOGIN_FAILED = "Sign-in failed: the name, password or code is wrong, or the account is " \
               "locked after repeated failures."


def _reader(viewer: Viewer) -> Reader:
    return Reader.of(viewer.caller)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _settle(work: Awaitable[T]) -> T | ApiError:
    """``work``'s answer, or the ApiError it raised (a page shows it in place)."""
    try:
        return await work
    except ApiError as error:
        return error


def _problem(error: ApiError) -> str:
    fields = f" ({', '.join(error.fields)})" if error.fields else ""
    return f"{error.message}{fields}"


# -- static and home -----------------------------------------------------------------------

@router.get("/static/console.css")
async def stylesheet() -> Response:
    return FileResponse(STATIC / "console.css", media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})


@router.get("")
async def home(request: Request, signed_out: str | None = None) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return _sign_in_form(request, "/console", message="You have signed out."
                             if signed_out else None)
    return render(request, "home.html", viewer=viewer,
                  can_ledger=may(viewer, "GET", "/v1/ledger"),
                  can_phi=may(viewer, "GET", "/v1/patients/{}/accesses"))


@router.get("/patients")
async def find_patient(request: Request, id: str = "") -> Response:
    await require(request, "GET", "/v1/patients/{}/accesses")
    if not id.strip():
        return RedirectResponse("/console", 303)
    return RedirectResponse(page_link(f"/console/patients/{_q(id.strip())}"), 303)


@router.get("/users")
async def find_user(request: Request, id: str = "") -> Response:
    await require(request, "GET", "/v1/users/{}/accesses")
    if not id.strip():
        return RedirectResponse("/console", 303)
    return RedirectResponse(page_link(f"/console/users/{_q(id.strip())}"), 303)


def _q(value: str) -> str:
    return quote(value, safe="")


# -- signing in and out --------------------------------------------------------------------

def _plain_http_refused(request: Request) -> bool:
    """Over plain HTTP only a browser on this machine may sign in (development)."""
    return not secure_request(request) and not is_loopback(client_of(request))


def _sign_in_form(request: Request, target: str, status: int = 200,
                  message: str | None = None, error: str | None = None,
                  username: str = "") -> HTMLResponse:
    secure = secure_request(request)
    if _plain_http_refused(request):
        # 400, not 403: nothing is forbidden to this person, the connection is wrong
        return render(request, "error.html", 400, None, title="Use HTTPS",
                      message="Sign in over HTTPS: over plain HTTP the console accepts "
                              "only a browser on the service's own machine.")
    presession = new_presession()
    response = render(request, "sign_in.html", status, None, next=safe_next(target),
                      csrf=csrf_token(presession), message=message, error=error,
                      username=username)
    response.headers.append("set-cookie", cookie_header(PRESESSION, presession, secure))
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None,
                       expired: str | None = None) -> Response:
    return _sign_in_form(request, safe_next(next), message=(
        "Your session has ended; sign in again to continue." if expired else None))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    secure = secure_request(request)
    if _plain_http_refused(request):
        return _sign_in_form(request, "/console")
    form = await require_csrf(request, request.cookies.get(cookie_name(PRESESSION, secure)))
    target = safe_next(form.get("next"))
    username = form.get("username", "").strip()[:64]
    password, code = form.get("password", ""), form.get("totp", "").strip()
    svc = services_of(request)
    # The API's own limit, in the same bucket: by address (not by name: see
    # api.routers.auth.login).
    for key in (f"ip:{client_of(request)}",):
        wait = svc.access.wait("login", key)
        if wait:
            response: Response = _sign_in_form(
                request, target, 429, error="Too many sign-in attempts; wait a minute and try"
                " again.", username=username)
            response.headers["Retry-After"] = retry_after(wait)
            return response
    if not username or not password or not code or len(password) > 1024 or len(code) > 16:
        return _sign_in_form(request, target, 400, error="Give your name, password and "
                             "the code from your authenticator app.", username=username)
    result = await asyncio.to_thread(svc.access.sessions.login, username, password, code,
                                     client_of(request))
    if result.token is None or result.expires_at is None:
        return _sign_in_form(request, target, 401, error=LOGIN_FAILED, username=username)
    lifetime = max(1, int((result.expires_at - svc.clock()).total_seconds()))
    response = RedirectResponse(target, 303)
    response.headers.append("set-cookie", cookie_header(SESSION, result.token, secure,
                                                        lifetime))
    response.headers.append("set-cookie", cookie_header(PRESESSION, None, secure))
    response.headers.append("set-cookie", cookie_header(PURPOSE, None, secure))
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    secure = secure_request(request)
    viewer = await viewer_of(request)
    response = RedirectResponse("/console?signed_out=1", 303)
    if viewer is not None:
        await require_csrf(request, viewer.secret)
        svc = services_of(request)
        with contextlib.suppress(AccessError):  # not a login session: nothing to end
            await asyncio.to_thread(svc.access.sessions.logout, viewer.caller)
        svc.access.forget()
    for name in (SESSION, PURPOSE):
        response.headers.append("set-cookie", cookie_header(name, None, secure))
    return response


# -- the purpose of use ----------------------------------------------------------------------

@router.get("/purpose")
async def purpose_page(request: Request, next: str | None = None) -> Response:
    viewer = await require(request, "GET", "/v1/auth/whoami")
    return render(request, "purpose.html", viewer=viewer, next=safe_next(next),
                  codes=sorted(PURPOSE_CODES), error=None)


@router.post("/purpose")
async def choose_purpose(request: Request) -> Response:
    viewer = await require(request, "GET", "/v1/auth/whoami")
    form = await require_csrf(request, viewer.secret)
    chosen = form.get("purpose", "")
    target = safe_next(form.get("next"))
    if chosen not in PURPOSE_CODES:
        return render(request, "purpose.html", 400, viewer, next=target,
                      codes=sorted(PURPOSE_CODES),
                      error="Choose a purpose of use from the list (field: purpose).")
    response = RedirectResponse(target, 303)
    response.headers.append("set-cookie", cookie_header(
        PURPOSE, purpose_value(viewer.caller.credential or "", chosen), viewer.secure))
    return response


# -- patients ----------------------------------------------------------------------------------

def _params(purpose: str, filters: Filters, cursor: str | None, limit: int) -> HistoryParams:
    return HistoryParams(purpose, filters.since, filters.until, filters.action or None,
                         cursor, limit, "desc", None, 0)


def _rows(page: SealedPage) -> tuple[list[dict[str, Any]], str | None]:
    return page.items(), page.next_cursor


def _span(filters: Filters) -> tuple[datetime | None, datetime | None]:
    return filters.instant("from"), filters.instant("to")


def _patient_marks(items: list[dict[str, Any]]) -> tuple[list[Mark], list[Lane]]:
    marks: list[Mark] = []
    lanes: dict[str, Lane] = {}
    for item in items:
        actor = item["actor"]["id"]
        lanes.setdefault(actor, Lane(actor, actor, f"/console/users/{_q(actor)}"))
        marks.append(Mark(actor, _instant(item["occurred_at"]), item["action"],
                          item["purpose"], _note(item, actor),
                          f"/console/users/{_q(actor)}"))
    return marks, list(lanes.values())


def _note(item: dict[str, Any], who: str) -> str:
    return (f"{item['occurred_at']} {item['action']} by {who}"
            f" (purpose {item['purpose'] or '-'}, channel {item['channel'] or '-'})")


@router.get("/patients/{patient_id}")
async def patient_page(
    request: Request, patient_id: str, since: str | None = Query(None, alias="from"),
    until: str | None = Query(None, alias="to"), action: str | None = None,
    cursor: str | None = None,
) -> Response:
    viewer = await require(request, "GET", "/v1/patients/{}/accesses")
    purpose = require_purpose(request, viewer)
    filters = Filters.parse(since, until, action)
    context: dict[str, Any] = {"patient_id": patient_id, "filters": filters,
                               "actions": ACTION_CHOICES, "cursor": cursor}
    if filters.bad:
        return render(request, "patient.html", 400, viewer, **context, record=None,
                      error=f"Check these filters: {', '.join(filters.bad)}.", items=[],
                      timeline=None, accounting=None)
    svc, reader, ledger = services_of(request), _reader(viewer), viewer.caller.ledger
    record, table, picture, accounting = await asyncio.gather(
        _settle(patient_record(svc, ledger, reader, patient_id, purpose)),
        _settle(patient_history(svc, ledger, reader, patient_id, None,
                                _params(purpose, filters, cursor, PAGE_SIZE), _rows)),
        _settle(patient_history(svc, ledger, reader, patient_id, None,
                                _params(purpose, filters, None, TIMELINE_LIMIT), _rows)),
        _settle(disclosure_accounting(svc, ledger, reader, patient_id, purpose,
                                      None, None)),
    )
    missing = isinstance(record, ApiError) and isinstance(table, ApiError) and all(
        e.status == 404 for e in (record, table))
    if missing:
        return render(request, "error.html", 404, viewer, title="No such patient",
                      message="Nothing is recorded about this patient.")
    error = next((_problem(e) for e in (table, picture) if isinstance(e, ApiError)
                  and e.status != 404), None)
    items, next_cursor = table if not isinstance(table, ApiError) else ([], None)
    timeline = legend = None
    shown = 0
    if not isinstance(picture, ApiError):
        marks, lanes = _patient_marks(picture[0])
        shown = len(marks)
        start, end = _span(filters)
        timeline = markup(timeline_svg(marks, lanes=lanes, start=start, end=end,
                                       title=f"Accesses to patient {patient_id}"))
        legend = legend_items(marks)
    return render(
        request, "patient.html", 400 if error else 200, viewer, **context,
        record=None if isinstance(record, ApiError) else record[1],
        record_row=None if isinstance(record, ApiError) else record[0],
        record_problem=_problem(record) if isinstance(record, ApiError) else None,
        error=error, items=items, next_cursor=next_cursor, timeline=timeline, legend=legend,
        timeline_shown=shown, timeline_limit=TIMELINE_LIMIT,
        accounting=None if isinstance(accounting, ApiError) else accounting,
    )


@router.get("/patients/{patient_id}/accounting")
async def accounting_letter(request: Request, patient_id: str, format: str = "html"
                            ) -> Response:
    viewer = await require(request, "GET", "/v1/patients/{}/disclosures")
    purpose = require_purpose(request, viewer)
    if format not in ("html", "csv"):
        return render(request, "error.html", 400, viewer, title="Unknown format",
                      message="format must be html or csv.")
    svc = services_of(request)
    try:
        read: AccountingRead = await disclosure_accounting(
            svc, viewer.caller.ledger, _reader(viewer), patient_id, purpose, None, None)
    except ApiError as error:
        return render(request, "error.html", error.status, viewer, title="Not available",
                      message=_problem(error))
    generated = format_utc(svc.clock())
    if format == "csv":
        return Response(as_csv(read.accounting), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 'attachment; filename="accounting-of-disclosures.csv"',
                                 "Content-Security-Policy": CSP})
    html = as_html(patient_id, viewer.caller.ledger, read.period, generated, read.accounting)
    return HTMLResponse(html, headers={"Content-Security-Policy": letter_csp(html)})


# -- users -------------------------------------------------------------------------------------

def _user_marks(items: list[dict[str, Any]]) -> tuple[list[Mark], list[Lane]]:
    marks: list[Mark] = []
    lanes: dict[str, Lane] = {}
    for item in items:
        patient = (item.get("patient") or {}).get("id") or "(no patient)"
        href = None if patient == "(no patient)" else f"/console/patients/{_q(patient)}"
        lanes.setdefault(patient, Lane(patient, patient, href))
        marks.append(Mark(patient, _instant(item["occurred_at"]), item["action"],
                          item["purpose"], _note(item, item["actor"]["id"]), href))
    return marks, list(lanes.values())


def _volume_window(filters: Filters, today: date) -> tuple[date, date]:
    since, until = filters.instant("from"), filters.instant("to")
    end = (until - timedelta(microseconds=1)).date() if until else today
    start = since.date() if since else end - timedelta(days=VOLUME_DAYS - 1)
    return start, end


@router.get("/users/{user_id}")
async def user_page(
    request: Request, user_id: str, since: str | None = Query(None, alias="from"),
    until: str | None = Query(None, alias="to"), action: str | None = None,
    cursor: str | None = None,
) -> Response:
    viewer = await require(request, "GET", "/v1/users/{}/accesses")
    purpose = require_purpose(request, viewer)
    filters = Filters.parse(since, until, action)
    context: dict[str, Any] = {"user_id": user_id, "filters": filters,
                               "actions": ACTION_CHOICES, "cursor": cursor}
    if filters.bad:
        return render(request, "user.html", 400, viewer, **context, items=[], timeline=None,
                      volume=None, error=f"Check these filters: {', '.join(filters.bad)}.")
    svc, reader, ledger = services_of(request), _reader(viewer), viewer.caller.ledger
    first, last = _volume_window(filters, svc.clock().astimezone(UTC).date())

    def counts() -> dict[str, int]:
        # The baseline of the first day shown needs the 14 days before it.
        return svc.queries.daily_patients(
            ledger, user_id, PHI_ACTIONS,
            f"{(first - timedelta(days=15)).isoformat()}T00:00:00Z",
            f"{(last + timedelta(days=2)).isoformat()}T00:00:00Z")

    table, picture, per_day = await asyncio.gather(
        _settle(user_history(svc, ledger, reader, user_id, None,
                             _params(purpose, filters, cursor, PAGE_SIZE), _rows)),
        _settle(user_history(svc, ledger, reader, user_id, None,
                             _params(purpose, filters, None, TIMELINE_LIMIT), _rows)),
        asyncio.to_thread(counts),
    )
    if isinstance(table, ApiError) and table.status == 404:
        return render(request, "error.html", 404, viewer, title="No such user",
                      message="Nothing is recorded for this user.")
    error = next((_problem(e) for e in (table, picture) if isinstance(e, ApiError)), None)
    items, next_cursor = table if not isinstance(table, ApiError) else ([], None)
    timeline = legend = None
    if not isinstance(picture, ApiError):
        marks, lanes = _user_marks(picture[0])
        start, end = _span(filters)
        timeline = markup(timeline_svg(marks, lanes=lanes, start=start, end=end,
                                       title=f"Accesses by {user_id}"))
        legend = legend_items(marks)
    volumes = [v for v in daily_volumes(
        {date.fromisoformat(d): n for d, n in per_day.items()},
        first - timedelta(days=15), last) if v.day >= first]
    above = [v for v in volumes if v.above]
    return render(
        request, "user.html", 400 if error else 200, viewer, **context, items=items,
        next_cursor=next_cursor, timeline=timeline, legend=legend, error=error,
        volume=markup(volume_svg(volumes, title=f"Patients per day, {user_id}")),
        volume_first=first, volume_last=last, above=above,
    )


# -- the ledger ------------------------------------------------------------------------------

@router.get("/ledger")
async def ledger_page(
    request: Request, since: str | None = Query(None, alias="from"),
    until: str | None = Query(None, alias="to"), action: str | None = None,
    before: int | None = Query(None, ge=1), verified: str | None = None,
) -> Response:
    viewer = await require(request, "GET", "/v1/ledger")
    svc, ledger = services_of(request), viewer.caller.ledger
    filters = Filters.parse(since, until, action)
    bad = list(filters.bad)
    since_utc, until_utc = utc_bounds(filters, bad)

    def read() -> dict[str, Any]:
        head = svc.store.head(ledger)
        checkpoint = svc.tlog.latest(ledger) if svc.tlog is not None else None
        lag, waited = svc.projector.behind(svc.clock())
        rows = [] if bad else svc.queries.recent(
            ledger, actions=(filters.action,) if filters.action else (),
            since_utc=since_utc, until_utc=until_utc, before_seq=before,
            limit=PAGE_SIZE + 1)
        return {"head": head, "checkpoint": checkpoint, "lag": lag,
                "lag_seconds": round(waited, 3), "rows": rows[:PAGE_SIZE],
                "older": rows[PAGE_SIZE - 1]["seq"] if len(rows) > PAGE_SIZE else None,
                "verification": last_verification(svc, ledger)}

    facts = await asyncio.to_thread(read)
    return render(request, "ledger.html", 400 if bad else 200, viewer, **facts,
                  filters=filters, actions=ACTION_CHOICES, before=before,
                  can_verify=may(viewer, "POST", "/v1/ledger/verify"),
                  just_verified=verified,
                  error=f"Check these filters: {', '.join(bad)}." if bad else None)


@router.post("/ledger/verify")
async def verify_now(request: Request) -> Response:
    viewer = await require(request, "POST", "/v1/ledger/verify")
    await require_csrf(request, viewer.secret)
    svc = services_of(request)
    verdict = await asyncio.to_thread(verify_and_record, svc, viewer.caller.ledger,
                                      viewer.caller.id)
    return RedirectResponse(page_link("/console/ledger",
                                      verified="ok" if verdict.ok else "broken"), 303)


async def stop_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Stop)
    return exc.response
