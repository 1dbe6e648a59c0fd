"""A witness's decision, pure: accept a log's new checkpoint only if it extends the last one.

A witness remembers the newest checkpoint it accepted from a log. Offered a new one, it
checks the log's signature and origin, then:

- a smaller tree than the one it holds is a rollback: refused;
- the same size with another root is a fork: refused;
- a larger tree must come with a consistency proof from the held size to the new one
  that verifies against the two *signed* roots: otherwise a fork, refused;
- the first checkpoint ever seen is accepted as is (trust on first use).

An accepted checkpoint is cosigned (c2sp.org/tlog-cosignature, cosignature/v1) and
becomes the one held. A refusal changes nothing. The I/O (fetching, the state file) is
``phi-ledger witness``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.transparency.checkpoint import Checkpoint, open_checkpoint
from ledger.transparency.errors import TransparencyError
from ledger.transparency.note import Cosigner, Note, Verifier
from ledger.transparency.proof import verify_consistency


class WitnessRefused(TransparencyError):
    """The offered checkpoint does not extend the held one (rollback or fork), or does
    not verify at all."""


@dataclass(frozen=True)
class Accepted:
    """The checkpoint now held, and its note with this witness's cosignature added."""

    checkpoint: Checkpoint
    note: str
    grew_from: int | None  # the size held before (None: first checkpoint seen)


def accept(
    log: Verifier,
    cosigner: Cosigner,
    held: str | None,
    offered: str,
    proof: Sequence[bytes] = (),
) -> Accepted:
    """Decide on ``offered`` given the ``held`` note (None at first) and the consistency
    proof from the held size to the offered one; raises :class:`WitnessRefused`."""
    try:
        new = open_checkpoint(offered, log)
    except TransparencyError as error:
        raise WitnessRefused(f"the offered checkpoint does not verify: {error}") from None
    old = None
    if held is not None:
        try:
            old = open_checkpoint(held, log)
        except TransparencyError as error:
            raise WitnessRefused(f"the held checkpoint does not verify: {error}") from None
        if new.size < old.size:
            raise WitnessRefused(
                f"rollback: the log offers {new.size} entries after signing {old.size}")
        if new.size == old.size and new.root != old.root:
            raise WitnessRefused(f"fork: two signed roots for tree size {new.size}")
        if new.size > old.size:
            try:
                verify_consistency(old.size, new.size, old.root, new.root, proof)
            except TransparencyError as error:
                raise WitnessRefused(
                    f"fork: the tree of {new.size} entries does not extend the one of"
                    f" {old.size} ({error})") from None
    note = Note.parse(offered)
    mine = [s for s in note.signatures if (s.name, s.key_id) == (cosigner.name, cosigner.key_id)]
    cosigned = note if mine else note.sign(cosigner)
    return Accepted(new, cosigned.encode(), None if old is None else old.size)
