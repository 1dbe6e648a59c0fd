"""Reading the ledger back exactly as hashed, and verifying it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.error_docs import errors
from api.routers.common import DB_INT_MAX, chosen_ledger, json_response
from api.services import Services, services
from api.verifications import verify_and_record

router = APIRouter(prefix="/v1/ledger", tags=["verify"])

MAX_PAGE = 10_000


@router.get("", summary="The head of the ledger", responses=errors())
async def head(
    ledger: str = Depends(chosen_ledger), svc: Services = Depends(services)
) -> Response:
    top = await asyncio.to_thread(svc.store.head, ledger)
    return json_response(
        {"ledger": ledger, "seq": top.seq, "hash": top.hash, "recorded_at": top.recorded_at}
    )


@router.get(
    "/entries", summary="Entries exactly as hashed", responses=errors(),
    description="Entries with seq > `after`, in seq order, each byte for byte as stored and "
    "hashed. Page on with `after=next_after` while `next_after` is not null.",
)
async def entries(
    after: int = Query(0, ge=0, le=DB_INT_MAX,
                       description="Return entries with seq greater than this."),
    limit: int = Query(1000, ge=1, le=MAX_PAGE),
    ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    rows = await asyncio.to_thread(svc.store.read, ledger, after, limit)
    next_after = after + len(rows) if len(rows) == limit else None
    # The stored bytes are spliced in untouched, so clients hash exactly what we hashed.
    body = b"".join([
        b'{"ledger":"', ledger.encode(), b'","entries":[', b",".join(rows),
        b'],"next_after":', b"null" if next_after is None else str(next_after).encode(), b"}",
    ])
    return Response(body, media_type="application/json")


@router.post(
    "/verify", summary="Recompute the whole chain", responses=errors(500),
    description="`{ok, verified_through, first_bad_seq, reason}`: ok only when every entry "
    "from seq 1 to the head is canonical, correctly hashed and linked. The verdict is "
    "kept (when, by whom) and shown on the console's ledger page.",
)
async def verify(
    request: Request, ledger: str = Depends(chosen_ledger), svc: Services = Depends(services)
) -> Response:
    who = getattr(request.state, "caller", None)
    verdict = await asyncio.to_thread(
        verify_and_record, svc, ledger, who.id if who is not None else "anonymous"
    )
    return json_response(verdict.as_dict())
