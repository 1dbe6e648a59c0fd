"""Settings of the Python runtime for the processes that churn through events."""

from __future__ import annotations

import gc

GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """For processes that churn through events: ingest and projection allocate a few
    dozen objects per event and keep none of them, and the cyclic collector's default
    thresholds ran it hundreds of times a second for nothing (it cost a projector three
    quarters of its time)."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)
