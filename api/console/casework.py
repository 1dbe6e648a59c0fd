"""The console's casework pages: the alert queue with its triage, and breach
investigations (open one, its duties, timeline picture, report and evidence).

Both call the services the JSON API calls -- :mod:`api.alert_desk` and
:class:`api.investigations.InvestigationService` -- so a page's reads are recorded and a
triage or an opening is a ledger entry exactly as over the API.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.access_reports import Reader
from api.alert_desk import MAX_REASON, TriageRefused, list_page, record_shown, triage
from api.audit_reads import ACTIONS
from api.console.filters import Filters, utc_bounds
from api.console.web import (
    Stop,
    Viewer,
    markup,
    may,
    page_link,
    render,
    require,
    require_csrf,
    require_purpose,
    services_of,
)
from api.errors import ApiError
from api.investigations import InvestigationService
from api.pictures import Lane, Mark, legend_items, timeline_svg
from api.routers.alerts import STATUSES
from api.routers.investigations import OpenIn, check_scope, report_response, scope_dict
from projections.alert_queries import AlertFilter
from projections.cursor import BadCursor, Position, decode_cursor, encode_cursor
from projections.instants import utc_of
from projections.monitoring.rules import RULES as ALERT_RULES

router = APIRouter(prefix="/console", include_in_schema=False)

ALERTS_PAGE = 50
INVESTIGATIONS_PAGE = 25
TIMELINE_ROWS = 500  # entries an investigation page lists and draws


def _q(value: str) -> str:
    return quote(value, safe="")


def _reader(viewer: Viewer) -> Reader:
    return Reader.of(viewer.caller)


def chosen_actions(values: list[str]) -> tuple[str, ...] | None:
    """The actions asked for (repeated ``action`` fields, each maybe comma-separated), in
    one order so a page's cursor does not depend on how they were typed; None when one is
    not an action of the contract."""
    chosen = {a.strip() for v in values for a in v.split(",") if a.strip()}
    if any(a not in ACTIONS for a in chosen):
        return None
    return tuple(sorted(chosen))


# -- alerts ----------------------------------------------------------------------------

@router.get("/alerts")
async def alerts_page(
    request: Request, rule: str | None = None, status: str | None = None,
    since: str | None = Query(None, alias="from"), until: str | None = Query(None, alias="to"),
    action: list[str] = Query([]), cursor: str | None = None, done: str | None = None,
) -> Response:
    viewer = await require(request, "GET", "/v1/alerts")
    purpose = require_purpose(request, viewer)
    filters = Filters.parse(since, until, None)
    bad = list(filters.bad)
    start, end = utc_bounds(filters, bad)
    actions = chosen_actions(action)
    if actions is None:
        bad.append("action")
        actions = ()
    rules = (rule,) if rule else ()
    statuses = (status,) if status else ()
    if rule and rule not in ALERT_RULES:
        bad.append("rule")
    if status and status not in STATUSES:
        bad.append("status")
    context: dict[str, Any] = {"filters": filters, "rule": rule or "",
                               "status_filter": status or "", "rules": sorted(ALERT_RULES),
                               "statuses": STATUSES, "actions": sorted(ACTIONS),
                               "actions_chosen": actions, "action": ",".join(actions),
                               "cursor": cursor, "done": done, "max_reason": MAX_REASON}
    # The same cursor scope as GET /v1/alerts, so a page's cursor means the same there;
    # the action filter is the console's own, so it joins the scope only when given.
    scope: dict[str, Any] = {"rule": rules, "status": statuses, "actor": None,
                             "patient": None, "from": start, "to": end}
    if actions:
        scope["action"] = actions
    after = None
    if cursor is not None and not bad:
        try:
            after = decode_cursor(cursor, scope)
        except BadCursor:
            bad.append("cursor")
    if bad:
        return render(request, "alerts.html", 400, viewer, **context, items=[],
                      next_cursor=None, error=f"Check these filters: {', '.join(bad)}.")
    svc, ledger = services_of(request), viewer.caller.ledger
    where = AlertFilter(rules, statuses, None, None, start, end, actions)
    items, shown, last = await asyncio.to_thread(list_page, svc, ledger, where, after,
                                                 ALERTS_PAGE)
    await record_shown(svc, ledger, _reader(viewer), shown, purpose)
    return render(request, "alerts.html", viewer=viewer, **context, items=items, error=None,
                  next_cursor=None if last is None else encode_cursor(last, scope),
                  can_triage=may(viewer, "POST", "/v1/alerts/{}/acknowledge"))


@router.post("/alerts/{alert_id}/{decision}")
async def triage_alert(request: Request, alert_id: str, decision: str) -> Response:
    if decision not in ("acknowledge", "dismiss"):
        raise Stop(render(request, "error.html", 404, None, title="Not found",
                          message="No such action on an alert."))
    viewer = await require(request, "POST", f"/v1/alerts/{{}}/{decision}")
    form = await require_csrf(request, viewer.secret)
    reason = form.get("reason", "").strip()
    back = form.get("back", "/console/alerts")
    back = back if back.startswith("/console/alerts") else "/console/alerts"
    if not reason or len(reason) > MAX_REASON:
        return render(request, "error.html", 400, viewer, title="A reason is needed",
                      message=f"Give a reason of 1-{MAX_REASON} characters (field: reason); "
                              "write no PHI in it.")
    svc = services_of(request)
    try:
        done = await asyncio.to_thread(triage, svc, viewer.caller.ledger, viewer.caller,
                                       alert_id, decision, reason)
    except TriageRefused as refused:
        return render(request, "error.html", refused.status, viewer, title="Not done",
                      message=str(refused))
    # The alert's new status ("dismissed"), not the decision's verb with a "d" added.
    return RedirectResponse(page_link(back.split("?")[0], done=f"{done.status} {alert_id}"),
                            303)


# -- investigations ----------------------------------------------------------------------

INVESTIGATION_STATUSES = ("open", "closed")


def newest_first(service: InvestigationService, ledger: str
                 ) -> list[tuple[int, dict[str, Any]]]:
    """Every investigation of ``ledger`` with the seq of its opening, newest opening first.

    The opening's seq is the list's key: unique and fixed, so a page's cursor stays right
    while investigations are opened or closed in between."""
    opened: dict[str, int] = {}
    for investigation_id, seq, _, _ in service.queries.investigation_entries(ledger):
        opened.setdefault(investigation_id, seq)  # entries come in seq order
    items = [(opened[i["investigation_id"]], i) for i in service.list(ledger)]
    return sorted(items, key=lambda pair: pair[0], reverse=True)


def _discovered_within(item: dict[str, Any], since: str | None, until: str | None) -> bool:
    if since is None and until is None:
        return True
    found = item.get("discovered_at")
    if not found:
        return False
    moment = utc_of(found)
    return (since is None or moment >= since) and (until is None or moment < until)


def investigations_slice(listing: list[tuple[int, dict[str, Any]]], status: str,
                         after: int | None, since: str | None = None,
                         until: str | None = None) -> dict[str, Any]:
    """One page of ``listing`` (``status`` "" for all; discovered from ``since`` inclusive
    to ``until`` exclusive, fixed-width UTC, None for open-ended) after the opening seq
    ``after``: its ``items`` and the ``next_cursor`` (None on the last page)."""
    chosen = [(seq, item) for seq, item in listing
              if (not status or item["status"] == status)
              and _discovered_within(item, since, until)
              and (after is None or seq < after)]
    page = chosen[:INVESTIGATIONS_PAGE]
    next_cursor = None
    if len(chosen) > INVESTIGATIONS_PAGE:
        seq, item = page[-1]
        next_cursor = encode_cursor(Position(item["investigation_id"], seq),
                                    _list_scope(status, since, until))
    return {"items": [item for _, item in page], "next_cursor": next_cursor}


def _list_scope(status: str, since: str | None = None, until: str | None = None
                ) -> dict[str, str | None]:
    return {"list": "investigations", "status": status, "from": since, "to": until}


@router.get("/investigations")
async def investigations_page(
    request: Request, status: str | None = None,
    since: str | None = Query(None, alias="from"), until: str | None = Query(None, alias="to"),
    cursor: str | None = None,
) -> Response:
    # The range is on when the breach was discovered, not when the case was opened: the
    # notification deadlines and the yearly report to HHS run from discovery.
    viewer = await require(request, "GET", "/v1/investigations")
    service = InvestigationService(services_of(request))
    ledger = viewer.caller.ledger
    status = (status or "").strip()
    filters = Filters.parse(since, until, None)
    bad = list(filters.bad)
    start, end = utc_bounds(filters, bad)
    if status and status not in INVESTIGATION_STATUSES:
        bad.append("status")
    after = None
    if cursor is not None and not bad:
        try:
            after = decode_cursor(cursor, _list_scope(status, start, end)).seq
        except BadCursor:
            bad.append("cursor")
    context: dict[str, Any] = {"status_filter": status, "statuses": INVESTIGATION_STATUSES,
                               "filters": filters, "cursor": cursor, "form": {},
                               "error": None}
    if bad:
        return render(request, "investigations.html", 400, viewer, **context, items=[],
                      next_cursor=None, list_error=f"Check these filters: {', '.join(bad)}.")
    await service.through(ledger, None)
    listing = await asyncio.to_thread(newest_first, service, ledger)
    return render(request, "investigations.html", viewer=viewer, **context, list_error=None,
                  **investigations_slice(listing, status, after, start, end))


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def _instant_field(text: str) -> str | None:
    """A form's ``datetime-local`` (UTC) or RFC 3339 value as RFC 3339."""
    text = text.strip()
    if not text:
        return None
    if len(text) == 16:  # YYYY-MM-DDTHH:MM
        return f"{text}:00Z"
    if len(text) == 10:
        return f"{text}T00:00:00Z"
    return text


@router.post("/investigations")
async def open_investigation(request: Request) -> Response:
    viewer = await require(request, "POST", "/v1/investigations")
    form = await require_csrf(request, viewer.secret)
    body = {"title": form.get("title", "").strip(),
            "discovered_at": _instant_field(form.get("discovered_at", "")),
            "scope": {"actors": _split(form.get("actors", "")),
                      "devices": _split(form.get("devices", "")),
                      "ips": _split(form.get("ips", "")),
                      "patients": _split(form.get("patients", "")),
                      "from": _instant_field(form.get("from", "")),
                      "to": _instant_field(form.get("to", ""))}}
    if form.get("note", "").strip():
        body["note"] = form["note"].strip()
    service = InvestigationService(services_of(request))
    ledger = viewer.caller.ledger
    try:
        opened = OpenIn.model_validate(body)
        scope = scope_dict(opened.scope)
        check_scope(scope, partial=False)
    except ValidationError as error:
        fields = sorted({".".join(str(p) for p in e["loc"]).replace("from_", "from")
                         for e in error.errors()})
        return await _form_again(request, viewer, service, form,
                                 f"Check these fields: {', '.join(fields)}.")
    except ApiError as error:
        return await _form_again(request, viewer, service, form,
                                 f"{error.message} ({', '.join(error.fields)}).")
    investigation_id, _ = await service.open(ledger, _reader(viewer), opened.title,
                                             opened.discovered_at, scope, opened.note)
    return RedirectResponse(f"/console/investigations/{_q(investigation_id)}", 303)


async def _form_again(request: Request, viewer: Viewer, service: InvestigationService,
                      form: dict[str, str], error: str) -> Response:
    listing = await asyncio.to_thread(newest_first, service, viewer.caller.ledger)
    return render(request, "investigations.html", 400, viewer, error=error, form=form,
                  status_filter="", statuses=INVESTIGATION_STATUSES, cursor=None,
                  filters=Filters.parse(None, None, None),
                  list_error=None, **investigations_slice(listing, "", None))


def _marks(timeline: list[dict[str, Any]]) -> tuple[list[Mark], list[Lane]]:
    marks: list[Mark] = []
    lanes: dict[str, Lane] = {}
    for item in timeline:
        actor = item["actor"]["id"]
        lanes.setdefault(actor, Lane(actor, actor, f"/console/users/{_q(actor)}"))
        when = datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00"))
        rules = ", ".join(a.get("rule", "") for a in item.get("alerts") or [])
        note = f"{item['occurred_at']} {item['action']} by {actor}" + (
            f" - alerts: {rules}" if rules else "")
        marks.append(Mark(actor, when, item["action"], item.get("purpose"), note,
                          alert=bool(item.get("alerts")), seq=item["seq"]))
    return marks, list(lanes.values())


@router.get("/investigations/{investigation_id}")
async def investigation_page(request: Request, investigation_id: str,
                             format: str | None = None) -> Response:
    viewer = await require(request, "GET", "/v1/investigations/{}")
    purpose = require_purpose(request, viewer)
    svc, ledger = services_of(request), viewer.caller.ledger
    service = InvestigationService(svc)
    try:
        answer = await service.answer(ledger, investigation_id, None, None)
    except ApiError as error:
        return render(request, "error.html", error.status, viewer, title="Not available",
                      message=error.message)
    if format in ("html", "csv"):  # the printable report and the CSV, as the API makes them
        return await report_response(service, answer, _reader(viewer), purpose, format)
    rows = answer.rows[:TIMELINE_ROWS]
    patients = answer.patients[:TIMELINE_ROWS]
    timeline, affected, shown = await asyncio.to_thread(service.open_page, answer, rows,
                                                        patients)
    await service.record_reads(ledger, _reader(viewer), shown, purpose)
    marks, lanes = _marks(timeline)
    head = answer.head()
    return render(
        request, "investigation.html", viewer=viewer, head=head,
        investigation_id=investigation_id, timeline=timeline, affected=affected,
        total=len(answer.rows), affected_total=len(answer.patients),
        picture=markup(timeline_svg(marks, lanes=lanes,
                                    title=f"Timeline of investigation {investigation_id}")),
        legend=legend_items(marks))


@router.get("/investigations/{investigation_id}/evidence")
async def investigation_evidence(request: Request, investigation_id: str) -> Response:
    viewer = await require(request, "GET", "/v1/investigations/{}/evidence")
    service = InvestigationService(services_of(request))
    await service.through(viewer.caller.ledger, None)
    try:
        body = await asyncio.to_thread(service.evidence, viewer.caller.ledger,
                                       investigation_id)
    except ApiError as error:
        return render(request, "error.html", error.status, viewer, title="Not available",
                      message=error.message)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="evidence-{investigation_id}.json"'})
