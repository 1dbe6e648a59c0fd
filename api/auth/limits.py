"""Rate limits: token buckets per (limit, key), the rule a pure function.

Each bucket holds up to ``burst`` tokens and refills at ``rate`` a second; a request takes
one or is told how long to wait. Buckets live in this process's memory: with
``serve --workers N`` each worker keeps its own, so an identity may reach N times a
limit (README, "Access control").
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

MAX_BUCKETS = 100_000  # the oldest idle buckets are forgotten beyond this


@dataclass(frozen=True, slots=True)
class Rate:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float

    @classmethod
    def per_minute(cls, count: float) -> Rate:
        return cls(count / 60.0, count)


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at: float  # seconds, on whatever clock the caller uses


def take(bucket: Bucket | None, now: float, rate: Rate) -> tuple[Bucket, float]:
    """Take one token: ``(new bucket, 0.0)`` when allowed, else ``(bucket, seconds to
    wait)``. A new bucket starts full."""
    if bucket is None:
        tokens = rate.burst
    else:
        tokens = min(rate.burst, bucket.tokens + max(0.0, now - bucket.at) * rate.rate)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), 0.0
    wait = (1.0 - tokens) / rate.rate if rate.rate > 0 else math.inf
    return Bucket(tokens, now), wait


class RateLimiter:
    """Buckets by key for one process; thread-safe (login runs in worker threads)."""

    def __init__(self) -> None:
        self._buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, limit: str, key: str, now: float, rate: Rate) -> float:
        """0.0 if a request may go ahead now (and count it), else seconds to wait."""
        with self._lock:
            bucket, wait = take(self._buckets.get((limit, key)), now, rate)
            self._buckets[(limit, key)] = bucket
            self._buckets.move_to_end((limit, key))
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
            return wait


def retry_after(wait: float) -> str:
    """Retry-After in whole seconds, at least 1."""
    return str(max(1, math.ceil(wait))) if math.isfinite(wait) else "3600"
