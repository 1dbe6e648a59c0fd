"""RFC 9162 trees and proofs, pure: the RFC's worked example, then properties.

The reference everywhere is the RFC's own recursive definitions, re-implemented here from
hashlib alone (``_mth``, ``_model_inclusion``, ``_model_consistency``), so the storage-backed
generators and the step-by-step verifiers are each checked against something they share
no code with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache, partial

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger.canonical import canonical
from ledger.entry import Entry
from ledger.transparency.proof import ProofError, verify_consistency, verify_inclusion
from ledger.transparency.tree import (
    EMPTY_ROOT,
    Frontier,
    Node,
    SubtreeHash,
    assemble,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    plan_nodes,
    range_nodes,
    root_of,
    split,
    tree_root,
)

Store = dict[tuple[int, int], bytes]


def _h(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _leaves(count: int, start: int = 0) -> list[bytes]:
    # Distinct leaves: with equal leaves two positions could share a path and an altered
    # index would verify for a reason that has nothing to do with the verifier.
    return [_leaf(b"entry %d" % i) for i in range(start, start + count)]


def _store(leaves: list[bytes]) -> Store:
    """Every perfect subtree's hash, level by level, the slow obvious way."""
    store = {(0, i): h for i, h in enumerate(leaves)}
    level, width = 0, len(leaves)
    while width >= 2:
        for i in range(width // 2):
            store[(level + 1, i)] = _h(store[(level, 2 * i)], store[(level, 2 * i + 1)])
        level, width = level + 1, width // 2
    return store


def _counting(store: Store) -> tuple[Callable[[int, int], bytes], list[int]]:
    calls = [0]

    def subtree(level: int, index: int) -> bytes:
        calls[0] += 1
        return store[(level, index)]

    return subtree, calls


def _mth(leaves: tuple[bytes, ...]) -> Callable[[int, int], bytes]:
    """MTH(D[lo:hi]) by RFC 9162 2.1.1, memoised so every prefix root is cheap."""

    @cache
    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        k = _split(hi - lo)
        return _h(mth(lo, lo + k), mth(lo + k, hi))

    return mth


def _model_inclusion(m: int, n: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """Does ``proof`` fit PATH(m, D[n]) (RFC 9162 2.1.3.1) and lead from ``leaf`` to ``root``?"""
    if not 0 <= m < n:
        return False

    def sides(m: int, n: int) -> list[bool]:  # True: the sibling is on the right
        if n == 1:
            return []
        k = _split(n)
        return [*sides(m, k), True] if m < k else [*sides(m - k, n - k), False]

    shape = sides(m, n)
    if len(shape) != len(proof):
        return False
    r = leaf
    for p, right in zip(proof, shape, strict=True):
        r = _h(r, p) if right else _h(p, r)
    return r == root


def _model_consistency(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    """Does ``proof`` fit SUBPROOF(m, D[n], true) (RFC 9162 2.1.4.1) and give both roots?"""
    if not 0 < m < n:
        return False
    pos = 0

    def sub(m: int, n: int, whole: bool) -> tuple[bytes, bytes]:
        nonlocal pos
        if m == n:
            if whole:
                return old, old
            pos += 1
            return proof[pos - 1], proof[pos - 1]
        k = _split(n)
        if m <= k:
            o, nw = sub(m, k, whole)
            pos += 1
            return o, _h(nw, proof[pos - 1])
        o, nw = sub(m - k, n - k, False)
        pos += 1
        return _h(proof[pos - 1], o), _h(proof[pos - 1], nw)

    try:
        got_old, got_new = sub(m, n, True)
    except IndexError:
        return False
    return pos == len(proof) and got_old == old and got_new == new


def _verifies(check: Callable[[], None]) -> bool:
    try:
        check()
    except ProofError:
        return False
    return True


def _flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# --- the worked example of RFC 9162 section 2.1.5 ----------------------------------------


class Rfc9162Example:
    """The 7-leaf tree of RFC 9162 2.1.5, its nodes named as the RFC names them."""

    def __init__(self) -> None:
        self.d = [b"d%d" % i for i in range(7)]
        a, b, c, d, e, f, j = (_leaf(x) for x in self.d)
        g, h, i = _h(a, b), _h(c, d), _h(e, f)
        k, l = _h(g, h), _h(i, j)  # noqa: E741 - the RFC's name
        self.node = dict(zip("abcdefghijkl", (a, b, c, d, e, f, g, h, i, j, k, l), strict=True))
        self.leaves = [a, b, c, d, e, f, j]
        self.root = _h(k, l)
        self.hash0 = _h(g, c)  # the tree of d0..d2
        self.hash1 = k  # d0..d3
        self.hash2 = _h(k, i)  # d0..d5
        self.subtree = lambda level, index: _store(self.leaves)[(level, index)]

    def names(self, proof: list[bytes]) -> list[str]:
        by_hash = {v: name for name, v in self.node.items()}
        return [by_hash[p] for p in proof]


EX = Rfc9162Example()


def test_rfc_example_root() -> None:
    assert root_of(EX.leaves) == EX.root
    assert tree_root(7, EX.subtree) == EX.root
    assert Frontier().append(EX.leaves)[0].root() == EX.root
    assert [leaf_hash(d) for d in EX.d] == EX.leaves


@pytest.mark.parametrize(
    ("leaf", "expected"),
    [
        (0, ["b", "h", "l"]),  # RFC: "The inclusion proof for d0 is [b, h, l]."
        (1, ["a", "h", "l"]),  # leaf b (d1): its sibling a, then the same path up
        (3, ["c", "g", "l"]),  # RFC: d3 is [c, g, l]
        (4, ["f", "j", "k"]),  # RFC: d4 is [f, j, k]
        (6, ["i", "k"]),  # RFC: d6 is [i, k]
    ],
)
def test_rfc_example_inclusion_proofs(leaf: int, expected: list[str]) -> None:
    proof = inclusion_proof(leaf, 7, EX.subtree)
    assert EX.names(proof) == expected
    verify_inclusion(leaf, 7, EX.leaves[leaf], proof, EX.root)


@pytest.mark.parametrize(
    ("first", "old_root", "expected"),
    [
        (3, "hash0", ["c", "d", "g", "l"]),  # RFC: PROOF(3, D[7]) = [c, d, g, l]
        (4, "hash1", ["l"]),  # RFC: PROOF(4, D[7]) = [l]
        (6, "hash2", ["i", "j", "k"]),  # RFC: PROOF(6, D[7]) = [i, j, k]
    ],
)
def test_rfc_example_consistency_proofs(first: int, old_root: str, expected: list[str]) -> None:
    proof = consistency_proof(first, 7, EX.subtree)
    assert EX.names(proof) == expected
    assert root_of(EX.leaves[:first]) == getattr(EX, old_root)
    verify_consistency(first, 7, getattr(EX, old_root), EX.root, proof)


def test_rfc_example_plans_name_the_stored_nodes() -> None:
    # l is not a perfect subtree: it is fetched as i = Node(1, 2) and j = Node(0, 6).
    assert inclusion_plan(0, 7) == [(Node(0, 1),), (Node(1, 1),), (Node(1, 2), Node(0, 6))]
    assert consistency_plan(3, 7) == [
        (Node(0, 2),),
        (Node(0, 3),),
        (Node(1, 0),),
        (Node(1, 2), Node(0, 6)),
    ]
    assert plan_nodes(consistency_plan(6, 7)) == [Node(0, 6), Node(1, 2), Node(2, 0)]
    store = _store(EX.leaves)
    fetched = {n: store[n] for n in plan_nodes(inclusion_plan(4, 7))}
    assert EX.names(assemble(inclusion_plan(4, 7), fetched)) == ["f", "j", "k"]
    del fetched[Node(2, 0)]
    with pytest.raises(KeyError):
        assemble(inclusion_plan(4, 7), fetched)


# --- basics -------------------------------------------------------------------------------


def test_empty_tree_root_is_sha256_of_the_empty_string() -> None:
    empty = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert empty == EMPTY_ROOT
    assert root_of([]) == empty
    assert tree_root(0, lambda level, index: pytest.fail("an empty tree reads nothing")) == empty
    assert Frontier().root() == empty


def test_a_ledger_entry_hash_is_its_leaf_hash() -> None:
    entry = Entry.seal("default", 1, "2026-11-26T19:03:22.301544Z", "0" * 64, {"a": 1})
    body = {k: v for k, v in entry.as_dict().items() if k != "hash"}
    assert leaf_hash(canonical(body)).hex() == entry.hash
    assert root_of([bytes.fromhex(entry.hash)]) == bytes.fromhex(entry.hash)


def test_range_nodes_refuses_ranges_that_are_not_aligned_subtrees() -> None:
    assert range_nodes(0, 7) == [Node(2, 0), Node(1, 2), Node(0, 6)]
    assert range_nodes(8, 12) == [Node(2, 2)]
    with pytest.raises(ValueError, match="aligned"):
        range_nodes(1, 3)
    with pytest.raises(ValueError, match="empty"):
        range_nodes(4, 4)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (7, 7), (8, 7), (-1, 7)])
def test_no_inclusion_proof_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_plan(index, size)


@pytest.mark.parametrize(("first", "second"), [(0, 5), (6, 5), (-1, 5)])
def test_no_consistency_proof_between_impossible_sizes(first: int, second: int) -> None:
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_plan(first, second)


def test_consistency_proof_between_equal_sizes_is_empty() -> None:
    store = _store(_leaves(5))
    assert consistency_proof(5, 5, lambda lv, i: store[(lv, i)]) == []


# --- the verifiers' bounds, exactly as RFC 9162 states them ---------------------------------


def test_inclusion_bounds() -> None:
    proof = inclusion_proof(3, 7, EX.subtree)
    verify_inclusion(3, 7, EX.leaves[3], proof, EX.root)
    with pytest.raises(ProofError, match="not below tree size"):
        verify_inclusion(7, 7, EX.leaves[3], proof, EX.root)
    with pytest.raises(ProofError, match="not below tree size"):
        verify_inclusion(0, 0, EMPTY_ROOT, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match="not below tree size"):
        verify_inclusion(-1, 7, EX.leaves[3], proof, EX.root)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(3, 7, EX.leaves[3], [*proof[:2], proof[2][:31]], EX.root)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(3, 7, EX.leaves[3][:31], proof, EX.root)
    # A one-leaf tree: the empty proof, and the leaf is the root.
    verify_inclusion(0, 1, EX.leaves[0], [], EX.leaves[0])
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(0, 1, EX.leaves[0], [EX.leaves[1]], EX.leaves[0])


def test_consistency_bounds() -> None:
    proof = consistency_proof(3, 7, EX.subtree)
    with pytest.raises(ProofError, match="cannot precede"):
        verify_consistency(7, 3, EX.root, EX.hash0, proof)
    with pytest.raises(ProofError, match="equal tree sizes must be empty"):
        verify_consistency(7, 7, EX.root, EX.root, [EX.root])
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(7, 7, EX.root, EX.hash2, [])
    verify_consistency(7, 7, EX.root, EX.root, [])
    with pytest.raises(ProofError, match="non-empty tree"):
        verify_consistency(0, 7, EMPTY_ROOT, EX.root, [])
    with pytest.raises(ProofError, match="non-empty tree"):
        verify_consistency(0, 7, EMPTY_ROOT, EX.root, proof)
    with pytest.raises(ProofError, match="is empty"):
        verify_consistency(3, 7, EX.hash0, EX.root, [])
    with pytest.raises(ProofError, match="is empty"):
        # Even where the old tree is a perfect subtree and the RFC would prepend its root.
        verify_consistency(4, 7, EX.hash1, EX.root, [])
    with pytest.raises(ProofError, match="32-byte"):
        verify_consistency(3, 7, EX.hash0[:5], EX.root, proof)


def _reason(check: Callable[[], None]) -> str:
    with pytest.raises(ProofError) as refused:
        check()
    return str(refused.value)


def test_each_refusal_names_its_reason() -> None:
    """Each way a proof fails has its own reason, naming the bad part (a short hash is
    refused as such, before it is compared with anything)."""
    inc = inclusion_proof(3, 7, EX.subtree)
    con = consistency_proof(3, 7, EX.subtree)
    leaf, root, old = EX.leaves[3], EX.root, EX.hash0
    reasons = {
        "leaf_hash is not a 32-byte hash": lambda: verify_inclusion(3, 7, leaf[:31], inc, root),
        "root is not a 32-byte hash": lambda: verify_inclusion(3, 7, leaf, inc, root[:31]),
        "a proof element is not a 32-byte hash":
            lambda: verify_inclusion(3, 7, leaf, [inc[0][:31], *inc[1:]], root),
        "inclusion proof is too long for the tree size":
            lambda: verify_inclusion(3, 7, leaf, [*inc, root], root),
        "inclusion proof is too short for the tree size":
            lambda: verify_inclusion(3, 7, leaf, inc[:-1], root),
        "inclusion proof does not lead to the root":
            lambda: verify_inclusion(3, 7, leaf, inc, _flip(root)),
        "first_root is not a 32-byte hash":
            lambda: verify_consistency(3, 7, old[:31], root, con),
        "second_root is not a 32-byte hash":
            lambda: verify_consistency(3, 7, old, root[:31], con),
        "tree size 7 cannot precede tree size 3": lambda: verify_consistency(7, 3, root, old, con),
        "a proof between equal tree sizes must be empty":
            lambda: verify_consistency(7, 7, root, root, [root]),
        "two tree heads of the same size have different roots":
            lambda: verify_consistency(7, 7, root, old, []),
        "RFC 9162 defines consistency proofs only from a non-empty tree":
            lambda: verify_consistency(0, 7, EMPTY_ROOT, root, con),
        "consistency proof is empty": lambda: verify_consistency(3, 7, old, root, []),
        "consistency proof is too long for the tree sizes":
            lambda: verify_consistency(3, 7, old, root, [*con, root]),
        "consistency proof is too short for the tree sizes":
            lambda: verify_consistency(3, 7, old, root, con[:-1]),
        "consistency proof does not lead to the first root":
            lambda: verify_consistency(3, 7, _flip(old), root, con),
        "consistency proof does not lead to the second root":
            lambda: verify_consistency(3, 7, old, _flip(root), con),
    }
    assert {why: _reason(check) for why, check in reasons.items()} == {
        why: why for why in reasons}


def test_proofs_do_not_authenticate_the_tree_size() -> None:
    """Why sizes must come from a signed checkpoint: RFC 9162 paths fit several sizes."""
    leaves4 = _leaves(4)
    store = _store(leaves4)
    three = root_of(leaves4[:3])
    proof = inclusion_proof(0, 3, lambda lv, i: store[(lv, i)])
    verify_inclusion(0, 3, leaves4[0], proof, three)
    verify_inclusion(0, 4, leaves4[0], proof, three)  # same shape, so it "verifies"
    assert _model_inclusion(0, 4, leaves4[0], proof, three)
    consistency = consistency_proof(4, 7, EX.subtree)
    verify_consistency(4, 8, EX.hash1, EX.root, consistency)
    assert _model_consistency(4, 8, EX.hash1, EX.root, consistency)


# --- properties over many tree sizes --------------------------------------------------------


def _check_every_proof(n: int, size: int) -> None:
    """Every inclusion and consistency proof of the tree of ``size`` leaves, served from a
    store of ``n >= size`` leaves, verifies against the RFC's roots; each reads few nodes."""
    leaves = _leaves(n)
    store = _store(leaves)
    mth = _mth(tuple(leaves))
    root = mth(0, size)
    assert root_of(leaves[:size]) == root
    subtree, calls = _counting(store)
    assert tree_root(size, subtree) == root
    bound = 2 * size.bit_length()
    for i in range(size):
        calls[0] = 0
        proof = inclusion_proof(i, size, subtree)
        assert calls[0] <= bound
        verify_inclusion(i, size, leaves[i], proof, root)
    for first in range(1, size + 1):
        calls[0] = 0
        proof = consistency_proof(first, size, subtree)
        assert calls[0] <= bound
        verify_consistency(first, size, mth(0, first), root, proof)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 1000])
def test_every_proof_verifies_at_edge_sizes(n: int) -> None:
    _check_every_proof(n, n)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 1000), st.data())
def test_every_proof_from_stored_subtrees_verifies(n: int, data: st.DataObject) -> None:
    # Proofs for an older tree are served from the same, larger store.
    _check_every_proof(n, data.draw(st.integers(1, n), label="tree size"))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 1000), st.data())
def test_altered_inclusion_proofs_fail(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    store = _store(leaves)
    size = data.draw(st.integers(1, n), label="tree size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = root_of(leaves[:size])
    leaf = leaves[index]
    proof = inclusion_proof(index, size, lambda lv, i: store[(lv, i)])
    verify_inclusion(index, size, leaf, proof, root)
    assert _model_inclusion(index, size, leaf, proof, root)

    def fails(i: int, s: int, lf: bytes, p: list[bytes], r: bytes) -> None:
        assert not _verifies(lambda: verify_inclusion(i, s, lf, p, r))

    for j in range(len(proof)):
        bit = data.draw(st.integers(0, 7), label="bit")
        fails(index, size, leaf, [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]], root)
    fails(index, size, leaf, [*proof, leaves[0]], root)
    if proof:
        fails(index, size, leaf, proof[:-1], root)
    fails(index, size, _flip(leaf), proof, root)
    fails(index, size, leaf, proof, _flip(root))
    # Another index: leaves are distinct and positions have distinct paths, so never.
    for other in data.draw(st.lists(st.integers(0, n), max_size=5), label="other indexes"):
        if other != index:
            fails(other, size, leaf, proof, root)
    # Another size fails unless RFC 9162's own definition says the path has that shape
    # too (see test_proofs_do_not_authenticate_the_tree_size).
    for other in {size - 1, size + 1, *data.draw(st.lists(st.integers(0, 2 * n), max_size=5))}:
        if other != size:
            ok = _verifies(partial(verify_inclusion, index, other, leaf, proof, root))
            assert ok == _model_inclusion(index, other, leaf, proof, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 1000), st.data())
def test_altered_consistency_proofs_fail(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    store = _store(leaves)
    mth = _mth(tuple(leaves))
    second = data.draw(st.integers(2, n), label="second")
    first = data.draw(st.integers(1, second - 1), label="first")
    old, new = mth(0, first), mth(0, second)
    proof = consistency_proof(first, second, lambda lv, i: store[(lv, i)])
    verify_consistency(first, second, old, new, proof)
    assert _model_consistency(first, second, old, new, proof)

    def fails(f: int, s: int, o: bytes, nw: bytes, p: list[bytes]) -> None:
        assert not _verifies(lambda: verify_consistency(f, s, o, nw, p))

    for j in range(len(proof)):
        bit = data.draw(st.integers(0, 7), label="bit")
        fails(first, second, old, new, [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]])
    fails(first, second, old, new, [*proof, leaves[0]])
    fails(first, second, old, new, proof[:-1])
    fails(first, second, _flip(old), new, proof)
    fails(first, second, old, _flip(new), proof)
    fails(first, second, new, old, proof)
    sizes = data.draw(st.lists(st.tuples(st.integers(0, 2 * n), st.integers(0, 2 * n)), max_size=6))
    for f, s in {(first - 1, second), (first + 1, second), (first, second + 1), *sizes}:
        if (f, s) != (first, second):
            ok = _verifies(partial(verify_consistency, f, s, old, new, proof))
            assert ok == _model_consistency(f, s, old, new, proof)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 80), max_size=12))
@example([1, 1, 1, 1, 1, 1, 1, 1])
@example([0, 7, 1, 8, 0, 64])
def test_frontier_appends_like_recomputing_from_scratch(batches: list[int]) -> None:
    frontier = Frontier()
    stored: Store = {}
    leaves: list[bytes] = []
    for count in batches:
        new = _leaves(count, start=len(leaves))
        frontier, created = frontier.append(new)
        leaves += new
        for node in created:
            assert (node.level, node.index) not in stored, "a subtree was emitted twice"
            stored[(node.level, node.index)] = node.hash
        assert stored == _store(leaves)
        assert frontier.size == len(leaves)
        assert frontier.root() == root_of(leaves)
        assert Frontier.load(len(leaves), lambda lv, i: stored[(lv, i)]) == frontier


def test_frontier_refuses_an_inconsistent_edge() -> None:
    with pytest.raises(ValueError, match="edge subtrees"):
        Frontier(3, (EX.leaves[0],))
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier(1, (b"short",))
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier().append([b"short"])


def _frontier(leaves: list[bytes]) -> Frontier:
    return Frontier().append(leaves)[0]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 70), st.lists(st.integers(0, 40), max_size=6), st.integers(0, 5))
@example(0, [1, 1, 1, 1], 0)  # every leaf kept, then the carries from level 1 up
@example(3, [13], 1)
def test_grow_is_append_keeping_only_the_levels_asked(
    start: int, batches: list[int], keep_from: int
) -> None:
    """What a store calls on every append: the same frontier as :meth:`Frontier.append`,
    and the same new subtrees in the same order, less those below ``keep_from``."""
    leaves = _leaves(start)
    grown = appended = _frontier(leaves)
    for count in batches:
        new = _leaves(count, start=len(leaves))
        leaves += new
        appended, created = appended.append(new)
        grown, kept = grown.grow(new, keep_from)
        assert grown == appended
        assert kept == [n for n in created if n.level >= keep_from]
    assert grown.root() == root_of(leaves)


def test_grow_keeps_level_one_and_up_by_default() -> None:
    frontier, created = Frontier().grow(EX.leaves)
    store = _store(EX.leaves)
    # the order each is created in: a subtree right after the two it combines
    assert [(n.level, n.index) for n in created] == [(1, 0), (1, 1), (2, 0), (1, 2)]
    assert created == [SubtreeHash(lv, i, store[(lv, i)]) for lv, i, _ in created]
    assert frontier == Frontier(7, (EX.node["k"], EX.node["i"], EX.node["j"]))


@pytest.mark.parametrize(("first", "second"), [
    (0, 5), (4, 3), (8, 8), (8, 1), (16, 7), (12, 4), (6, 2), (7, 1), (32, 32), (3, 0),
])
def test_extend_joins_a_tree_placed_after_another(first: int, second: int) -> None:
    """The verifier's join of stretches: the edge of ``first`` leaves followed by the
    edge of a tree of its own of ``second`` leaves is the edge of all of them."""
    leaves = _leaves(first + second)
    left, right = _frontier(leaves[:first]), _frontier(leaves[first:])
    joined = left.extend(right)
    assert joined == _frontier(leaves)
    assert joined.root() == root_of(leaves)


def test_extend_refuses_a_tree_that_would_start_unaligned() -> None:
    with pytest.raises(ValueError) as refused:
        _frontier(_leaves(4)).extend(_frontier(_leaves(8)))
    assert str(refused.value) == "a tree of 8 leaves cannot start at leaf 4: unaligned"
    with pytest.raises(ValueError):  # 6 is a multiple of 2, not of 4 (the larger subtree)
        _frontier(_leaves(6)).extend(_frontier(_leaves(6)))


def _message(check: Callable[[], object]) -> str:
    with pytest.raises(ValueError) as refused:
        check()
    return str(refused.value)


def test_each_refusal_of_the_tree_names_its_reason() -> None:
    """Word for word: a caller that reports these must not get another message."""
    leaf = EX.leaves[0]
    store = _store(EX.leaves)
    plan = inclusion_plan(4, 7)
    short = {n: store[n][:31] for n in plan_nodes(plan)}
    reasons: list[tuple[str, Callable[[], object]]] = [
        ("empty or negative leaf range [4, 4)", lambda: range_nodes(4, 4)),
        ("empty or negative leaf range [-1, 3)", lambda: range_nodes(-1, 3)),
        ("leaf range [1, 3) is not made of aligned subtrees", lambda: range_nodes(1, 3)),
        ("leaf 7 is not in a tree of 7 leaves", lambda: inclusion_plan(7, 7)),
        ("no consistency proof from size 0 to size 5", lambda: consistency_plan(0, 5)),
        ("a subtree hash is not 32 bytes", lambda: assemble(plan, short)),
        ("a tree of 3 leaves has 2 edge subtrees, not 1", lambda: Frontier(3, (leaf,))),
        ("a tree of -1 leaves has 1 edge subtrees, not 1", lambda: Frontier(-1, (leaf,))),
        ("a frontier hash is not 32 bytes", lambda: Frontier(1, (leaf[:31],))),
        ("a leaf hash is not 32 bytes", lambda: Frontier().append([leaf[:31]])),
    ]
    # the same words from grow as from append
    reasons.append(("a leaf hash is not 32 bytes",
                    lambda: Frontier().grow([leaf, leaf + b"x"])))
    assert [(why, _message(check)) for why, check in reasons] == [
        (why, why) for why, _ in reasons]


def test_split_is_the_largest_power_of_two_below() -> None:
    assert [split(n) for n in range(2, 18)] == [_split(n) for n in range(2, 18)]
    assert [split(n) for n in (2, 3, 4, 5, 8, 9)] == [1, 2, 2, 4, 4, 8]


def test_a_node_covers_its_leaves() -> None:
    # Node(2, 3): the 4 leaves 12..15; the verifier names a bad subtree by them
    assert (Node(2, 3).start, Node(2, 3).end) == (12, 16)
    assert (Node(0, 5).start, Node(0, 5).end) == (5, 6)


def test_an_empty_frontier_has_no_nodes_and_loads_nothing() -> None:
    assert Frontier().nodes == []
    assert Frontier.load(0, lambda level, index: pytest.fail("an empty tree reads nothing")) == (
        Frontier())
    assert Frontier(7, (EX.node["k"], EX.node["i"], EX.node["j"])).nodes == range_nodes(0, 7)
