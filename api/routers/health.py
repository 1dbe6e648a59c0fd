"""Liveness, readiness and metrics, for orchestrators and Prometheus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from api.routers.common import json_response
from api.services import Services, services
from ledger.store import StoreUnavailable

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="The database answers and the writer runs")
async def readyz(svc: Services = Depends(services)) -> Response:
    checks: dict[str, str] = {}
    try:
        await asyncio.to_thread(svc.store.ping)
        checks["database"] = "ok"
    except StoreUnavailable:
        checks["database"] = "unavailable"
    checks["writer"] = "ok" if svc.writer.running else "stopped"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(svc: Services = Depends(services)) -> Response:
    stats = svc.writer.stats
    svc.metrics.appended.set(stats.events)
    svc.metrics.transactions.set(stats.transactions)
    svc.metrics.failures.set(stats.failures)
    svc.metrics.seal_seconds.set(stats.seal_seconds)
    svc.metrics.commit_seconds.set(stats.commit_seconds)
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")
