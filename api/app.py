"""The FastAPI application: routers by audience over one service container.

``create_app`` takes its collaborators (settings, clock, protection) so tests build the
same application the CLI serves.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from api import console
from api.auth.access import build_access
from api.auth.middleware import AccessControl, SecurityHeaders
from api.auth.openapi import document_access
from api.error_docs import document_errors
from api.errors import install_error_handlers
from api.event_schema import event_schemas
from api.fastpath import IngestFastPath
from api.formats import fhir_validation
from api.metrics import Metrics
from api.middleware import RequestContext, body_limits
from api.monitoring import Watch, Webhook
from api.routers import (
    admin,
    alerts,
    audit,
    auth,
    fhir,
    health,
    ingest,
    investigations,
    ledger,
    reference,
    transparency,
)
from api.services import Services
from api.syslog.service import start_listeners
from ledger.checkpointer import Checkpointer
from ledger.clock import Clock, utc_now
from ledger.event import MAX_BATCH_EVENTS, MAX_EVENT_BYTES
from ledger.ingest import Ingest, Protection
from ledger.logs import configure_logging
from ledger.migrate import migrate
from ledger.protection import protection_from_settings
from ledger.runtime import allow_open_files, tune_gc
from ledger.settings import Settings
from ledger.store import StoreUnavailable, open_store
from ledger.tlog import TransparencyLog, load_log_identity
from ledger.writer import GroupCommitWriter
from projections.queries import AuditQueries
from projections.runner import Projector

log = structlog.get_logger(__name__)

# A posted event may be up to MAX_EVENT_BYTES canonical; JSON whitespace gets slack.
BODY_LIMITS = {
    "/v1/events": 2 * MAX_EVENT_BYTES,
    "/v1/events/batch": 32 * 1024 * 1024,
    "/v1/auth/login": 4 * 1024,
    "/v1/admin/keys": 4 * 1024,
    # FHIR JSON is wordier than ours: an AuditEvent gets four times an event's slack.
    "/fhir/AuditEvent": 8 * MAX_EVENT_BYTES,
    "/fhir": 64 * 1024 * 1024,
}


# Every statement the service runs ends within this (PostgreSQL): a request to a database
# that has stopped answering is a 503 within seconds, never a hang.
STATEMENT_TIMEOUT_SECONDS = 4.0


def build_services(
    settings: Settings, *, protection: Protection | None = None, clock: Clock = utc_now
) -> Services:
    """Migrate, open the store, start the writer: everything a running service holds."""
    migrate(settings.database_url)
    store = open_store(settings.database_url, maintain_tree=not settings.unsafe_no_tree,
                       statement_timeout=STATEMENT_TIMEOUT_SECONDS)
    try:
        if protection is None:
            protection = protection_from_settings(settings, store)
        tlog = TransparencyLog(store, load_log_identity(settings), clock)
    except BaseException:
        store.close()
        raise
    writer = GroupCommitWriter(
        store, clock, seal=protection.protect_many, settler=protection.settler,
        max_group_events=settings.max_group_events,
    ).start()
    return Services(
        settings, store, writer, Ingest(writer, protection), Metrics(), clock, protection,
        Projector(store, protection=protection), AuditQueries(store),
        access=build_access(settings, store, protection, clock),
        tlog=tlog,
        checkpointer=Checkpointer(tlog, interval=settings.checkpoint_interval_ms / 1000,
                                  every=settings.checkpoint_entries),
    )


def _openapi_with_event_schema(app: FastAPI) -> Any:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event_schemas())
        app.openapi_schema = schema
        return schema

    return openapi


def create_app(
    settings: Settings | None = None,
    *,
    protection: Protection | None = None,
    clock: Clock = utc_now,
    configure_logs: bool = True,
) -> ASGIApp:
    """The service as an ASGI application: the FastAPI app, with the request edge
    (request ids, access log, body caps) and the ingest fast path in front of it."""
    settings = settings or Settings.from_env()
    if configure_logs:
        configure_logging(settings.log_format, settings.log_level)
    app = _fastapi_app(_lifespan(settings, protection, clock))
    return _request_edge(app, settings)


@dataclass
class _Background:
    """The threads a running service keeps beside the event loop (each optional)."""

    stop: threading.Event
    follower: threading.Thread | None = None
    watcher: threading.Thread | None = None
    signer: threading.Thread | None = None


def _lifespan(
    settings: Settings, protection: Protection | None, clock: Clock
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = build_services(settings, protection=protection, clock=clock)
        app.state.services = svc
        background = _start_background(svc, settings, clock)
        # ATNA syslog listeners on this event loop, when configured (api.syslog).
        syslog = await start_listeners(svc)
        app.state.syslog = syslog  # /metrics counts its refusals
        # The FHIR validators' plan (every element model imported, a validator per
        # primitive field) made now, not in a first request, and so frozen below.
        fhir_validation.SHAPES.root()
        # What start-up made (routes, models, schemas, the key ring, the stores) lives as
        # long as the service: frozen, the cyclic collector stops scanning it at every
        # full collection, which a Bundle's thousands of parsed objects bring about.
        gc.freeze()
        log.info("service.started", dialect=svc.store.dialect,
                 projections=background.follower is not None,
                 checkpoints=background.signer is not None)
        try:
            yield
        finally:
            gc.unfreeze()  # what the service held becomes collectable again
            if syslog is not None:
                await syslog.close()
            _stop_background(svc, background)
            log.info("service.stopped")

    return lifespan


def _start_background(svc: Services, settings: Settings, clock: Clock) -> _Background:
    background = _Background(threading.Event())
    stop = background.stop
    if settings.project_inline:
        background.follower = threading.Thread(
            target=svc.projector.follow, args=(stop,), name="projector", daemon=True
        )
        background.follower.start()
        watch = Watch(svc.store, svc.protection, clock,
                      Webhook(settings.alert_webhook) if settings.alert_webhook else None)
        background.watcher = threading.Thread(target=watch.run, args=(stop,),
                                              name="monitoring", daemon=True)
        background.watcher.start()
    if settings.checkpoints_inline and not settings.unsafe_no_tree and svc.checkpointer:
        background.signer = threading.Thread(
            target=svc.checkpointer.run, args=(stop,), name="checkpointer", daemon=True
        )
        background.signer.start()
    return background


def _stop_background(svc: Services, background: _Background) -> None:
    background.stop.set()
    if background.follower is not None:
        background.follower.join(timeout=10)
    if background.watcher is not None:
        background.watcher.join(timeout=10)
    svc.writer.stop()
    if background.signer is not None and svc.checkpointer is not None:
        background.signer.join(timeout=10)
        try:  # what the writer committed last gets its checkpoint too
            svc.checkpointer.sign_all()
        except StoreUnavailable:
            log.warning("checkpoint.final_failed")
    svc.store.close()


def _fastapi_app(lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]]) -> FastAPI:
    app = FastAPI(
        title="phi-ledger",
        version="0.1.0",
        summary="A hash-chained ledger of every access to protected health information.",
        lifespan=lifespan,
        # /docs and /redoc are served by api.routers.reference from the installed
        # swagger-ui-bundle (FastAPI's own pages load their scripts from a CDN).
        docs_url=None,
        redoc_url=None,
        # FastAPI's built-in OpenTelemetry would put request paths (which can hold patient
        # identifiers) into spans, and costs a tenth of a small request: off.
        telemetry={"tracing": False, "metrics": False, "logs": False,
                   "operation_spans": False, "auto_configure": False},
    )
    install_error_handlers(app)
    for router in (
        ingest.router,
        ledger.router,
        transparency.router,
        audit.router,
        auth.router,
        admin.router,
        health.router,
        alerts.router,
        investigations.router,
        fhir.router,
        reference.router,
    ):
        app.include_router(router)
    console.install(app)
    # Replacing app.openapi is FastAPI's documented way to extend the generated schema;
    # the ignores: mypy sees a method being replaced.
    app.openapi = _openapi_with_event_schema(app)  # type: ignore[method-assign]
    app.openapi = document_access(app)  # type: ignore[method-assign]
    app.openapi = document_errors(app)  # type: ignore[method-assign]
    return app


def _request_edge(app: FastAPI, settings: Settings) -> ASGIApp:
    def observe(method: str, route: str, status: int, seconds: float) -> None:
        svc = getattr(app.state, "services", None)
        if svc is not None:  # None only before start-up
            svc.metrics.observe(method, route, status, seconds)

    # Outside the framework's own middleware: ingest requests pay for nothing else.
    # Access control sits in front of the fast path, so no route escapes it (api.auth).
    inner: ASGIApp = AccessControl(IngestFastPath(app, owner=app), owner=app)
    if settings.cors_origins:  # no CORS unless configured; preflights answered before auth
        inner = CORSMiddleware(
            inner, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    return SecurityHeaders(RequestContext(
        inner, body_limit=body_limits(BODY_LIMITS), observe=observe
    ))


# The writer's threads wait on the database a dozen times per transaction and need the
# GIL back after each wait; with the default 5 ms switch interval a busy event loop makes
# every one of those hand-offs cost up to 5 ms, and a commit of 5 ms tens of ms.
GIL_SWITCH_INTERVAL = 0.0005


def app_from_env() -> ASGIApp:
    """The uvicorn factory: settings from the environment."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    allow_open_files()
    app = create_app(Settings.from_env())
    tune_gc()
    return app


__all__ = ["MAX_BATCH_EVENTS", "app_from_env", "build_services", "create_app", "tune_gc"]
