"""C2SP checkpoints (https://c2sp.org/tlog-checkpoint): a log's signed tree head as a note.

The note text is the origin line, the tree size in decimal (no leading zeroes), the root
hash in base64, then optional non-empty extension lines, each ending in a newline:

    example.com/behind-the-sofa
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

:func:`open_checkpoint` is how a client trusts one: the log's own signature must verify
(other known keys, such as witnesses, may add to it), and the origin must be the one the
client expects: by default the log key's name, since the spec says the key name SHOULD
match the origin (the witness network's log lists default the origin to the key name too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.transparency._codec import (
    UINT64_LIMIT,
    b64decode,
    b64encode,
    has_control_characters,
    parse_decimal,
)
from ledger.transparency.errors import TransparencyError
from ledger.transparency.note import Signer, Verifier, open_note, sign_note
from ledger.transparency.tree import HASH_SIZE


class CheckpointError(TransparencyError):
    """A checkpoint body is malformed, or is not the checkpoint the client expects."""


def _check_line(line: str, what: str) -> None:
    if not line or "\n" in line or has_control_characters(line):
        raise CheckpointError(f"{what} must be a non-empty line without control characters")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: ``size`` leaves with root ``root`` in the log named ``origin``.

    Construction validates, so a ``Checkpoint`` always formats to a body that parses back
    to itself.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "the origin")
        if not 0 <= self.size < UINT64_LIMIT:
            raise CheckpointError("the tree size is not an unsigned 64-bit integer")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError("the root hash is not 32 bytes")
        for line in self.extensions:
            _check_line(line, "an extension line")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each newline-ended."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a note text strictly (it is not a signature check: see :func:`open_checkpoint`)."""
        if not body.endswith("\n"):
            raise CheckpointError("checkpoint does not end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint has fewer than three lines")
        origin, size_line, root_line, *extensions = lines
        size = parse_decimal(size_line)
        if size is None:
            raise CheckpointError("tree size is not a decimal without leading zeroes")
        root = b64decode(root_line)
        if root is None or len(root) != HASH_SIZE:
            raise CheckpointError("root hash is not the base64 of 32 bytes")
        return cls(origin, size, root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, *signers: Signer) -> str:
    """The signed note of ``checkpoint``: what ``/v1/checkpoints/latest`` serves."""
    return sign_note(checkpoint.body(), *signers)


def open_checkpoint(
    signed: str | bytes,
    log: Verifier,
    *,
    origin: str | None = None,
    witnesses: Sequence[Verifier] = (),
    quorum: int = 0,
) -> Checkpoint:
    """The checkpoint in ``signed``, once the log's signature and the origin check out.

    ``origin`` defaults to ``log.name``. With ``witnesses``, at least ``quorum`` distinct
    witness keys other than the log's must have cosigned; a known signature that fails
    rejects the note (see :func:`~ledger.transparency.note.open_note`).
    """
    opened = open_note(signed, [log, *witnesses])
    if not opened.signed_by(log):
        raise CheckpointError(f"checkpoint is not signed by the log key {log.name!r}")
    cosigned = {(s.name, s.key_id) for s in opened.verified} - {(log.name, log.key_id)}
    if len(cosigned) < quorum:
        raise CheckpointError(f"checkpoint has {len(cosigned)} cosignatures, needs {quorum}")
    checkpoint = Checkpoint.parse(opened.text)
    expected = log.name if origin is None else origin
    if checkpoint.origin != expected:
        raise CheckpointError(f"checkpoint is for origin {checkpoint.origin!r}, not {expected!r}")
    return checkpoint
