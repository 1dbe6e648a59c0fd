"""Walking a store's chains and checking every link, and every signed checkpoint (the
shell around ledger.chain and ledger.transparency).

Checking an entry costs a JSON parse, a canonical re-encoding and a SHA-256: a few
microseconds, which is more than reading it. Long chains are therefore checked in
stretches by several processes, each reading its own seq range from the database; the
stretches are then linked (each one's first ``prev_hash`` against the previous one's
last hash), so the verdict is the same as a single walk, first bad seq included. The
stretches run on the executor a ``Pool`` makes: by default spawned worker processes,
each with a store of its own (``worker_store``); a caller may pass another executor,
such as one in its own process (the tests do, so each stretch's check runs where they
see it).

Checkpoints. Along the way every entry hash is folded into the RFC 9162 tree (a stretch
is a power of two long, so each is a perfect subtree and their edges join), and at every
size a checkpoint was signed at (the ``checkpoints`` table, plus any the caller holds,
such as a witness's) the root recomputed from the entries must be the signed root. A
chain that is intact but shorter than a signed size was truncated (or rolled back); an
intact chain whose root differs from a signed one was rewritten. Finally the stored tree
must agree with the chain, at its head and in every subtree it keeps, or the proofs it
serves would not verify.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

from ledger.chain import ChainBroken, ChainCheck, Head, Verdict, VerdictKind
from ledger.entry import GENESIS_HASH
from ledger.store import LedgerStore, open_store
from ledger.store.base import STORED_LEVELS_FROM
from ledger.transparency.tree import NODE_PREFIX, Frontier, Node, fold

Progress = Callable[[int], None]
PROGRESS_EVERY = 10_000
PARALLEL_FROM = 200_000
STRETCH = 1 << 18  # rounded down to a power of two: each stretch is a perfect subtree

STORED = "signed checkpoint"
_sha256 = hashlib.sha256
Signed = Mapping[int, tuple[bytes, str]]  # size -> (root, where it comes from)
Pool = Callable[[int], Executor]  # the executor the stretches are checked on, of n workers

# spawn, not fork: the caller may be a threaded server holding database connections.
worker_processes: Pool = partial(ProcessPoolExecutor,
                                 mp_context=multiprocessing.get_context("spawn"))


def _stored_checkpoints(store: LedgerStore, ledger: str, after: int, upto: int | None,
                        extra: Signed) -> dict[int, list[tuple[bytes, str]]]:
    """Every signed root to check with ``after < size <= upto``: the stored ones and the
    caller's (several may claim one size: each is checked)."""
    from ledger.tlog import TransparencyLog

    found: dict[int, list[tuple[bytes, str]]] = {}
    for size, root in TransparencyLog(store).roots_between(ledger, after, upto):
        found.setdefault(size, []).append((root, STORED))
    for size, (root, source) in extra.items():
        if size > after and (upto is None or size <= upto):
            found.setdefault(size, []).append((root, source))
    return found


class TreeCheck:
    """Folds entry hashes into the Merkle tree from ``start``, keeping the tree's edge at
    each size in ``marks`` (a stretch starts from an empty tree: its sizes are relative,
    and ``offset`` is the leaf it starts at), and every perfect subtree it completes of
    level ``STORED_LEVELS_FROM`` and up in ``nodes`` (the ones a store keeps), so the
    stored tree can be compared node by node, interior nodes included."""

    __slots__ = ("hashes", "levels", "marks", "nodes", "offset", "seen", "size")

    def __init__(self, start: Frontier, marks: Iterable[int] = (), offset: int = 0) -> None:
        self.levels = [node.level for node in start.nodes]
        self.hashes = list(start.hashes)
        self.size = start.size
        self.offset = offset
        self.marks = set(marks)
        self.seen: dict[int, tuple[bytes, ...]] = {}
        self.nodes: dict[Node, bytes] = {}

    def add(self, leaf_hex: str) -> None:
        self.add_subtree(bytes.fromhex(leaf_hex), 0)

    def add_subtree(self, digest: bytes, level: int) -> None:
        """Add a perfect subtree of ``2**level`` leaves on the right (a leaf: level 0)."""
        levels, hashes = self.levels, self.hashes
        end = self.offset + self.size + (1 << level)  # the leaf after the new subtree
        while levels and levels[-1] == level:
            levels.pop()
            digest = _sha256(NODE_PREFIX + hashes.pop() + digest).digest()
            level += 1
            if level >= STORED_LEVELS_FROM:
                self.nodes[Node(level, (end >> level) - 1)] = digest
        levels.append(level)
        hashes.append(digest)
        self.size = end - self.offset
        if self.size in self.marks:
            self.seen[self.size] = tuple(hashes)

    @property
    def frontier(self) -> Frontier:
        return Frontier(self.size, tuple(self.hashes))


@dataclass(frozen=True)
class Mismatch:
    """A signed root the entries do not reproduce."""

    size: int
    source: str


class SignedRoots:
    """Compares the roots recomputed from the entries with the signed ones."""

    def __init__(self) -> None:
        self.matched = 0  # the largest size whose signed roots all matched, so far
        self.mismatch: Mismatch | None = None

    def judge(self, size: int, root: bytes, claims: list[tuple[bytes, str]]) -> None:
        if self.mismatch is not None:
            return
        for signed, source in claims:
            if signed != root:
                self.mismatch = Mismatch(size, source)
                return
        self.matched = size


def walk(check: ChainCheck, tree: TreeCheck, rows: Iterable[tuple[int, bytes]],
          progress: Progress | None, count: int = 0) -> ChainBroken | None:
    try:
        for position, data in rows:
            check.feed(position, data)
            tree.add(check.head.hash)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
    except ChainBroken as broken:
        return broken
    finally:
        close = getattr(rows, "close", None)
        if close is not None:  # release the cursor now, while the store is still open
            close()
    if progress is not None:
        progress(count)
    return None


def verify_ledger(
    store: LedgerStore, ledger: str, progress: Progress | None = None, *,
    checkpoints: Signed | None = None,
) -> Verdict:
    """Stream ``ledger`` in seq order and check it whole; stop at the first bad entry.
    Then check every signed checkpoint (stored, and ``checkpoints``: size -> (root,
    source)) against the tree of the entries, and the stored tree at the head.

    ``progress`` is called with the number of entries checked so far, every
    ``PROGRESS_EVERY`` entries.
    """
    signed = _stored_checkpoints(store, ledger, 0, None, checkpoints or {})
    check = ChainCheck(ledger)
    tree = TreeCheck(Frontier(), signed)
    broken = walk(check, tree, store.stream(ledger), progress)
    if broken is not None:
        return check.verdict(broken)
    roots = SignedRoots()
    for size in sorted(tree.seen):
        roots.judge(size, fold(list(tree.seen[size])), signed[size])
    return _judge(store, ledger, check.verdict(), tree.frontier, roots, max(signed, default=0),
                  tree.nodes)


def _judge(store: LedgerStore, ledger: str, verdict: Verdict, frontier: Frontier,
           roots: SignedRoots, newest: int, nodes: Mapping[Node, bytes]) -> Verdict:
    """An intact chain's verdict, once the checkpoints and the stored tree are judged
    (``nodes``: every stored-size subtree recomputed from the entries)."""
    head = verdict.verified_through
    if newest > head:
        return Verdict(VerdictKind.TRUNCATED, head, head + 1,
                       f"truncated: a signed checkpoint covers {newest} entries but the chain"
                       f" ends at seq {head} (entries removed, or the database rolled back)",
                       verdict.head_hash)
    if roots.mismatch is not None:
        after = roots.matched
        return Verdict(VerdictKind.REWRITTEN, after, after + 1,
                       f"the entries do not reproduce the {roots.mismatch.source} of size"
                       f" {roots.mismatch.size}: entries after seq {after} (the last signed"
                       f" size that matches) were rewritten", verdict.head_hash)
    if head and store.maintain_tree:
        problem = _tree_problem(store, ledger, frontier, nodes)
        if problem is not None:
            return Verdict(VerdictKind.TREE_MISMATCH, head, None,
                           f"the stored Merkle tree does not match the entries {problem}:"
                           " proofs served from it would not verify", verdict.head_hash)
    return verdict


def _tree_problem(store: LedgerStore, ledger: str, frontier: Frontier,
                  nodes: Mapping[Node, bytes]) -> str | None:
    """Where the stored tree differs from the one recomputed from the entries: its edge
    at the head (what checkpoints and proofs start from), then every stored subtree
    (interior nodes feed the inclusion and consistency proofs of older sizes)."""
    edge = frontier.nodes
    stored = store.subtrees(ledger, edge)
    if [stored.get(n) for n in edge] != list(frontier.hashes):
        return "at the head"
    wanted = sorted(nodes)
    stored = store.subtrees(ledger, wanted)
    for node in wanted:
        if stored.get(node) != nodes[node]:
            return (f"in the subtree over seqs {node.start + 1}-{node.end}"
                    f" (level {node.level}, index {node.index})")
    return None


@dataclass(frozen=True)
class Stretch:
    """The outcome of checking the entries with ``after < seq <= upto``, with the edge of
    their Merkle subtree, the edges at the signed sizes inside, and those signed roots."""

    after: int
    upto: int
    first_prev_hash: str | None
    last: Head
    broken_at: int | None
    reason: str | None
    edge: tuple[bytes, ...] = ()
    marks: tuple[tuple[int, tuple[bytes, ...], tuple[tuple[bytes, str], ...]], ...] = ()
    nodes: Mapping[Node, bytes] | None = None


worker_store: LedgerStore | None = None  # a worker's store, opened on its first stretch


def check_stretch(database_url: str, ledger: str, after: int, upto: int,
                   extra: Signed | None = None) -> Stretch:
    global worker_store
    if worker_store is None:
        worker_store = open_store(database_url)
    signed = _stored_checkpoints(worker_store, ledger, after, upto, extra or {})
    check = ChainCheck(ledger, Head(after, GENESIS_HASH, None), link_first=False)
    tree = TreeCheck(Frontier(), [size - after for size in signed], offset=after)
    rows = worker_store.stream(ledger, after=after, upto=upto)
    broken = walk(check, tree, rows, None)
    if broken is not None:
        return Stretch(after, upto, check.first_prev_hash, check.head, broken.seq, broken.reason)
    if check.head.seq != upto:
        missing = check.head.seq + 1
        return Stretch(after, upto, check.first_prev_hash, check.head, missing,
                       f"entry missing (stretch ends at seq {check.head.seq})")
    marks = tuple((after + rel, hashes, tuple(signed[after + rel]))
                  for rel, hashes in sorted(tree.seen.items()))
    return Stretch(after, upto, check.first_prev_hash, check.head, None, None,
                   tuple(tree.hashes), marks, tree.nodes)


def verify_ledger_parallel(
    database_url: str,
    ledger: str,
    upto: int,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    checkpoints: Signed | None = None,
    roots: SignedRoots | None = None,
    tree: list[Frontier] | None = None,
    nodes: dict[Node, bytes] | None = None,
    pool: Pool = worker_processes,
) -> Verdict:
    """Check seqs 1..``upto`` of ``ledger`` in stretches on ``pool(workers)`` (by default
    that many worker processes, one a core and at least two).

    The chain's verdict; the signed roots inside are judged into ``roots``, the tree's
    edge at ``upto`` is left in ``tree`` and its stored-size subtrees in ``nodes`` (when
    given) for the caller to go on."""
    workers = workers or max(2, os.cpu_count() or 2)
    level = max(STRETCH, 1).bit_length() - 1
    step = 1 << level
    bounds = [(a, min(a + step, upto)) for a in range(0, upto, step)]
    roots = roots if roots is not None else SignedRoots()
    prefix = Frontier()
    joins = TreeCheck(Frontier())  # the subtrees above a stretch, from the full stretches
    last = Head(0, GENESIS_HASH, None)
    done = 0
    with pool(workers) as executor:
        futures = [executor.submit(check_stretch, database_url, ledger, a, b, checkpoints)
                   for a, b in bounds]
        for future in futures:
            stretch = future.result()
            first_seq = stretch.after + 1
            if stretch.first_prev_hash is not None and stretch.first_prev_hash != last.hash:
                for f in futures:
                    f.cancel()
                return Verdict(VerdictKind.BROKEN, last.seq, first_seq,
                               "prev_hash does not match the hash of the entry before", last.hash)
            if stretch.broken_at is not None:
                for f in futures:
                    f.cancel()
                verified = stretch.broken_at - 1
                # a stretch broken at its first entry checked none: its head is a
                # placeholder, and the previous stretch's last entry is the verified head
                head = stretch.last if verified > stretch.after else last
                return Verdict(VerdictKind.BROKEN, verified, stretch.broken_at, stretch.reason,
                               head.hash)
            last = stretch.last
            done = stretch.upto
            for size, hashes, claims in stretch.marks:
                edge = Frontier(size - stretch.after, hashes)
                roots.judge(size, prefix.extend(edge).root(), list(claims))
            prefix = prefix.extend(Frontier(stretch.upto - stretch.after, stretch.edge))
            if nodes is not None:
                nodes.update(stretch.nodes or {})
                if stretch.upto - stretch.after == step:
                    joins.add_subtree(stretch.edge[0], level)
            if progress is not None:
                progress(done)
    if tree is not None:
        tree.append(prefix)
    if nodes is not None:
        nodes.update(joins.nodes)
    return Verdict(VerdictKind.INTACT, last.seq, None, None, last.hash)


def verify(
    store: LedgerStore, database_url: str, ledger: str, progress: Progress | None = None,
    *, checkpoints: Signed | None = None, pool: Pool = worker_processes,
) -> Verdict:
    """Check ``ledger`` whole: in parallel stretches when it is long (on ``pool``, see
    :func:`verify_ledger_parallel`), in one walk if not;
    then its signed checkpoints (stored, and ``checkpoints``: size -> (root, source))
    and its stored tree, as :func:`verify_ledger` does.

    Entries appended while the check runs are left for the next one: a long chain is
    checked up to the head it had when the check began, then the rest in one walk.
    """
    from ledger.tlog import TransparencyLog

    # The newest signed size is read before the head: a checkpoint signed meanwhile can
    # only cover entries that exist, so a signed size beyond the chain is a truncation.
    newest = TransparencyLog(store).latest(ledger)
    head = store.head(ledger)
    if head.seq < PARALLEL_FROM:
        return verify_ledger(store, ledger, progress, checkpoints=checkpoints)
    roots, edges, nodes = SignedRoots(), list[Frontier](), dict[Node, bytes]()
    verdict = verify_ledger_parallel(database_url, ledger, head.seq, progress=progress,
                                     checkpoints=checkpoints, roots=roots, tree=edges,
                                     nodes=nodes, pool=pool)
    if not verdict.ok:
        return verdict
    signed = _stored_checkpoints(store, ledger, verdict.verified_through, None,
                                 checkpoints or {})
    check = ChainCheck(ledger, Head(verdict.verified_through, verdict.head_hash, None))
    tree = TreeCheck(edges[0], signed)
    rows = store.stream(ledger, after=verdict.verified_through)
    broken = walk(check, tree, rows, None, verdict.verified_through)
    if broken is not None:
        return check.verdict(broken)
    for size in sorted(tree.seen):
        roots.judge(size, fold(list(tree.seen[size])), signed[size])
    largest = max([newest.size if newest else 0, *signed, *(checkpoints or {})])
    return _judge(store, ledger, check.verdict(), tree.frontier, roots, largest,
                  nodes | tree.nodes)
