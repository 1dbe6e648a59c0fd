"""Walking a store's chains and checking every link (the shell around ledger.chain)."""

from __future__ import annotations

from collections.abc import Callable

from ledger.chain import ChainBroken, ChainCheck, Verdict
from ledger.store import LedgerStore

Progress = Callable[[int], None]
PROGRESS_EVERY = 10_000


def verify_ledger(store: LedgerStore, ledger: str, progress: Progress | None = None) -> Verdict:
    """Stream ``ledger`` in seq order and check it whole; stop at the first bad entry.

    ``progress`` is called with the number of entries checked so far, every
    ``PROGRESS_EVERY`` entries.
    """
    check = ChainCheck(ledger)
    count = 0
    try:
        for position, data in store.stream(ledger):
            check.feed(position, data)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
    except ChainBroken as broken:
        return check.verdict(broken)
    if progress is not None:
        progress(count)
    return check.verdict()
