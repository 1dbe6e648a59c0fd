"""Offline proof bundles in the c2sp.org/tlog-proof layout: one file proves one entry.

    c2sp.org/tlog-proof@v1
    extra <base64>               (optional, at most one line)
    index <leaf index>
    <base64 proof hash>          (zero or more, leaf's sibling first, up to the root's child)
    <blank line>
    <the signed checkpoint note, verbatim, cosignatures and all>

With the log's verifier key and the entry's hash, :func:`verify_bundle` needs nothing
else: it checks the checkpoint's signature and origin, then the inclusion proof against
the checkpoint's size and root. The ``extra`` data is not authenticated and is never used
in verification.

Readings of the spec (https://c2sp.org/tlog-proof) where it is not explicit: the extra
line is the second line or absent (the spec allows one); extra data is never empty (an
empty ``extra`` line is refused; without data the line is omitted); an index is an
unsigned 64-bit decimal; at most 64 proof lines (a deeper path cannot exist in a tree of
fewer than 2^64 leaves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.transparency._codec import b64decode, b64encode, parse_decimal
from ledger.transparency.checkpoint import Checkpoint, open_checkpoint
from ledger.transparency.errors import TransparencyError
from ledger.transparency.note import Note, NoteError, verifier_from_key
from ledger.transparency.proof import verify_inclusion
from ledger.transparency.tree import HASH_SIZE

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64


class BundleError(TransparencyError):
    """A proof bundle is malformed."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """An inclusion proof of leaf ``index`` together with the signed checkpoint it is for.

    Construction validates the layout (not the signature or the proof: :func:`verify_bundle`).
    """

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < 1 << 64:
            raise BundleError("the index is not an unsigned 64-bit integer")
        if len(self.proof) > MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in self.proof):
            raise BundleError(f"the proof is not at most {MAX_PROOF_HASHES} 32-byte hashes")
        if self.extra is not None and not self.extra:
            raise BundleError("extra data is either absent or not empty")
        try:
            Note.parse(self.checkpoint)
        except NoteError as error:
            raise BundleError(f"the checkpoint is not a signed note: {error}") from None

    def encode(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64encode(h) for h in self.proof)
        lines.append("")
        return "".join(line + "\n" for line in lines) + self.checkpoint

    @classmethod
    def parse(cls, text: str | bytes) -> Bundle:
        if isinstance(text, bytes | bytearray):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                raise BundleError("proof bundle is not valid UTF-8") from None
        head, blank, checkpoint = text.partition("\n\n")
        if not blank:
            raise BundleError("proof bundle has no blank line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise BundleError(f"proof bundle does not start with {HEADER!r}")
        position = 1
        extra = None
        if position < len(lines) and lines[position].startswith("extra "):
            extra = b64decode(lines[position][len("extra ") :])
            if not extra:
                raise BundleError("extra line is not non-empty base64")
            position += 1
        if position >= len(lines) or not lines[position].startswith("index "):
            raise BundleError("proof bundle has no index line")
        index = parse_decimal(lines[position][len("index ") :])
        if index is None:
            raise BundleError("index is not a decimal without leading zeroes")
        proof = []
        for line in lines[position + 1 :]:
            digest = b64decode(line)
            if digest is None or len(digest) != HASH_SIZE:
                raise BundleError("a proof line is not the base64 of a 32-byte hash")
            proof.append(digest)
        return cls(index, tuple(proof), checkpoint, extra)


def verify_bundle(
    bundle_text: str | bytes,
    leaf_hash: bytes,
    verifier_key: str,
    *,
    origin: str | None = None,
    witness_keys: Sequence[str] = (),
    quorum: int = 0,
) -> Checkpoint:
    """Check that the entry with ``leaf_hash`` is in the log whose key is ``verifier_key``.

    Returns the checkpoint the proof is against. Raises a
    :class:`~ledger.transparency.errors.TransparencyError` (``BundleError``, ``NoteError``,
    ``CheckpointError`` or ``ProofError``) when anything is off. ``origin`` defaults to the
    key's name; ``witness_keys`` and ``quorum`` optionally require witness cosignatures.
    """
    bundle = Bundle.parse(bundle_text)
    checkpoint = open_checkpoint(
        bundle.checkpoint,
        verifier_from_key(verifier_key),
        origin=origin,
        witnesses=[verifier_from_key(k) for k in witness_keys],
        quorum=quorum,
    )
    verify_inclusion(bundle.index, checkpoint.size, leaf_hash, bundle.proof, checkpoint.root)
    return checkpoint
