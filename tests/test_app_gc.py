"""The service freezes what start-up made (the cyclic collector then never scans it) and
unfreezes it when it stops (so an application made again in the same process, as the
tests do, leaves nothing frozen behind)."""

from __future__ import annotations

import gc

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
