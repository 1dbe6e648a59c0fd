"""Verifying RFC 9162 inclusion and consistency proofs, step by step as the RFC gives them.

API: each verifier returns ``None`` when the proof holds and raises :class:`ProofError`
(with the reason) when it does not. Raising rather than returning a boolean means a
forgotten check fails loudly instead of passing silently.

What a proof does *not* authenticate: the tree size. RFC 9162's algorithms take sizes as
given, and a path can fit more than one size (an inclusion proof for leaf 0 of a 3-leaf
tree is also well shaped for a 4-leaf one). Take sizes and roots from a signed checkpoint,
never from whoever supplied the proof.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.transparency.errors import TransparencyError
from ledger.transparency.tree import HASH_SIZE, node_hash


class ProofError(TransparencyError):
    """The proof does not show what it was offered as showing."""


def _check_hashes(**hashes: bytes) -> None:
    for name, value in hashes.items():
        if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
            raise ProofError(f"{name} is not a 32-byte hash")


def _check_path(path: Sequence[bytes]) -> None:
    if any(not isinstance(p, bytes | bytearray) or len(p) != HASH_SIZE for p in path):
        raise ProofError("a proof element is not a 32-byte hash")


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2: is ``leaf_hash`` the leaf at ``leaf_index`` of the tree with ``root``?"""
    _check_hashes(leaf_hash=leaf_hash, root=root)
    _check_path(proof)
    # 1. leaf_index must be inside the tree (a negative index is no index at all).
    if leaf_index < 0 or leaf_index >= tree_size:
        raise ProofError(f"leaf index {leaf_index} is not below tree size {tree_size}")
    # 2-3.
    fn, sn = leaf_index, tree_size - 1
    r = bytes(leaf_hash)
    # 4.
    for p in proof:
        # 4a. The path is longer than the tree is deep.
        if sn == 0:
            raise ProofError("inclusion proof is too long for the tree size")
        # 4b.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # 4c.
        fn >>= 1
        sn >>= 1
    # 5.
    if sn != 0:
        raise ProofError("inclusion proof is too short for the tree size")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: is the tree of ``second`` leaves an extension of that of ``first``?

    The RFC's algorithm is for ``0 < first < second``. Around it: ``first > second`` is
    refused; ``first == second`` needs an empty proof and equal roots (a tree head is
    consistent with itself and with nothing else of its size); ``first == 0`` is refused,
    as the RFC defines no consistency proof from an empty tree (anything extends it, so
    there is nothing to check: a client that has seen no tree head needs no proof).
    """
    _check_hashes(first_root=first_root, second_root=second_root)
    _check_path(proof)
    if first < 0 or first > second:
        raise ProofError(f"tree size {first} cannot precede tree size {second}")
    if first == second:
        if proof:
            raise ProofError("a proof between equal tree sizes must be empty")
        if first_root != second_root:
            raise ProofError("two tree heads of the same size have different roots")
        return
    if first == 0:
        raise ProofError("RFC 9162 defines consistency proofs only from a non-empty tree")
    # 1.
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    # 2. When the old tree is a perfect subtree of the new one, its root is the path's start.
    if first & (first - 1) == 0:
        path.insert(0, bytes(first_root))
    # 3.
    fn, sn = first - 1, second - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        # 6a.
        if sn == 0:
            raise ProofError("consistency proof is too long for the tree sizes")
        # 6b.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        # 6c.
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("consistency proof is too short for the tree sizes")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")
