"""Liveness, readiness and metrics, for orchestrators and Prometheus."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from api.error_docs import errors
from api.routers.common import json_response
from api.services import Services, services
from api.syslog.dead_letters import DeadLetters
from ledger.store import StoreUnavailable
from projections.alert_queries import alert_counts

router = APIRouter(tags=["operations"])

# /readyz answers within this even when the database does not (the probe's own bound).
READY_WITHIN_SECONDS = 1.5

READINESS = {"type": "object", "required": ["ready", "checks"],
             "properties": {"ready": {"type": "boolean"},
                            "checks": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                            "projections": {"type": "object"}}}
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


@router.get("/readyz", summary="The database answers and the writer runs",
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
        # Reported, not judged: views behind the ledger do not stop ingest.
        try:
            lag, waited = await asyncio.wait_for(
                asyncio.to_thread(svc.projector.behind, svc.clock()),
                max(0.1, deadline - asyncio.get_running_loop().time()))
        except (StoreUnavailable, TimeoutError):
            checks["database"] = "unavailable"
            return json_response({"ready": False, "checks": checks}, 503)
        body["projections"] = {"lag_entries": lag, "lag_seconds": round(waited, 3),
                               "inline": svc.settings.project_inline}
    return json_response(body, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses=METRICS_RESPONSES)
async def metrics(svc: Services = Depends(services)) -> Response:
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
    svc.metrics.projection_lag_seconds.set(waited)
    try:  # alerts by rule and status: codes and counts, never who or whom
        counts = await asyncio.to_thread(alert_counts, svc.store)
    except StoreUnavailable:
        counts = {}
    for (rule, status), count in counts.items():
        svc.metrics.alerts.labels(rule=rule, status=status).set(count)
    if svc.checkpointer is not None:
        signing = svc.checkpointer.stats
        svc.metrics.checkpoints_signed.set(signing.signed)
        svc.metrics.checkpoint_refusals.set(signing.refused)
        for ledger, size in list(signing.sizes.items()):
            svc.metrics.checkpoint_size.labels(ledger=ledger).set(size)
    try:
        letters = await asyncio.to_thread(DeadLetters(svc.store, None).open_counts)
    except StoreUnavailable:
        letters = {}
    for (ledger, fmt), count in letters.items():
        svc.metrics.dead_letters.labels(ledger=ledger, format=fmt).set(count)
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")
