"""The service container: everything a request handler may use, built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from api.auth.access import Access
from api.metrics import Metrics
from ledger.checkpointer import Checkpointer
from ledger.clock import Clock
from ledger.ingest import Ingest, Protection
from ledger.settings import Settings
from ledger.store import LedgerStore
from ledger.tlog import TransparencyLog
from ledger.writer import GroupCommitWriter
from projections.queries import AuditQueries
from projections.runner import Projector


@dataclass
class Services:
    settings: Settings
    store: LedgerStore
    writer: GroupCommitWriter
    ingest: Ingest
    metrics: Metrics
    clock: Clock
    protection: Protection
    projector: Projector
    queries: AuditQueries
    access: Access  # authentication and rate limits (api.auth)
    # Proofs and checkpoints (ledger.tlog); the loop that signs them (ledger.checkpointer).
    tlog: TransparencyLog | None = None
    checkpointer: Checkpointer | None = None


async def services(request: Request) -> Services:
    """FastAPI dependency: the running application's services (async, so FastAPI does
    not hand it to a worker thread)."""
    return request.app.state.services
