"""The page benchmarks' CPU accounting (benchmarks.cpu): what it counts and how."""

from __future__ import annotations

import os
import time

import pytest

from benchmarks.cpu import PROC, cpu_by_part, per_request, spent


def test_spent_counts_each_part_from_its_processes_deltas() -> None:
    before = {1: ("server", 2.0), 2: ("server", 1.0), 3: ("PostgreSQL", 5.0),
              4: ("projector", 9.0)}
    after = {1: ("server", 2.5), 2: ("server", 1.25), 3: ("PostgreSQL", 5.5),
             5: ("PostgreSQL", 0.25)}  # 4 ended (left out), 5 started (counted whole)
    assert spent(before, after) == {"server": 0.75, "PostgreSQL": 0.75}


def test_per_request_names_each_part_per_request_and_the_total() -> None:
    before = {1: ("server", 1.0), 2: ("PostgreSQL", 0.0)}
    after = {1: ("server", 1.6), 2: ("PostgreSQL", 0.2)}
    assert per_request(before, after, 100) == "server 6.0 ms, PostgreSQL 2.0; 8.0 ms in all"
    assert per_request(None, after, 100) == "n/a (no /proc)"
    # Per event of a batch run: the same split in microseconds.
    assert per_request(before, after, 100_000, unit="us") == (
        "server 6.0 us, PostgreSQL 2.0; 8.0 us in all")


@pytest.mark.skipif(not PROC.is_dir(), reason="reads /proc (Linux)")
def test_a_busy_process_is_counted_under_its_part() -> None:
    parts = {"me": [os.getpid()]}
    before = cpu_by_part(parts)
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = cpu_by_part(parts)
    assert before is not None and after is not None
    assert before[os.getpid()][0] == "me"
    # /proc counts in clock ticks (10 ms here): each sample may be a tick short.
    assert 0.17 <= spent(before, after)["me"] < 1.0
