"""The service freezes what start-up made (the cyclic collector then never scans it) and
unfreezes it when it stops (so an application made again in the same process, as the
tests do, leaves nothing frozen behind)."""

from __future__ import annotations

import gc

import orjson
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings


def test_startup_freezes_and_stop_unfreezes(settings: Settings) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings, configure_logs=False)) as client:
        assert gc.get_freeze_count() > 0
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_tuned_collector_leaves_a_bundle_in_flight_alone() -> None:
    """A 1,000-AuditEvent Bundle as parsed (about 48,000 containers, all alive until
    its request is answered), twice over, sets off no collection in a tuned process:
    each would traverse every live object and find nothing to free."""
    from benchmarks.formats import bundle, events
    from ledger.runtime import tune_gc

    raw = bundle([{**e, "event_id": f"00000000-0000-4000-8000-{i:012d}"}
                  for i, e in enumerate(events(1000))])
    runs: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    thresholds = gc.get_threshold()
    try:
        tune_gc()
        gc.collect()
        gc.callbacks.append(count)
        in_flight = [orjson.loads(raw), orjson.loads(raw)]
        assert len(in_flight[1]["entry"]) == 1000
        assert runs == []
    finally:
        if count in gc.callbacks:
            gc.callbacks.remove(count)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
