"""How fast this machine is, so figures from different machines can be compared.

The project's benchmark machines change from session to session, and one of them ran the
same commit three times slower than another (a rebuild of the views: 27,302 against
9,865 events/s). Each benchmark therefore prints, first, the speed of one core at the
work the ledger does most -- canonical JSON and SHA-256 of a typical entry, in Python --
measured here, the same way every time, before anything else runs.
"""

from __future__ import annotations

import hashlib
import time

from ledger.canonical import canonical

_SAMPLE = {
    "event_id": "0192f0a4-7c3e-7b8a-9d2e-5f1a2b3c4d5e",
    "occurred_at": "2026-11-27T09:12:05.123456-05:00",
    "action": "read", "outcome": "success",
    "actor": {"id": "agent-0042", "kind": "user", "role": "call_agent", "mfa": True},
    "patient": {"ref": "x" * 43, "key": "k" * 26, "id": "enc:v1:" + "t" * 48},
    "resource": {"type": "message", "id": "msg-000123"},
    "purpose": "TREAT", "channel": "phone", "source": {"system": "answer-desk"},
    "data": {"note": "enc:v1:" + "n" * 80},
}


def entries_per_second(seconds: float = 2.0, windows: int = 5) -> float:
    """Entries canonically encoded and hashed per second on one core, in the best of
    ``windows`` short windows (these shared hosts change speed from second to second)."""
    best = 0.0
    for _ in range(windows):
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / windows:
            for _ in range(200):
                hashlib.sha256(canonical(_SAMPLE)).digest()
            done += 200
        best = max(best, done / elapsed)
    return best


def describe() -> str:
    """One line naming the machine's speed, for the head of a benchmark's output."""
    return (f"host: one core encodes and hashes {entries_per_second():,.0f} entries/s"
            " (machines A and B of docs/benchmarks.md, idle: 333,000-860,000)")
