"""RFC 9162 Merkle tree hashing, and proofs built from perfect subtrees.

A leaf hash is ``SHA-256(0x00 || data)`` (exactly a ledger entry's ``hash``) and an interior
node is ``SHA-256(0x01 || left || right)``. The tree over ``n`` leaves is the Merkle Tree
Hash of RFC 9162 section 2.1.1; the empty tree's root is ``SHA-256("")``.

Storage. A *perfect subtree* ``Node(level, index)`` covers the ``2**level`` leaves
``[index * 2**level, (index + 1) * 2**level)``. Once all its leaves exist its hash never
changes, whatever the tree grows to, so a store keeps one row per perfect subtree and never
updates one. Every hash a proof needs is the MTH of a range the RFC recursion produces, and
every such range is a run of aligned perfect subtrees whose hashes fold together from the
right (RFC 9162 splits ``D[a:b]`` at the largest power of two below ``b - a``: the left part
is perfect, the right part splits the same way). Proofs for *any* tree size up to the
current one therefore come from the same rows:

- :func:`inclusion_plan` / :func:`consistency_plan` say which nodes each proof hash folds,
  :func:`plan_nodes` lists them once each so a database fetches them in one query, and
  :func:`assemble` folds the fetched hashes into the proof;
- :func:`inclusion_proof` / :func:`consistency_proof` do all three through a
  ``subtree(level, index) -> bytes`` callable, with at most ``2 * n.bit_length()`` calls
  (at most one proof hash is a fold of several subtrees, the rest are one each);
- :class:`Frontier` appends leaves: given the right edge of a tree it returns every new
  perfect subtree to store and the new right edge, reading nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ledger.entry import LEAF_PREFIX

NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]
"""``subtree(level, index)``: the hash of the perfect subtree ``Node(level, index)``."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly below ``n`` (for ``n >= 2``): where RFC 9162 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over ``leaf_hashes`` (already leaf-hashed), straight from RFC 9162 section 2.1.1.

    This is the reference the storage-backed functions are checked against, so it follows
    the RFC's recursion literally rather than sharing their arithmetic.
    """

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hashes[lo]
        k = split(hi - lo)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(leaf_hashes)) if leaf_hashes else EMPTY_ROOT


class Node(NamedTuple):
    """A perfect subtree: ``2**level`` leaves starting at leaf ``index * 2**level``."""

    level: int
    # The ignore: a field named ``index`` shadows ``tuple.index``, which no caller uses.
    index: int  # type: ignore[assignment]

    @property
    def start(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


class SubtreeHash(NamedTuple):
    """A perfect subtree and its hash: one row of a node table."""

    level: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, as in Node
    hash: bytes


def range_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees, left to right, whose right fold is MTH(D[start:end]).

    They are the binary digits of ``end - start``, largest first; each must be aligned
    (start at a multiple of its own size), which holds for every range the RFC 9162
    recursion produces from a tree starting at leaf 0. ``range_nodes(0, n)`` is the right
    edge of a tree of ``n`` leaves (its root is their fold).
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative leaf range [{start}, {end})")
    nodes = []
    position = start
    for level in reversed(range((end - start).bit_length())):
        if (end - start) >> level & 1:
            if position % (1 << level):
                raise ValueError(f"leaf range [{start}, {end}) is not made of aligned subtrees")
            nodes.append(Node(level, position >> level))
            position += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of consecutive subtrees from the right: ``H(a, H(b, c))``."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


Plan = list[tuple[Node, ...]]
"""One entry per proof hash, in proof order: the nodes whose fold is that hash."""


def inclusion_plan(leaf_index: int, tree_size: int) -> Plan:
    """The nodes behind each hash of the inclusion proof for ``leaf_index`` (RFC 9162 2.1.3.1).

    PATH(m, D[n]) walks from the root down to the leaf; at each split the sibling range is
    the proof hash for that level, and the proof lists them leaf-side first.
    """
    if not 0 <= leaf_index < tree_size:
        raise ValueError(f"leaf {leaf_index} is not in a tree of {tree_size} leaves")
    siblings: Plan = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = split(hi - lo)
        if leaf_index < lo + k:
            siblings.append(tuple(range_nodes(lo + k, hi)))
            hi = lo + k
        else:
            siblings.append(tuple(range_nodes(lo, lo + k)))
            lo += k
    siblings.reverse()
    return siblings


def consistency_plan(first: int, second: int) -> Plan:
    """The nodes behind each hash of the consistency proof from ``first`` to ``second``.

    RFC 9162 2.1.4.1 defines PROOF(m, D[n]) = SUBPROOF(m, D[n], true) for 0 < m < n; the
    proof between equal sizes is empty (nothing to prove). ``first == 0`` has no proof in
    the RFC and is refused here, as the verifier refuses it.
    """
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    proof: Plan = []
    lo, hi = 0, second
    whole_old_tree = True  # SUBPROOF's flag b: is D[lo:hi] still the entire old tree's prefix?
    while True:
        n, m = hi - lo, first - lo
        if m == n:
            # Only reached after a step to the left, so D[lo:hi] is a perfect subtree. When it
            # is the whole old tree the verifier already holds its hash (the old root).
            if not whole_old_tree:
                proof.append(tuple(range_nodes(lo, hi)))
            break
        k = split(n)
        if m <= k:
            proof.append(tuple(range_nodes(lo + k, hi)))
            hi = lo + k
        else:
            proof.append(tuple(range_nodes(lo, lo + k)))
            lo += k
            whole_old_tree = False
    proof.reverse()
    return proof


def plan_nodes(plan: Plan) -> list[Node]:
    """Every node a plan needs, once each, in (level, index) order: one query's worth."""
    return sorted({node for element in plan for node in element})


def assemble(plan: Plan, hashes: Mapping[Node, bytes]) -> list[bytes]:
    """The proof a plan describes, from the hashes of its nodes (a missing one is a KeyError)."""
    proof = []
    for element in plan:
        parts = [hashes[node] for node in element]
        if any(len(h) != HASH_SIZE for h in parts):
            raise ValueError("a subtree hash is not 32 bytes")
        proof.append(fold(parts))
    return proof


def _fetch(plan: Plan, subtree: Subtree) -> list[bytes]:
    return assemble(plan, {node: subtree(node.level, node.index) for node in plan_nodes(plan)})


def inclusion_proof(leaf_index: int, tree_size: int, subtree: Subtree) -> list[bytes]:
    """The RFC 9162 inclusion proof of ``leaf_index`` in the tree of ``tree_size`` leaves."""
    return _fetch(inclusion_plan(leaf_index, tree_size), subtree)


def consistency_proof(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """The RFC 9162 consistency proof between tree sizes ``first`` and ``second``."""
    return _fetch(consistency_plan(first, second), subtree)


def tree_root(tree_size: int, subtree: Subtree) -> bytes:
    """The root of the tree of ``tree_size`` leaves, from its right edge (popcount reads)."""
    if tree_size == 0:
        return EMPTY_ROOT
    return fold([subtree(node.level, node.index) for node in range_nodes(0, tree_size)])


@dataclass(frozen=True, slots=True)
class Frontier:
    """The right edge of a tree: the hashes of ``range_nodes(0, size)``, largest first.

    It is all that appending needs: :meth:`append` returns every perfect subtree the new
    leaves complete (leaves themselves included, as level 0, for a store that keeps them
    with the nodes) together with the new frontier, and :meth:`root` is the tree's root.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise ValueError(
                f"a tree of {self.size} leaves has {self.size.bit_count()} "
                f"edge subtrees, not {len(self.hashes)}"
            )
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError("a frontier hash is not 32 bytes")

    @classmethod
    def load(cls, size: int, subtree: Subtree) -> Frontier:
        """The frontier of the stored tree of ``size`` leaves."""
        nodes = range_nodes(0, size) if size else []
        return cls(size, tuple(subtree(node.level, node.index) for node in nodes))

    @property
    def nodes(self) -> list[Node]:
        return range_nodes(0, self.size) if self.size else []

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT

    def append(self, leaf_hashes: Iterable[bytes]) -> tuple[Frontier, list[SubtreeHash]]:
        """Add leaves on the right: the new frontier, and the new perfect subtrees to store.

        The frontier's levels strictly decrease left to right, so a new leaf only ever
        merges with the rightmost subtree, and then the merged one with the next, like a
        binary counter's carry.
        """
        edge = [SubtreeHash(*node, h) for node, h in zip(self.nodes, self.hashes, strict=True)]
        created: list[SubtreeHash] = []
        size = self.size
        for leaf in leaf_hashes:
            if len(leaf) != HASH_SIZE:
                raise ValueError("a leaf hash is not 32 bytes")
            node = SubtreeHash(0, size, leaf)
            created.append(node)
            size += 1
            while edge and edge[-1].level == node.level:
                left = edge.pop()
                node = SubtreeHash(node.level + 1, left.index >> 1, node_hash(left.hash, node.hash))
                created.append(node)
            edge.append(node)
        return Frontier(size, tuple(node.hash for node in edge)), created

    def grow(
        self, leaf_hashes: Iterable[bytes], keep_from: int = 1
    ) -> tuple[Frontier, list[SubtreeHash]]:
        """:meth:`append`, keeping only the new subtrees of level ``keep_from`` and up.

        What a store that keeps level 0 elsewhere (the entries' own hashes) calls on
        every append: the same carries as :meth:`append`, without building a node per
        leaf, in creation order (each subtree after the two it combines).
        """
        sha256 = hashlib.sha256
        levels = [node.level for node in self.nodes]
        hashes = list(self.hashes)
        created: list[SubtreeHash] = []
        size = self.size
        for leaf in leaf_hashes:
            if len(leaf) != HASH_SIZE:
                raise ValueError("a leaf hash is not 32 bytes")
            if keep_from <= 0:
                created.append(SubtreeHash(0, size, leaf))
            digest, level, index = leaf, 0, size
            while levels and levels[-1] == level:
                levels.pop()
                digest = sha256(NODE_PREFIX + hashes.pop() + digest).digest()
                level += 1
                index >>= 1
                if level >= keep_from:
                    created.append(SubtreeHash(level, index, digest))
            levels.append(level)
            hashes.append(digest)
            size += 1
        return Frontier(size, tuple(hashes)), created

    def extend(self, other: Frontier) -> Frontier:
        """The frontier of this tree's leaves followed by ``other``'s.

        ``other`` is the right edge of a tree of its own, to be placed at leaf
        ``self.size``; that is only possible when ``self.size`` is a multiple of its
        largest subtree (a verifier that hashes a chain in stretches aligned to a power
        of two joins their edges this way).
        """
        if not other.size:
            return self
        top = other.nodes[0].level
        if self.size % (1 << top):
            raise ValueError(
                f"a tree of {other.size} leaves cannot start at leaf {self.size}: unaligned"
            )
        levels = [node.level for node in self.nodes]
        hashes = list(self.hashes)
        for node, digest in zip(other.nodes, other.hashes, strict=True):
            level = node.level
            while levels and levels[-1] == level:
                levels.pop()
                digest = node_hash(hashes.pop(), digest)
                level += 1
            levels.append(level)
            hashes.append(digest)
        return Frontier(self.size + other.size, tuple(hashes))
