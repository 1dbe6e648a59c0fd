"""Offline verification: a bundle, a proof or a checkpoint, with nothing but the log's key.

No database, no server, no network: what ``phi-ledger verify-proof`` runs, and what an
auditor can run on files they were handed. Documents are told apart by their first line:

- a proof bundle (``c2sp.org/tlog-proof@v1``): checked against the entry's leaf hash;
- a signed checkpoint (a C2SP signed note): its signatures and origin;
- a JSON inclusion proof (``GET /v1/proofs/inclusion``): against a signed checkpoint of
  its tree size and the entry's leaf hash;
- an investigation's evidence file (``GET /v1/investigations/{id}/evidence``): every
  entry in it against the signed checkpoint it carries;
- a JSON consistency proof (``GET /v1/proofs/consistency``): against the signed
  checkpoints of both its sizes.

An exported entry is checked as the chain checks it (``ledger.chain.ChainCheck``): its
members are ``ledger``, ``seq``, ``recorded_at``, ``prev_hash``, ``event``, ``hash`` and,
in entries appended since the service began writing it, ``submitted_by`` (``{"identity",
"credential"}`` of the caller that submitted it, or ``{"identity": "phi-ledger",
"credential": null}`` for the service's own records) and, in entries made from a
standard-format message, ``received`` (``{"format", "sha256"[, "entry"]}``). Both are
covered by the hash like every other member; entries without them stay valid.

Nothing a proof says about sizes or roots is taken on trust: sizes and roots come from
signed checkpoints, leaf hashes from the caller (an entry, or a receipt's ``hash``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.canonical import NotCanonicalizable, canonical, parse
from ledger.chain import ChainBroken, ChainCheck, Head
from ledger.transparency.bundle import HEADER as BUNDLE_HEADER
from ledger.transparency.bundle import Bundle, verify_bundle
from ledger.transparency.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.transparency.errors import TransparencyError
from ledger.transparency.evidence import is_evidence, verify_evidence
from ledger.transparency.note import verifier_from_key
from ledger.transparency.proof import verify_consistency, verify_inclusion
from ledger.transparency.tree import HASH_SIZE


class OfflineError(TransparencyError):
    """The document is not one this verifier knows, or something it needs is missing."""


@dataclass(frozen=True)
class Verified:
    """What a document was shown to prove."""

    kind: str  # "bundle", "checkpoint", "inclusion", "consistency", "evidence"
    checkpoint: Checkpoint  # the (newest) signed checkpoint it rests on
    summary: str
    leaf_index: int | None = None  # the position a bundle or inclusion proof is about


def entry_leaf_hash(entry_json: bytes | str) -> tuple[int, bytes]:
    """``(seq, leaf hash)`` of one exported entry, after checking that its ``hash`` is the
    hash of its own content (so a bundle proves *this* entry, not a claimed hash)."""
    try:
        obj = parse(entry_json.encode() if isinstance(entry_json, str) else bytes(entry_json))
        ledger, seq, prev = obj["ledger"], obj["seq"], obj["prev_hash"]
        # Exported entries are canonical already; a pretty-printed copy is re-encoded.
        data = canonical(obj)
    except (ValueError, KeyError, TypeError, NotCanonicalizable):
        raise OfflineError("the entry is not a ledger entry as exported (JSON)") from None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise OfflineError("the entry's seq is not a positive integer")
    check = ChainCheck(ledger, Head(seq - 1, str(prev), None))
    try:
        check.feed(seq, data)
    except ChainBroken as broken:
        raise OfflineError(f"the entry does not check out: {broken.reason}") from None
    return seq, bytes.fromhex(check.head.hash)


def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise OfflineError(f"{what} is not a list of hex hashes")
    try:
        hashes = [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise OfflineError(f"{what} is not a list of hex hashes") from None
    if any(len(h) != HASH_SIZE for h in hashes):
        raise OfflineError(f"{what} holds a hash that is not 32 bytes")
    return hashes


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise OfflineError(f"the proof's {name} is not a non-negative integer")
    return value


def _b64(root: bytes) -> str:
    import base64

    return base64.b64encode(root).decode()


def verify_document(
    document: str | bytes,
    log_key: str,
    *,
    leaf_hash: bytes | None = None,
    checkpoints: Sequence[str | bytes] = (),
    witness_keys: Sequence[str] = (),
    quorum: int = 0,
    origin: str | None = None,
) -> Verified:
    """Verify ``document`` with the log's verifier key ``log_key`` and nothing else.

    ``leaf_hash`` is needed for bundles and inclusion proofs; ``checkpoints`` (signed
    notes) for JSON proofs: one of the proof's tree size, or the two of a consistency
    proof's sizes. ``witness_keys`` and ``quorum`` require witness cosignatures on every
    checkpoint used. ``origin`` is the origin line every checkpoint must carry; by default
    the log key's name (C2SP says the two SHOULD match, and this service's do), but a log
    may differ: sum.golang.org signs ``go.sum database tree``. Raises a
    :class:`TransparencyError` saying what failed.
    """
    text = document.decode("utf-8") if isinstance(document, bytes | bytearray) else document
    log = verifier_from_key(log_key)
    witnesses = [verifier_from_key(k) for k in witness_keys]

    def opened(note: str | bytes) -> Checkpoint:
        return open_checkpoint(note, log, origin=origin, witnesses=witnesses, quorum=quorum)

    if text.startswith(BUNDLE_HEADER + "\n"):
        if leaf_hash is None:
            raise OfflineError("a proof bundle is checked against an entry or its leaf hash")
        checkpoint = verify_bundle(text, leaf_hash, log_key, origin=origin,
                                   witness_keys=witness_keys, quorum=quorum)
        index = Bundle.parse(text).index
        return Verified("bundle", checkpoint,
                        f"entry seq {index + 1} (leaf {index}, hash {leaf_hash.hex()}) is in"
                        f" {checkpoint.origin} at tree size {checkpoint.size}", index)
    if is_evidence(text):
        checked = verify_evidence(text, log_key, witness_keys=witness_keys, quorum=quorum,
                                  origin=origin)
        return Verified("evidence", checked.checkpoint,
                        f"{checked.entries} entries of an investigation's evidence are in"
                        f" {checked.checkpoint.origin} at tree size {checked.checkpoint.size},"
                        " unaltered")
    if text.lstrip().startswith("{"):
        try:
            proof = json.loads(text)
        except ValueError:
            raise OfflineError("the document is not valid JSON") from None
        if not isinstance(proof, dict):
            raise OfflineError("the JSON document is not a proof object")
        signed = [opened(c) for c in checkpoints]
        if "leaf_index" in proof:
            return _inclusion(proof, signed, leaf_hash)
        if "first" in proof and "second" in proof:
            return _consistency(proof, signed)
        raise OfflineError("the JSON document is neither an inclusion nor a consistency proof")
    checkpoint = opened(text)
    return Verified("checkpoint", checkpoint,
                    f"checkpoint of {checkpoint.origin}: {checkpoint.size} entries, root"
                    f" {_b64(checkpoint.root)}")


def _inclusion(proof: dict[str, Any], signed: list[Checkpoint],
               leaf_hash: bytes | None) -> Verified:
    if leaf_hash is None:
        raise OfflineError("an inclusion proof is checked against an entry or its leaf hash")
    index, size = _int(proof, "leaf_index"), _int(proof, "tree_size")
    matching = [c for c in signed if c.size == size]
    if not matching:
        raise OfflineError(f"an inclusion proof for tree size {size} needs the signed"
                           f" checkpoint of that size (--checkpoint)")
    checkpoint = matching[0]
    verify_inclusion(index, size, leaf_hash, _hashes(proof.get("proof"), "proof"),
                     checkpoint.root)
    return Verified("inclusion", checkpoint,
                    f"entry seq {index + 1} (hash {leaf_hash.hex()}) is in"
                    f" {checkpoint.origin} at tree size {size}", index)


def _consistency(proof: dict[str, Any], signed: list[Checkpoint]) -> Verified:
    first, second = _int(proof, "first"), _int(proof, "second")
    by_size = {c.size: c for c in signed}
    if first not in by_size or second not in by_size:
        raise OfflineError(f"a consistency proof from {first} to {second} needs the signed"
                           " checkpoints of both sizes (--checkpoint twice)")
    old, new = by_size[first], by_size[second]
    if old.origin != new.origin:
        raise CheckpointError("the two checkpoints are of different logs")
    verify_consistency(first, second, old.root, new.root, _hashes(proof.get("proof"), "proof"))
    return Verified("consistency", new,
                    f"{new.origin} at {second} entries extends its tree of {first} entries")
