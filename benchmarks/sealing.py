"""Where the cost of encryption at ingest goes (PHI at rest: target within 15%).

    .venv/bin/python -m benchmarks.sealing [--events 100000] [--rounds 2]

The service's own ingest path in this one process, without HTTP (validation, the group
commit writer, PostgreSQL with fsync on), on a new database each run, three ways,
alternated so that drift in the machine's load falls on all of them alike:

- ``plaintext``: events stored as posted (LEDGER_UNSAFE_PLAINTEXT);
- ``encrypted``: the service's envelope protection, as deployed;
- ``sealed beforehand``: the very stored forms of an encrypted run, made before the clock
  starts. Its rows are as large as encrypted ones -- the chain hashes, PostgreSQL
  stores and logs the ciphertext -- but it does no sealing, no key work and no settling.

So ``sealed beforehand`` against ``plaintext`` is what ciphertext-sized rows cost, and
``encrypted`` against ``sealed beforehand`` is what sealing costs. Each line also gives the
CPU an event of this process and of PostgreSQL (from /proc).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks.cpu import cpu_by_part, spent
from benchmarks.host import describe as describe_host
from benchmarks.support import create_pg_database, drop_pg_database
from ledger.crypto.keyring import KeyRing
from ledger.data_keys import DataKeys
from ledger.ingest import Plaintext, Protection
from ledger.migrate import migrate
from ledger.protection import EnvelopeProtection
from ledger.runtime import tune_gc
from ledger.settings import Settings
from ledger.store import open_store
from ledger.writer import Settlement, nothing_to_settle

BATCH = 1000
SUBMITTERS = 4  # threads posting batches, as request threads would
MODES = ("plaintext", "encrypted", "sealed beforehand")


class SealedBeforehand(Plaintext):
    """Stores the stored forms it was given, looked up by event id: an encrypted run's
    rows without the sealing. For this benchmark only: its keys are in no database."""

    def __init__(self, sealer: EnvelopeProtection, stored: dict[str, dict[str, Any]]) -> None:
        self.sealer = sealer
        self.stored = stored

    def fingerprint(self, ledger: str, event: dict[str, Any], encoded: bytes | None = None) -> str:
        return self.sealer.fingerprint(ledger, event, encoded)

    def protect_many(self, ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.stored[e["event_id"]] for e in events]

    def settler(self, ledger: str, posted: Sequence[dict[str, Any]],
                stored: Sequence[dict[str, Any]]) -> Settlement:
        return nothing_to_settle

    def patient_ref(self, ledger: str, patient_id: str) -> str:
        return self.sealer.patient_ref(ledger, patient_id)


def sealed_beforehand(events: list[dict[str, Any]], scratch: Path) -> SealedBeforehand:
    """The stored forms of ``events``, sealed now under keys kept in a scratch database."""
    url = f"sqlite:///{scratch}/keys.db"
    migrate(url)
    ring = KeyRing.generate()
    sealer = EnvelopeProtection(ring, DataKeys(open_store(url), ring))
    stored: dict[str, dict[str, Any]] = {}
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        for event, sealed in zip(batch, sealer.protect_many("default", batch), strict=True):
            stored[event["event_id"]] = sealed
    return SealedBeforehand(sealer, stored)


@dataclass(frozen=True)
class Run:
    mode: str
    rate: float  # events a second
    process_us: float  # CPU of this process, an event
    database_us: float  # CPU of every PostgreSQL process, an event


def ingest(mode: str, events: list[dict[str, Any]], scratch: Path,
           beforehand: SealedBeforehand) -> Run:
    """Record ``events`` in batches of 1,000 from four threads, on a new database."""
    from api.app import build_services

    url = create_pg_database()
    try:
        settings = Settings.from_env({
            "LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(scratch / f"{url[-8:]}.json"),
            "LEDGER_PROJECTIONS": "off", "LEDGER_LOG_LEVEL": "warning",
            **({"LEDGER_UNSAFE_PLAINTEXT": "1"} if mode == "plaintext" else {}),
        })
        protection: Protection | None = beforehand if mode == "sealed beforehand" else None
        svc = build_services(settings, protection=protection)
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        parts = {"process": [os.getpid()]}
        try:
            before, cpu, started = cpu_by_part(parts), time.process_time(), time.perf_counter()
            with ThreadPoolExecutor(SUBMITTERS) as pool:
                list(pool.map(lambda b: svc.ingest.record_sync("default", b, batch=True),
                              batches))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            after = cpu_by_part(parts)
        finally:
            svc.writer.stop()
            svc.store.close()
        database = spent(before, after).get("PostgreSQL", 0.0) if before and after else 0.0
        n = len(events)
        return Run(mode, n / seconds, cpu / n * 1e6, database / n * 1e6)
    finally:
        drop_pg_database(url)


def main() -> None:
    from benchmarks.ingest import workload

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(describe_host(), flush=True)
    events = workload(args.events, seed=11)
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    with TemporaryDirectory() as scratch:
        beforehand = sealed_beforehand(events, Path(scratch))
        # As a server does once it has started: the workload and the forms sealed
        # beforehand are frozen out of the collector's way, for every mode alike.
        tune_gc()
        for _ in range(args.rounds):
            for mode in MODES:
                run = ingest(mode, events, Path(scratch), beforehand)
                runs[mode].append(run)
                print(f"{mode:<18} {run.rate:>9,.0f} events/s   CPU an event: this process"
                      f" {run.process_us:5.1f} us, PostgreSQL {run.database_us:5.1f} us",
                      flush=True)
    for pick_name, pick in (("best", max), ("mean", lambda rates: sum(rates) / len(rates))):
        rate = {mode: pick([r.rate for r in measured]) for mode, measured in runs.items()}
        plain, sealed, encrypted = (rate["plaintext"], rate["sealed beforehand"],
                                    rate["encrypted"])
        print(f"{pick_name} runs: ciphertext-sized rows alone cost {1 - sealed / plain:6.1%},"
              f" sealing a further {1 - encrypted / sealed:6.1%};"
              f" encryption in all {1 - encrypted / plain:6.1%} (target <= 15%)")

if __name__ == "__main__":
    main()
