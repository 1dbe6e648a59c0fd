"""Continual monitoring's cost, on PostgreSQL (fsync on) or SQLite.

    .venv/bin/python -m benchmarks.alerts [--events 1000000] [--database URL] [--lag-seconds 10]

1. Loads ``--events`` events of the monitored service (api.workload.monitoring: the data
   conventions and every rule's violation) through ingest (encryption, group commit), with
   no projection running.
2. Rule evaluation during catch-up: the alerts view alone, from nothing to the head
   (entries/s; target >= 20,000 on PostgreSQL over 1,000,000 events), then the other
   views alone, then the other views again with alerts beside them (the cost to them).
3. Alert lag while ingesting ``--rate`` events/s (default 2,000): from each batch's
   receipt to the moment the alerts view has applied it (p50, p99; target p99 <= 1 s).
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import psycopg

from api.workload.monitoring import MonitoredService
from benchmarks.host import describe
from benchmarks.support import services_on
from projections.runner import Projector, all_views


def fresh_database(admin: str) -> str:
    name = f"bench_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + f"/{name}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def drop_database(admin: str, url: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def run(args: argparse.Namespace, url: str) -> None:
    with services_on(url) as svc:
        service = MonitoredService(seed=3)
        source = service.events(args.events + args.rate * args.lag_seconds)
        started = time.perf_counter()
        chunk = []
        for _ in range(args.events):
            chunk.append(next(source))
            if len(chunk) == 1000:
                svc.ingest.record_sync("default", chunk, batch=True)
                chunk = []
        if chunk:
            svc.ingest.record_sync("default", chunk, batch=True)
        print(f"load: {args.events:,} events in {time.perf_counter() - started:.1f} s")
        views = {v.name: v for v in all_views(svc.protection)}

        def timed(names: list[str], rebuild: bool) -> float:
            projector = Projector(svc.store, [views[n] for n in names], processes=1)
            begun = time.perf_counter()
            if rebuild:
                projector.rebuild(names)
            else:
                projector.catch_up()
            return time.perf_counter() - begun

        alone = timed(["alerts"], False)
        print(f"catch-up, alerts view alone: {args.events / alone:,.0f} entries/s"
              " (target >= 20,000 over 1,000,000 on PostgreSQL)")
        others = [n for n in views if n != "alerts"]
        without = timed(others, False)
        print(f"catch-up, the other views: {args.events / without:,.0f} entries/s")
        with_alerts = timed([*others, "alerts"], True)
        print(f"catch-up, every view with alerts: {args.events / with_alerts:,.0f}"
              f" entries/s (cost to the others: {with_alerts / without - 1:+.0%})")
        follower_stop = threading.Event()
        projector = Projector(svc.store, list(views.values()))
        follower = threading.Thread(target=projector.follow, args=(follower_stop,),
                                    daemon=True)
        follower.start()
        lags: list[float] = []
        batch = max(1, args.rate // 10)
        deadline = time.perf_counter() + args.lag_seconds
        while time.perf_counter() < deadline:
            tick = time.perf_counter()
            events = [next(source) for _ in range(batch)]
            receipt = svc.ingest.record_sync("default", events, batch=True).receipts[-1]
            position = svc.store.notification_of("default", receipt.seq)
            assert position is not None, "an entry just appended has a notification"
            posted = time.perf_counter()
            alerts_only = Projector(svc.store, [views["alerts"]])
            while alerts_only.positions()["alerts"] < position:
                time.sleep(0.002)
            lags.append(time.perf_counter() - posted)
            time.sleep(max(0.0, 0.1 - (time.perf_counter() - tick)))
        follower_stop.set()
        follower.join(timeout=10)
        print(f"alert lag at {args.rate:,} events/s (batches of {batch}):"
              f" p50 {percentile(lags, 50) * 1000:.0f} ms,"
              f" p99 {percentile(lags, 99) * 1000:.0f} ms (target p99 <= 1,000 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--database", default=None,
                        help="PostgreSQL server URL to create a fresh database on"
                             " (default postgresql://postgres@127.0.0.1:5432/postgres)")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--lag-seconds", type=int, default=10)
    args = parser.parse_args()
    print(describe())
    admin = args.database or "postgresql://postgres@127.0.0.1:5432/postgres"
    url = fresh_database(admin)
    try:
        run(args, url)
    finally:
        drop_database(admin, url)  # a million events leave over 2 GB behind


if __name__ == "__main__":
    main()
