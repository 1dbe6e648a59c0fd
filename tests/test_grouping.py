"""ledger.grouping.waiting_after: the group a group-commit thread takes off its queue."""

from __future__ import annotations

import queue

from ledger.grouping import waiting_after


def _queue(*items: int | None) -> queue.SimpleQueue[int | None]:
    q: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for item in items:
        q.put(item)
    return q


def test_takes_everything_waiting_when_unlimited() -> None:
    q = _queue(2, 3, 4)
    assert waiting_after(1, q) == ([1, 2, 3, 4], 4, False)
    assert q.empty()


def test_stops_at_the_limit_by_weight_and_leaves_the_rest() -> None:
    q = _queue(20, 30, 40)
    assert waiting_after(10, q, weight=lambda n: n, limit=60) == ([10, 20, 30], 60, False)
    assert q.get_nowait() == 40
    assert waiting_after(70, _queue(1), weight=lambda n: n, limit=60) == ([70], 70, False)


def test_the_stop_mark_ends_the_group_and_nothing_after_it_is_taken() -> None:
    q = _queue(2, None, 3)
    assert waiting_after(1, q) == ([1, 2], 2, True)
    assert q.get_nowait() == 3
