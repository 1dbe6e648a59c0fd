"""Verifiability over HTTP: signed checkpoints, the log's keys, Merkle proofs, bundles.

Nothing here carries PHI: tree sizes, hashes, signatures and keys. Every answer is about
the caller's own ledger. Hashes in JSON are lower-case hex (as entry hashes are); notes
and bundles are the C2SP text formats, served as ``text/plain; charset=utf-8``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from api.error_docs import errors
from api.errors import ApiError
from api.routers.common import DB_INT_MAX, chosen_ledger, json_response
from api.services import Services, services
from ledger.store.base import TreeIncomplete
from ledger.tlog import NotCheckpointed, ProofRequestError, TransparencyLog

router = APIRouter(tags=["verify"])

TEXT = "text/plain; charset=utf-8"
NO_STORE = {"Cache-Control": "no-store"}
TEXT_200: dict[int | str, dict[str, Any]] = {
    200: {"description": "A C2SP text document.",
          "content": {TEXT: {"schema": {"type": "string"}}}}}
T = TypeVar("T")


def _tlog(svc: Services) -> TransparencyLog:
    if svc.tlog is None:
        raise ApiError(503, "unavailable", "the transparency log is not running")
    return svc.tlog


async def _call(work: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(work, *args)
    except ProofRequestError as error:
        raise ApiError(400, "invalid_request", str(error), [error.field]) from None
    except NotCheckpointed as error:
        if not error.pending:
            raise ApiError(404, "not_checkpointed", str(error), [error.field]) from None
        raise ApiError(404, "not_checkpointed",
                       f"{error}; a checkpoint is signed within about a second of an append",
                       [error.field], headers={"Retry-After": "1"}) from None
    except TreeIncomplete:
        raise ApiError(500, "tree_incomplete",
                       "the stored Merkle tree is incomplete; run `phi-ledger verify`") from None


def _note(text: str) -> Response:
    return Response(text, media_type=TEXT)


@router.get(
    "/v1/checkpoints/latest", summary="The newest signed checkpoint",
    description="A C2SP checkpoint (origin `<log name>/<ledger>`, tree size, base64 root) in a "
    "C2SP signed note, as `text/plain`. 404 `no_checkpoint` until the ledger's first "
    "checkpoint is signed (within about a second of its first entry).",
    response_class=Response, responses={**TEXT_200, **errors(404, 500, 503)},
)
async def latest(ledger: str = Depends(chosen_ledger),
                 svc: Services = Depends(services)) -> Response:
    checkpoint = await _call(_tlog(svc).latest, ledger)
    if checkpoint is None:
        raise ApiError(404, "no_checkpoint", "no checkpoint has been signed for this ledger yet",
                       headers={"Retry-After": "1", **NO_STORE})
    response = _note(checkpoint.note)
    response.headers.update(NO_STORE)
    return response


@router.get(
    "/v1/checkpoints/key", summary="The log's checkpoint key",
    description="The active key as a C2SP verifier key, "
    "`<origin>+<key id hex>+base64(0x01 || Ed25519 public key)`, one line of `text/plain`.",
    response_class=Response, responses={**TEXT_200, **errors(503)},
)
async def key(ledger: str = Depends(chosen_ledger),
              svc: Services = Depends(services)) -> Response:
    identity = _tlog(svc).identity
    if identity is None:
        raise ApiError(503, "unavailable", "no log key is loaded")
    return _note(identity.verifier_key(ledger) + "\n")


@router.get(
    "/v1/checkpoints/keys", summary="Every checkpoint key the log has used",
    description="`{\"keys\": [{key, id, active, signing, created_at}]}`, newest first. After "
    "a key rotation new checkpoints are signed by the active key and co-signed by older "
    "keys until they are retired; retired keys stay listed so old checkpoints still verify.",
    responses=errors(503),
)
async def keys(ledger: str = Depends(chosen_ledger),
               svc: Services = Depends(services)) -> Response:
    identity = _tlog(svc).identity
    if identity is None:
        raise ApiError(503, "unavailable", "no log key is loaded")
    return json_response({"ledger": ledger, "keys": identity.published(ledger)})


@router.get(
    "/v1/checkpoints/{size}", summary="The signed checkpoint of one tree size",
    description="The checkpoint signed at exactly `size` entries; 404 `no_checkpoint` if none "
    "was signed at that size (checkpoints are signed at the sizes the tree had when it was "
    "time to sign, not at every size).",
    response_class=Response, responses={**TEXT_200, **errors(400, 404, 500, 503)},
)
async def at_size(size: int = Path(ge=1, le=DB_INT_MAX,
                                   description="The tree size (entries covered)."),
                  ledger: str = Depends(chosen_ledger),
                  svc: Services = Depends(services)) -> Response:
    checkpoint = await _call(_tlog(svc).at_size, ledger, size)
    if checkpoint is None:
        raise ApiError(404, "no_checkpoint", f"no checkpoint was signed at size {size}",
                       ["size"])
    return _note(checkpoint.note)


@router.get(
    "/v1/proofs/inclusion", summary="RFC 9162 inclusion proof of one entry",
    description="`{ledger, seq, leaf_index, tree_size, leaf_hash, root, proof}`: entry `seq` "
    "is leaf `seq - 1`; `leaf_hash` is the entry's hash; `proof` lists the RFC 9162 audit "
    "path (hex, leaf side first); `root` is the tree's root at `tree_size` (default: the "
    "head). Check `root` against a signed checkpoint of that size, never on trust.",
    responses=errors(400, 404, 500, 503),
)
async def inclusion(
    seq: int = Query(ge=0, le=DB_INT_MAX, description="The entry (leaf index + 1)."),
    tree_size: int | None = Query(None, ge=0, le=DB_INT_MAX,
                                  description="Tree size; default: the head's seq."),
    ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    proof = await _call(_tlog(svc).inclusion, ledger, seq, tree_size)
    return json_response(proof.as_dict())


@router.get(
    "/v1/proofs/consistency", summary="RFC 9162 consistency proof between two tree sizes",
    description="`{ledger, first, second, first_root, second_root, proof}` (hex). `second` "
    "defaults to the head; `first == second` gives an empty proof. A witness checks it "
    "against the roots of the two signed checkpoints it holds.",
    responses=errors(400, 404, 500, 503),
)
async def consistency(
    first: int = Query(ge=0, le=DB_INT_MAX, description="The older tree size (at least 1)."),
    second: int | None = Query(None, ge=0, le=DB_INT_MAX,
                               description="The newer tree size; default: the head."),
    ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    proof = await _call(_tlog(svc).consistency, ledger, first, second)
    return json_response(proof.as_dict())


@router.get(
    "/v1/proofs/bundle", summary="An offline proof bundle for one entry",
    description="The c2sp.org/tlog-proof text for entry `seq`: its leaf index, its inclusion "
    "proof (base64) and the newest signed checkpoint (or that of `size`). With the log's "
    "verifier key and the entry (or its hash) it verifies offline: "
    "`phi-ledger verify-proof bundle.txt --entry entry.json --key KEY`. 404 "
    "`not_checkpointed` (with Retry-After) while no checkpoint covers the entry yet, and "
    "(without) when no checkpoint was signed at `size`; 400 naming `size` when it is below "
    "1 or beyond the head, naming `seq` when it is below 1 or beyond `size`.",
    response_class=Response, responses={**TEXT_200, **errors(400, 404, 500, 503)},
)
async def bundle(
    seq: int = Query(ge=0, le=DB_INT_MAX, description="The entry, as in its receipt."),
    size: int | None = Query(None, ge=0, le=DB_INT_MAX,
                             description="A signed checkpoint's size; default: newest."),
    ledger: str = Depends(chosen_ledger),
    svc: Services = Depends(services),
) -> Response:
    return _note(await _call(_tlog(svc).bundle, ledger, seq, size))
