"""Settings of the Python runtime for the processes that churn through events."""

from __future__ import annotations

import gc

# Allocations of tracked containers between two runs of the youngest generation. A
# request's objects live until it is answered: a Bundle of 1,000 AuditEvents is ~48,000
# containers as parsed, and twice that once validated and mapped. At 50,000 every such
# Bundle set off collections that found no garbage and traversed every live object of
# the requests in flight (~15 ms each; 16 us of a FHIR event's 250). At 500,000 a
# collection comes every few requests, when most of their objects are already freed.
GC_GEN0_THRESHOLD = 500_000


def tune_gc() -> None:
    """For processes that churn through events: ingest and projection allocate a few
    dozen objects per event and keep none of them, and the cyclic collector's default
    thresholds ran it hundreds of times a second for nothing (it cost a projector three
    quarters of its time)."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)
