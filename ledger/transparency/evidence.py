"""Investigation evidence: one JSON file that proves every entry it lists is in the log,
unaltered, checkable offline with the log's verifier key and nothing else.

    {"format": "phi-ledger/investigation-evidence@v1", "ledger": ..., "investigation_id":
     ..., "scope": {...}, "checkpoint": "<signed note>", "tree_size": N,
     "entries": [<entry as stored and exported, PHI sealed>, ...],
     "proofs": {"<seq>": ["<hex sibling hash>", ...], ...}}

:func:`verify_evidence` opens the checkpoint with the key, then for each entry recomputes
its hash from its own content (so the file proves *these* entries, not claimed hashes)
and checks its inclusion proof against the checkpoint's size and root.

What it cannot prove: that no entry in scope was left out. The file lists what the
service found in scope; a service that hid an entry would produce a file that still
verifies. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.canonical import NotCanonicalizable, canonical
from ledger.chain import ChainBroken, ChainCheck, Head
from ledger.transparency.checkpoint import Checkpoint, open_checkpoint
from ledger.transparency.errors import TransparencyError
from ledger.transparency.note import verifier_from_key
from ledger.transparency.proof import verify_inclusion

FORMAT = "phi-ledger/investigation-evidence@v1"


class EvidenceError(TransparencyError):
    """An evidence file is malformed or does not verify."""


@dataclass(frozen=True, slots=True)
class EvidenceChecked:
    checkpoint: Checkpoint
    entries: int
    seqs: tuple[int, ...]


def encode_evidence(ledger: str, investigation_id: str, scope: Mapping[str, Any],
                    checkpoint_note: str, tree_size: int,
                    entries: Sequence[Mapping[str, Any]],
                    proofs: Mapping[int, Sequence[bytes]]) -> bytes:
    """The evidence file (canonical JSON) of ``entries`` (exported form, seq order)."""
    return canonical({
        "format": FORMAT, "ledger": ledger, "investigation_id": investigation_id,
        "scope": dict(scope), "checkpoint": checkpoint_note, "tree_size": tree_size,
        "entries": list(entries),
        "proofs": {str(seq): [h.hex() for h in path] for seq, path in proofs.items()},
    })


def is_evidence(document: str) -> bool:
    return document.lstrip().startswith("{") and f'"format":"{FORMAT}"' in document[:100_000]


def _leaf(entry: Mapping[str, Any]) -> tuple[int, bytes]:
    try:
        seq, prev = entry["seq"], entry["prev_hash"]
        data = canonical(entry)
        check = ChainCheck(entry["ledger"], Head(seq - 1, str(prev), None))
        check.feed(seq, data)
    except (KeyError, TypeError, ValueError, NotCanonicalizable):
        raise EvidenceError("an entry is not a ledger entry as exported") from None
    except ChainBroken as broken:
        raise EvidenceError(f"entry seq {entry.get('seq')} does not check out:"
                            f" {broken.reason}") from None
    return seq, bytes.fromhex(check.head.hash)


def verify_evidence(document: str | bytes, log_key: str, *, witness_keys: Sequence[str] = (),
                    quorum: int = 0, origin: str | None = None) -> EvidenceChecked:
    """Check every entry of an evidence file against its signed checkpoint (whose origin
    must be ``origin``, by default the log key's name)."""
    try:
        doc = json.loads(document)
        note, entries, proofs = doc["checkpoint"], doc["entries"], doc["proofs"]
        if doc["format"] != FORMAT or not isinstance(entries, list):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise EvidenceError("the document is not an investigation evidence file") from None
    checkpoint = open_checkpoint(note, verifier_from_key(log_key), origin=origin,
                                 witnesses=[verifier_from_key(k) for k in witness_keys],
                                 quorum=quorum)
    seqs = []
    for entry in entries:
        seq, leaf = _leaf(entry)
        if entry.get("ledger") != doc.get("ledger"):
            raise EvidenceError(f"entry seq {seq} is of another ledger")
        if seq > checkpoint.size:
            raise EvidenceError(f"entry seq {seq} is beyond the checkpoint's size")
        try:
            path = [bytes.fromhex(h) for h in proofs[str(seq)]]
        except (KeyError, TypeError, ValueError):
            raise EvidenceError(f"entry seq {seq} has no inclusion proof") from None
        verify_inclusion(seq - 1, checkpoint.size, leaf, path, checkpoint.root)
        seqs.append(seq)
    return EvidenceChecked(checkpoint, len(seqs), tuple(seqs))
