"""Settings of the Python runtime for the processes that churn through events."""

from __future__ import annotations

import gc

# Allocations of tracked containers between two runs of the youngest generation. At
# 500,000 a FHIR Bundle (about 48,000 containers alive until its request is answered)
# no longer sets off a collection (~15 ms, 16 us of an event here), but the alerts view
# caught up about 17% slower and in-process ingest about 20% slower (`benchmarks.alerts
# --events 200000`, runs alternated).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """For processes that churn through events: ingest and projection allocate a few
    dozen objects per event and keep none of them, and the cyclic collector's default
    thresholds ran it hundreds of times a second for nothing (it cost a projector three
    quarters of its time)."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)


def allow_open_files() -> None:
    """Raise this process's limit of open descriptors to the most the system allows it
    (the soft limit to the hard one, as Go's runtime does): every sender, client and
    database connection holds one, and a soft limit of 1,024 is soon reached by a host
    that opens connections and never finishes them. Where the platform has no such
    limit, nothing."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # No hard limit (macOS): the most the kernel takes of a few sizes, largest first.
    wanted = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 1 << 16, 10_240]
    for limit in wanted:
        if soft != resource.RLIM_INFINITY and soft >= limit:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            return
        except (ValueError, OSError):
            continue
