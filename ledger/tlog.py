"""The transparency log over a store: proofs, roots and signed checkpoints (the shell around
:mod:`ledger.transparency`).

Each ledger is one RFC 9162 log whose leaf ``seq - 1`` is entry ``seq`` (its ``hash`` is the
leaf hash). The store keeps the tree (``merkle_nodes``, grown in every append's
transaction); this module reads it for proofs and roots, and signs checkpoints into the
``checkpoints`` table.

Who the log is: one name for the whole service (``log_name`` in the log key store,
:mod:`ledger.crypto.log_keys`), and per ledger the origin ``<log name>/<ledger>``, which is
also the name of the ledger's checkpoint key (C2SP: a key's name should be the origin). All
ledgers share the store's Ed25519 seeds; a key id covers the name, so each ledger has its
own verifier key string.

The log never signs a checkpoint inconsistent with one it signed before: :meth:`sign`
first opens the newest stored checkpoint with the log's keys, recomputes the root of its
size from the tree and checks a consistency proof to the new size, and refuses
(:class:`CheckpointRefused`) when anything disagrees or the chain is shorter than a signed
size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ledger.clock import Clock, utc_now
from ledger.crypto.log_keys import LogKey, LogKeys
from ledger.entry import format_recorded_at
from ledger.keystores import log_key_provider
from ledger.settings import Settings
from ledger.store import LedgerStore
from ledger.store.base import TreeIncomplete
from ledger.transparency.bundle import Bundle
from ledger.transparency.checkpoint import Checkpoint, sign_checkpoint
from ledger.transparency.errors import TransparencyError
from ledger.transparency.note import Ed25519Signer, Ed25519Verifier, open_note
from ledger.transparency.proof import verify_consistency, verify_inclusion
from ledger.transparency.tree import (
    EMPTY_ROOT,
    Node,
    assemble,
    consistency_plan,
    fold,
    inclusion_plan,
    plan_nodes,
    range_nodes,
)

log = structlog.get_logger(__name__)


class LogIdentity:
    """The log's name and checkpoint keys, as the log key store holds them.

    Guarantees: :meth:`signers` puts the active key first and includes every key that
    still has its seed (an old key co-signs until it is retired); :meth:`verifiers`
    covers every key the store ever held, retired ones included.
    """

    def __init__(self, name: str, keys: Sequence[LogKey], active: str) -> None:
        self.name = name
        self.keys = tuple(keys)
        self.active = active

    @classmethod
    def from_keys(cls, keys: LogKeys) -> LogIdentity:
        return cls(keys.name, keys.keys, keys.active)

    def origin(self, ledger: str) -> str:
        """The checkpoint origin, and key name, of ``ledger``: ``<log name>/<ledger>``."""
        return f"{self.name}/{ledger}"

    def _ordered(self) -> list[LogKey]:
        return sorted(self.keys, key=lambda k: k.key_id != self.active)

    def signers(self, ledger: str) -> list[Ed25519Signer]:
        origin = self.origin(ledger)
        return [Ed25519Signer(origin, k.seed) for k in self._ordered() if k.seed is not None]

    def verifiers(self, ledger: str) -> list[Ed25519Verifier]:
        origin = self.origin(ledger)
        return [Ed25519Verifier(origin, k.public) for k in self._ordered()]

    def verifier_key(self, ledger: str) -> str:
        """The active key as a C2SP verifier key: ``name+keyid+base64(0x01 || key)``."""
        return self.verifiers(ledger)[0].key_string

    def published(self, ledger: str) -> list[dict[str, Any]]:
        """Every key, the active one first, then newest first: what
        ``GET /v1/checkpoints/keys`` lists."""
        origin = self.origin(ledger)
        keys = sorted(self.keys, key=lambda k: (k.key_id == self.active, k.created_at),
                      reverse=True)
        return [
            {"key": Ed25519Verifier(origin, k.public).key_string, "id": k.key_id,
             "active": k.key_id == self.active, "signing": k.seed is not None,
             "created_at": k.created_at}
            for k in keys
        ]


def load_log_identity(settings: Settings) -> LogIdentity:
    """The log's identity from its key store (:func:`ledger.keystores.log_key_provider`),
    making the log key file on first start (raises ``KeyRingError`` naming the source)."""
    keys = log_key_provider(settings).load_or_create(settings.log_name)
    if settings.log_name and settings.log_name != keys.name:
        log.warning("log.name_differs", configured=settings.log_name, used=keys.name,
                    reason="a log's name is set once, in the log key store, and never"
                           " changes")
    return LogIdentity.from_keys(keys)


class ProofRequestError(ValueError):
    """A proof was asked for sizes or positions the tree does not have; ``field`` names
    the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class CheckpointRefused(Exception):
    """The log would not sign: what it holds disagrees with what it signed before."""


class NotCheckpointed(LookupError):
    """No signed checkpoint covers the entry yet, or none was signed at the size asked for.

    ``field`` names the parameter the answer is about; ``pending`` says whether waiting
    helps (a checkpoint of the head comes within an interval; a past size that was never
    signed never will be)."""

    def __init__(self, message: str, field: str = "seq", pending: bool = True) -> None:
        super().__init__(message)
        self.field = field
        self.pending = pending


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as the table keeps it: size, root and the signed note served."""

    ledger: str
    size: int
    root: bytes
    note: str
    signed_at: str


@dataclass(frozen=True)
class InclusionProof:
    ledger: str
    seq: int
    tree_size: int
    leaf_hash: bytes
    root: bytes
    proof: list[bytes]

    @property
    def leaf_index(self) -> int:
        return self.seq - 1

    def as_dict(self) -> dict[str, Any]:
        return {"ledger": self.ledger, "seq": self.seq, "leaf_index": self.leaf_index,
                "tree_size": self.tree_size, "leaf_hash": self.leaf_hash.hex(),
                "root": self.root.hex(), "proof": [h.hex() for h in self.proof]}


@dataclass(frozen=True)
class ConsistencyProof:
    ledger: str
    first: int
    second: int
    first_root: bytes
    second_root: bytes
    proof: list[bytes]

    def as_dict(self) -> dict[str, Any]:
        return {"ledger": self.ledger, "first": self.first, "second": self.second,
                "first_root": self.first_root.hex(), "second_root": self.second_root.hex(),
                "proof": [h.hex() for h in self.proof]}


_COLUMNS = "size, root, note, signed_at"


class TransparencyLog:
    """Proofs and checkpoints of every ledger in ``store``.

    Proofs and roots are read from the stored tree in one round of two indexed queries,
    for any tree size up to the head (O(log n) rows). ``identity`` may be None for a
    reader that never signs (proofs and stored checkpoints still work).
    """

    def __init__(self, store: LedgerStore, identity: LogIdentity | None = None,
                 clock: Clock = utc_now) -> None:
        self.store = store
        self.identity = identity
        self.clock = clock

    # -- the tree ------------------------------------------------------------------------

    def _fetch(self, ledger: str, nodes: list[Node]) -> dict[Node, bytes]:
        found = self.store.subtrees(ledger, nodes)
        if len(found) != len(set(nodes)):
            raise TreeIncomplete(f"the Merkle tree of ledger '{ledger}' lacks nodes")
        return found

    def root(self, ledger: str, size: int) -> bytes:
        if size == 0:
            return EMPTY_ROOT
        edge = range_nodes(0, size)
        found = self._fetch(ledger, edge)
        return fold([found[n] for n in edge])

    def _head(self, ledger: str) -> int:
        return self.store.head(ledger).seq

    def _within(self, ledger: str, size: int, nodes: list[Node], field: str
                ) -> dict[Node, bytes]:
        """The nodes of a tree of ``size`` entries. Their existence is what shows the tree
        has that many (every node is written with its last entry): the head is read only
        to word a refusal."""
        found = self.store.subtrees(ledger, nodes)
        if len(found) == len(set(nodes)):
            return found
        head = self._head(ledger)
        if size > head:
            raise ProofRequestError(field, f"{field} must not exceed the head's seq ({head})")
        raise TreeIncomplete(f"the Merkle tree of ledger '{ledger}' lacks nodes")

    def inclusion(self, ledger: str, seq: int, tree_size: int | None = None) -> InclusionProof:
        """The inclusion proof of entry ``seq`` in the tree of ``tree_size`` entries
        (default: the head), with the leaf hash and the root it leads to."""
        size = self._head(ledger) if tree_size is None else tree_size
        if seq < 1:
            raise ProofRequestError("seq", "seq starts at 1")
        if size < 1:
            raise ProofRequestError("tree_size", "tree_size must be at least 1")
        if seq > size:
            raise ProofRequestError("seq", f"seq {seq} is not in a tree of {size} entries")
        plan = inclusion_plan(seq - 1, size)
        edge = range_nodes(0, size)
        leaf = Node(0, seq - 1)
        found = self._within(ledger, size, [*plan_nodes(plan), *edge, leaf], "tree_size")
        return InclusionProof(ledger, seq, size, found[leaf], fold([found[n] for n in edge]),
                              assemble(plan, found))

    def consistency(self, ledger: str, first: int, second: int | None = None
                    ) -> ConsistencyProof:
        """The consistency proof from the tree of ``first`` entries to that of ``second``
        (default: the head), with both roots."""
        size = self._head(ledger) if second is None else second
        if first < 1:
            raise ProofRequestError(
                "first", "first must be at least 1: RFC 9162 has no proof from an empty tree")
        if first > size:
            raise ProofRequestError("first", f"first ({first}) must not exceed second ({size})")
        plan = consistency_plan(first, size)
        old, new = range_nodes(0, first), range_nodes(0, size)
        found = self._within(ledger, size, [*plan_nodes(plan), *old, *new], "second")
        return ConsistencyProof(ledger, first, size, fold([found[n] for n in old]),
                                fold([found[n] for n in new]), assemble(plan, found))

    # -- stored checkpoints --------------------------------------------------------------

    def _rows(self, ledger: str, where: str, params: tuple[Any, ...]) -> list[StoredCheckpoint]:
        with self.store.reading() as curs:
            curs.execute(self.store.sql(
                f"SELECT {_COLUMNS} FROM checkpoints WHERE ledger_id = %s {where}"),
                (self.store.key_of(ledger), *params))
            rows = curs.fetchall()
        return [StoredCheckpoint(ledger, int(size), bytes(root), note, signed_at)
                for size, root, note, signed_at in rows]

    def latest(self, ledger: str) -> StoredCheckpoint | None:
        rows = self._rows(ledger, "ORDER BY size DESC LIMIT 1", ())
        return rows[0] if rows else None

    def at_size(self, ledger: str, size: int) -> StoredCheckpoint | None:
        rows = self._rows(ledger, "AND size = %s", (size,))
        return rows[0] if rows else None

    def roots_between(self, ledger: str, after: int, upto: int | None = None
                      ) -> list[tuple[int, bytes]]:
        """``(size, root)`` of the stored checkpoints with ``after < size <= upto``."""
        where, params = "AND size > %s", [after]
        if upto is not None:
            where += " AND size <= %s"
            params.append(upto)
        with self.store.reading() as curs:
            curs.execute(self.store.sql(
                f"SELECT size, root FROM checkpoints WHERE ledger_id = %s {where}"
                " ORDER BY size"), (self.store.key_of(ledger), *params))
            return [(int(size), bytes(root)) for size, root in curs.fetchall()]

    def bundle(self, ledger: str, seq: int, size: int | None = None) -> str:
        """The c2sp.org/tlog-proof bundle of entry ``seq`` against the newest checkpoint
        (or the one of ``size``): all an offline verifier needs beside the log's key."""
        if seq < 1:
            raise ProofRequestError("seq", "seq starts at 1")
        if size is not None:
            # A size the ledger never reached is a bad request; one it reached but that
            # was never signed is a checkpoint that does not exist (404, as /checkpoints).
            if size < 1:
                raise ProofRequestError("size", "size must be at least 1")
            head = self._head(ledger)
            if size > head:
                raise ProofRequestError("size", f"size must not exceed the head's seq ({head})")
            if seq > size:
                raise ProofRequestError("seq", "seq must not exceed size")
        checkpoint = self.latest(ledger) if size is None else self.at_size(ledger, size)
        if checkpoint is None and size is not None:
            raise NotCheckpointed(f"no checkpoint was signed at size {size}", "size",
                                  pending=False)
        if checkpoint is None or checkpoint.size < seq:
            raise NotCheckpointed(f"no signed checkpoint covers seq {seq} yet")
        proof = self.inclusion(ledger, seq, checkpoint.size)
        # Served only if it verifies against what was signed (not just the tree's root).
        verify_inclusion(seq - 1, checkpoint.size, proof.leaf_hash, proof.proof,
                         checkpoint.root)
        return Bundle(seq - 1, tuple(proof.proof), checkpoint.note).encode()

    # -- signing -------------------------------------------------------------------------

    def _open(self, ledger: str, stored: StoredCheckpoint) -> None:
        """Check that a stored checkpoint is one this log signed, as its columns say."""
        assert self.identity is not None
        try:
            opened = open_note(stored.note, self.identity.verifiers(ledger))
            body = Checkpoint.parse(opened.text)
        except TransparencyError as error:
            raise CheckpointRefused(
                f"the stored checkpoint of size {stored.size} does not open with this log's"
                f" keys ({error}): wrong key ring, or the checkpoints table was edited"
            ) from None
        if (body.origin, body.size, body.root) != (
                self.identity.origin(ledger), stored.size, stored.root):
            raise CheckpointRefused(
                f"the stored checkpoint of size {stored.size} does not match its note")

    def sign(self, ledger: str) -> StoredCheckpoint | None:
        """Sign and store a checkpoint of ``ledger``'s whole tree, if it grew since the
        newest one; None when there is nothing new. Raises :class:`CheckpointRefused`
        rather than sign anything inconsistent with the newest stored checkpoint."""
        if self.identity is None:
            raise CheckpointRefused("no log signing key is loaded")
        last = self.latest(ledger)
        head = self._head(ledger)
        if last is not None:
            if last.size > head:
                raise CheckpointRefused(
                    f"truncated: a signed checkpoint covers {last.size} entries but the chain"
                    f" ends at seq {head}")
            self._open(ledger, last)
            if last.size == head:
                return None
        elif head == 0:
            return None
        edge = range_nodes(0, head)
        wanted = list(edge)
        plan = None
        if last is not None:
            plan = consistency_plan(last.size, head)
            wanted += [*range_nodes(0, last.size), *plan_nodes(plan)]
        found = self._fetch(ledger, wanted)
        root = fold([found[n] for n in edge])
        if last is not None and plan is not None:
            old = fold([found[n] for n in range_nodes(0, last.size)])
            if old != last.root:
                raise CheckpointRefused(
                    f"the tree's root at size {last.size} no longer matches the checkpoint"
                    f" signed at that size: the ledger was rewritten")
            try:
                verify_consistency(last.size, head, last.root, root, assemble(plan, found))
            except TransparencyError as error:
                raise CheckpointRefused(f"no consistency from size {last.size}: {error}") from None
        origin = self.identity.origin(ledger)
        note = sign_checkpoint(Checkpoint(origin, head, root), *self.identity.signers(ledger))
        signed_at = format_recorded_at(self.clock())
        with self.store.transaction() as tx:
            tx.execute(self.store.sql(
                "INSERT INTO checkpoints (ledger_id, size, root, note, signed_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"),
                (self.store.key_of(ledger), head, root, note, signed_at))
        stored = self.at_size(ledger, head)
        if stored is None or stored.root != root:
            # Another signer stored this size first, with another root: a fork.
            raise CheckpointRefused(
                f"a checkpoint of size {head} with another root is already stored")
        return stored
