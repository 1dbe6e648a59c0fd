"""Liveness, readiness and metrics, for orchestrators and Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.error_docs import errors
from api.routers.common import json_response
from api.services import Services, services
from api.syslog.dead_letters import DeadLetters
from api.syslog.inbox import Inbox
from ledger.store import StoreUnavailable
from projections import quarantine
from projections.alert_queries import alert_counts

router = APIRouter(tags=["operations"])

# /readyz answers within this even when the database does not (the probe's own bound).
READY_WITHIN_SECONDS = 1.5
# Quarantined entries listed in /readyz's body (the count is of them all).
READY_QUARANTINE_LISTED = 100


def projection_problems(lag: dict[str, int], waited: float, paused: str | None,
                        max_lag: int, max_seconds: float) -> list[str]:
    """Why the views cannot be trusted to be current (empty: they can): the follower is
    paused, a view is more than ``max_lag`` entries behind, or the oldest entry not yet
    in every view has waited more than ``max_seconds``."""
    problems = [] if paused is None else [f"projections paused: {paused}"]
    problems += [f"view {view} is {behind} entries behind (bound {max_lag})"
                 for view, behind in sorted(lag.items()) if behind > max_lag]
    if waited > max_seconds:
        problems.append(f"the oldest entry not in every view has waited {waited:.0f} s"
                        f" (bound {max_seconds:g} s)")
    return problems


def _projection_state(svc: Services) -> tuple[dict[str, int], float,
                                              list[quarantine.Quarantined], dict[str, int]]:
    lag, waited = svc.projector.behind(svc.clock())
    return (lag, waited, quarantine.listing(svc.store, READY_QUARANTINE_LISTED),
            quarantine.counts(svc.store))


READINESS = {"type": "object", "required": ["ready", "checks"],
             "properties": {"ready": {"type": "boolean"},
                            "checks": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                            "reasons": {"type": "array", "items": {"type": "string"}},
                            "projections": {"type": "object"},
                            "quarantine": {"type": "object"}}}
READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready.", "content": {"application/json": {"schema": READINESS}}},
    503: {"description": "Not ready: the body names the check that failed.",
          "content": {"application/json": {"schema": READINESS}}},
}
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The Prometheus text exposition format (version 0.0.4).",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}


@router.get("/healthz", summary="The process is alive", responses=errors())
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="The database answers, the writer runs, the views keep up",
            responses=READY_RESPONSES)
async def readyz(svc: Services = Depends(services)) -> Response:
    checks: dict[str, str] = {}
    deadline = asyncio.get_running_loop().time() + READY_WITHIN_SECONDS
    try:
        # Bounded here as well: a probe must answer even while the database does not.
        await asyncio.wait_for(asyncio.to_thread(svc.store.ping), READY_WITHIN_SECONDS)
        checks["database"] = "ok"
    except (StoreUnavailable, TimeoutError):
        checks["database"] = "unavailable"
    checks["writer"] = "ok" if svc.writer.running else "stopped"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"ready": ready, "checks": checks}
    if checks["database"] == "ok":
        try:
            lag, waited, listed, counts = await asyncio.wait_for(
                asyncio.to_thread(_projection_state, svc),
                max(0.1, deadline - asyncio.get_running_loop().time()))
        except (StoreUnavailable, TimeoutError):
            checks["database"] = "unavailable"
            return json_response({"ready": False, "checks": checks}, 503)
        # Judged: reads would answer from views that do not move (or move too slowly to
        # be trusted), so the instance is not ready, whatever ingest could still take.
        problems = projection_problems(lag, waited, svc.projector.paused,
                                       svc.settings.ready_max_lag,
                                       svc.settings.ready_max_lag_seconds)
        checks["projections"] = "ok" if not problems else (
            "paused" if svc.projector.paused is not None else "behind")
        ready = ready and not problems
        body["ready"] = ready
        if problems:
            body["reasons"] = problems
        body["projections"] = {"lag_entries": lag, "lag_seconds": round(waited, 3),
                               "inline": svc.settings.project_inline,
                               "paused": svc.projector.paused,
                               "max_lag_entries": svc.settings.ready_max_lag,
                               "max_lag_seconds": svc.settings.ready_max_lag_seconds}
        body["quarantine"] = {"count": sum(counts.values()), "by_view": counts,
                              "entries": [q.as_dict() for q in listed]}
    elif svc.projector.paused is not None:
        body["reasons"] = [f"projections paused: {svc.projector.paused}"]
    return json_response(body, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses=METRICS_RESPONSES)
async def metrics(request: Request, svc: Services = Depends(services)) -> Response:
    stats = svc.writer.stats
    svc.metrics.appended.set(stats.events)
    svc.metrics.transactions.set(stats.transactions)
    svc.metrics.failures.set(stats.failures)
    svc.metrics.seal_seconds.set(stats.seal_seconds)
    svc.metrics.commit_seconds.set(stats.commit_seconds)
    try:
        lag, waited = await asyncio.to_thread(svc.projector.behind, svc.clock())
    except StoreUnavailable:
        lag, waited = {}, 0.0
    for view, entries in lag.items():
        svc.metrics.projection_lag.labels(view=view).set(entries)
    try:  # entries set aside, by view: counts, never the entries
        quarantined = await asyncio.to_thread(quarantine.counts, svc.store)
    except StoreUnavailable:
        quarantined = None
    if quarantined is not None:
        for view in {*lag, *quarantined}:
            svc.metrics.quarantined.labels(view=view).set(quarantined.get(view, 0))
    svc.metrics.projection_lag_seconds.set(waited)
    # Alerts by rule and status: codes and counts, never who or whom. While the database
    # does not answer, the counts are not known: left as they were, not zeroed.
    with contextlib.suppress(StoreUnavailable):
        svc.metrics.set_counts(svc.metrics.alerts,
                               await asyncio.to_thread(alert_counts, svc.store))
    if svc.checkpointer is not None:
        signing = svc.checkpointer.stats
        svc.metrics.checkpoints_signed.set(signing.signed)
        svc.metrics.checkpoint_refusals.set(signing.refused)
        for ledger, size in list(signing.sizes.items()):
            svc.metrics.checkpoint_size.labels(ledger=ledger).set(size)
    with contextlib.suppress(StoreUnavailable):
        svc.metrics.set_counts(svc.metrics.dead_letters, await asyncio.to_thread(
            DeadLetters(svc.store, None).open_counts))
    with contextlib.suppress(StoreUnavailable):
        svc.metrics.syslog_inbox.set(await asyncio.to_thread(Inbox(svc.store, None).depth))
    syslog = getattr(request.app.state, "syslog", None)
    if syslog is not None:
        svc.metrics.syslog_refused_senders.set(syslog.intake.stats.refused_senders)
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")
