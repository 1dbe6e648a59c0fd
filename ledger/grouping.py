"""Taking a group off a queue: the first item, and whatever else is already waiting.

The idiom of group commit (ledger.writer's sealer and committer, the syslog intake's
holding threads): block for one item, then take without waiting until the queue is
empty, the group is full, or the stop mark (None) comes.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def waiting_after(first: T, source: queue.SimpleQueue[T | None], *,
                  weight: Callable[[T], int] = lambda _: 1,
                  limit: int | None = None) -> tuple[list[T], int, bool]:
    """``first`` and the items waiting behind it in ``source``, while their total
    ``weight`` is under ``limit`` (no limit: all of them); the group, its weight, and
    whether the stop mark was taken (nothing after it is)."""
    group, size = [first], weight(first)
    while limit is None or size < limit:
        try:
            more = source.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return group, size, True
        group.append(more)
        size += weight(more)
    return group, size, False
