"""``phi-ledger demo``: a synthetic answering-service day, posted through ingest."""

from __future__ import annotations

import time

from rich.progress import Progress

from api.app import build_services
from ledger.logs import configure_logging
from ledger.settings import Settings


def run_demo(
    settings: Settings,
    *,
    events: int,
    seed: int,
    ledger: str | None,
    batch: int,
    progress: Progress | None = None,
    truth: str | None = None,
) -> int:
    """Post ``events`` events of the seeded monitored service
    (:class:`api.workload.monitoring.MonitoredService`); returns the ledger's new head seq."""
    from api.workload.monitoring import MonitoredService

    configure_logging(settings.log_format, settings.log_level)
    svc = build_services(settings)
    name = ledger or settings.default_ledger
    started = time.perf_counter()
    try:
        chunk: list[dict] = []
        done = 0
        task = None
        if progress is not None:
            progress.start()
            task = progress.add_task(f"posting to {name}", total=events, rate="")
        # The monitored service: the data conventions (roster, names, dates of birth,
        # shifts, VIP records, partners) and every rule's violation, so a demo raises
        # alerts; the ground truth goes to ``truth`` when asked, never to the ledger.
        monitored = MonitoredService(seed=seed)
        source = monitored.events(events)
        for event in source:
            chunk.append(event)
            if len(chunk) >= batch:
                svc.ingest.record_sync(name, chunk, batch=True)
                done += len(chunk)
                chunk = []
                if progress is not None and task is not None:
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    progress.update(task, completed=done, rate=f"{rate:,.0f} events/s")
        if chunk:
            svc.ingest.record_sync(name, chunk, batch=True)
            done += len(chunk)
        if progress is not None and task is not None:
            progress.update(task, completed=done)
        if truth is not None:
            write_truth(truth, monitored.truth)
        return svc.store.head(name).seq
    finally:
        if progress is not None:
            progress.stop()
        svc.writer.stop()
        svc.store.close()


def write_truth(path: str, truth: dict[int, list[tuple[str, str, int | None]]]) -> None:
    """The ground truth as JSON lines: ``{"index", "rule", "status", "explained_by"}``,
    indexes counting the posted events from 0 (seq = the head before + index + 1)."""
    import json

    with open(path, "w", encoding="utf-8") as out:
        for index in sorted(truth):
            for rule, status, by in truth[index]:
                out.write(json.dumps({"index": index, "rule": rule, "status": status,
                                      "explained_by": by}) + "\n")
